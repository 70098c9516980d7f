"""S3ObjectStore against moto's standalone server over real HTTP, plus the shared behaviour.

The `store` fixture is parametrized over the filesystem store, S3, and S3 with a key prefix, so
the behavioural tests below hold for every backend. moto runs as a subprocess for the session;
every test gets a bucket of its own.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from backend.storage import (
    InvalidKey,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageError,
    StorageUnavailable,
    build_object_store,
)

ACCESS_KEY = "crucible-test"
SECRET_KEY = "crucible-test-secret"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's AWS_* settings (profile, endpoint, keys) must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


def s3_params(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "bucket": bucket,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        **extra,
    }


@pytest.fixture
def bucket() -> str:
    return f"crucible-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def raw_s3(moto_endpoint: str) -> Any:
    """A plain boto3 client, for tampering with objects behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def s3_store(moto_endpoint: str, bucket: str) -> S3ObjectStore:
    store = build_object_store("s3", **s3_params(moto_endpoint, bucket))
    assert isinstance(store, S3ObjectStore)
    assert store.ensure_bucket() is True
    return store


@pytest.fixture(params=["filesystem", "s3", "s3-prefixed"])
def store(request: pytest.FixtureRequest, tmp_path: Path, bucket: str) -> ObjectStore:
    if request.param == "filesystem":
        return build_object_store("filesystem", root=tmp_path / "objects")
    endpoint = request.getfixturevalue("moto_endpoint")
    prefix = "crucible/prod" if request.param == "s3-prefixed" else ""
    s3 = S3ObjectStore(**s3_params(endpoint, bucket, prefix=prefix))
    s3.ensure_bucket()
    return s3


# --------------------------------------------------------------------------- shared behaviour


def test_round_trip(store):
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    info = store.put("stacks/st_1/state/v1.tfstate", data)
    assert info == ObjectInfo("stacks/st_1/state/v1.tfstate", len(data), hashlib.sha256(data).hexdigest())
    assert store.get("stacks/st_1/state/v1.tfstate") == data
    assert store.exists("stacks/st_1/state/v1.tfstate")
    store.put("stacks/st_1/state/v1.tfstate", b"v2")
    assert store.get("stacks/st_1/state/v1.tfstate") == b"v2"
    assert store.put("empty", b"").size == 0 and store.get("empty") == b""


def test_list_by_prefix_sorted_with_sizes_and_hashes(store):
    keys = ["runs/10/log", "runs/1/plan.bin", "runs/1/log", "state/v1", "runs/2/log", "a", "a/b"]
    for key in keys:
        store.put(key, key.encode())
    assert [i.key for i in store.list()] == sorted(keys)
    assert [i.key for i in store.list("runs/1")] == ["runs/1/log", "runs/1/plan.bin", "runs/10/log"]
    assert [i.key for i in store.list("runs/1/")] == ["runs/1/log", "runs/1/plan.bin"]
    assert store.list("state/") == [ObjectInfo("state/v1", 8, hashlib.sha256(b"state/v1").hexdigest())]
    assert store.list("nothing/") == []


def test_delete_is_idempotent(store):
    store.put("logs/run.log", b"x")
    store.delete("logs/run.log")
    store.delete("logs/run.log")
    store.delete("never/existed")
    assert not store.exists("logs/run.log")
    assert store.list("logs/") == []


def test_missing_key(store):
    with pytest.raises(ObjectNotFound, match=r"'plans/nope\.bin' does not exist"):
        store.get("plans/nope.bin")
    assert store.exists("plans/nope.bin") is False


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a b", "x" * 513])
def test_invalid_keys(store, key):
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.delete(key)):
        with pytest.raises(InvalidKey):
            call()


def test_put_file_and_iter_chunks_stream(store, tmp_path):
    data = os.urandom(9 * 1024 * 1024 + 5)  # above the S3 multipart threshold
    source = tmp_path / "state.tfstate"
    source.write_bytes(data)
    info = store.put_file("state/s/v1.tfstate", source, hashlib.sha256(data).hexdigest())
    assert info == ObjectInfo("state/s/v1.tfstate", len(data), hashlib.sha256(data).hexdigest())
    assert store.get("state/s/v1.tfstate") == data
    chunks = list(store.iter_chunks("state/s/v1.tfstate", chunk_size=1024 * 1024))
    assert b"".join(chunks) == data and max(map(len, chunks)) <= 1024 * 1024
    assert store.list("state/") == [info]
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("state/s/missing")
    with pytest.raises(StorageError, match="changed while it was being stored"):
        store.put_file("state/s/v2.tfstate", source, hashlib.sha256(b"other").hexdigest())
    assert not store.exists("state/s/v2.tfstate")


# --------------------------------------------------------------------------- S3 specifics


