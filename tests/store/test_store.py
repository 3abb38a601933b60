"""The store contract (tests/support/store_contract.py) on every backend: memory, a directory, S3 over HTTP on moto's
server and on versitygw's, and a trial's grant store (presigned URLs) on both S3 servers."""

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
