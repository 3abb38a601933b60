"""The store contract (tests/support/store_contract.py) on every backend: memory, a directory, S3 over HTTP on moto's
server and on versitygw's, and a trial's grant store (presigned URLs) on both S3 servers."""

import os
import uuid

import pytest
from support.store_contract import KEYS, StoreContract, TrialStoreContract

from controller.errors import ConfigError
from controller.store.grant import GrantStore
from controller.store.local import LocalStore, MemoryStore
from controller.store.s3 import S3Store
from controller.store.uri import open_store

pytestmark = pytest.mark.contract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return MemoryStore("memory://some/prefix")


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return open_store(str(tmp_path / "store"))


class TestS3StoreOnMoto(StoreContract):
    @pytest.fixture
    def store(self, bucket):
        return open_store(f"s3://{bucket}/some/prefix")


class TestS3StoreOnVersitygw(StoreContract):
    """versitygw checks every signature, as AWS does."""

    @pytest.fixture
    def store(self, versitygw):
        return S3Store(versitygw.bucket(), "some/prefix", client=versitygw.client())


# The store contract on an S3 server of your own (AWS, MinIO, SeaweedFS, Ceph ...): set CIFAR_HPO_TEST_S3_URI to a
# bucket and prefix it may write under, and, as needed, CIFAR_HPO_TEST_S3_ENDPOINT, _REGION, _CA_BUNDLE,
# _ADDRESSING (path|virtual), _CHECKSUMS (when_required), _ACCESS_KEY_ID and _SECRET_ACCESS_KEY (the suite's own
# AWS_* variables are moto's). docs/development.md says how.
EXTERNAL = {k[len("CIFAR_HPO_TEST_S3_"):].lower(): v for k, v in os.environ.items()
            if k.startswith("CIFAR_HPO_TEST_S3_")}


def external_s3(monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """A fresh prefix under CIFAR_HPO_TEST_S3_URI, reached with that server's settings and keys."""
    for name in ("access_key_id", "secret_access_key"):
        if name in EXTERNAL:
            monkeypatch.setenv(f"AWS_{name.upper()}", EXTERNAL[name])
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    store = open_store(f"{EXTERNAL['uri'].rstrip('/')}/contract-{uuid.uuid4().hex[:8]}",
                       endpoint_url=EXTERNAL.get("endpoint"), region=EXTERNAL.get("region"),
                       ca_bundle=EXTERNAL.get("ca_bundle"), addressing_style=EXTERNAL.get("addressing", "auto"),
                       checksums=EXTERNAL.get("checksums", "when_supported"))
    assert isinstance(store, S3Store), "CIFAR_HPO_TEST_S3_URI must be an s3:// URI"
    return store


if "uri" in EXTERNAL:  # collected only then: a run without a server of your own skips nothing it claims to run

    class TestS3StoreOnYourServer(StoreContract):
        @pytest.fixture
        def store(self, monkeypatch):
            return external_s3(monkeypatch)

    class TestGrantStoreOnYourServer(TrialStoreContract):
        @pytest.fixture
        def store(self, monkeypatch):
            return _grant_store(external_s3(monkeypatch))


def _grant_store(s3: S3Store) -> GrantStore:
    """A trial's store as its grant makes it: one presigned URL per key and method, nothing else."""
    urls = {key: {m: s3.presign(m, key, 600) for m in ("GET", "HEAD", "PUT", "CREATE")} for key in KEYS}
    return GrantStore(s3.uri, urls)


class TestGrantStoreOnMoto(TrialStoreContract):
    @pytest.fixture
    def store(self, bucket):
        return _grant_store(S3Store(bucket, "some/prefix"))


class TestGrantStoreOnVersitygw(TrialStoreContract):
    """The URLs' signatures checked: a CREATE's If-None-Match is part of what was signed."""

    @pytest.fixture
    def store(self, versitygw):
        return _grant_store(S3Store(versitygw.bucket(), "some/prefix", client=versitygw.client()))


def test_missing_bucket_is_a_clear_config_error(s3_endpoint):
    with pytest.raises(ConfigError, match=r"bucket 'no-such-bucket-here' does not exist"):
        open_store("s3://no-such-bucket-here/x").check()


def test_a_file_in_the_way_is_a_clear_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create or write this directory"):
        LocalStore(tmp_path / "file" / "store").check()


def test_uri_selection(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    with pytest.raises(ConfigError, match="unsupported scheme 'gs'"):
        open_store("gs://b/x")
    with pytest.raises(ConfigError, match="needs a bucket"):
        open_store("s3:///x")



@pytest.mark.parametrize("uri", ["s3://b//searches", "s3://b/searches//x", "s3://b/./searches", "s3://b/a/../b"])
def test_a_store_uri_with_an_empty_dot_or_dotdot_segment_is_refused_naming_it(uri):
    """Third audit: on a server that collapses '//' in keys, a store URI with one made the controller blind
    (`status`: no search found; a resume exited 3). Refused, whatever the server."""
    with pytest.raises(ConfigError, match=r"in the prefix; servers differ on such keys"):
        open_store(uri)


def test_a_plain_store_uri_and_a_trailing_slash_are_accepted():
    assert open_store("s3://b/searches/").uri == open_store("s3://b/searches").uri == "s3://b/searches"
    assert open_store("s3://b").uri == "s3://b"
