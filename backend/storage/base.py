"""The ObjectStore contract, its errors and the key rules every implementation shares."""

from __future__ import annotations

import builtins
import hashlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

MAX_KEY_LENGTH = 512
# File systems limit one name to 255 bytes; the filesystem store adds up to 18 characters of suffix.
MAX_SEGMENT_LENGTH = 200
CHUNK_SIZE = 1024 * 1024  # streaming reads and copies move 1 MiB at a time
_SEGMENT = r"[A-Za-z0-9._-]+"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_PREFIX_RE = re.compile(r"[A-Za-z0-9._/-]*")


class StorageError(Exception):
    """The object store could not do what was asked; the message says why and what to do."""


class InvalidKey(StorageError, ValueError):
    """A key or prefix breaks the key rules (see validate_key)."""


class ObjectNotFound(StorageError):
    def __init__(self, key: str):
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class ObjectCorrupted(StorageError):
    """The stored bytes do not match the SHA-256 recorded when they were written."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"object {key!r} is corrupted: {reason}; restore it from a backup")
        self.key = key
        self.reason = reason


class StorageUnavailable(StorageError):
    """The backend cannot be reached (network, timeouts, server errors); retrying later may work."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str  # lowercase hex


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(key: str, data: bytes, expected: str | None) -> bytes:
    """Return data if its SHA-256 equals expected, else raise ObjectCorrupted."""
    if not expected:
        raise ObjectCorrupted(key, "no SHA-256 was stored with it")
    actual = sha256_hex(data)
    if actual != expected.lower():
        raise ObjectCorrupted(key, f"SHA-256 is {actual}, expected {expected}")
    return data


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verified_chunks(key: str, chunks: Iterator[bytes], expected: str | None) -> Iterator[bytes]:
    """Pass chunks through while hashing them; the last chunk is held back until the whole
    object has been hashed, so a reader never receives a complete copy of corrupted data:
    on a mismatch ObjectCorrupted is raised instead of the final chunk."""
    if not expected:
        raise ObjectCorrupted(key, "no SHA-256 was stored with it")
    digest = hashlib.sha256()
    pending: bytes | None = None
    for chunk in chunks:
        if not chunk:
            continue
        digest.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise ObjectCorrupted(key, f"SHA-256 is {actual}, expected {expected}")
    if pending is not None:
        yield pending


def validate_key(key: str) -> str:
    """Keys are relative, '/'-separated segments of [A-Za-z0-9._-], at most 512 characters and at
    most 200 per segment (so every key is a valid file path on common file systems).

    '.' and '..' segments are refused so a key can never name a different path on disk."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}")
    if not _KEY_RE.fullmatch(key):
        raise InvalidKey(
            f"invalid object key {key!r}: use '/'-separated segments of letters, digits, '.', '_' and '-' "
            "with no leading, trailing or doubled '/'"
        )
    if any(segment in (".", "..") for segment in key.split("/")):
        raise InvalidKey(f"invalid object key {key!r}: '.' and '..' segments are not allowed")
    if any(len(segment) > MAX_SEGMENT_LENGTH for segment in key.split("/")):
        raise InvalidKey(
            f"invalid object key {key[:40]!r}...: a segment between '/' may have at most "
            f"{MAX_SEGMENT_LENGTH} characters"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """A list prefix: empty, or the start of a valid key (it may end with '/' or mid-segment)."""
    if not isinstance(prefix, str):
        raise InvalidKey("prefix must be a string")
    if len(prefix) > MAX_KEY_LENGTH:
        raise InvalidKey(f"prefix is {len(prefix)} characters long; the limit is {MAX_KEY_LENGTH}")
    if not _PREFIX_RE.fullmatch(prefix) or prefix.startswith("/") or "//" in prefix:
        raise InvalidKey(f"invalid prefix {prefix!r}: it must be the start of a valid object key")
    # A complete '.' or '..' segment (anything followed by '/') can never match a valid key.
    if any(segment in (".", "..") for segment in prefix.split("/")[:-1]):
        raise InvalidKey(f"invalid prefix {prefix!r}: '.' and '..' segments are not allowed")
    return prefix


class ObjectStore(ABC):
    """Immutable-ish blobs by key. Writes are all-or-nothing; reads verify the stored SHA-256."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store data under key, replacing any previous object atomically."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectNotFound if missing, ObjectCorrupted if the hash does not match."""

    def put_file(self, key: str, path: str | os.PathLike[str], sha256: str | None = None) -> ObjectInfo:
        """Store the file at path under key without reading it into memory (the implementations
        here stream it). With sha256 given, the copy is checked against it (StorageError if the
        file changed). The file itself is left in place."""
        with open(path, "rb") as fh:  # fallback for stores without a streaming upload
            data = fh.read()
        if sha256 is not None and sha256_hex(data) != sha256.lower():
            raise StorageError(f"{path} changed while it was being stored as {key!r}")
        return self.put(key, data)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The object's bytes in chunks of at most chunk_size, verified while streaming.

        The object is opened before this returns (ObjectNotFound is raised here, not on the
        first chunk); a hash mismatch raises ObjectCorrupted in place of the final chunk."""
        data = self.get(key)  # fallback: verified whole, then sliced
        return iter([data[i : i + chunk_size] for i in range(0, len(data), chunk_size)])

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Objects whose key starts with prefix (a plain string prefix, as in S3), sorted by key."""