def test_sha256_travels_as_object_metadata(s3_store, raw_s3, bucket):
    s3_store.put("plans/p.json", b"{}")
    head = raw_s3.head_object(Bucket=bucket, Key="plans/p.json")
    assert head["Metadata"] == {"sha256": hashlib.sha256(b"{}").hexdigest()}


def test_prefix_is_applied_to_stored_keys(moto_endpoint, bucket, raw_s3):
    store = S3ObjectStore(**s3_params(moto_endpoint, bucket, prefix="/team-a/"))
    store.ensure_bucket()
    store.put("state/v1", b"s")
    raw_s3.put_object(Bucket=bucket, Key="outside", Body=b"not ours")
    listed = raw_s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["outside", "team-a/state/v1"]
    assert [i.key for i in store.list()] == ["state/v1"]


def test_object_without_hash_metadata_is_corrupted(s3_store, raw_s3, bucket):
    s3_store.put("state/v1", b"good")
    raw_s3.put_object(Bucket=bucket, Key="state/v1", Body=b"good")
    with pytest.raises(ObjectCorrupted, match="no SHA-256"):
        s3_store.get("state/v1")
    with pytest.raises(ObjectCorrupted):
        s3_store.list()


def test_object_with_wrong_hash_metadata_is_corrupted(s3_store, raw_s3, bucket):
    s3_store.put("state/v1", b"good")
    raw_s3.put_object(
        Bucket=bucket, Key="state/v1", Body=b"evil", Metadata={"sha256": hashlib.sha256(b"good").hexdigest()}
    )
    with pytest.raises(ObjectCorrupted, match=r"'state/v1' is corrupted: SHA-256 is"):
        s3_store.get("state/v1")


def test_object_written_with_matching_metadata_reads_back(s3_store, raw_s3, bucket):
    raw_s3.put_object(
        Bucket=bucket, Key="k", Body=b"x", Metadata={"sha256": hashlib.sha256(b"x").hexdigest()}
    )
    assert s3_store.get("k") == b"x"


def test_streamed_read_of_a_replaced_object_is_corrupted(s3_store, raw_s3, bucket):
    s3_store.put("state/v1", b"good" * 1000)
    raw_s3.put_object(
        Bucket=bucket,
        Key="state/v1",
        Body=b"evil" * 1000,
        Metadata={"sha256": hashlib.sha256(b"good" * 1000).hexdigest()},
    )
    received: list[bytes] = []
    with pytest.raises(ObjectCorrupted, match="SHA-256 is"):
        for chunk in s3_store.iter_chunks("state/v1", chunk_size=1000):
            received.append(chunk)
    assert sum(map(len, received)) < 4000  # the last chunk is held back
    raw_s3.put_object(Bucket=bucket, Key="state/v2", Body=b"x")
    with pytest.raises(ObjectCorrupted, match="no SHA-256"):
        s3_store.iter_chunks("state/v2")


def test_put_file_to_a_missing_bucket_names_it(moto_endpoint, tmp_path):
    source = tmp_path / "s"
    source.write_bytes(b"x")
    store = S3ObjectStore(**s3_params(moto_endpoint, "no-such-bucket-for-files"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-for-files' does not exist"):
        store.put_file("k", source)


def test_ensure_bucket_is_idempotent(s3_store):
    assert s3_store.ensure_bucket() is False


def test_missing_bucket_names_the_bucket(moto_endpoint):
    store = S3ObjectStore(**s3_params(moto_endpoint, "no-such-bucket-here"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as excinfo:
        store.get("k")
    assert not isinstance(excinfo.value, ObjectNotFound | StorageUnavailable)


def test_unreachable_endpoint_fails_fast_and_names_it():
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    store = S3ObjectStore(**s3_params(endpoint, "b", connect_timeout=0.5, read_timeout=0.5, max_attempts=2))
    started = time.monotonic()
    for call in (lambda: store.get("k"), lambda: store.put("k", b"x"), store.ensure_bucket, store.list):
        with pytest.raises(StorageUnavailable, match=f"S3 endpoint {endpoint} is unreachable"):
            call()
    assert time.monotonic() - started < 10


def test_endpoint_that_never_answers_times_out():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # accepts the TCP handshake (backlog) but never replies
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        store = S3ObjectStore(
            **s3_params(endpoint, "b", connect_timeout=0.5, read_timeout=0.5, max_attempts=1)
        )
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            store.get("k")
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bucket": ""}, "bucket must not be empty"),
        ({"endpoint_url": "minio:9000"}, "must be an absolute http"),
        ({"secret_access_key": None}, "set both"),
        ({"prefix": "a/../b"}, "prefix 'a/../b' is invalid"),
    ],
)
def test_bad_parameters_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        S3ObjectStore(**{**s3_params("http://127.0.0.1:9", "b"), **params})
