"""FilesystemObjectStore: behaviour, key rules, on-disk corruption and crash/concurrency atomicity.

The backend-neutral behaviour (round trip, list, delete, missing keys) also runs against S3 in
tests/integration/test_object_store_s3.py, whose `store` fixture covers both backends.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from backend.storage import (
    FilesystemObjectStore,
    InvalidKey,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    build_object_store,
    validate_key,
    validate_prefix,
)
from backend.storage.filesystem import HEADER_SIZE, OBJECT_SUFFIX


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "objects")


def object_file(store: FilesystemObjectStore, key: str) -> Path:
    return store.root / (key + OBJECT_SUFFIX)


def stray_files(root: Path) -> list[str]:
    """Every file under root that is not a committed object (temp files of failed writes)."""
    files = (p for p in root.rglob("*") if p.is_file())
    return sorted(str(p.relative_to(root)) for p in files if not p.name.endswith(OBJECT_SUFFIX))


def test_round_trip_returns_info_and_bytes(store):
    data = b"\x00state\xff" * 1000
    info = store.put("stacks/st_1/state/v1.tfstate", data)
    assert info == ObjectInfo("stacks/st_1/state/v1.tfstate", len(data), hashlib.sha256(data).hexdigest())
    assert store.get("stacks/st_1/state/v1.tfstate") == data
    assert store.exists("stacks/st_1/state/v1.tfstate")
    assert store.put("empty", b"").size == 0 and store.get("empty") == b""


def test_overwrite_replaces_the_object(store):
    store.put("plan.json", b"old")
    store.put("plan.json", b"new")
    assert store.get("plan.json") == b"new"
    assert [i.key for i in store.list()] == ["plan.json"]


def test_list_by_prefix_is_sorted_and_string_prefixed(store):
    for key in ["runs/10/log", "runs/1/plan.bin", "runs/1/log", "state/v1", "runs/2/log", "a"]:
        store.put(key, key.encode())
    assert [i.key for i in store.list("runs/1")] == ["runs/1/log", "runs/1/plan.bin", "runs/10/log"]
    assert [i.key for i in store.list("runs/1/")] == ["runs/1/log", "runs/1/plan.bin"]
    assert [i.key for i in store.list()] == sorted(
        ["runs/10/log", "runs/1/plan.bin", "runs/1/log", "state/v1", "runs/2/log", "a"]
    )
    assert store.list("nothing/") == [] and store.list("zz") == []
    info = store.list("state/")[0]
    assert (info.size, info.sha256) == (8, hashlib.sha256(b"state/v1").hexdigest())


def test_key_and_key_prefix_directory_can_coexist(store):
    store.put("a", b"file")
    store.put("a/b", b"nested")
    assert (store.get("a"), store.get("a/b")) == (b"file", b"nested")
    assert [i.key for i in store.list("a")] == ["a", "a/b"]


def test_delete_is_idempotent(store):
    store.put("logs/run.log", b"x")
    store.delete("logs/run.log")
    store.delete("logs/run.log")
    store.delete("never/existed")
    assert not store.exists("logs/run.log")
    with pytest.raises(ObjectNotFound, match=r"logs/run\.log"):
        store.get("logs/run.log")
    assert store.list() == []


INVALID_KEYS = [
    ("", "empty"),
    ("/abs", "leading slash"),
    ("trailing/", "trailing slash"),
    ("a//b", "empty segment"),
    ("../etc/passwd", "dotdot"),
    ("a/../b", "dotdot in the middle"),
    ("a/./b", "dot segment"),
    (".", "dot"),
    ("a b", "space"),
    ("a\\b", "backslash"),
    ("a~obj", "tilde"),
    ("ключ", "non-ascii"),
    ("a\x00b", "nul"),
    ("x" * 513, "too long"),
    ("a/" + "x" * 201, "segment too long"),
]


@pytest.mark.parametrize(("key", "why"), INVALID_KEYS, ids=[why for _, why in INVALID_KEYS])
@pytest.mark.parametrize("op", ["put", "get", "exists", "delete"])
def test_invalid_keys_are_rejected_by_every_operation(store, key, why, op):
    args = (key, b"data") if op == "put" else (key,)
    with pytest.raises(InvalidKey) as excinfo:
        getattr(store, op)(*args)
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, StorageError)
    assert stray_files(store.root) == []


VALID_KEYS = [
    "a",
    "A-z_0.9",
    ".hidden",
    "a/b/c.d",
    "..a",
    "/".join(["x" * 200] * 2 + ["y" * 110]),
    "/".join(["s"] * 256),
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys(store, key):
    assert validate_key(key) == key
    store.put(key, b"ok")
    assert store.get(key) == b"ok"


@pytest.mark.parametrize("prefix", ["/a", "a//", "../", "a/../", "a b"])
def test_invalid_list_prefixes(store, prefix):
    with pytest.raises(InvalidKey):
        store.list(prefix)


def test_list_prefix_may_end_mid_segment_or_with_dots():
    assert validate_prefix("runs/1") == "runs/1"
    assert validate_prefix("runs/.") == "runs/."  # could still match "runs/.hidden"


def test_flipped_byte_on_disk_is_detected(store):
    store.put("state/v1", b"A" * 100)
    path = object_file(store, "state/v1")
    blob = bytearray(path.read_bytes())
    blob[HEADER_SIZE + 50] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ObjectCorrupted, match=r"state/v1.*SHA-256"):
        store.get("state/v1")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda blob: blob[:-1], id="truncated-payload"),
        pytest.param(lambda blob: blob[:10], id="truncated-header"),
        pytest.param(lambda blob: b"X" + blob[1:], id="bad-magic"),
        pytest.param(lambda blob: blob[:30] + b"Z" + blob[31:], id="bad-digest-char"),
        pytest.param(lambda blob: b"", id="empty-file"),
    ],
)
def test_damaged_files_are_detected(store, damage):
    store.put("k", b"payload")
    path = object_file(store, "k")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ObjectCorrupted):
        store.get("k")


def test_list_reports_a_damaged_header(store):
    store.put("k", b"payload")
    object_file(store, "k").write_bytes(b"garbage")
    with pytest.raises(ObjectCorrupted, match="header"):
        store.list()


def test_concurrent_writers_never_leave_a_torn_object(store):
    key = "state/current"
    payloads = [bytes([i]) * (256 * 1024 + i) for i in range(8)]
    digests = {hashlib.sha256(p).hexdigest() for p in payloads}
    store.put(key, payloads[0])
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(payload: bytes) -> None:
        try:
            for _ in range(10):
                store.put(key, payload)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                data = store.get(key)
                assert data in payloads
                info = store.list("state/")[0]
                assert info.sha256 in digests
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert store.get(key) in payloads
    assert stray_files(store.root) == []


def test_crash_before_rename_keeps_previous_version_and_no_temp_files(store, monkeypatch):
    store.put("state/v", b"previous")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StorageError, match=r"could not write object 'state/v'.*No space left"):
        store.put("state/v", b"next")
    monkeypatch.undo()
    assert store.get("state/v") == b"previous"
    assert stray_files(store.root) == []


def test_interrupt_during_write_keeps_previous_version_and_no_temp_files(store, monkeypatch):
    store.put("state/v", b"previous")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put("state/v", b"next")
    monkeypatch.undo()
    assert store.get("state/v") == b"previous"
    assert stray_files(store.root) == []


def test_leftover_temp_files_of_a_killed_process_are_ignored(store):
    store.put("logs/a", b"a")
    (store.root / "logs" / ".a~obj.x1y2~tmp").write_bytes(b"half-written")
    assert [i.key for i in store.list()] == ["logs/a"]
    assert store.get("logs/a") == b"a"


def test_files_are_private(store):
    store.put("state/secret", b"s")
    assert object_file(store, "state/secret").stat().st_mode & 0o077 == 0
    assert (store.root / "state").stat().st_mode & 0o077 == 0


def test_factory_builds_stores_and_names_the_choices(tmp_path):
    fs = build_object_store("filesystem", root=tmp_path)
    assert isinstance(fs, FilesystemObjectStore) and fs.root == tmp_path.resolve()
    with pytest.raises(ValueError, match="unknown object store 'gcs': use one of filesystem, s3"):
        build_object_store("gcs")


# --------------------------------------------------------------------------- streaming (state files)


def test_put_file_streams_a_file_in_and_iter_chunks_streams_it_out(store, tmp_path):
    source = tmp_path / "big.tfstate"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    info = store.put_file("state/s/v1.tfstate", source)
    assert info == ObjectInfo("state/s/v1.tfstate", len(data), hashlib.sha256(data).hexdigest())
    assert source.read_bytes() == data  # the source is left alone
    assert store.get("state/s/v1.tfstate") == data  # same format as put
    chunks = list(store.iter_chunks("state/s/v1.tfstate", chunk_size=1024 * 1024))
    assert [len(c) for c in chunks] == [1024 * 1024] * 3 + [17]
    assert b"".join(chunks) == data
    assert stray_files(store.root) == []


def test_put_file_checks_the_expected_hash(store, tmp_path):
    source = tmp_path / "s"
    source.write_bytes(b"content")
    assert store.put_file("k", source, hashlib.sha256(b"content").hexdigest()).size == 7
    with pytest.raises(StorageError, match="changed while it was being stored"):
        store.put_file("k2", source, hashlib.sha256(b"other").hexdigest())
    assert not store.exists("k2") and stray_files(store.root) == []
    with pytest.raises(StorageError, match="could not write object 'k3'"):
        store.put_file("k3", tmp_path / "missing")


def test_iter_chunks_opens_before_it_returns(store):
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("missing")  # not on the first next()
    store.put("k", b"payload")
    object_file(store, "k").write_bytes(b"garbage")
    with pytest.raises(ObjectCorrupted, match="header"):
        store.iter_chunks("k")


def test_iter_chunks_never_yields_the_last_chunk_of_corrupted_data(store):
    data = b"A" * 5000
    store.put("state/v", data)
    path = object_file(store, "state/v")
    blob = bytearray(path.read_bytes())
    blob[HEADER_SIZE + 10] ^= 0x01  # damage the first chunk
    path.write_bytes(bytes(blob))
    received: list[bytes] = []
    with pytest.raises(ObjectCorrupted, match="SHA-256"):
        for chunk in store.iter_chunks("state/v", chunk_size=1000):
            received.append(chunk)
    assert len(received) == 4 and sum(map(len, received)) < len(data)
