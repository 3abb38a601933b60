"""python -m trainer --trial <trial URI> [--data SPEC] [--epochs E] [...]

The trial library's program (controller.trial): start(), progress() each epoch, finish() or fail(). Exit codes, the
contract's: 0 the trial ended (ok or stopped); 3 a 'fail' result, bad parameters or data spec, or no epoch finished
(do not retry: the same input fails again); 1 anything else (worth a retry: a download, the store); 143 a SIGTERM the
controller did not ask for (node drain, eviction): no result, so that the Job runs the trial again.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from controller import trial
from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.trial.contract import DEADLINE_ENV, DEADLINE_MARGIN_S, EXIT_BAD_INPUT, EXIT_RETRY, ResultStatus

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
    """Trains the trial named by --trial and returns the contract's exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        t = trial.start(["--trial", args.trial])  # the proposal read and checked; SIGTERM ends the current step
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_BAD_INPUT
    except TemporaryError as e:
        log.error("%s (exit 1: a retry may succeed)", e)
        return EXIT_RETRY
    # Who runs it, where: on a cluster the first thing to check when a file cannot be written or a device is unseen.
    log.info("trial %d: uid %d gid %d, host %s, NVIDIA_VISIBLE_DEVICES=%s", t.tid, os.getuid(), os.getgid(),
             socket.gethostname(), os.environ.get("NVIDIA_VISIBLE_DEVICES", "(unset)"))
    try:
        return _run(args, t)
    except (ConfigError, PermanentError) as e:
        return t.fail(str(e))
    except TemporaryError as e:
        return t.fail(str(e), retry=True)


def _run(args: argparse.Namespace, t: trial.Trial) -> int:
    from trainer.train import process_seconds

    imports_s = process_seconds()  # the interpreter's start and every import, TensorFlow's above all

    from trainer import data as data_mod
    from trainer import devices
    from trainer.model import check_params
    from trainer.train import train

    check_params(t.params)  # before any data is loaded: a bad point fails in a second
    devices.prepare(devices.expected_gpus())  # and so does a GPU requested but not seen
    t0 = time.monotonic()
    dataset = data_mod.load(args.data, store_opener=t.data_opener, sha256=args.data_sha256)
    data_s = time.monotonic() - t0
    settings = _train_settings(args, t.seed, len(dataset.train))
    log.info("trial %d: data %s (%d train, %d val, %d test) loaded in %.1f s", t.tid, dataset.source,
             len(dataset.train) - settings.val_size, settings.val_size, len(dataset.test), data_s)

    def on_epoch(snap: dict[str, Any]) -> None:
        _log_epoch(t.tid, settings.epochs, snap)
        t.progress(snap)

    restored = t.restore()  # attempt 2 on: the state after the last epoch it committed
    out = train(t.params, dataset, settings, on_epoch, t.interrupted, checkpoint=t.checkpoint,
                resume=restored.state if restored is not None else None)
    if out.status == ResultStatus.FAIL and not t.sigterm:
        return t.fail(f"no epoch finished ({out.stop_reason})")
    fields = _result_fields(out, dataset.source,
                            {"interpreter_and_imports_s": round(imports_s, 3), "data_read_s": round(data_s, 3)})
    code = t.finish(out.best_val.get("fine_accuracy"), model=out.model_bytes, **fields)
    log.info("trial %d: %s, objective %s, test fine accuracy %s (exit %d)", t.tid, out.status,
             out.best_val.get("fine_accuracy"), fields.get("test_fine_accuracy"), code)
    return code


def _train_settings(args: argparse.Namespace, seed: int, n_train: int) -> TrainSettings:
    from trainer.train import TrainSettings

    return TrainSettings(epochs=args.epochs, val_size=args.val_size or min(5000, n_train // 5),
                         patience=args.patience, time_limit_s=time_limit(args.time_limit),
                         mixed_precision=False if args.no_mixed_precision else None,
                         xla=False if args.no_xla else None, seed=seed,
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
             epochs, h.get("objective", [float("nan")])[-1], snap["best_objective"], snap["best_epoch"],
             h.get("loss", [float("nan")])[-1], snap["images_per_second"])


def _result_fields(out: Outcome, data_source: str, startup: dict[str, float]) -> dict[str, Any]:
    """What result.json holds beyond the contract's own fields (status, objective, history, epochs_run and params
    come from the trial library's finish())."""
    import tensorflow as tf

    test = out.test or {}
    return {
        "stop_reason": out.stop_reason,
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


if __name__ == "__main__":
    sys.exit(main())
