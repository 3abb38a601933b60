"""Fit one point: tf.data pipeline, selection on a held-out validation split, test evaluated once.

The objective is the best epoch's validation fine accuracy (the seed selected on the test set, which
is optimistic); the test set is evaluated once, with the best epoch's weights, and reported apart.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from controller.data.cifar import Dataset, Split
from controller.trial.contract import ResultStatus
from trainer.data import validation_split

log = logging.getLogger(__name__)

# Keras' metric names → the seed project's series names, so old and new curves plot together.
SEED_NAMES = {
    "loss": "loss",
    "fine_outputs_loss": "fine_outputs_loss",
    "coarse_outputs_loss": "coarse_outputs_loss",
    "fine_outputs_accuracy": "fine_outputs_acc",
    "coarse_outputs_accuracy": "coarse_outputs_acc",
}


@dataclass(frozen=True)
class TrainSettings:
    """How one point is trained: epochs, validation split, patience, time limit, precision, XLA, seed."""
    epochs: int = 100
    """Maximum epochs."""
    val_size: int = 5000
    """Training images held out for selection (seeded split)."""
    patience: int = 0
    """Stop after this many epochs without a better validation fine accuracy; 0 = never (the original ran every
    epoch: replayed on its 42 curves, a patience of 10 cuts 38 and lowers the best of 34; RESULTS.md P5b)."""
    time_limit_s: float | None = None
    """Stop (status ok, best so far) once training has run this long."""
    mixed_precision: bool | None = None
    """float16 compute; None = on when a GPU is present."""
    xla: bool | None = None
    """XLA compilation (jit_compile); None = on when a GPU is present."""
    seed: int = 0
    """Seeds the split, the shuffle and the weights."""
    width_scale: float = 1.0
    """Scales every layer's width (tests use tiny models)."""


class Stopped(Exception):
    """Raised from a batch callback to leave fit() at once (SIGTERM)."""


@dataclass
class Outcome:
    """What a training run produced: status, why it stopped, history, best epoch and its metrics, the model, timings."""
    status: ResultStatus
    stop_reason: str
    history: dict[str, list[float | None]]
    best_epoch: int | None
    best_val: dict[str, float]
    test: dict[str, float] | None
    params_count: int
    train_seconds: float
    images_per_second: float | None
    model_bytes: bytes | None
    device: str
    precision: str
    xla: bool
    startup: dict[str, float]
    """Seconds before training proper: model_build_s, first_step_s (tracing / compilation and the first step)."""


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since import)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def gpu_present() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def make_dataset(split: Split, batch_size: int, shuffle: bool, seed: int) -> Any:
    """uint8 images stay uint8 until the model's first layer (4× less host→device traffic)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, {"fine_outputs": split.fine, "coarse_outputs": split.coarse}))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class _Watch(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Per-epoch history, best weights, progress reports, patience, time limit, SIGTERM."""

    def __init__(self, settings: TrainSettings, on_epoch: Callable[[dict[str, Any]], None], stop_event: threading.Event,
                 n_train: int, context: dict[str, Any] | None = None,
                 checkpoint: Callable[[int, bytes], None] | None = None):
        """context: what every progress report carries (the device and precision the trial trains with);
        checkpoint: called with the state after each epoch."""
        super().__init__()
        self.checkpoint = checkpoint
        self.context = context or {}
        self.settings = settings
        self.on_epoch = on_epoch
        self.stop_event = stop_event
        self.n_train = n_train
        self.history: dict[str, list[float | None]] = {}
        self.best_epoch: int | None = None
        self.best_val: dict[str, float] = {}
        self.best_weights: list[Any] | None = None
        self.since_best = 0
        self.started = time.monotonic()
        self.epoch_started = self.started
        self.stop_reason = "completed"
        self.rates: list[float] = []
        self.first_step_s: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.first_step_s is None:
            self.first_step_s = time.monotonic() - self.started
        if not self.rates and batch in (0, 1):
            # The second line lets a reader split the first step's time into setup and compute.
            log.info("%s training step done (%.1f s after the trainer started)", ("first", "second")[batch],
                     process_seconds())
        if self.stop_event.is_set():
            self.stop_reason = "sigterm"
            raise Stopped()
        limit = self.settings.time_limit_s
        if limit is not None and time.monotonic() - self.started > limit:
            self.stop_reason = "time_limit"
            raise Stopped()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        seconds = time.monotonic() - self.epoch_started
        self.rates.append(self.n_train / seconds if seconds > 0 else 0.0)
        for k, v in logs.items():
            name = SEED_NAMES.get(k[4:] if k.startswith("val_") else k)
            if name:
                self.history.setdefault(("val_" if k.startswith("val_") else "") + name, []).append(float(v))
        val_acc = float(logs.get("val_fine_outputs_accuracy", float("nan")))
        self.history.setdefault("objective", []).append(val_acc)  # the contract's series: what the controller reads
        if self.best_epoch is None or val_acc > self.best_val["fine_accuracy"]:
            self.best_epoch = epoch + 1
            self.best_val = {"fine_accuracy": val_acc,
                             "fine_loss": float(logs.get("val_fine_outputs_loss", float("nan"))),
                             "coarse_accuracy": float(logs.get("val_coarse_outputs_accuracy", float("nan"))),
                             "coarse_loss": float(logs.get("val_coarse_outputs_loss", float("nan")))}
            self.best_weights = self.model.get_weights()
            self.since_best = 0
        else:
            self.since_best += 1
        self.on_epoch({"epoch": epoch + 1, "history": self.history, "best_epoch": self.best_epoch,
                       "best_objective": self.best_val["fine_accuracy"], "images_per_second": self.rates[-1],
                       "epoch_seconds": seconds, **self.context})
        if self.checkpoint is not None:
            from trainer import checkpoint

            self.checkpoint(epoch + 1, checkpoint.dump(self.model, self, epoch + 1))
        if self.settings.patience and self.since_best >= self.settings.patience:
            self.stop_reason = "patience"
            self.model.stop_training = True


