"""Object storage for state versions, binary plans, plan JSON and archived logs.

`build_object_store("filesystem", root=...)` is the embedded default; `build_object_store("s3", ...)`
talks to AWS S3 or an S3-compatible server such as MinIO. Both verify a SHA-256 on every read.
"""

from __future__ import annotations

from typing import Any

from backend.storage.base import (
    InvalidKey,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    validate_key,
    validate_prefix,
)
from backend.storage.filesystem import FilesystemObjectStore

OBJECT_STORE_KINDS = ("filesystem", "s3")

__all__ = [
    "OBJECT_STORE_KINDS",
    "FilesystemObjectStore",
    "InvalidKey",
    "ObjectCorrupted",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "build_object_store",
    "validate_key",
    "validate_prefix",
]


def build_object_store(kind: str, **params: Any) -> ObjectStore:
    """The store named by kind ("filesystem" or "s3"), built from that class's keyword parameters.

    The S3 bucket is not created here; call `S3ObjectStore.ensure_bucket()` at start-up if wanted.
    """
    if kind == "filesystem":
        return FilesystemObjectStore(**params)
    if kind == "s3":
        from backend.storage.s3 import S3ObjectStore  # boto3 loads only when S3 is used

        return S3ObjectStore(**params)
    raise ValueError(f"unknown object store {kind!r}: use one of {', '.join(OBJECT_STORE_KINDS)}")


def __getattr__(name: str) -> Any:
    if name == "S3ObjectStore":  # lazy: importing boto3 costs ~0.2 s at every start
        from backend.storage.s3 import S3ObjectStore

        return S3ObjectStore
    raise AttributeError(name)
