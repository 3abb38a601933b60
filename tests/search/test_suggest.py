import math

import numpy as np
import pytest

from controller.search.space import Space
from controller.search.suggest import Observation, SuggestSettings, derive_seed, suggest

pytestmark = pytest.mark.pure

SPACE = Space.default()


def _history(n, seed=0):
    """n finished observations from random proposals scored by a fixed function."""
    rng = np.random.default_rng(seed)
    obs = []
    props = suggest(SPACE, [], list(range(n)), 99, SuggestSettings(n_startup_jobs=10_000))
    for p in props:
        obs.append(Observation(p.tid, p.vals, -float(rng.random())))
    return obs


# What another process computes: a restarted controller (another PYTHONHASHSEED, another interpreter) must
# agree with this one, so a per-process salt (hash(), id(), a clock) would fail these.
OTHER_PROCESS = """
import json, sys
sys.path.insert(0, "tests/search")
from test_suggest import SPACE, _history
from controller.search.suggest import derive_seed, suggest
props = suggest(SPACE, _history(25), [25, 26, 27], search_seed=5)
print(json.dumps({"seed": derive_seed(7, 3), "params": [p.params for p in props]}))
"""


def _in_another_process(hashseed: str) -> dict:
    import json
    import subprocess
    import sys

    from support.paths import ROOT

    out = subprocess.run([sys.executable, "-c", OTHER_PROCESS], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


def test_seeds_are_distinct_per_trial_and_reproducible():
    seeds = {derive_seed(7, t) for t in range(1000)}
    assert len(seeds) == 1000
    # The values themselves, fixed: a seed that changed between releases would change every resumed search.
    assert (derive_seed(7, 3), derive_seed(8, 3)) == (1318712413, 1255706865)
    assert _in_another_process("1")["seed"] == _in_another_process("2")["seed"] == 1318712413


def test_resumed_search_proposes_the_same_points():
    """A controller restarted in a new process proposes what the first one would have."""
    hist = _history(25)
    here = suggest(SPACE, hist, [25, 26, 27], search_seed=5)
    assert all(p.method == "tpe" for p in here)
    first, restarted = _in_another_process("1"), _in_another_process("2")
    assert first["params"] == restarted["params"] == [p.params for p in here]


def test_batch_of_proposals_has_no_duplicates_for_every_pending_strategy():
    hist = _history(30)
    for pending in ("hyperopt", "liar_mean", "ignore"):
        props = suggest(SPACE, hist, list(range(30, 38)), 1, SuggestSettings(pending=pending))
        keys = {tuple(sorted(p.vals.items())) for p in props}
        assert len(keys) == 8, pending


def test_pending_trials_change_the_proposal():
    """A running trial is seen by TPE: the same tid/seed with and without it proposes differently."""
    hist = _history(30)
    running = suggest(SPACE, hist, [30], 1)[0]
    with_pending = suggest(SPACE, hist + [Observation(30, running.vals, None)], [31], 1)[0]
    without = suggest(SPACE, hist, [31], 1, SuggestSettings(pending="ignore"))[0]
    assert with_pending.params != without.params or with_pending.vals != without.vals


def test_each_pending_strategy_is_what_it_says():
    """mutmut S2 survivors: the three strategies were never told apart. 'ignore' proposes as if the running trials
    did not exist; 'liar_mean' as if each had ended at the mean loss of the finished ones; 'hyperopt' (the default)
    hands them to hyperopt as new trials, which is neither."""
    import statistics

    hist = _history(25)
    running = suggest(SPACE, hist, [30, 31], 1)
    pending = [Observation(p.tid, p.vals, None) for p in running]
    lie = statistics.fmean(o.loss for o in hist)

    def proposal(observed, strategy):
        return suggest(SPACE, observed, [32], 1, SuggestSettings(pending=strategy))  # one: no batch of its own

    ignored = proposal(hist + pending, "ignore")
    assert ignored == proposal(hist, "ignore")
    lied = proposal(hist + pending, "liar_mean")
    assert lied == proposal(hist + [Observation(o.tid, o.vals, lie) for o in pending], "ignore")
    assert lied != ignored
    assert proposal(hist + pending, "hyperopt") == suggest(SPACE, hist + pending, [32], 1)  # the default


def test_an_unknown_pending_strategy_is_named():
    with pytest.raises(ValueError, match="pending must be one of .*, got 'optimistic'"):
        suggest(SPACE, [], [0], 1, _unchecked("optimistic"))


def _unchecked(pending):
    settings = SuggestSettings()
    object.__setattr__(settings, "pending", pending)  # past validation
    return settings


def test_startup_phase_counts_warm_started_trials():
    hist = _history(20)
    assert suggest(SPACE, hist[:5], [100], 1, SuggestSettings(n_startup_jobs=20))[0].method == "random"
    assert suggest(SPACE, hist, [100], 1, SuggestSettings(n_startup_jobs=20))[0].method == "tpe"


def test_failed_trials_push_tpe_away():
    """Failures are inf loss: a region where everything failed is not proposed again and again."""
    hist = _history(30)
    failed = [Observation(o.tid, o.vals, math.inf) if o.vals["optimizer"] == 2 else o for o in hist]
    props = suggest(SPACE, failed, list(range(30, 50)), 3)
    rms = sum(1 for p in props if p.params["optimizer"] == "RMSprop")
    assert rms <= 4


def test_proposals_are_points_of_the_space():
    for p in suggest(SPACE, _history(25), list(range(25, 35)), 2):
        assert SPACE.decode(SPACE.encode(p.params)) == p.params
