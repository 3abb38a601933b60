"""Data loaders on generated data written in the real CIFAR-100 python format."""

import io
import pickle
import tarfile

import numpy as np
import pytest

from controller.data import cifar
from controller.errors import ConfigError
from trainer import data


@pytest.mark.pure
def test_synthetic_shapes_and_consistent_coarse_labels():
    ds = data.synthetic(1000)
    assert ds.train.x.shape == (1000, 32, 32, 3) and ds.train.x.dtype == np.uint8
    assert len(ds.test) == 200
    np.testing.assert_array_equal(ds.train.coarse, ds.train.fine // 5)
    assert ds.train.fine.max() < 100 and ds.train.coarse.max() < 20


@pytest.mark.pure
def test_synthetic_classes_are_learnable_by_nearest_prototype():
    """The structure a CNN must find exists: class means classify held-out images far above chance."""
    ds = data.synthetic(5000)
    x = ds.train.x.reshape(len(ds.train), -1).astype(np.float32)
    means = np.stack([x[ds.train.fine == c].mean(0) for c in range(100)])
    xt = ds.test.x.reshape(len(ds.test), -1).astype(np.float32)
    pred = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == ds.test.fine).mean() > 0.2  # chance is 0.01


def _small():
    ds = data.synthetic(300, seed=4)
    return ds.train, ds.test


@pytest.mark.pure
def test_archive_round_trip_from_a_path(tmp_path):
    train, test = _small()
    path = tmp_path / "cifar-100-python.tar.gz"
    cifar.write_archive(path, train, test)
    ds = data.load(str(path))
    np.testing.assert_array_equal(ds.train.x, train.x)
    np.testing.assert_array_equal(ds.test.fine, test.fine)
    np.testing.assert_array_equal(ds.test.coarse, test.coarse)


@pytest.mark.e2e
def test_archive_from_s3(bucket, tmp_path):
    import boto3

    train, test = _small()
    path = tmp_path / "cifar-100-python.tar.gz"
    cifar.write_archive(path, train, test)
    boto3.client("s3").upload_file(str(path), bucket, "datasets/cifar-100-python.tar.gz")
    ds = data.load(f"s3://{bucket}/datasets/cifar-100-python.tar.gz")
    np.testing.assert_array_equal(ds.train.x, train.x)
    with pytest.raises(ConfigError, match="no such object"):
        data.load(f"s3://{bucket}/datasets/missing.tar.gz")


class _Evil:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.pure
def test_archive_with_code_in_its_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("train", "test"):
            payload = pickle.dumps({b"data": _Evil()})
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ConfigError, match=r"refusing to unpickle builtins\.eval"):
        data.load(str(path))


@pytest.mark.parametrize("spec, message", [
    ("imagenet", "not 'cifar100', 'synthetic"),
    ("synthetic:abc", "synthetic takes a number of images"),
    ("synthetic:10", "at least 100"),
])
@pytest.mark.pure
def test_bad_specs_say_what_is_accepted(spec, message):
    with pytest.raises(ConfigError, match=message):
        data.load(spec)


@pytest.mark.pure
def test_not_an_archive(tmp_path):
    p = tmp_path / "x.tar.gz"
    p.write_bytes(b"not a tar")
    with pytest.raises(ConfigError, match="not a readable tar archive"):
        data.load(str(p))


@pytest.mark.pure
def test_validation_split_is_seeded_and_disjoint():
    ds = data.synthetic(500)
    tr, va = data.validation_split(ds.train, 100, seed=3)
    tr2, va2 = data.validation_split(ds.train, 100, seed=3)
    assert len(tr) == 400 and len(va) == 100
    np.testing.assert_array_equal(va.x, va2.x)
    with pytest.raises(ConfigError, match="--val-size"):
        data.validation_split(ds.train, 500, seed=0)


@pytest.mark.pure
def test_keras_download_failure_names_the_alternatives(monkeypatch):
    from tensorflow import keras

    def fail(**_):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.cifar100, "load_data", fail)
    from controller.errors import TemporaryError

    with pytest.raises(TemporaryError, match="Keras download failed.*synthetic"):
        data.load("cifar100")
