"""P5: early stopping replayed on the 42 real 100-epoch validation curves of the seed project
(examples/seed-results), in 200 random orders, one at a time and 4 in flight (an epoch takes one time
unit; a trial starts when a slot frees). For each rule: epochs spent vs no rule, and how often the best
trial of the set survives (is never stopped).

Settings are chosen on one half of the curves and reported on the other (2-fold, both ways): on the
tuning half (TUNE_ORDERS orders), the most saving setting that keeps that half's best in >= 97% of
orders (both in-flight modes); the figure reported is that setting on the other half (ORDERS orders). The curve of
savings vs aggressiveness
(every setting, on all 42) is printed too."""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from common import SEED_RESULTS, machine

from controller.search.stopping import StoppingSettings, decide

ORDERS = 200       # for every reported figure
TUNE_ORDERS = 50   # for choosing settings on the tuning half (the grid is large)
KEEP_GOAL = 0.97


def curves() -> list[list[float]]:
    out = []
    for f in sorted(SEED_RESULTS.glob("*.json")):
        h = json.loads(f.read_text())["history"]["val_fine_outputs_acc"]
        out.append([float("nan") if v is None else float(v) for v in h])
    return out


def replay(all_curves: list[list[float]], order: list[int], s: StoppingSettings, in_flight: int) -> tuple[int, set]:
    """Epochs spent and the set of trials stopped."""
    queue = list(order)
    running: dict[int, int] = {}  # trial -> epochs done
    ended: list[list[float]] = []
    stopped: set[int] = set()
    spent = 0
    while queue or running:
        while queue and len(running) < in_flight:
            running[queue.pop(0)] = 0
        for t in list(running):  # one epoch for every running trial
            running[t] += 1
            spent += 1
        for t in list(running):
            k = running[t]
            c = all_curves[t][:k]
            if k >= len(all_curves[t]):
                ended.append(c)
                del running[t]
                continue
            others = [all_curves[o][:running[o]] for o in running if o != t]
            if decide(s, c, ended, others, max_epoch=len(all_curves[t])):
                stopped.add(t)
                ended.append(c)
                del running[t]
    return spent, stopped


def evaluate(cs: list[list[float]], s: StoppingSettings, seed: int, orders: int = ORDERS) -> dict[str, float]:
    best = int(np.nanargmax([np.nanmax(c) for c in cs]))
    full = sum(len(c) for c in cs)
    rng = np.random.default_rng(seed)
    out = {}
    for in_flight in (1, 4):
        spent, kept = [], 0
        for _ in range(orders):
            order = list(rng.permutation(len(cs)))
            e, stopped = replay(cs, order, s, in_flight)
            spent.append(e)
            kept += best not in stopped
        out[f"save{in_flight}"] = full / statistics.fmean(spent)
        out[f"keep{in_flight}"] = kept / orders
    return out


def grid() -> list[StoppingSettings]:
    g = [StoppingSettings("median", start_epoch=e, min_trials=m, margin=d)
         for e, m, d in itertools.product((5, 10, 20, 30), (3, 5), (0.0, 0.02, 0.05))]
    g += [StoppingSettings("asha", grace_epochs=r, eta=eta, min_trials=m, margin=d)
          for r, eta, m, d in itertools.product((5, 10, 20), (2.0, 3.0), (3, 5), (0.0, 0.03))]
    return g


def label(s: StoppingSettings) -> str:
    if s.rule == "median":
        return f"median start={s.start_epoch} min={s.min_trials} margin={s.margin:g}"
    return f"asha grace={s.grace_epochs} eta={s.eta:g} min={s.min_trials} margin={s.margin:g}"


def main() -> None:
    cs = curves()
    print(f"P5 early stopping on {len(cs)} real curves, {ORDERS} orders — {machine()}")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(cs))
    halves = [[cs[i] for i in idx[: len(cs) // 2]], [cs[i] for i in idx[len(cs) // 2:]]]
    settings = grid()
    jobs = [(halves[h], s, h, TUNE_ORDERS) for h in (0, 1) for s in settings]
    with ProcessPoolExecutor(2) as pool:
        tuned = list(pool.map(evaluate, *zip(*jobs)))
    scored = {(h, s): r for (_, s, h, _), r in zip(jobs, tuned)}
    print("\n2-fold: chosen on one half (keep >= 97% there, most saving), reported on the other half")
    print(f"{'rule':<7} {'tuned on':>8} {'setting':<44} {'saving 1 / 4 in flight':>24} {'best kept 1 / 4':>17}")
    for rule in ("median", "asha"):
        for tune in (0, 1):
            ok = [s for s in settings
                  if s.rule == rule and min(scored[(tune, s)]["keep1"], scored[(tune, s)]["keep4"]) >= KEEP_GOAL]
            if not ok:
                print(f"{rule:<7} {'half ' + str(tune):>8} no setting keeps the best in >= 97% of orders")
                continue
            chosen = max(ok, key=lambda s: min(scored[(tune, s)]["save1"], scored[(tune, s)]["save4"]))
            r = evaluate(halves[1 - tune], chosen, seed=10 + tune)
            print(f"{rule:<7} {'half ' + str(tune):>8} {label(chosen):<44} {r['save1']:>11.2f}× / {r['save4']:.2f}×"
                  f" {r['keep1']:>9.1%} / {r['keep4']:.1%}")
    print(f"\nsavings vs aggressiveness, all 42 curves, {TUNE_ORDERS} orders, min_trials 5, margin 0 "
          "(saving = epochs without a rule / with it)")
    print(f"{'setting':<44} {'saving 1':>9} {'saving 4':>9} {'kept 1':>7} {'kept 4':>7}")
    curve_settings = [s for s in settings if s.min_trials == 5 and s.margin == 0.0]
    with ProcessPoolExecutor(2) as pool:
        rows = list(zip(curve_settings, pool.map(evaluate, [cs] * len(curve_settings), curve_settings,
                                                 [7] * len(curve_settings), [TUNE_ORDERS] * len(curve_settings))))
    for s, r in sorted(rows, key=lambda x: (x[0].rule, x[1]["save1"])):
        print(f"{label(s):<44} {r['save1']:>8.2f}× {r['save4']:>8.2f}× {r['keep1']:>7.1%} {r['keep4']:>7.1%}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
