"""python -m trainer --trial <trial URI> [--data SPEC] [--epochs E] [...]

Exit codes: 0 the trial ended (ok, stopped or a recorded failure); 3 bad parameters or data spec (do
not retry: the same input fails again); 1 anything else (worth a retry: a download, the store); 143 a
SIGTERM the controller did not ask for (node drain, eviction): no result, so that the Job retries the pod.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import threading
import time

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.store import get_json, open_store

EXIT_BAD_INPUT = 3
EXIT_INTERRUPTED = 143
log = logging.getLogger("trainer")


def _parser() -> argparse.ArgumentParser:
    from trainer.train import TrainSettings

    d = TrainSettings()
    p = argparse.ArgumentParser(prog="python -m trainer", description="train one trial's point")
    p.add_argument("--trial", required=True, help="the trial's folder: s3://bucket/.../trials/<tid> or a path")
    p.add_argument("--data", default="cifar100", help="cifar100 | PATH or s3://.../cifar-100-python.tar.gz | synthetic[:N]")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--val-size", type=int, default=None, help=f"held-out training images (default {d.val_size}, "
                   "capped at a fifth of the training set)")
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without improvement before stopping; 0 = off")
    p.add_argument("--time-limit", type=float, default=None, help="seconds of training before stopping")
    p.add_argument("--no-mixed-precision", action="store_true", help="float32 even on a GPU")
    p.add_argument("--no-xla", action="store_true", help="no jit_compile even on a GPU")
    p.add_argument("--width-scale", type=float, default=1.0, help="multiply every layer's width (quick tests, smoke runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    stop = threading.Event()
    from trainer.train import install_sigterm

    install_sigterm(stop)
    store = open_store(args.trial)
    proposal = get_json(store, "proposal.json")
    if proposal is None:
        log.error("%s: no proposal.json; is --trial the trial's folder?", store.uri)
        return EXIT_BAD_INPUT
    tid = proposal.get("tid")
    from trainer.report import Reporter

    reporter = Reporter(store, tid)
    try:
        return _run(args, proposal, reporter, stop)
    except (ConfigError, PermanentError) as e:
        log.error("trial %s: %s", tid, e)
        reporter.result({"status": "fail", "error": str(e), "params": proposal.get("params")})
        return EXIT_BAD_INPUT
    except TemporaryError as e:
        log.error("trial %s: %s (exit 1: a retry may succeed)", tid, e)
        return 1


def _run(args: argparse.Namespace, proposal: dict, reporter, stop: threading.Event) -> int:
    import tensorflow as tf

    from trainer.train import process_seconds

    imports_s = process_seconds()  # the interpreter's start and every import, TensorFlow's above all

    from trainer import data as data_mod
    from trainer.model import check_params
    from trainer.train import TrainSettings, train

    tid = proposal["tid"]
    params = proposal["params"]
    check_params(params)  # before any data is loaded: a bad point fails in a second
    t0 = time.monotonic()
    dataset = data_mod.load(args.data)
    data_s = time.monotonic() - t0
    val_size = args.val_size or min(5000, len(dataset.train) // 5)
    settings = TrainSettings(epochs=args.epochs, val_size=val_size, patience=args.patience,
                             time_limit_s=args.time_limit, mixed_precision=False if args.no_mixed_precision else None,
                             xla=False if args.no_xla else None, seed=int(proposal.get("seed") or 0),
                             width_scale=args.width_scale)
    log.info("trial %d: data %s (%d train, %d val, %d test) loaded in %.1f s", tid, dataset.source,
             len(dataset.train) - val_size, val_size, len(dataset.test), time.monotonic() - t0)

    def on_epoch(snap: dict) -> None:
        h = snap["history"]
        log.info("trial %d: epoch %d/%d val_fine_acc %.4f (best %.4f @ %d) loss %.4f %.0f img/s", tid, snap["epoch"],
                 settings.epochs, h.get("val_fine_outputs_acc", [float("nan")])[-1], snap["best_val_fine_accuracy"],
                 snap["best_epoch"], h.get("loss", [float("nan")])[-1], snap["images_per_second"])
        reporter.progress(snap)

    out = train(params, dataset, settings, on_epoch, stop)
    if out.stop_reason == "sigterm" and not reporter.store.exists("stop.json"):
        log.warning("trial %d: SIGTERM without a stop request from the controller (node drain, eviction): exiting "
                    "without a result so that the Job runs the trial again", tid)
        return EXIT_INTERRUPTED
    if out.model_bytes is not None:
        reporter.model(out.model_bytes)
    test = out.test or {}
    record = {
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
        "epochs_run": len(out.history.get("loss", [])),
        "history": out.history,
        "params": params,
        "params_count": out.params_count,
        "train_seconds": out.train_seconds,
        "images_per_second": out.images_per_second,
        "data": dataset.source,
        "device": out.device,
        "precision": out.precision,
        "xla": out.xla,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__},
        # Where a trial's start-up goes, before its training proper (status and the report show the totals).
        "startup": {"interpreter_and_imports_s": round(imports_s, 3), "data_read_s": round(data_s, 3), **out.startup},
    }
    if out.status == "fail":
        record["error"] = f"no epoch finished ({out.stop_reason})"
    reporter.result(record)
    log.info("trial %d: %s, objective %s, test fine accuracy %s", tid, out.status, record["objective"],
             record["test_fine_accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
