"""Streaming state validation: what counts as a Terraform state, what the errors say, and that a
big state is checked without being held in memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.state.parse import (
    InvalidState,
    StateSummary,
    StateValidator,
    rewrite_serial,
    validate_state_bytes,
    validate_state_file,
)


def state(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 4,
        "terraform_version": "1.8.2",
        "serial": 3,
        "lineage": "0a1b2c3d-lineage",
        "outputs": {"url": {"value": "https://x", "type": "string"}},
        "resources": [
            {
                "mode": "managed",
                "type": "aws_instance",
                "name": "web",
                "instances": [{"index_key": 0, "attributes": {"id": "i-1"}}, {"index_key": 1}],
            },
            {"mode": "data", "type": "aws_ami", "name": "ubuntu", "instances": [{"attributes": {}}]},
        ],
        "check_results": None,
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not ...}


def check(doc: Any) -> StateSummary:
    return validate_state_bytes(json.dumps(doc).encode())


def test_a_v4_state_is_summarized():
    assert check(state()) == StateSummary(
        format=4,
        serial=3,
        lineage="0a1b2c3d-lineage",
        terraform_version="1.8.2",
        resource_count=2,
        instance_count=3,
    )


def test_terraform_version_is_optional_and_empty_lists_count_zero():
    summary = check(state(terraform_version=..., resources=[], outputs={}))
    assert (summary.terraform_version, summary.resource_count, summary.instance_count) == (None, 0, 0)


def test_keys_in_any_order_and_nested_lookalike_keys_do_not_confuse_it():
    doc = {
        "outputs": {"serial": {"value": {"resources": [1, 2, 3], "version": "x"}}},
        "resources": [
            {"instances": [], "x": {"instances": [{}, {}]}},
            {"name": "r", "instances": [{"attributes": {"instances": [{}]}}]},
        ],
        "lineage": "l",
        "serial": 0,
        "version": 4,
        "": {"version": "not me"},
    }
    summary = check(doc)
    assert (summary.serial, summary.resource_count, summary.instance_count) == (0, 2, 1)


def test_a_v3_state_counts_the_resources_of_every_module():
    doc = {
        "version": 3,
        "serial": 9,
        "lineage": "old",
        "terraform_version": "0.11.14",
        "modules": [
            {"path": ["root"], "outputs": {"a": {}}, "resources": {"aws_instance.a": {}, "aws_eip.b": {}}},
            {"path": ["root", "child"], "resources": {"null_resource.c": {"primary": {}}}},
        ],
    }
    summary = check(doc)
    assert (summary.format, summary.resource_count, summary.instance_count) == (3, 3, 3)


BAD: list[tuple[str, bytes | Any, str]] = [
    ("empty", b"", "malformed JSON"),
    ("whitespace", b"  \n", "malformed JSON"),
    ("not json", b"{not json", "malformed JSON"),
    ("truncated", json.dumps(state()).encode()[:-20], "malformed JSON"),
    ("trailing garbage", json.dumps(state()).encode() + b" {}", "malformed JSON"),
    ("two documents", json.dumps(state()).encode() * 2, "malformed JSON"),
    ("invalid utf-8", json.dumps(state()).encode().replace(b"lineage", b"line\xffage"), "malformed JSON"),
    ("nan", json.dumps(state()).encode().replace(b'"serial": 3', b'"serial": NaN'), "malformed JSON"),
    ("array", [state()], "must be a JSON object, not an array"),
    ("string", "state", "must be a JSON object, not a string"),
    ("number", 4, "must be a JSON object, not a number"),
    ("null", None, "must be a JSON object, not null"),
    ("no version", state(version=...), "'version' field is missing"),
    ("string version", state(version="4"), "'version' must be an integer"),
    ("fraction version", state(version=4.0), "'version' must be an integer (3 or 4), not a fraction"),
    ("version 5", state(version=5), "unsupported state format version 5"),
    ("version 2", state(version=2), "unsupported state format version 2"),
    ("no serial", state(serial=...), "'serial' field is missing"),
    ("negative serial", state(serial=-1), "'serial' must be a non-negative integer, not -1"),
    ("fraction serial", state(serial=1.5), "'serial' must be a non-negative integer, not a fraction"),
    ("string serial", state(serial="3"), "'serial' must be a non-negative integer, not a string"),
    ("bool serial", state(serial=True), "not a boolean"),
    ("huge serial", state(serial=2**64), "'serial' is too large"),
    ("no lineage", state(lineage=...), "'lineage' field is missing"),
    ("empty lineage", state(lineage=""), "'lineage' must be a non-empty string"),
    ("blank lineage", state(lineage="   "), "'lineage' must be a non-empty string"),
    ("numeric lineage", state(lineage=7), "'lineage' must be a non-empty string, not a number"),
    ("long lineage", state(lineage="x" * 256), "at most 255"),
    ("control lineage", state(lineage="a\x00b"), "printable"),
    ("numeric terraform_version", state(terraform_version=1.8), "'terraform_version' must be a string"),
    ("no resources", state(resources=...), "'resources' field is missing"),
    ("object resources", state(resources={}), "'resources' must be an array, not an object"),
    ("null resources", state(resources=None), "'resources' must be an array, not null"),
    ("scalar resource", state(resources=[{"instances": []}, 7]), "resources[1] must be an object"),
    ("array resource", state(resources=[[]]), "resources[0] must be an object, not an array"),
    ("object instances", state(resources=[{"instances": {}}]), "resources[0].instances must be an array"),
    ("scalar instances", state(resources=[{"instances": "x"}]), "resources[0].instances must be an array"),
    ("scalar instance", state(resources=[{"instances": [1]}]), "resources[0].instances must hold objects"),
    ("no outputs", state(outputs=...), "'outputs' field is missing"),
    ("array outputs", state(outputs=[]), "'outputs' must be an object, not an array"),
    ("v3 without modules", {"version": 3, "serial": 1, "lineage": "l"}, "'modules' field"),
    ("v3 modules object", {"version": 3, "serial": 1, "lineage": "l", "modules": {}}, "must be an array"),
    (
        "v3 module resources list",
        {"version": 3, "serial": 1, "lineage": "l", "modules": [{"resources": []}]},
        "modules[0].resources must be an object",
    ),
]


@pytest.mark.parametrize(("doc", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_what_is_not_a_state_and_why(doc, message):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(InvalidState) as excinfo:
        validate_state_bytes(data)
    assert message in str(excinfo.value)


def test_a_key_given_twice_is_refused():
    data = b'{"version": 4, "serial": 1, "serial": 2, "lineage": "l", "resources": [], "outputs": {}}'
    with pytest.raises(InvalidState, match="the state has the key 'serial' twice"):
        validate_state_bytes(data)


def test_deep_nesting_is_fine_for_the_streaming_parser():
    deep = "[" * 10_000 + "]" * 10_000
    data = (
        '{"version": 4, "serial": 1, "lineage": "l", "outputs": {}, "resources": '
        f'[{{"instances": [{{"attributes": {{"x": {deep}}}}}]}}]}}'
    ).encode()
    assert validate_state_bytes(data).instance_count == 1


def _big_state(path: Path, resources: int) -> int:
    with path.open("w") as fh:
        fh.write('{"version": 4, "terraform_version": "1.9.0", "serial": 42, "lineage": "big", ')
        fh.write('"outputs": {}, "resources": [')
        for i in range(resources):
            if i:
                fh.write(",")
            fh.write(
                json.dumps(
                    {
                        "mode": "managed",
                        "type": "null_resource",
                        "name": f"r{i}",
                        "instances": [{"attributes": {"id": str(i), "blob": "x" * 900}}],
                    }
                )
            )
        fh.write("]}")
    return path.stat().st_size


def test_a_big_state_is_checked_in_one_pass_without_being_held_in_memory(tmp_path):
    path = tmp_path / "big.tfstate"
    size = _big_state(path, 20_000)  # ~20 MB
    tracemalloc.start()
    try:
        summary = validate_state_file(path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (summary.serial, summary.resource_count, summary.instance_count) == (42, 20_000, 20_000)
    assert size > 15_000_000
    assert peak < 4 * 1024 * 1024, f"validation allocated {peak} bytes for a {size}-byte state"


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_the_push_validator_agrees_with_the_file_validator(chunk):
    data = json.dumps(state(serial=12)).encode()
    validator = StateValidator()
    for i in range(0, len(data), chunk):
        validator.feed(data[i : i + chunk])
    assert validator.finish() == validate_state_bytes(data)


def test_the_push_validator_fails_as_soon_as_it_can():
    validator = StateValidator()
    with pytest.raises(InvalidState, match="must be a JSON object, not an array"):
        validator.feed(b"[" + b"1," * 1000)
    truncated = StateValidator()
    truncated.feed(json.dumps(state()).encode()[:-5])
    with pytest.raises(InvalidState, match="malformed JSON"):
        truncated.finish()
    incomplete = StateValidator()
    incomplete.feed(b'{"version": 4, "serial": 1, "lineage": "l", "resources": []')
    with pytest.raises(InvalidState, match="malformed JSON"):
        incomplete.finish()


def test_rewrite_serial_changes_only_the_serial():
    original = json.dumps(state(serial=3)).encode()
    rewritten = rewrite_serial(original, 11)
    assert json.loads(rewritten) == {**json.loads(original), "serial": 11}
    assert validate_state_bytes(rewritten).serial == 11
    assert list(json.loads(rewritten)) == list(json.loads(original))  # key order kept
    with pytest.raises(InvalidState):
        rewrite_serial(b"[1]", 2)
    with pytest.raises(InvalidState):
        rewrite_serial(b"{", 2)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
STATE_KEYS = st.sampled_from(["version", "serial", "lineage", "terraform_version", "resources", "outputs"])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.one_of(JSON, st.dictionaries(STATE_KEYS, JSON), st.binary(max_size=200)))
def test_any_input_is_either_a_state_or_an_invalid_state(doc):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    try:
        summary = validate_state_bytes(data)
    except InvalidState as exc:
        assert str(exc)
    else:
        assert summary.format in (3, 4) and summary.serial >= 0 and summary.lineage
