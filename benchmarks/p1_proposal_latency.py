"""P1: proposal latency with 100 / 1,000 / 5,000 finished trials — our suggest() as the loop calls it
(document cache kept across calls, one trial newly finished) and cold (no cache), vs bare hyperopt
tpe.suggest on a prebuilt Trials holding the same history. Same seed, so the same point; medians of
REPEATS alternating runs."""

from __future__ import annotations

import statistics
import sys
import time

from common import machine, random_history
from hyperopt import tpe

from controller.search.suggest import _domain, derive_seed, hyperopt_trials, suggest

REPEATS = 9


def main(sizes=(100, 1000, 5000)) -> None:
    print(f"P1 proposal latency — {machine()}")
    print(f"{'finished':>9} {'ours s':>9} {'bare s':>9} {'ratio':>7} {'no-cache s':>11} {'ratio':>7}  same point")
    for n in sizes:
        space, obs, _ = random_history(n, seed=n)
        domain = _domain(space)
        trials = hyperopt_trials(space, obs)
        seed = derive_seed(0, n)
        ours, cold, bare = [], [], []
        for _ in range(REPEATS):
            t = time.perf_counter()
            suggest(space, obs, [n], 0)
            cold.append(time.perf_counter() - t)
            # As in the loop: a cache kept across calls, with one trial newly finished since the last.
            cache: dict = {}
            suggest(space, obs[:-1] + [obs[-1].__class__(obs[-1].tid, obs[-1].vals, None)], [n], 0, cache=cache)
            t = time.perf_counter()
            (p,) = suggest(space, obs, [n], 0, cache=cache)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            (doc,) = tpe.suggest([n], domain, trials, seed, verbose=False)
            bare.append(time.perf_counter() - t)
        same = {k: v[0] for k, v in doc["misc"]["vals"].items() if v} == p.vals
        o, b, c = statistics.median(ours), statistics.median(bare), statistics.median(cold)
        print(f"{n:>9} {o:>9.3f} {b:>9.3f} {o / b:>6.2f}× {c:>11.3f} {c / b:>6.2f}×  {same}")
        sys.stdout.flush()


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (100, 1000, 5000))
