"""python -m trainer --trial <trial URI> [--data SPEC] [--epochs E] [...]

Exit codes: 0 the trial ended (ok, stopped or a recorded failure); 3 bad parameters or data spec (do
not retry: the same input fails again); 1 anything else (worth a retry: a download, the store); 143 a
SIGTERM the controller did not ask for (node drain, eviction): no result, so that the Job retries the pod.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.store.base import TrialStore, get_json
from controller.trial import open_trial, patiently
from controller.trial.contract import (
    DEADLINE_ENV,
    DEADLINE_MARGIN_S,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    LOSS,
    VAL_FINE_ACC,
    ResultDoc,
    ResultStatus,
)
from trainer.report import Reporter

if TYPE_CHECKING:
    from trainer.train import Outcome, TrainSettings

log = logging.getLogger("trainer")


def _parser() -> argparse.ArgumentParser:
    from trainer.train import TrainSettings

    d = TrainSettings()
    p = argparse.ArgumentParser(prog="python -m trainer", description="train one trial's point")
    p.add_argument("--trial", required=True, help="the trial's folder: s3://bucket/.../trials/<tid> or a path")
    p.add_argument("--data", default="cifar100",
                   help="cifar100 | PATH or s3://.../cifar-100-python.tar.gz | synthetic[:N]")
    p.add_argument("--data-sha256", default=None, help="SHA-256 the data's bytes must have (the controller passes the "
                   "staged arrays'); a copy that differs is not loaded")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--val-size", type=int, default=None, help=f"held-out training images (default {d.val_size}, "
                   "capped at a fifth of the training set)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="epochs without improvement before stopping; 0 = off")
    p.add_argument("--time-limit", type=float, default=None, help="seconds of training before stopping")
    p.add_argument("--no-mixed-precision", action="store_true", help="float32 even on a GPU")
    p.add_argument("--no-xla", action="store_true", help="no jit_compile even on a GPU")
    p.add_argument("--width-scale", type=float, default=1.0,
                   help="multiply every layer's width (quick tests, smoke runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    stop = threading.Event()
    from trainer.train import install_sigterm

    install_sigterm(stop)
    store, data_opener = open_trial(args.trial)
    proposal = patiently("reading proposal.json", lambda: get_json(store, "proposal.json"))
    if proposal is None:
        log.error("%s: no proposal.json; is --trial the trial's folder?", store.uri)
        return EXIT_BAD_INPUT
    tid = proposal.get("tid")
    # Who runs it, where: on a cluster the first thing to check when a file cannot be written or a device is unseen.
    log.info("trial %s: uid %d gid %d, host %s, NVIDIA_VISIBLE_DEVICES=%s", tid, os.getuid(), os.getgid(),
             socket.gethostname(), os.environ.get("NVIDIA_VISIBLE_DEVICES", "(unset)"))
    reporter = Reporter(store, tid, proposal)
    try:
        return _run(args, proposal, reporter, stop, data_opener)
    except (ConfigError, PermanentError) as e:
        log.error("trial %s: %s", tid, e)
        reporter.result({"status": ResultStatus.FAIL, "error": str(e), "params": proposal.get("params")})
        return EXIT_BAD_INPUT
    except TemporaryError as e:
        log.error("trial %s: %s (exit 1: a retry may succeed)", tid, e)
        return 1


def _run(args: argparse.Namespace, proposal: dict[str, Any], reporter: Reporter, stop: threading.Event,
         data_opener: Callable[[str], TrialStore] | None) -> int:
    from trainer.train import process_seconds

    imports_s = process_seconds()  # the interpreter's start and every import, TensorFlow's above all

    from trainer import data as data_mod
    from trainer import devices
    from trainer.model import check_params
    from trainer.train import train

    tid = proposal["tid"]
    check_params(proposal["params"])  # before any data is loaded: a bad point fails in a second
    devices.prepare(devices.expected_gpus())  # and so does a GPU requested but not seen
    t0 = time.monotonic()
    dataset = data_mod.load(args.data, store_opener=data_opener, sha256=args.data_sha256)
    data_s = time.monotonic() - t0
    settings = _train_settings(args, proposal, len(dataset.train))
    log.info("trial %d: data %s (%d train, %d val, %d test) loaded in %.1f s", tid, dataset.source,
             len(dataset.train) - settings.val_size, settings.val_size, len(dataset.test), data_s)

    def on_epoch(snap: dict[str, Any]) -> None:
        _log_epoch(tid, settings.epochs, snap)
        reporter.progress(snap)

    out = train(proposal["params"], dataset, settings, on_epoch, stop)
    if out.stop_reason == "sigterm" and not reporter.store.exists("stop.json"):
        log.warning("trial %d: SIGTERM without a stop request from the controller (node drain, eviction): exiting "
                    "without a result so that the Job runs the trial again", tid)
        return EXIT_INTERRUPTED
    if out.model_bytes is not None:
        reporter.model(out.model_bytes)
    record = _result(out, proposal["params"], dataset.source,
                     {"interpreter_and_imports_s": round(imports_s, 3), "data_read_s": round(data_s, 3)})
    reporter.result(record)
    log.info("trial %d: %s, objective %s, test fine accuracy %s", tid, out.status, record.get("objective"),
             record.get("test_fine_accuracy"))
    return 0


def _train_settings(args: argparse.Namespace, proposal: dict[str, Any], n_train: int) -> TrainSettings:
    from trainer.train import TrainSettings

    return TrainSettings(epochs=args.epochs, val_size=args.val_size or min(5000, n_train // 5),
                         patience=args.patience, time_limit_s=time_limit(args.time_limit),
                         mixed_precision=False if args.no_mixed_precision else None,
                         xla=False if args.no_xla else None, seed=int(proposal.get("seed") or 0),
                         width_scale=args.width_scale)


def time_limit(asked: float | None, now: float | None = None) -> float | None:
    """--time-limit, shortened to end DEADLINE_MARGIN_S before the Job's deadline when the controller gave one."""
    deadline = os.environ.get(DEADLINE_ENV)
    if not deadline:
        return asked
    try:
        left = float(deadline) - (time.time() if now is None else now) - DEADLINE_MARGIN_S
    except ValueError as e:
        raise ConfigError(f"{DEADLINE_ENV}={deadline!r}: expected seconds since the epoch") from e
    return max(0.0, left if asked is None else min(asked, left))


