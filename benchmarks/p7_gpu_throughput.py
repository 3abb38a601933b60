"""P7 (GPU): training images/s for the seed's best model, by precision × XLA off/on, with the data resident
on the accelerator (train_on_batch on slices of device arrays: no host pipeline in the way).

Run on a lent H100/H200:  python benchmarks/p7_gpu_throughput.py
The model is trainer.model.build_model, plain Keras 3, so it runs under the backend KERAS_BACKEND names:
tensorflow is the trainer image's; jax serves where TensorFlow cannot be installed (the lent machines carry
JAX with CUDA but no TensorFlow, and its wheels are far over what can be carried there).
--smoke runs a few steps of a tiny model on whatever device exists (CPU here) to prove the script."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import ROOT, machine

SEED_RESULTS = ROOT / "examples" / "seed-results"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class Backend:
    """Where the arrays live and what the device is called, for the backend Keras was loaded with."""

    def __init__(self, smoke: bool):
        import keras

        self.name = keras.backend.backend()
        if self.name == "jax":
            import jax

            self.jax = jax
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            self.device = gpus[0] if gpus else jax.devices("cpu")[0]
            self.label = f"{self.device.device_kind} via JAX {jax.__version__}"
        else:
            import tensorflow as tf

            self.tf = tf
            gpus = tf.config.list_physical_devices("GPU")
            self.device = "/GPU:0" if gpus else "/CPU:0"
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"
            self.label = f"{name} via TensorFlow {tf.__version__}"
        self.gpu = bool(gpus)
        if not self.gpu and not smoke:
            sys.exit("no GPU visible; run with --smoke to check the script on a CPU")

    def put(self, array):
        if self.name == "jax":
            return self.jax.device_put(array, self.device)
        with self.tf.device(self.device):
            return self.tf.constant(array)


def rate(backend: Backend, params: dict, precision: str, xla: bool, steps: int, width: float) -> float:
    import keras
    import numpy as np

    from trainer.model import build_model

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    bs = int(params["batch_size"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (bs * 8, 32, 32, 3), dtype=np.uint8)
    yf, yc = rng.integers(0, 100, bs * 8), rng.integers(0, 20, bs * 8)
    batches = [(backend.put(x[i * bs:(i + 1) * bs]),
                {"fine_outputs": backend.put(yf[i * bs:(i + 1) * bs]),
                 "coarse_outputs": backend.put(yc[i * bs:(i + 1) * bs])}) for i in range(8)]
    if backend.name == "tensorflow":
        with backend.tf.device(backend.device):
            model = build_model(params, jit_compile=xla, width_scale=width)
    else:
        model = build_model(params, jit_compile=xla, width_scale=width)
    for i in range(5):  # trace/compile and warm up
        model.train_on_batch(*batches[i % 8])
    float(model.train_on_batch(*batches[0], return_dict=True)["loss"])  # wait for the device
    t = time.perf_counter()
    for i in range(steps):
        logs = model.train_on_batch(*batches[i % 8], return_dict=True)
    float(logs["loss"])
    return steps * bs / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="timed steps with XLA on (a fifth of them with it off)")
    ap.add_argument("--params", type=Path, help="a seed result JSON (default: the best of examples/seed-results)")
    ap.add_argument("--xla", choices=("both", "on", "off"), default="both")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    sources = [args.params] if args.params else list(SEED_RESULTS.glob("*.json"))
    source = max(sources, key=lambda p: json.loads(p.read_text())["fine_best_accuracy"])
    params = json.loads(source.read_text())["space"]
    backend = Backend(args.smoke)
    steps, width = (3, 0.1) if args.smoke else (args.steps, 1.0)
    print(f"P7 training throughput, {source.name} (width ×{width}), batch {int(params['batch_size'])}, "
          f"data resident on {'GPU' if backend.gpu else 'CPU'} ({backend.label}) — {machine()}")
    print(f"{'precision':<15} {'xla':<5} {'img/s':>10}")
    # XLA on first: under JAX, off means op-by-op dispatch, by far the slowest, and a run cut short keeps the rest.
    for xla in {"both": (True, False), "on": (True,), "off": (False,)}[args.xla]:
        for precision in PRECISIONS:
            r = rate(backend, params, precision, xla, steps if xla else max(1, steps // 5), width)
            print(f"{precision:<15} {str(xla):<5} {r:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
