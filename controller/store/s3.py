"""S3 (AWS, MinIO, any S3-compatible server) behind the Store interface of controller/store/base.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from controller.errors import ConfigError, PermanentError, TemporaryError
from controller.store.base import CHUNK

log = logging.getLogger(__name__)


class S3Store:
    """endpoint_url: None uses boto3's own resolution, which honours AWS_ENDPOINT_URL_S3 and
    AWS_ENDPOINT_URL. Retries (with backoff, on throttling and 5xx) are botocore's 'standard' mode."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 max_attempts: int = 8, timeout_s: float = 20.0, addressing_style: str = "auto",
                 checksums: str = "when_supported", ca_bundle: str | None = None, client: Any = None):
        """addressing_style: auto, path or virtual (bucket in the host name); checksums: when_supported (boto3's
        default since 1.36: CRC32 on every upload) or when_required (for stores that refuse those); ca_bundle: a PEM
        file for a store whose certificate a private CA signed."""
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                max_pool_connections=32,
                signature_version="s3v4",  # presigned URLs too (boto3 presigns with SigV2 otherwise)
                s3={"addressing_style": addressing_style},
            )
            if checksums == "when_required":
                config = config.merge(Config(request_checksum_calculation="when_required",
                                             response_checksum_validation="when_required"))
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config,
                                                    verify=ca_bundle)
        self.client = client

    def _error(self, e: Exception, what: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NotImplemented" or status == 501:
                # A feature this store lacks (conditional writes, a checksum mode): no retry will bring it.
                return ConfigError(f"{what} in {self.uri}: the store does not implement this request ({code}, HTTP "
                                   f"{status}); see docs/cluster.md, 'Stores', for what a store must support")
            if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "AllAccessDisabled"):
                return ConfigError(f"{what} in {self.uri}: {code}; check the bucket name and credentials")
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling"):
                return TemporaryError(f"{what} in {self.uri}: {code} (HTTP {status})")
            return PermanentError(f"{what} in {self.uri}: {code} (HTTP {status})")
        return TemporaryError(f"{what} in {self.uri}: {e}")

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            extra = {} if limit is None else {"Range": f"bytes=0-{limit}"}
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **extra)["Body"]
            data: bytes = body.read() if limit is None else body.read(limit + 1)
            return data
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            if code == "InvalidRange" and limit is not None:
                return b""  # a range of an empty object
            raise self._error(e, f"get {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"get {key}") from e

    def stream(self, key: str) -> tuple[int, Iterator[bytes]] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(e, f"get {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"get {key}") from e
        return int(resp["ContentLength"]), resp["Body"].iter_chunks(CHUNK)

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, f"put {key}") from e

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                return False
            if code == "ConditionalRequestConflict" or status == 409:
                # A concurrent create of the same key: retry decides who won.
                raise TemporaryError(f"create {key} in {self.uri}: concurrent write, retry") from e
            raise self._error(e, f"create {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"create {key}") from e

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(e, f"head {key}") from e
        except BotoCoreError as e:
            raise self._error(e, f"head {key}") from e

    def _pages(self, prefix: str, start_after: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"StartAfter": self.prefix + start_after} if start_after else {}
        yield from paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **extra)

    def list(self, prefix: str = "", start_after: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        n = len(self.prefix)
        try:
            pages = self._pages(prefix, start_after)
            return sorted(obj["Key"][n:] for page in pages for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, f"list {prefix}") from e

    def presign(self, method: str, key: str, expires_s: int) -> str:
        """A URL that allows one request on one key until it expires (controller/kube/grant.py): GET, HEAD, PUT, or
        CREATE (a PUT that must carry If-None-Match: *, which the signature covers)."""
        operation = {"GET": "get_object", "HEAD": "head_object", "PUT": "put_object", "CREATE": "put_object"}[method]
        params = {"Bucket": self.bucket, "Key": self.prefix + key}
        if method == "CREATE":
            params["IfNoneMatch"] = "*"
        url: str = self.client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_s,
                                                      HttpMethod="PUT" if method == "CREATE" else method)
        return url

    def sibling(self, uri: str) -> S3Store:
        """The store at another s3:// URI through this one's client: its endpoint, region and credentials (an
        archive in the same MinIO, staged without AWS_ENDPOINT_URL_S3 set anywhere)."""
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        return S3Store(bucket, prefix, client=self.client)

    def child(self, name: str) -> S3Store:
        return S3Store(self.bucket, self.prefix + name, client=self.client)

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            raise ConfigError(
                f"store {self.uri}: bucket {self.bucket!r} does not exist or is not accessible "
                f"({e.response.get('Error', {}).get('Code')}); create it or fix --store / the credentials"
            ) from e
        except BotoCoreError as e:
            raise ConfigError(f"store {self.uri}: cannot reach the S3 endpoint ({e}); check AWS_ENDPOINT_URL_S3") from e
        self._probe_conditional_create()

    def _probe_conditional_create(self) -> None:
        """Once-only records (proposal.json, result.json) rest on If-None-Match: * being honoured. A store that
        ignores it would let a second writer replace them silently, so it is refused before anything is written."""
        import uuid

        from botocore.exceptions import BotoCoreError, ClientError

        key = f".cifar-hpo-probe/{uuid.uuid4().hex}"
        try:
            first, second = self.create(key, b"1"), self.create(key, b"2")
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
            except (BotoCoreError, ClientError) as e:  # a leftover probe key is harmless; the answer is not
                log.warning("store %s: could not delete the probe %s (%s)", self.uri, key, e)
        if not first or second:
            raise ConfigError(f"store {self.uri}: it ignores conditional writes (a second PUT with If-None-Match: * "
                              "replaced the first), which once-only records need; use a store that honours them "
                              "(AWS S3, MinIO 2024-11 or later, versitygw, Ceph RGW 18 or later)")
