"""The repository stands alone: a fresh clone has everything its tests, benchmarks and README use."""

import subprocess

import pytest
from support.paths import ROOT, SEED_RESULTS

pytestmark = pytest.mark.pure


def test_nothing_in_the_repository_reads_outside_it():
    """No path to the development machine's shared folder beside the checkout: a clone does not have it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    needle = "../" + "shared"  # split so that this file does not match itself
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".json", ".png", ".keras", ".sum") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if needle in line or "parent / \"shared\"" in line:
                hits.append(f"{name}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_the_original_results_and_their_licence_are_in_the_repository():
    assert len(list(SEED_RESULTS.glob("*.txt.json"))) == 42
    licence = (SEED_RESULTS / "LICENSE").read_text()
    assert "MIT License" in licence and "Copyright (c) 2017 Vooban Inc." in licence


def test_the_trainer_image_installs_the_gpu_stack_tensorflow_declares():
    """Dockerfile.trainer's default is TensorFlow's own `and-cuda` extra at the version the project pins, so pip
    installs exactly the CUDA/cuDNN wheels TensorFlow's metadata asks for (cuDNN 9.3 or later for 2.21); Keras is
    pinned alike in the image and the package. (Building the GPU image itself needs ~3 GB of CUDA wheels: the tests
    build the same file with the CPU wheel.)"""
    import importlib.metadata
    import re

    docker = (ROOT / "Dockerfile.trainer").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    tf_version = importlib.metadata.version("tensorflow-cpu")
    assert f'ARG TF_PACKAGE="tensorflow[and-cuda]=={tf_version}"' in docker
    assert f'"tensorflow-cpu=={tf_version}; platform_machine' in pyproject
    keras_pin = re.search(r'"keras==([\d.]+)"', pyproject).group(1)
    assert f'"keras=={keras_pin}"' in docker and importlib.metadata.version("keras") == keras_pin
    extra = {r.split(";")[0].strip() for r in importlib.metadata.requires("tensorflow-cpu") or []
             if 'extra == "and-cuda"' in r}
    cudnn = next(r for r in extra if r.startswith("nvidia-cudnn-cu12"))
    floor = re.search(r">=([\d.]+)", cudnn).group(1)
    assert tuple(int(p) for p in floor.split(".")[:2]) >= (9, 3), cudnn
    assert {"nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12"} <= {
        re.split(r"[<>=!~ ]", r, maxsplit=1)[0] for r in extra}
