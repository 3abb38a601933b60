"""A stand-in trial program for tests and benchmarks: `python tests/objective.py --trial URI [...]`.

It reads the trial's proposal.json like the trainer does, "trains" for a few short epochs on a smooth
synthetic function of the seed space's parameters, writes progress.json each epoch and result.json at
the end — or misbehaves on purpose when FAKE_TRIAL_FAULTS names a JSON file {tid: fault}. In a container (the test
image) it runs from /app, laid out like the checkout; the tests' files reach it through a shared claim at /cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time

# A program run as a script (sys.path[0] is tests/): it must run the checkout it sits in, not the controller installed
# in the environment, or a test run on a copy of the tree (scripts/mutations.py does) would run another one's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller.errors import TemporaryError
from controller.store.base import dumps, get_json, put_json
from controller.trial import open_trial, patiently


def synthetic_objective(params: dict) -> float:
    """Peaks near lr 1.0, l2 0.5, batch 300, Nadam, BN on, residual 2, 3 blocks, avg pooling."""
    p = params
    score = 0.70
    score -= 0.08 * math.log(p.get("lr_rate_mult", 1.0)) ** 2
    score -= 0.02 * (math.log(p.get("l2_weight_reg_mult", 0.5)) - math.log(0.5)) ** 2
    score -= 0.10 * ((p.get("batch_size", 300) - 300) / 400) ** 2
    score -= {"Adam": 0.01, "Nadam": 0.0, "RMSprop": 0.03}.get(p.get("optimizer"), 0.0)
    score -= 0.0 if p.get("use_BN") else 0.04
    res = p.get("residual")
    score -= 0.05 if res is None else 0.01 * abs(res - 2)
    score -= 0.0 if p.get("nb_conv_pool_layers") == 3 else 0.03
    score -= {"avg": 0.0, "max": 0.01, "all_conv": 0.02, "inception": 0.015}.get(p.get("pooling_type"), 0.0)
    score -= 0.1 * (p.get("conv_dropout_drop_proba", 0.2) - 0.2) ** 2
    score -= 0.05 * (p.get("coarse_labels_weight", 0.3) - 0.3) ** 2
    return max(0.01, score)


def _wait_for_gate(tid: int, stopped: dict) -> None:
    """With FAKE_TRIAL_GATE=DIR a trial may end only once DIR/<tid> (or DIR/all) exists: a test then decides
    how far a search gets, whatever the machine's speed. A SIGTERM ends the wait (a stopped trial)."""
    gate = os.environ.get("FAKE_TRIAL_GATE")
    while gate and not stopped["flag"] and not any(os.path.exists(os.path.join(gate, n)) for n in (str(tid), "all")):
        time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trial", required=True)
    ap.add_argument("--data")
    ap.add_argument("--data-sha256")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sleep", type=float, default=float(os.environ.get("FAKE_TRIAL_SLEEP", "0.05")))
    args = ap.parse_args()
    store, _ = open_trial(args.trial)  # the trial contract: its grant on a cluster, else the URI
    proposal = patiently("reading proposal.json", lambda: get_json(store, "proposal.json"))  # as the trainer
    tid = proposal["tid"]
    if os.environ.get("FAKE_TRIAL_DATALOG"):  # which dataset the controller pointed the trial at
        with open(os.environ["FAKE_TRIAL_DATALOG"], "a") as f:
            f.write(f"{args.data}\n")
    if os.environ.get("FAKE_TRIAL_RUNLOG"):
        with open(os.environ["FAKE_TRIAL_RUNLOG"], "a") as f:
            f.write(f"{tid}\n")
    faults_file = os.environ.get("FAKE_TRIAL_FAULTS")
    fault = json.load(open(faults_file)).get(str(tid)) if faults_file else None
    stopped = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stopped.update(flag=True))
    if fault == "deaf":  # a program that ignores SIGTERM and never ends on its own: only SIGKILL ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        put_json(store, "progress.json", {"schema_version": 1, "tid": tid, "epoch": 1,
                                          "history": {"objective": [0.001]}})
        while True:
            time.sleep(1)
    if fault in ("bad_params", "forge_log"):
        # As the trainer does: the failure is recorded as a 'fail' result, then exit 3 (do not retry).
        error = "params.pooling_type: 'fractional' is not one of [...] (stand-in for the trainer's check)"
        if fault == "forge_log":  # a trial's text that tries to write a line of the controller's log
            error = "boom\n2026-01-01 00:00:00,000 INFO search=forged controller.loop: all is well\x1b[2K"
        print(error, file=sys.stderr)
        store.create("result.json", dumps({"schema_version": 1, "tid": tid, "status": "fail", "error": error,
                                           "params": proposal["params"], "finished_at": time.time()}))
        return 3
    final = synthetic_objective(proposal["params"])
    # Curves of many shapes, some quick and some late (0.5 to 2 times the rate), so that curves cross as real ones
    # do and no early-stopping test passes because every curve is the same shape.
    speed = 0.5 + 1.5 * ((1000 * abs(math.log(proposal["params"].get("lr_rate_mult", 1.0)))) % 1)
    curve = []
    batches = 5
    for epoch in range(1, args.epochs + 1):
        if fault == "hang":
            time.sleep(3600)
        pause = args.sleep * (50 if fault == "slow" or (fault == "slow_after_1" and epoch > 1) else 1)
        for _ in range(batches):  # as the trainer: SIGTERM is seen at a batch boundary...
            time.sleep(pause / batches)
            if stopped["flag"]:
                break
        if stopped["flag"]:
            break  # ...and the interrupted epoch is not recorded (fit() leaves it unfinished)
        curve.append(final * (1 - 0.5 ** (epoch * speed)))
        try:  # as the trainer: progress is advisory, a store outage does not end the trial
            put_json(store, "progress.json", {"schema_version": 1, "tid": tid, "epoch": epoch,
                                              "history": {"objective": curve}})
        except TemporaryError as e:
            print(f"trial {tid}: progress.json not written ({e})", file=sys.stderr)
    _wait_for_gate(tid, stopped)
    if fault == "exit1":
        print("failing on purpose", file=sys.stderr)
        return 1
    if fault == "kill9" or (fault == "kill9_first" and os.environ.get("CIFAR_HPO_ATTEMPT", "1") == "1"):
        os.kill(os.getpid(), signal.SIGKILL)  # a process: SIGKILL ends it; PID 1 of a container ignores its own
    if fault == "oom":  # over any test pod's memory limit: the runtime OOM-kills it
        hog = b"x" * (2 << 30)
        print(len(hog))
    if fault == "no_result":
        return 0
    if fault == "noisy":  # output without end: 20 MiB of it
        for _ in range(20):
            sys.stdout.write("x" * (2**20 - 1) + "\n")
        print("the last line")
    if stopped["flag"] and not store.exists("stop.json"):
        return 143  # as the trainer: a SIGTERM nobody asked for (eviction) leaves the trial to the Job's retry
    if not curve:  # as the trainer: stopped before its first epoch ended
        store.create("result.json", dumps({"schema_version": 1, "tid": tid, "status": "fail",
                                           "error": "no epoch finished (sigterm)", "finished_at": time.time()}))
        return 0
    status = "stopped" if stopped["flag"] else "ok"
    result = {"schema_version": 1, "tid": tid, "status": status, "objective": max(curve),
              "val_fine_accuracy": max(curve), "epochs_run": len(curve), "finished_at": time.time(),
              "history": {"objective": curve}}
    if fault == "nan":
        result["objective"] = float("nan")
        store.put("result.json", json.dumps(result).encode())  # NaN on purpose: not valid JSON
        return 0
    if fault == "inf":
        store.put("result.json", b'{"schema_version": 1, "tid": %d, "status": "ok", "objective": Infinity}' % tid)
        return 0
    if fault == "malformed":
        store.put("result.json", dumps(result)[:25])
        return 0
    if fault == "wrong_tid":
        result["tid"] = tid + 1000
    model_file = proposal.get("model_file") or "model.keras"  # as the trial library: the search's trial.modelFile
    patiently(f"writing {model_file}", lambda: store.put(model_file, b"stand-in model bytes for trial %d" % tid))
    result["model_file"] = model_file
    patiently("writing result.json", lambda: store.create("result.json", dumps(result)))
    print(f"trial {tid}: objective {result['objective']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
