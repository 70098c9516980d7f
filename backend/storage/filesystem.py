"""Objects as files under one root directory.

Each object is ONE file, `<root>/<key>~obj`, holding a fixed-size header line with the payload's
SHA-256 followed by the payload. Data and hash therefore change together in a single rename:
there is no window in which a reader (or a crash) can pair new data with an old hash, which a
separate `.sha256` sidecar would allow when two writers race on one key.

Writes go to a unique temp file in the target directory → fsync → os.replace → fsync the
directory, so readers see the old object or the new one, never a torn file. The `~` in the
suffixes cannot occur in a key, so object files, temp files and key directories never collide
(keys `a` and `a/b` can both exist).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backend.storage.base import (
    CHUNK_SIZE,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    sha256_hex,
    validate_key,
    validate_prefix,
    verified_chunks,
    verify_sha256,
)

OBJECT_SUFFIX = "~obj"
TEMP_SUFFIX = "~tmp"
HEADER_MAGIC = b"crucible-object/1 sha256="
HEADER_SIZE = len(HEADER_MAGIC) + 64 + 1  # magic, hex digest, newline
DIR_MODE = 0o700  # state files hold secrets


def _header(digest: str) -> bytes:
    return HEADER_MAGIC + digest.encode("ascii") + b"\n"


def _parse_header(key: str, header: bytes) -> str:
    if len(header) < HEADER_SIZE or not header.startswith(HEADER_MAGIC) or header[HEADER_SIZE - 1] != 0x0A:
        raise ObjectCorrupted(key, "its header is missing or damaged")
    digest = header[len(HEADER_MAGIC) : HEADER_SIZE - 1]
    if any(c not in b"0123456789abcdef" for c in digest):
        raise ObjectCorrupted(key, "its header is missing or damaged")
    return digest.decode("ascii")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        try:
            self._make_dirs(self.root)
        except OSError as exc:
            raise StorageError(f"cannot create object store directory {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"FilesystemObjectStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths

    def _path(self, key: str) -> Path:
        *dirs, name = validate_key(key).split("/")
        return self.root.joinpath(*dirs, name + OBJECT_SUFFIX)

    def _make_dirs(self, path: Path) -> None:
        """mkdir -p, fsyncing each parent that gained an entry so new directories survive a crash."""
        missing: list[Path] = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
                directory.mkdir(mode=DIR_MODE)
            _fsync_dir(directory.parent)

    # ------------------------------------------------------------------ operations

    def put(self, key: str, data: bytes) -> ObjectInfo:
        path = self._path(key)
        data = bytes(data)
        digest = sha256_hex(data)
        tmp: str | None = None
        try:
            self._make_dirs(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_header(digest))
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"could not write object {key!r} under {self.root}: {exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return ObjectInfo(key=key, size=len(data), sha256=digest)

    def put_file(self, key: str, path: str | os.PathLike[str], sha256: str | None = None) -> ObjectInfo:
        target = self._path(key)
        tmp: str | None = None
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as src:
                self._make_dirs(target.parent)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
                with os.fdopen(fd, "wb") as fh:
                    # The header holds the hash, which is known only after the copy: reserve
                    # its bytes, copy, then write the header in place (before the rename).
                    fh.write(_header("0" * 64))
                    while chunk := src.read(CHUNK_SIZE):
                        digest.update(chunk)
                        size += len(chunk)
                        fh.write(chunk)
                    actual = digest.hexdigest()
                    if sha256 is not None and actual != sha256.lower():
                        raise StorageError(f"{os.fspath(path)} changed while it was being stored as {key!r}")
                    fh.seek(0)
                    fh.write(_header(actual))
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
            tmp = None
            _fsync_dir(target.parent)
        except OSError as exc:
            raise StorageError(f"could not write object {key!r} under {self.root}: {exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return ObjectInfo(key=key, size=size, sha256=actual)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"could not read object {key!r} under {self.root}: {exc}") from exc
        try:
            digest = _parse_header(key, fh.read(HEADER_SIZE))
        except BaseException:
            fh.close()
            raise
        return self._stream(key, fh, digest, chunk_size)

    def _stream(self, key: str, fh: BinaryIO, digest: str, chunk_size: int) -> Iterator[bytes]:
        def chunks() -> Iterator[bytes]:
            while chunk := fh.read(chunk_size):
                yield chunk

        try:
            yield from verified_chunks(key, chunks(), digest)
        except OSError as exc:
            raise StorageError(f"could not read object {key!r} under {self.root}: {exc}") from exc
        finally:
            fh.close()

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"could not read object {key!r} under {self.root}: {exc}") from exc
        digest = _parse_header(key, blob[:HEADER_SIZE])
        return verify_sha256(key, blob[HEADER_SIZE:], digest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"could not delete object {key!r} under {self.root}: {exc}") from exc
        # Empty directories are left in place: removing them would race with a concurrent put.
        _fsync_dir(path.parent)

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        start = self.root.joinpath(*prefix.split("/")[:-1])
        infos: list[ObjectInfo] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.endswith(OBJECT_SUFFIX):
                    continue  # temp files of writes in flight (or of a crashed process)
                key_name = name[: -len(OBJECT_SUFFIX)]
                key = key_name if rel_dir == "." else f"{rel_dir}/{key_name}"
                if not key.startswith(prefix):
                    continue
                info = self._info(key, Path(dirpath, name))
                if info is not None:
                    infos.append(info)
        infos.sort(key=lambda info: info.key)
        return infos

    def _info(self, key: str, path: Path) -> ObjectInfo | None:
        try:
            with path.open("rb") as fh:
                header = fh.read(HEADER_SIZE)
                size = os.fstat(fh.fileno()).st_size - HEADER_SIZE
        except FileNotFoundError:
            return None  # deleted while listing
        except OSError as exc:
            raise StorageError(f"could not read object {key!r} under {self.root}: {exc}") from exc
        return ObjectInfo(key=key, size=size, sha256=_parse_header(key, header))
