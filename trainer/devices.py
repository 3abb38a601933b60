"""Which accelerator a trial trains on, settled before any data is read.

A trial whose Job requested GPUs (the controller says how many in CIFAR_HPO_EXPECT_GPUS) and in which TensorFlow sees
fewer fails at once with what it saw, instead of training on the CPU into its deadline: a driver the container
cannot reach, CUDA libraries the image lacks, a runtime that did not pass the device in. GPU memory grows as needed
rather than being taken whole at start.
"""

from __future__ import annotations

import glob
import logging
import os

from controller.errors import ConfigError
from controller.trial.contract import EXPECT_GPUS_ENV

log = logging.getLogger(__name__)


def expected_gpus() -> int:
    """The GPUs the trial's Job requested (the controller passes them), 0 when none were."""
    raw = os.environ.get(EXPECT_GPUS_ENV, "0") or "0"
    try:
        return max(0, int(raw))
    except ValueError as e:
        raise ConfigError(f"{EXPECT_GPUS_ENV}={raw!r}: expected a number of GPUs") from e


def prepare(expected: int) -> int:
    """Memory growth on every visible GPU; the number TensorFlow sees, or ConfigError if fewer than expected."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (ValueError, RuntimeError) as e:  # already initialised: growth is a preference, not a need
            log.warning("GPU %s: memory growth not set (%s)", gpu.name, e)
    if len(gpus) < expected:
        build = tf.sysconfig.get_build_info()
        raise ConfigError(
            f"this trial requested {expected} GPU(s) and TensorFlow sees {len(gpus)}: "
            f"NVIDIA_VISIBLE_DEVICES={os.environ.get('NVIDIA_VISIBLE_DEVICES', '(unset)')}, "
            f"device files {sorted(glob.glob('/dev/nvidia*')) or 'none'}, TensorFlow {tf.__version__} "
            f"(built with CUDA: {tf.test.is_built_with_cuda()}, CUDA {build.get('cuda_version', 'none')}, "
            f"cuDNN {build.get('cudnn_version', 'none')}). Check the node's NVIDIA driver and device plugin and "
            "the trainer image's CUDA libraries (docs/cluster.md: the trainer image's GPU stack), or run on the CPU "
            "with trainer.gpu.count=0")
    log.info("GPUs: %d visible, %d requested", len(gpus), expected)
    return len(gpus)