def _log_epoch(tid: int, epochs: int, snap: dict[str, Any]) -> None:
    h = snap["history"]
    log.info("trial %d: epoch %d/%d val_fine_acc %.4f (best %.4f @ %d) loss %.4f %.0f img/s", tid, snap["epoch"],
             epochs, h.get(VAL_FINE_ACC, [float("nan")])[-1], snap["best_val_fine_accuracy"], snap["best_epoch"],
             h.get(LOSS, [float("nan")])[-1], snap["images_per_second"])


def _result(out: Outcome, params: dict[str, Any], data_source: str, startup: dict[str, float]) -> ResultDoc:
    """result.json of a finished training (the trial library adds tid, finished_at and the schema version)."""
    import tensorflow as tf

    test = out.test or {}
    record: ResultDoc = {
        "status": out.status,
        "stop_reason": out.stop_reason,
        "objective": out.best_val.get("fine_accuracy"),
        "objective_name": "val_fine_accuracy (best epoch)",
        "val_fine_accuracy": out.best_val.get("fine_accuracy"),
        "val_fine_loss": out.best_val.get("fine_loss"),
        "val_coarse_accuracy": out.best_val.get("coarse_accuracy"),
        "val_coarse_loss": out.best_val.get("coarse_loss"),
        "test_fine_accuracy": test.get("fine_accuracy"),
        "test_fine_loss": test.get("fine_loss"),
        "test_coarse_accuracy": test.get("coarse_accuracy"),
        "test_coarse_loss": test.get("coarse_loss"),
        "best_epoch": out.best_epoch,
        "epochs_run": len(out.history.get(LOSS, [])),
        "history": dict(out.history),
        "params": params,
        "params_count": out.params_count,
        "train_seconds": out.train_seconds,
        "images_per_second": out.images_per_second,
        "data": data_source,
        "device": out.device,
        "precision": out.precision,
        "xla": out.xla,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__},
        # Where a trial's start-up goes, before its training proper (status and the report show the totals).
        "startup": {**startup, **out.startup},
    }
    if out.status == ResultStatus.FAIL:
        record["error"] = f"no epoch finished ({out.stop_reason})"
    return record


if __name__ == "__main__":
    sys.exit(main())
