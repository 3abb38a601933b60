"""P2: rebuild the state of a 5,000-trial search from S3 (moto's server, its own process, over HTTP):
list + read + ready to propose (hyperopt Trials built), vs building a hyperopt Trials by inserting the
same documents one by one (insert_trial_doc + refresh, as an fmin-driven resume does).

Three ways of ours: with the ledger checkpoint current (a clean stop), with it CHECKPOINT_LAG decided
trials behind (a crash just before the next checkpoint), and with no checkpoint at all (listing every
trial and reading all its records in parallel)."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import MotoServer, machine, random_history

from controller.ledger.trials import Ledger, proposal_record
from controller.search.suggest import Observation, hyperopt_trials
from controller.store.base import dumps
from controller.store.s3 import S3Store

N = 5000
CHECKPOINT_LAG = 25  # controller.checkpointEvery's default
PARALLEL_OPEN = 8


def seed_store(store: S3Store, props, objectives) -> None:
    def write(i: int) -> None:
        p = props[i]
        store.put(f"trials/{p.tid:06d}/proposal.json", dumps(proposal_record(p.tid, p.params, p.vals, p.seed, "tpe")))
        if i < N - PARALLEL_OPEN:  # the last few are still running
            store.put(f"trials/{p.tid:06d}/result.json", dumps({"schema_version": 1, "tid": p.tid, "status": "ok",
                                                                 "objective": objectives[i]}))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(write, range(N)))


def ready(ledger: Ledger, space) -> tuple[float, int]:
    t = time.perf_counter()
    records = ledger.load()
    hyperopt_trials(space, [Observation(r.tid, r.vals, r.loss) for r in records.values() if r.vals])
    return time.perf_counter() - t, len(records)


def main() -> None:
    print(f"P2 resume of a {N}-trial search from moto S3 — {machine()}")
    space, obs, props = random_history(N)
    objectives = [-o.loss for o in obs]
    with MotoServer() as url:
        store = S3Store("p2-bench", "search", endpoint_url=url)
        store.client.create_bucket(Bucket="p2-bench")
        t = time.perf_counter()
        seed_store(store, props, objectives)
        print(f"seeded {N} proposals + {N - PARALLEL_OPEN} results in {time.perf_counter() - t:.1f} s")
        ledger = Ledger(store)

        full_s, n_full = ready(ledger, space)
        records = ledger.load_full()
        ledger.write_checkpoint(records.values(), N)
        current_s, n_cur = ready(ledger, space)
        lagging = [r for r in records.values() if r.tid < N - CHECKPOINT_LAG - PARALLEL_OPEN]
        ledger.write_checkpoint(lagging, N - CHECKPOINT_LAG - PARALLEL_OPEN)
        lag_s, n_lag = ready(ledger, space)
        assert n_full == n_cur == n_lag == N, (n_full, n_cur, n_lag)

    from hyperopt import Trials

    docs = hyperopt_trials(space, obs).trials
    t = time.perf_counter()
    trials = Trials()
    for doc in docs:
        trials.insert_trial_doc(doc)
        trials.refresh()
    base_s = time.perf_counter() - t
    print(f"{'way':<52} {'seconds':>8} {'vs baseline':>12}")
    for name, s in (("ours, checkpoint current", current_s),
                    (f"ours, checkpoint {CHECKPOINT_LAG} decided trials behind", lag_s),
                    ("ours, no checkpoint (list + read every record)", full_s),
                    ("baseline: hyperopt Trials, docs inserted one by one", base_s)):
        print(f"{name:<52} {s:>8.2f} {s / base_s:>11.3f}×")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
