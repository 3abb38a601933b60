"""S3: what one TPE proposal costs at the space and tpe bounds a Search may set (controller/search/nodes.py,
controller/limits.py), and just past them (what the bounds refuse, built here without the parser's checks).

Each case runs in its own process (its peak resident memory is the case's): a history of random observations, then
one timed proposal. Seconds are wall-clock on this machine; compare the cases with each other, not with another
machine's.

    python benchmarks/s3_proposal_bounds.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from common import ROOT, machine

# (label, space, nEICandidates, observations, allowed by the bounds)
CASES = [
    ("the seed's 19-key space, nEI 24 (the default)", None, 24, 100, True),
    ("the seed's 19-key space, nEI 1000 (the nEI bound)", None, 1000, 100, True),
    ("a 1000-option choice (the options bound), nEI 24", {"a": {"dist": "choice", "options": list(range(1000))}},
     24, 50, True),
    ("randint over 100,000 values (the randint bound)", {"a": {"dist": "randint", "low": 0, "high": 100_000}}, 24,
     50, True),
    ("25 uniforms x nEI 1000 (the work bound, 25,000)", {f"p{i}": {"dist": "uniform", "low": 0, "high": 1}
                                                          for i in range(25)}, 1000, 50, True),
    ("256 uniforms x nEI 1000 (refused: work 256,000)", {f"p{i}": {"dist": "uniform", "low": 0, "high": 1}
                                                         for i in range(256)}, 1000, 50, False),
    ("randint over 10^7 values (refused)", {"a": {"dist": "randint", "low": 0, "high": 10_000_000}}, 24, 50, False),
    ("a 10,000-option choice (refused)", {"a": {"dist": "choice", "options": list(range(10_000))}}, 24, 50, False),
]


def one(space_json: str, n_ei: int, n_obs: int) -> dict[str, float]:
    """One case, in this process: the proposal's seconds and the process's peak RSS."""
    import numpy as np

    from controller.search import nodes
    from controller.search.space import Space
    from controller.search.suggest import Observation, Suggester, SuggestSettings

    # Past the bounds on purpose: lift them to build what a Search may no longer ask for.
    nodes.MAX_OPTIONS = nodes.MAX_RANDINT_RANGE = nodes.MAX_DISTRIBUTIONS = 10**9
    spec = json.loads(space_json)
    space = Space.default() if spec is None else Space.from_spec(spec)
    suggester = Suggester(space, 1, SuggestSettings(n_startup_jobs=n_obs, n_ei_candidates=n_ei))
    rng = np.random.default_rng(0)
    observed: list[Observation] = []
    for tid in range(n_obs):  # random start-up proposals, then random losses
        vals = suggester.propose(observed, [tid])[0].vals
        observed.append(Observation(tid, vals, float(rng.random())))
    suggester.settings = SuggestSettings(n_startup_jobs=0, n_ei_candidates=n_ei)
    started = time.perf_counter()
    suggester.propose(observed, [n_obs])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    print(f"S3 one TPE proposal at and past the bounds — {machine()}")
    base = None
    for label, space, n_ei, n_obs, allowed in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(space), str(n_ei), str(n_obs)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or got["seconds"]
        print(f"{label:55s} {got['seconds']:7.3f} s ({got['seconds'] / base:6.1f}x the default)"
              f"  peak {got['peak_mb']:6.0f} MB  {'allowed' if allowed else 'refused'}", flush=True)


if __name__ == "__main__":
    main()