def _resumed(model: Any, watch: _Watch, state: bytes) -> int:
    """The epochs a checkpoint says are done, its state loaded; 0 (start over) for one that does not fit."""
    from trainer import checkpoint

    try:
        done = checkpoint.load(model, watch, state)
    except (ValueError, KeyError) as e:
        log.warning("the checkpoint does not fit this model (%s); starting from the first epoch", e)
        return 0
    log.info("resuming after epoch %d of %d", done, watch.settings.epochs)
    return done


def _device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    try:
        return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu"))
    except (ValueError, RuntimeError):
        return "gpu"


def _saved(model: Any) -> bytes:
    """The model as a .keras file's bytes (Keras saves to a path only)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def train(params: dict[str, Any], data: Dataset, settings: TrainSettings, on_epoch: Callable[[dict[str, Any]], None],
          stop_event: threading.Event, checkpoint: Callable[[int, bytes], None] | None = None,
          resume: bytes | None = None) -> Outcome:
    """Fits one point on the validation split, then tests its best epoch's weights once; checkpoint(epoch, state)
    after every epoch, and resume: such a state, to go on after its epoch."""
    from trainer.model import build_model, check_params

    arch = check_params(params)
    gpu = gpu_present()
    mixed = gpu if settings.mixed_precision is None else settings.mixed_precision
    xla = gpu if settings.xla is None else settings.xla
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(settings.seed)
    train_split, val_split = validation_split(data.train, settings.val_size, settings.seed)
    t_build = time.monotonic()
    model = build_model(params, jit_compile=xla, width_scale=settings.width_scale)
    build_seconds = time.monotonic() - t_build
    watch = _Watch(settings, on_epoch, stop_event, len(train_split),
                   {"device": _device(), "precision": "mixed_float16" if mixed else "float32", "xla": bool(xla)},
                   checkpoint)
    done = _resumed(model, watch, resume) if resume is not None else 0
    bs = arch.batch_size
    fit_data = make_dataset(train_split, bs, True, settings.seed)
    val_data = make_dataset(val_split, bs, False, settings.seed)
    verbose = "auto" if sys.stdout.isatty() else 0
    t0 = time.monotonic()
    try:
        model.fit(fit_data, validation_data=val_data, epochs=settings.epochs, initial_epoch=done, callbacks=[watch],
                  verbose=verbose, shuffle=False)  # shuffled by tf.data already
    except Stopped:
        log.info("training stopped (%s) after %d epoch(s)", watch.stop_reason, len(watch.rates))
    train_seconds = time.monotonic() - t0
    test, model_bytes = None, None
    if watch.best_weights is not None:
        model.set_weights(watch.best_weights)
        if watch.stop_reason != "sigterm":  # a stopped trial must exit within seconds
            ev = model.evaluate(make_dataset(data.test, bs, False, 0), return_dict=True, verbose=0)
            test = {"fine_accuracy": float(ev["fine_outputs_accuracy"]), "fine_loss": float(ev["fine_outputs_loss"]),
                    "coarse_accuracy": float(ev["coarse_outputs_accuracy"]),
                    "coarse_loss": float(ev["coarse_outputs_loss"])}
        model_bytes = _saved(model)
    status = ResultStatus.STOPPED if watch.stop_reason == "sigterm" else ResultStatus.OK
    if watch.best_epoch is None:
        status = ResultStatus.FAIL
    # Steady-state speed: the first epoch includes tracing/compilation.
    rates = watch.rates[1:] or watch.rates
    return Outcome(status, watch.stop_reason, watch.history, watch.best_epoch, watch.best_val, test,
                   int(model.count_params()), train_seconds, float(np.median(rates)) if rates else None, model_bytes,
                   _device(), "mixed_float16" if mixed else "float32", bool(xla),
                   {"model_build_s": round(build_seconds, 3), "first_step_s": round(watch.first_step_s or 0.0, 3)})
