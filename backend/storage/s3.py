"""Objects in an S3 bucket (AWS S3, MinIO or any S3-compatible server) through boto3.

The payload's SHA-256 travels as user metadata (`x-amz-meta-sha256`) in the same PUT as the data,
so S3's atomic per-object writes keep the two together; reads verify it.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from backend.storage.base import (
    CHUNK_SIZE,
    InvalidKey,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    file_sha256,
    sha256_hex,
    validate_key,
    validate_prefix,
    verified_chunks,
    verify_sha256,
)

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
# Large uploads go up in 8 MiB parts, at most 4 at a time: a bounded ~32 MiB of buffers per
# upload, whatever the file size (boto3's default of 10 parallel parts would allow 80 MiB).
_TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_concurrency=4,
    use_threads=True,
)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ObjectStore(ObjectStore):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ):
        """Without an access key pair boto3's default chain is used (env, profile, instance role).

        A custom endpoint_url (MinIO, moto) implies path-style addressing."""
        if not bucket:
            raise ValueError("S3 bucket must not be empty")
        if endpoint_url:
            parts = urlsplit(endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"S3 endpoint URL {endpoint_url!r} must be an absolute http(s) URL")
        if bool(access_key_id) != bool(secret_access_key):
            raise ValueError("set both the S3 access key id and the secret access key, or neither")
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidKey as exc:
                raise ValueError(f"S3 prefix {prefix!r} is invalid: {exc}") from None
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.prefix = prefix
        self.where = endpoint_url or f"AWS S3 ({region})"
        config = Config(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
        )
        # boto3 clients are thread-safe; sessions are not, so each store owns its session.
        self._client: Any = session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r}, endpoint={self.where!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------ helpers

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _raise(self, exc: ClientError, action: str, key: str | None) -> NoReturn:
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if key is not None and code in _NOT_FOUND_CODES:
            raise ObjectNotFound(key) from None
        if code == "NoSuchBucket":
            raise StorageError(
                f"S3 bucket {self.bucket!r} does not exist at {self.where}: create it (ensure_bucket)"
            ) from exc
        if code in _ACCESS_CODES:
            raise StorageError(
                f"S3 at {self.where} refused to {action} ({code}): check the access key, secret and "
                f"the permissions on bucket {self.bucket!r}"
            ) from exc
        if code in _UNAVAILABLE_CODES or status >= 500:
            raise StorageUnavailable(
                f"S3 at {self.where} could not {action} ({code}); try again later"
            ) from exc
        message = exc.response.get("Error", {}).get("Message", "")
        raise StorageError(f"S3 at {self.where} failed to {action}: {code} {message}".rstrip()) from exc

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate botocore errors raised inside the block into the StorageError hierarchy."""
        try:
            yield
        except ClientError as exc:
            self._raise(exc, action, key)
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StorageUnavailable(f"S3 endpoint {self.where} is unreachable ({action}): {exc}") from exc
        except NoCredentialsError as exc:
            raise StorageError(
                f"no S3 credentials for {self.where}: set the access key id and secret access key"
            ) from exc
        except S3UploadFailedError as exc:
            # boto3's transfer manager wraps the ClientError it caught (as __context__).
            cause = exc.__context__
            if isinstance(cause, ClientError):
                self._raise(cause, action, key)
            raise StorageError(f"S3 at {self.where} failed to {action}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 at {self.where} failed to {action}: {exc}") from exc

    # ------------------------------------------------------------------ operations

    def ensure_bucket(self) -> bool:
        """Create the bucket if it does not exist; True if it was created."""
        with self._errors(f"check bucket {self.bucket!r}"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return False
            except ClientError as exc:
                if _error_code(exc) not in _NOT_FOUND_CODES | {"NoSuchBucket"}:
                    raise
        kwargs: dict[str, Any] = {}
        if self.region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with self._errors(f"create bucket {self.bucket!r}"):
            try:
                self._client.create_bucket(Bucket=self.bucket, **kwargs)
            except ClientError as exc:
                if _error_code(exc) == "BucketAlreadyOwnedByYou":  # created concurrently
                    return False
                raise
        log.info("created S3 bucket %s at %s", self.bucket, self.where)
        return True

    def put(self, key: str, data: bytes) -> ObjectInfo:
        validate_key(key)
        data = bytes(data)
        digest = sha256_hex(data)
        with self._errors(f"write object {key!r}", key):
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._full_key(key),
                Body=data,
                ContentType="application/octet-stream",
                Metadata={SHA256_METADATA: digest},
            )
        return ObjectInfo(key=key, size=len(data), sha256=digest)

    def put_file(self, key: str, path: str | os.PathLike[str], sha256: str | None = None) -> ObjectInfo:
        """Streams the file (multipart above 8 MiB); the SHA-256 travels as metadata as in put."""
        validate_key(key)
        try:
            digest = file_sha256(path)
            size = os.stat(path).st_size
        except OSError as exc:
            raise StorageError(f"could not read {os.fspath(path)} to store it as {key!r}: {exc}") from exc
        if sha256 is not None and digest != sha256.lower():
            raise StorageError(f"{os.fspath(path)} changed while it was being stored as {key!r}")
        with self._errors(f"write object {key!r}", key):
            self._client.upload_file(
                Filename=os.fspath(path),
                Bucket=self.bucket,
                Key=self._full_key(key),
                ExtraArgs={"ContentType": "application/octet-stream", "Metadata": {SHA256_METADATA: digest}},
                Config=_TRANSFER,
            )
        return ObjectInfo(key=key, size=size, sha256=digest)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        validate_key(key)
        with self._errors(f"read object {key!r}", key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._full_key(key))
        if not response.get("Metadata", {}).get(SHA256_METADATA):
            response["Body"].close()
            raise ObjectCorrupted(key, "no SHA-256 was stored with it")
        return self._stream(key, response, chunk_size)

    def _stream(self, key: str, response: dict[str, Any], chunk_size: int) -> Iterator[bytes]:
        body = response["Body"]
        expected = response.get("Metadata", {}).get(SHA256_METADATA)
        try:
            with self._errors(f"read object {key!r}", key):
                yield from verified_chunks(key, body.iter_chunks(chunk_size), expected)
        finally:
            body.close()

    def get(self, key: str) -> bytes:
        validate_key(key)
        with self._errors(f"read object {key!r}", key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._full_key(key))
            with response["Body"] as body:
                data = body.read()
        return verify_sha256(key, data, response.get("Metadata", {}).get(SHA256_METADATA))

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def _head(self, key: str) -> dict[str, Any]:
        with self._errors(f"read object {key!r}", key):
            return self._client.head_object(Bucket=self.bucket, Key=self._full_key(key))

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(f"delete object {key!r}", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full_key(key))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """One LIST per 1,000 keys plus one HEAD per object (S3 lists no user metadata)."""
        validate_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with self._errors(f"list objects under {prefix!r}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._full_key(prefix)
            )
            for page in pages:
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        infos: list[ObjectInfo] = []
        for key in sorted(keys):
            try:
                validate_key(key)
            except InvalidKey:
                log.warning("ignoring S3 object %r in bucket %s: not a valid Crucible key", key, self.bucket)
                continue
            try:
                head = self._head(key)
            except ObjectNotFound:
                continue  # deleted while listing
            digest = head.get("Metadata", {}).get(SHA256_METADATA)
            if not digest:
                raise ObjectCorrupted(key, "no SHA-256 was stored with it")
            infos.append(ObjectInfo(key=key, size=int(head["ContentLength"]), sha256=digest))
        return infos
