"""Streaming validation of Terraform/OpenTofu state files.

A state can be hundreds of megabytes, so the write path never builds it in memory: ijson (the
yajl2 C backend when available) walks the file's events once, checking the top-level fields
and counting resources and instances on the way. Only the rare paths that must rewrite a state
(forced uploads, rollbacks) load it whole, and they are size-capped by the caller.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO

import ijson

SUPPORTED_FORMATS = (3, 4)
MAX_SERIAL = 2**63 - 1  # a BIGINT
MAX_LINEAGE = 255
MAX_TF_VERSION = 64
_BUF_SIZE = 256 * 1024
_CHECKED_KEYS = frozenset(
    {"version", "serial", "lineage", "terraform_version", "resources", "outputs", "modules"}
)

_TYPE_NAMES = {
    "start_map": "an object",
    "start_array": "an array",
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


class InvalidState(ValueError):
    """The bytes are not JSON, or not a Terraform state; the message says which and why."""


@dataclass(frozen=True)
class StateSummary:
    format: int  # the state's "version" field
    serial: int
    lineage: str
    terraform_version: str | None
    resource_count: int
    instance_count: int


def _describe(event: str, value: Any) -> str:
    if event == "number":
        return "a fraction" if isinstance(value, Decimal) else "a number"
    return _TYPE_NAMES.get(event, event)


class _Walker:
    """A hand-written state machine over ijson's basic events (no per-event prefix strings).

    Depths: 1 = inside the top-level object; 2 = inside a top-level array such as resources;
    3 = inside one resource (or one v3 module); 4 = inside its instances array (or the v3
    module's resources object); 5 = inside one instance."""

    def __init__(self) -> None:
        self.depth = 0
        self.done = False
        self.top_key: str | None = None
        self.seen: set[str] = set()
        self.scalars: dict[str, Any] = {}
        self.inner_key: str | None = None  # the last key at depth 3 inside resources/modules
        self.resources = 0
        self.instances = 0
        self.v3_resources = 0
        self.item = -1  # index of the current resources/modules element

    def fail(self, message: str) -> InvalidState:
        return InvalidState(message)

    def run(self, events) -> None:
        for event, value in events:
            if event == "map_key":
                self._key(value)
            elif event == "start_map" or event == "start_array":
                self._open(event)
            elif event == "end_map" or event == "end_array":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
            else:
                self._scalar(event, value)

    def finish(self) -> StateSummary:
        if not self.done:
            raise self.fail("malformed JSON: the document ends early")
        return self._summary()

    def _key(self, key: str) -> None:
        if self.depth == 1:
            if key in self.seen and key in _CHECKED_KEYS:
                raise self.fail(f"the state has the key {key!r} twice")
            self.seen.add(key)
            self.top_key = key
        elif self.depth == 3:
            self.inner_key = key
        elif self.depth == 4 and self.top_key == "modules" and self.inner_key == "resources":
            self.v3_resources += 1

    def _open(self, event: str) -> None:
        depth = self.depth
        if depth == 0:
            if self.done:
                raise self.fail("malformed JSON: more than one value")
            if event != "start_map":
                raise self.fail(f"a Terraform state must be a JSON object, not {_describe(event, None)}")
        elif depth == 1:
            self._top_value(event, None)
        elif depth == 2 and self.top_key in ("resources", "modules"):
            self.item += 1
            self.inner_key = None
            if event != "start_map":
                what = _describe(event, None)
                raise self.fail(f"{self.top_key}[{self.item}] must be an object, not {what}")
            if self.top_key == "resources":
                self.resources += 1
        elif depth == 3 and self.top_key == "resources" and self.inner_key == "instances":
            if event != "start_array":
                raise self.fail(f"resources[{self.item}].instances must be an array")
        elif depth == 4 and self.top_key == "resources" and self.inner_key == "instances":
            if event != "start_map":
                raise self.fail(f"resources[{self.item}].instances must hold objects")
            self.instances += 1
        elif depth == 3 and self._in_v3_resources() and event != "start_map":
            raise self.fail(f"modules[{self.item}].resources must be an object")
        self.depth = depth + 1

    def _in_v3_resources(self) -> bool:
        return self.top_key == "modules" and self.inner_key == "resources"

    def _scalar(self, event: str, value: Any) -> None:
        depth = self.depth
        if depth == 0:
            if self.done:
                raise self.fail("malformed JSON: more than one value")
            raise self.fail(f"a Terraform state must be a JSON object, not {_describe(event, value)}")
        if depth == 1:
            self._top_value(event, value)
        elif depth == 2 and self.top_key in ("resources", "modules"):
            self.item += 1
            raise self.fail(f"{self.top_key}[{self.item}] must be an object, not {_describe(event, value)}")
        elif depth == 3 and self.top_key == "resources" and self.inner_key == "instances":
            raise self.fail(f"resources[{self.item}].instances must be an array")
        elif depth == 4 and self.top_key == "resources" and self.inner_key == "instances":
            raise self.fail(f"resources[{self.item}].instances must hold objects")
        elif depth == 3 and self.top_key == "modules" and self.inner_key == "resources":
            raise self.fail(f"modules[{self.item}].resources must be an object")

    def _top_value(self, event: str, value: Any) -> None:
        key = self.top_key
        if key == "version":
            if event != "number" or isinstance(value, Decimal):
                raise self.fail(f"'version' must be an integer (3 or 4), not {_describe(event, value)}")
            if value not in SUPPORTED_FORMATS:
                raise self.fail(
                    f"unsupported state format version {value}: Crucible stores Terraform/OpenTofu "
                    "state format 3 or 4"
                )
            self.scalars[key] = value
        elif key == "serial":
            if event != "number" or isinstance(value, Decimal):
                raise self.fail(f"'serial' must be a non-negative integer, not {_describe(event, value)}")
            if value < 0:
                raise self.fail(f"'serial' must be a non-negative integer, not {value}")
            if value > MAX_SERIAL:
                raise self.fail(f"'serial' is too large (the limit is {MAX_SERIAL})")
            self.scalars[key] = value
        elif key == "lineage":
            if event != "string":
                raise self.fail(f"'lineage' must be a non-empty string, not {_describe(event, value)}")
            if not value.strip():
                raise self.fail("'lineage' must be a non-empty string")
            if len(value) > MAX_LINEAGE or any(ord(c) < 32 for c in value):
                raise self.fail(f"'lineage' must be at most {MAX_LINEAGE} printable characters")
            self.scalars[key] = value
        elif key == "terraform_version":
            if event != "string":
                raise self.fail(f"'terraform_version' must be a string, not {_describe(event, value)}")
            if len(value) > MAX_TF_VERSION or any(ord(c) < 32 for c in value):
                raise self.fail(f"'terraform_version' must be at most {MAX_TF_VERSION} printable characters")
            self.scalars[key] = value
        elif key in ("resources", "modules"):
            if event != "start_array":
                raise self.fail(f"'{key}' must be an array, not {_describe(event, value)}")
            self.item = -1
        elif key == "outputs" and event != "start_map":
            raise self.fail(f"'outputs' must be an object, not {_describe(event, value)}")

    def _summary(self) -> StateSummary:
        for key in ("version", "serial", "lineage"):
            if key not in self.scalars:
                raise self.fail(f"not a Terraform state: the '{key}' field is missing")
        fmt = self.scalars["version"]
        if fmt == 4:
            for key in ("resources", "outputs"):
                if key not in self.seen:
                    raise self.fail(f"not a Terraform state: the '{key}' field is missing")
            resources, instances = self.resources, self.instances
        else:
            if "modules" not in self.seen:
                raise self.fail("not a Terraform state: the 'modules' field (format 3) is missing")
            resources = instances = self.v3_resources  # format 3: one primary instance each
        return StateSummary(
            format=fmt,
            serial=self.scalars["serial"],
            lineage=self.scalars["lineage"],
            terraform_version=self.scalars.get("terraform_version"),
            resource_count=resources,
            instance_count=instances,
        )


def _malformed(exc: Exception) -> InvalidState:
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else "unexpected input"
    return InvalidState(f"malformed JSON: {reason}")


class StateValidator:
    """Push interface: ``feed(chunk)`` as the bytes arrive, then ``finish()`` for the summary.

    Lets an upload be validated while it is received, instead of in a second pass over the
    spooled file. Raises InvalidState as soon as the input can no longer be a state."""

    def __init__(self) -> None:
        self._walker = _Walker()
        self._events = ijson.sendable_list()
        self._parser = ijson.basic_parse_coro(self._events, use_float=False)
        self._closed = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        try:
            self._parser.send(chunk)
        except ijson.JSONError as exc:
            raise _malformed(exc) from None
        except UnicodeDecodeError:
            raise InvalidState("malformed JSON: the body is not valid UTF-8") from None
        self._drain()

    def finish(self) -> StateSummary:
        if not self._closed:
            self._closed = True
            try:
                self._parser.close()
            except ijson.JSONError as exc:
                raise _malformed(exc) from None
            self._drain()
        return self._walker.finish()

    def _drain(self) -> None:
        if self._events:
            self._walker.run(self._events)
            del self._events[:]


def validate_state_stream(fh: BinaryIO) -> StateSummary:
    """Validate a state read from a binary file object, in one streaming pass."""
    walker = _Walker()
    try:
        walker.run(ijson.basic_parse(fh, buf_size=_BUF_SIZE, use_float=False))
    except ijson.JSONError as exc:
        raise _malformed(exc) from None
    except UnicodeDecodeError:
        raise InvalidState("malformed JSON: the body is not valid UTF-8") from None
    return walker.finish()


def validate_state_file(path: str | os.PathLike[str]) -> StateSummary:
    with open(path, "rb") as fh:
        return validate_state_stream(fh)


def validate_state_bytes(data: bytes) -> StateSummary:
    return validate_state_stream(io.BytesIO(data))


def rewrite_serial(data: bytes, serial: int) -> bytes:
    """The same state with its serial replaced (forced uploads and rollbacks). Loads the state
    whole: callers cap the size. The output is indented like Terraform's own."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidState("malformed JSON: the state cannot be parsed") from None
    if not isinstance(doc, dict):
        raise InvalidState("a Terraform state must be a JSON object")
    doc["serial"] = serial
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
