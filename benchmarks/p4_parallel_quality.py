"""P4: parallel TPE quality. Budget 64, 8 trials in flight, the seed's conditional space, a synthetic
objective (tests/objective.py) with trial durations drawn at random, 20 search seeds.

For each way of proposing: duplicate proposals (exact; and near-copies: every choice equal and every
number within 1% of its range) and the best objective found, vs sequential TPE and random search.
'katib-like' reproduces katib #1329's setup with our space: the batch shares one seed and pending
trials are ignored."""

from __future__ import annotations

import heapq
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from common import machine

BUDGET, IN_FLIGHT, SEEDS = 64, 8, 20
WAYS = ("hyperopt", "liar_mean", "ignore", "katib-like", "sequential", "random")


def run(way: str, seed: int) -> tuple[float, int, int]:
    from hyperopt import tpe
    from objective import synthetic_objective

    from controller.search.space import Space
    from controller.search.suggest import (
        Observation,
        Proposal,
        SuggestSettings,
        _domain,
        derive_seed,
        hyperopt_trials,
        suggest,
    )

    space = Space.default()
    rng = np.random.default_rng(seed)
    in_flight = 1 if way == "sequential" else IN_FLIGHT
    settings = SuggestSettings(pending=way if way in ("hyperopt", "liar_mean", "ignore") else
                               ("ignore" if way == "katib-like" else "hyperopt"),
                               n_startup_jobs=10**9 if way == "random" else 20)
    observed: dict[int, Observation] = {}
    proposals: list[Proposal] = []
    running: list[tuple[float, int]] = []
    now, cache = 0.0, {}

    def propose(tids: list[int]) -> None:
        if way == "katib-like":
            obs = [o for o in observed.values() if o.loss is not None]
            trials = hyperopt_trials(space, obs)
            batch_seed = derive_seed(seed, tids[0])  # one seed for the whole batch
            for tid in tids:
                (doc,) = tpe.suggest([tid], _domain(space), trials, batch_seed, n_startup_jobs=20, verbose=False)
                vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
                vals = {k: (int(v) if isinstance(v, np.integer) else float(v) if isinstance(v, np.floating) else v)
                        for k, v in vals.items()}
                new = [Proposal(tid, space.decode(vals), vals, batch_seed, "tpe")]
                _start(new)
            return
        _start(suggest(space, list(observed.values()), tids, seed, settings, cache))

    def _start(new: list[Proposal]) -> None:
        for p in new:
            proposals.append(p)
            observed[p.tid] = Observation(p.tid, p.vals, None)
            heapq.heappush(running, (now + float(rng.lognormal(0, 0.5)), p.tid))

    propose(list(range(in_flight)))
    while running:
        now, tid = heapq.heappop(running)
        p = proposals[tid]
        score = synthetic_objective(p.params) + float(np.random.default_rng([seed, tid]).normal(0, 0.005))
        observed[tid] = Observation(tid, p.vals, -score)
        if len(proposals) < BUDGET:
            propose([len(proposals)])
    best = max(-o.loss for o in observed.values())
    return best, _exact_dups(proposals), _near_dups(space, proposals)


def _exact_dups(props) -> int:
    keys = [tuple(sorted(p.vals.items())) for p in props]
    return len(keys) - len(set(keys))


def _near_dups(space, props) -> int:
    spans = {}
    for label, d in space.dists.items():
        if d.kind != "choice":
            lo, hi = d.args[0], d.args[1]
            spans[label] = (np.exp(hi) - np.exp(lo)) if "log" in d.kind else (hi - lo)
    count = 0
    for i, a in enumerate(props):
        for b in props[:i]:
            if a.vals.keys() != b.vals.keys():
                continue
            if all((a.vals[k] == b.vals[k]) if k not in spans else abs(a.vals[k] - b.vals[k]) <= 0.01 * spans[k]
                   for k in a.vals):
                count += 1
                break
    return count


def main() -> None:
    print(f"P4 parallel quality: budget {BUDGET}, {IN_FLIGHT} in flight, {SEEDS} seeds — {machine()}")
    jobs = [(way, seed) for way in WAYS for seed in range(SEEDS)]
    with ProcessPoolExecutor(2) as pool:
        results = dict(zip(jobs, pool.map(run, *zip(*jobs))))
    print(f"{'way':<12} {'in flight':>9} {'median best':>12} {'mean best':>10} {'exact dups':>11} {'near dups':>10}")
    for way in WAYS:
        rs = [results[(way, s)] for s in range(SEEDS)]
        best = [r[0] for r in rs]
        print(f"{way:<12} {1 if way == 'sequential' else IN_FLIGHT:>9} {statistics.median(best):>12.4f} "
              f"{statistics.fmean(best):>10.4f} {sum(r[1] for r in rs):>11} {sum(r[2] for r in rs):>10}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
