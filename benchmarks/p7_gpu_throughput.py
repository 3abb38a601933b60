"""P7 (GPU): training images/s for the seed's best model, fp32 vs mixed precision × XLA off/on, with the
data resident on the GPU (train_on_batch on slices of a device tensor: no host pipeline in the way).
Run on a lent H100/H200:  python benchmarks/p7_gpu_throughput.py
--smoke runs a few steps of a tiny model on whatever device exists (CPU here) to prove the script."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import ROOT, machine  # noqa: E402

BEST = json.loads(sorted((ROOT.parent / "shared" / "seed-results").glob("*.json"))[-1].read_text())["space"]


def rate(mixed: bool, xla: bool, steps: int, width: float, device: str) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer.model import build_model

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    bs = int(BEST["batch_size"])
    rng = np.random.default_rng(0)
    with tf.device(device):
        x = tf.constant(rng.integers(0, 255, (bs * 8, 32, 32, 3), dtype=np.uint8))
        yf = tf.constant(rng.integers(0, 100, bs * 8))
        yc = tf.constant(rng.integers(0, 20, bs * 8))
        model = build_model(BEST, jit_compile=xla, width_scale=width)
        batches = [(x[i * bs:(i + 1) * bs], {"fine_outputs": yf[i * bs:(i + 1) * bs],
                                             "coarse_outputs": yc[i * bs:(i + 1) * bs]}) for i in range(8)]
        for i in range(5):  # trace/compile and warm up
            model.train_on_batch(*batches[i % 8])
        float(model.train_on_batch(*batches[0], return_dict=True)["loss"])  # sync
        t = time.perf_counter()
        for i in range(steps):
            logs = model.train_on_batch(*batches[i % 8], return_dict=True)
        float(logs["loss"])  # wait for the device
        return steps * bs / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.smoke:
        sys.exit("no GPU visible; run with --smoke to check the script on a CPU")
    device = "/GPU:0" if gpus else "/CPU:0"
    steps, width = (3, 0.1) if args.smoke else (args.steps, 1.0)
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"
    print(f"P7 training throughput, seed's best model (width ×{width}), batch {int(BEST['batch_size'])}, "
          f"data on {device} ({name}), TF {tf.__version__} — {machine()}")
    print(f"{'precision':<14} {'xla':<5} {'img/s':>10}")
    for mixed in (False, True):
        for xla in (False, True):
            r = rate(mixed, xla, steps, width, device)
            print(f"{'mixed_float16' if mixed else 'float32':<14} {str(xla):<5} {r:>10.0f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
