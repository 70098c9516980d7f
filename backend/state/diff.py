"""Terraform state files → what the state page shows: the diff between two versions, the resource
instances of one version, its outputs.

Input is a state file as Terraform and OpenTofu write it (``terraform.tfstate``, ``version`` 4,
https://github.com/hashicorp/terraform/blob/main/internal/states/statefile/version4.go), as a
parsed object or as JSON text/bytes. Versions 0-3 (Terraform 0.11 and older) and versions newer
than 4 are refused with ``UnsupportedStateVersion``; anything that is not a state at all with
``StateFormatError``, whose message says what is wrong (``resources[3].instances must be a list``).

Pure functions: no I/O, no database, no Reflex; callers run them in a thread for big states.

- ``diff_states(old, new)`` → resources added / removed / changed by instance address, with
  per-attribute rows in the very shape ``backend.runs.plandiff.build_diff`` gives its resource
  entries (``groups`` → ``resources`` → ``attributes``), so the plan diff component renders both;
  outputs added / removed / changed; counts; serials and lineages.
- ``list_resources(state, type_filter=None, address_filter=None)`` → one entry per instance with
  its attributes as rows; ``resource_types(state)`` → the distinct types, for a filter dropdown.
- ``list_outputs(state)`` → the root outputs with their types rendered as HCL (``list(string)``).
- ``render_type(descriptor)`` → that HCL rendering of a JSON type descriptor.

Sensitive values never leave this module. An attribute is hidden ("(sensitive)") when its path is
listed in the instance's ``sensitive_attributes``: on either side, when two versions are compared;
an output when its ``sensitive`` flag is set (on either side). As in plandiff, every string found
at a hidden position is also scrubbed wherever else it appears (``terraform_data.output`` repeats a
sensitive ``input`` unmarked). ``sensitive_attributes`` is read in every form known: the list of
path-step lists Terraform and OpenTofu write (``[[{"type": "get_attr", "value": "password"}]]``,
index steps carrying a cty value ``{"value": "k", "type": "string"}``), a single path, bare-step
paths (``["tags", "secret"]``), path strings (``tags["secret"]``) and a value-shaped tree of
``true`` leaves (the ``sensitive_values`` form of ``terraform show -json``). Anything else hides
every attribute of that instance: over-hiding is the accepted failure mode, never a leak.

Attributes of dynamic type (``terraform_data.input``, ``terraform_remote_state.outputs``) are
stored wrapped as ``{"value": ..., "type": ...}``; the wrapper is removed for display, so rows read
``input.tags.env`` as in the plan, and the sensitive paths (which are value paths) line up.

Null and missing attributes are the same thing: neither is listed, and a change between them is no
change. Long or multi-line values are folded as in the plan diff (``FOLD_CHARS``,
``PREVIEW_CHARS``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from backend.runs.plandiff import (
    FOLD_CHARS,
    PREVIEW_CHARS,
    SENSITIVE,
    _hide,
    _row,
    _Scrubber,
    _Side,
    _walk,
    format_path,
)
from backend.runs.plandiff import _output_entry as _plan_output_entry

__all__ = [
    "FOLD_CHARS",
    "PREVIEW_CHARS",
    "SENSITIVE",
    "STATE_VERSION",
    "StateFormatError",
    "UnsupportedStateVersion",
    "diff_states",
    "list_outputs",
    "list_resources",
    "render_type",
    "resource_types",
]

STATE_VERSION = 4
# A change of an instance as plandiff's action (so the plan diff component picks its symbol),
# in the order the groups are listed.
_ACTIONS = {"added": "create", "changed": "update", "removed": "delete"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PROVIDER = re.compile(r'provider\["([^"]+)"\](?:\.([A-Za-z0-9_-]+))?$')
_LEGACY_PROVIDER = re.compile(r"(?:^|\.)provider\.([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_-]+))?$")
_PATH_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')
_PRIMITIVE_TYPES = ("string", "number", "bool", "dynamic")


class StateFormatError(ValueError):
    """The input is not a Terraform state this code understands; the message says what is wrong."""


class UnsupportedStateVersion(StateFormatError):
    """A state file of another format version than 4; ``version`` is the one it declares."""

    def __init__(self, version: int, message: str):
        super().__init__(message)
        self.version = version


# ---------------------------------------------------------------------------------------------
# Reading a state


@dataclass(slots=True)
class _Instance:
    address: str  # with the " (deposed <key>)" suffix for a deposed object
    module: str | None
    mode: str
    type: str
    name: str
    index: int | str | None
    deposed: str | None
    status: str | None
    provider: str | None  # the provider's source address, "registry.terraform.io/hashicorp/aws"
    provider_short: str | None  # "aws"
    provider_alias: str | None
    provider_config: str | None  # as written: 'provider["registry.terraform.io/hashicorp/aws"].west'
    schema_version: Any
    attributes: dict[str, Any]
    marks: dict[str, Any]  # sensitive positions, a value-shaped tree with true leaves
    dependencies: list[str]
    create_before_destroy: bool


@dataclass(slots=True)
class _Output:
    value: Any
    type: Any
    sensitive: bool


@dataclass(slots=True)
class _State:
    terraform_version: str | None
    serial: Any
    lineage: str | None
    instances: dict[str, _Instance]
    outputs: dict[str, _Output]


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _load(state: Any, label: str = "") -> _State:
    where = f"{label} state: " if label else ""

    def fail(message: str) -> StateFormatError:
        return StateFormatError(where + message)

    if isinstance(state, bytes | bytearray):
        try:
            state = state.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(f"not UTF-8 text: {exc}") from None
    if isinstance(state, str):
        try:
            state = json.loads(state)
        except json.JSONDecodeError as exc:
            raise fail(f"not JSON: {exc}") from None
    if not isinstance(state, dict):
        raise fail(f"a state must be a JSON object, got {_kind_name(state)}")
    if "version" not in state:
        if "format_version" in state:
            raise fail("this is `terraform show -json` output (it has format_version), not a state file")
        raise fail("not a Terraform state: it has no 'version'")
    version = state["version"]
    if isinstance(version, float) and version.is_integer():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int):
        raise fail(f"version must be an integer, got {version!r}")
    if version < STATE_VERSION:
        raise UnsupportedStateVersion(
            version,
            f"{where}state version {version} (written by Terraform 0.11 or older) is not supported: "
            "any `terraform apply` or `terraform refresh` with Terraform 0.12 or newer upgrades it "
            "to version 4",
        )
    if version > STATE_VERSION:
        raise UnsupportedStateVersion(
            version, f"{where}state version {version} is newer than the version 4 this server reads"
        )

    resources = state.get("resources")
    if resources is None:
        resources = []
    if not isinstance(resources, list):
        raise fail(f"resources must be a list, got {_kind_name(resources)}")
    instances: dict[str, _Instance] = {}
    for i, res in enumerate(resources):
        at = f"resources[{i}]"
        if not isinstance(res, dict):
            raise fail(f"{at} must be an object, got {_kind_name(res)}")
        mode = res.get("mode")
        if mode not in ("managed", "data"):
            raise fail(f'{at}.mode must be "managed" or "data", got {mode!r}')
        for key in ("type", "name"):
            if not isinstance(res.get(key), str) or not res[key]:
                raise fail(f"{at}.{key} must be a non-empty string, got {res.get(key)!r}")
        module = res.get("module") or None
        if module is not None and not isinstance(module, str):
            raise fail(f"{at}.module must be a string, got {_kind_name(module)}")
        provider_config = res.get("provider")
        if provider_config is not None and not isinstance(provider_config, str):
            raise fail(f"{at}.provider must be a string, got {_kind_name(provider_config)}")
        resource_address = _address(module, mode, res["type"], res["name"], None)
        raw_instances = res.get("instances")
        if not isinstance(raw_instances, list):
            raise fail(f"{at}.instances must be a list, got {_kind_name(raw_instances)} ({resource_address})")
        provider, short, alias = _provider(provider_config)
        for j, raw in enumerate(raw_instances):
            inst_at = f"{at}.instances[{j}]"
            if not isinstance(raw, dict):
                raise fail(f"{inst_at} must be an object, got {_kind_name(raw)} ({resource_address})")
            inst = _instance(raw, inst_at, fail, module, mode, res, provider_config, provider, short, alias)
            if inst.address in instances:
                raise fail(f"{inst_at}: {inst.address} appears more than once")
            instances[inst.address] = inst

    outputs_raw = state.get("outputs")
    if outputs_raw is None:
        outputs_raw = {}
    if not isinstance(outputs_raw, dict):
        raise fail(f"outputs must be an object, got {_kind_name(outputs_raw)}")
    outputs: dict[str, _Output] = {}
    for name, out in outputs_raw.items():
        if not isinstance(out, dict):
            raise fail(f"{format_path(('outputs', name))} must be an object, got {_kind_name(out)}")
        # Any truthy flag counts: a malformed "sensitive" hides rather than shows.
        outputs[name] = _Output(out.get("value"), out.get("type"), bool(out.get("sensitive")))

    lineage = state.get("lineage")
    tf_version = state.get("terraform_version")
    return _State(
        terraform_version=tf_version if isinstance(tf_version, str) and tf_version else None,
        serial=state.get("serial"),
        lineage=lineage if isinstance(lineage, str) and lineage else None,
        instances=instances,
        outputs=outputs,
    )


def _instance(
    raw: dict[str, Any],
    at: str,
    fail: Any,
    module: str | None,
    mode: str,
    res: dict[str, Any],
    provider_config: str | None,
    provider: str | None,
    short: str | None,
    alias: str | None,
) -> _Instance:
    key = raw.get("index_key")
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if key is not None and (isinstance(key, bool) or not isinstance(key, int | str)):
        raise fail(f"{at}.index_key must be an integer or a string, got {key!r}")
    attributes = raw.get("attributes")
    if attributes is None:
        flat = raw.get("attributes_flat")  # a state upgraded from version 3, not yet refreshed
        if flat is not None and not isinstance(flat, dict):
            raise fail(f"{at}.attributes_flat must be an object, got {_kind_name(flat)}")
        attributes = dict(flat or {})
    elif not isinstance(attributes, dict):
        raise fail(f"{at}.attributes must be an object, got {_kind_name(attributes)}")
    else:
        attributes = _unwrap_dynamic(attributes)
    deposed = raw.get("deposed") or None
    if deposed is not None and not isinstance(deposed, str):
        raise fail(f"{at}.deposed must be a string, got {_kind_name(deposed)}")
    status = raw.get("status") or None
    if status is not None and not isinstance(status, str):
        raise fail(f"{at}.status must be a string, got {_kind_name(status)}")
    dependencies = raw.get("dependencies") or []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise fail(f"{at}.dependencies must be a list of strings")
    address = _address(module, mode, res["type"], res["name"], key)
    if deposed:
        address += f" (deposed {deposed})"
    return _Instance(
        address=address,
        module=module,
        mode=mode,
        type=res["type"],
        name=res["name"],
        index=key,
        deposed=deposed,
        status=status,
        provider=provider,
        provider_short=short,
        provider_alias=alias,
        provider_config=provider_config,
        schema_version=raw.get("schema_version"),
        attributes=attributes,
        marks=_marks(raw.get("sensitive_attributes"), attributes),
        dependencies=list(dependencies),
        create_before_destroy=bool(raw.get("create_before_destroy")),
    )


def _address(module: str | None, mode: str, type_: str, name: str, key: int | str | None) -> str:
    address = f"{'data.' if mode == 'data' else ''}{type_}.{name}"
    if isinstance(key, int):
        address += f"[{key}]"
    elif isinstance(key, str):
        address += f"[{json.dumps(key, ensure_ascii=False)}]"
    return f"{module}.{address}" if module else address


def _provider(config: str | None) -> tuple[str | None, str | None, str | None]:
    """``provider["registry.terraform.io/hashicorp/aws"].west`` → (source, "aws", "west"); the
    legacy ``provider.aws.west`` (Terraform 0.12) → ("aws", "aws", "west")."""
    if not config:
        return None, None, None
    match = _PROVIDER.search(config)
    if match:
        source = match.group(1)
        return source, source.rsplit("/", 1)[-1], match.group(2)
    match = _LEGACY_PROVIDER.search(config)
    if match:
        return match.group(1), match.group(1), match.group(2)
    return config, config, None


# ---------------------------------------------------------------------------------------------
# Dynamic values: {"value": ..., "type": ...}


def _is_type(t: Any, depth: int = 0) -> bool:
    """Whether ``t`` is a cty JSON type descriptor."""
    if depth > 64:
        return False
    if isinstance(t, str):
        return t in _PRIMITIVE_TYPES
    if not isinstance(t, list) or not t:
        return False
    kind = t[0]
    if kind in ("list", "set", "map"):
        return len(t) == 2 and _is_type(t[1], depth + 1)
    if kind == "object":
        return (
            len(t) in (2, 3)
            and isinstance(t[1], dict)
            and all(_is_type(v, depth + 1) for v in t[1].values())
            and (len(t) == 2 or isinstance(t[2], list))
        )
    if kind == "tuple":
        return len(t) == 2 and isinstance(t[1], list) and all(_is_type(v, depth + 1) for v in t[1])
    return False


def _is_wrapper(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {"value", "type"} and _is_type(value["type"])


def _decode(value: Any, t: Any) -> tuple[bool, Any]:
    """``value`` of cty type ``t`` with nested dynamic wrappers removed; False when it does not
    have that type (then the caller keeps the raw value)."""
    if value is None:
        return True, None
    if t == "dynamic":
        return _decode(value["value"], value["type"]) if _is_wrapper(value) else (False, value)
    if t == "string":
        return isinstance(value, str), value
    if t == "number":
        return isinstance(value, int | float | str) and not isinstance(value, bool), value
    if t == "bool":
        return isinstance(value, bool), value
    kind, inner = t[0], t[1]
    if kind in ("list", "set") and isinstance(value, list):
        items = [_decode(v, inner) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if kind == "tuple" and isinstance(value, list) and len(value) == len(inner):
        items = [_decode(v, ty) for v, ty in zip(value, inner, strict=True)]
        return all(ok for ok, _ in items), [v for _, v in items]
    if kind == "map" and isinstance(value, dict):
        decoded = {k: _decode(v, inner) for k, v in value.items()}
        return all(ok for ok, _ in decoded.values()), {k: v for k, (_, v) in decoded.items()}
    if kind == "object" and isinstance(value, dict) and value.keys() <= inner.keys():
        decoded = {k: _decode(v, inner[k]) for k, v in value.items()}
        return all(ok for ok, _ in decoded.values()), {k: v for k, (_, v) in decoded.items()}
    return False, value


def _unwrap_dynamic(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attributes.items():
        if _is_wrapper(value):
            ok, decoded = _decode(value["value"], value["type"])
            out[key] = decoded if ok else value
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Sensitive paths → a mark tree


class _Unfollowable:
    """An index step whose key is neither a number nor a string (a set element)."""


_OTHER = _Unfollowable()


def _all_marked(attributes: dict[str, Any]) -> dict[str, Any]:
    return dict.fromkeys(attributes, True)


def _marks(raw: Any, attributes: dict[str, Any]) -> dict[str, Any]:
    """The value-shaped tree (true leaves) of the sensitive positions in ``attributes``; every
    attribute is marked when ``raw`` is in no form this code knows."""
    if raw is None or raw == [] or raw == {} or raw is False:
        return {}
    if raw is True:
        return _all_marked(attributes)
    if isinstance(raw, dict) and raw.get("type") in ("get_attr", "index") and "value" in raw:
        raw = [[raw]]  # a single step
    if isinstance(raw, dict):  # value-shaped, as `terraform show -json` sensitive_values
        ok, tree = _mark_tree(raw)
        return tree if ok and isinstance(tree, dict) else _all_marked(attributes)
    if not isinstance(raw, list):
        return _all_marked(attributes)
    if all(isinstance(s, dict) and "type" in s for s in raw):
        raw = [raw]  # a single path
    marks: Any = {}
    for path in raw:
        if isinstance(path, str):
            steps = _parse_path_string(path)
        elif isinstance(path, list):
            steps = _steps(path)
        else:
            steps = None
        if not steps:  # unreadable, or the empty path: the whole object
            return _all_marked(attributes)
        marks = _mark(marks, attributes, steps)
    return marks if isinstance(marks, dict) else _all_marked(attributes)


def _steps(path: list[Any]) -> list[Any] | None:
    steps: list[Any] = []
    for step in path:
        if isinstance(step, dict):
            kind, value = step.get("type"), step.get("value")
            if kind == "get_attr" and isinstance(value, str):
                steps.append(value)
            elif kind == "index":
                if isinstance(value, dict) and "value" in value:  # a cty value: {"value", "type"}
                    value = value["value"]
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                steps.append(
                    value if isinstance(value, int | str) and not isinstance(value, bool) else _OTHER
                )
            else:
                return None
        elif isinstance(step, str) or (isinstance(step, int) and not isinstance(step, bool)):
            steps.append(step)
        else:
            return None
    return steps


def _parse_path_string(path: str) -> list[Any] | None:
    """``tags["a.b"]``, ``ingress[0].cidr_blocks`` → steps (the syntax ``format_path`` writes)."""
    steps: list[Any] = []
    pos = 0
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if not match or (match.group(0).startswith(".") and not steps):
            return None
        name, index, quoted = match.groups()
        if name is not None:
            steps.append(name)
        elif index is not None:
            steps.append(int(index))
        else:
            try:
                steps.append(json.loads(quoted))
            except json.JSONDecodeError:
                return None
        pos = match.end()
    return steps


def _mark(marks: Any, value: Any, steps: list[Any]) -> Any:
    """``marks`` (the tree at ``value``) with the position at ``steps`` marked. A path into a
    scalar or through a key of the wrong kind marks the node it stops at (the shape is not what
    it seems: hide more); a key that is absent marks nothing (there is nothing to hide)."""
    if marks is True or not steps:
        return True
    key, rest = steps[0], steps[1:]
    if isinstance(value, dict):
        if isinstance(key, str) and key in value:
            sub = marks if isinstance(marks, dict) else {}
            return {**sub, key: _mark(sub.get(key), value[key], rest)}
        if value.keys() == {"value", "type"}:  # a dynamic value left wrapped: the path goes inside
            sub = marks if isinstance(marks, dict) else {}
            return {**sub, "value": _mark(sub.get("value"), value["value"], steps)}
        if isinstance(key, str):
            return marks
        return True
    if isinstance(value, list):
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(value):
                return marks
            sub = list(marks) if isinstance(marks, list) else []
            sub += [None] * (len(value) - len(sub))
            sub[key] = _mark(sub[key], value[key], rest)
            return sub
        return True  # a string or set-element key into a list: hide the list
    if value is None:
        return marks
    return True


def _mark_tree(raw: Any) -> tuple[bool, Any]:
    if raw is True:
        return True, True
    if raw is False or raw is None:
        return True, None
    if isinstance(raw, dict):
        items = {k: _mark_tree(v) for k, v in raw.items()}
        return all(ok for ok, _ in items.values()), {k: v for k, (_, v) in items.items()}
    if isinstance(raw, list):
        items = [_mark_tree(v) for v in raw]
        return all(ok for ok, _ in items), [v for _, v in items]
    return False, None


def _merge_marks(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if a is True or b is True:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge_marks(a.get(k), b.get(k)) for k in a.keys() | b.keys()}
    if isinstance(a, list) and isinstance(b, list):
        length = max(len(a), len(b))
        return [
            _merge_marks(a[i] if i < len(a) else None, b[i] if i < len(b) else None) for i in range(length)
        ]
    return True  # one side a map, the other a list: the value changed shape, hide it whole


def _collect_secrets(found: set[str], attributes: dict[str, Any], marks: Any) -> None:
    _hide(attributes, marks, found)


class _FastScrubber:
    """plandiff's scrubber with a prefilter: a string that neither is a secret nor contains one
    (one regex search for all of them) is returned as is, without plandiff's loop over every
    secret; any other string goes through plandiff's scrubber, so what is hidden is the same.
    A state holds many more strings and secrets than a plan (5,500 instances with 500 secrets:
    the prefilter scrubs them in a third of the time)."""

    def __init__(self, secrets: set[str]):
        self._scrub = _Scrubber(secrets)
        self._exact = secrets
        parts = self._scrub._parts  # every substring plandiff replaces
        self._search = re.compile("|".join(map(re.escape, parts))).search if parts else None

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            if value in self._exact or (self._search is not None and self._search(value)):
                return self._scrub(value)
            return value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def _scrubber(found: set[str]) -> _FastScrubber:
    """The scrubber for the secrets ``found``, without the blank strings: a sensitive attribute
    that is empty (as ``aws_instance.password_data`` mostly is) would otherwise turn every empty
    string in the state into "(sensitive)". The marked position itself stays hidden."""
    return _FastScrubber({s for s in found if s.strip()})


def _output_secrets(found: set[str], outputs: dict[str, _Output]) -> None:
    for out in outputs.values():
        if out.sensitive:
            _hide(out.value, True, found)


# ---------------------------------------------------------------------------------------------
# Rows


def _rows(
    before: dict[str, Any] | None, after: dict[str, Any] | None, marks: Any, scrub: _FastScrubber
) -> list[dict[str, Any]]:
    """plandiff rows between two attribute objects (None: that side has no instance)."""
    found: list[Any] = []
    b_side = _Side(before, before is not None, marks)
    a_side = _Side(after, after is not None, marks)
    for key in sorted((before or {}).keys() | (after or {}).keys()):
        _walk((key,), b_side.child(key), a_side.child(key), None, found)
    return [_row(path, b, a, sens, unk, [], scrub) for path, b, a, sens, unk in found]


def _value_rows(attributes: dict[str, Any], marks: Any, scrub: _FastScrubber) -> list[dict[str, Any]]:
    """One side's attributes as ``{"path", "value", "sensitive", "folded", "preview"}`` rows."""
    return [
        {
            "path": row["path"],
            "value": row["after"],
            "sensitive": row["sensitive"],
            "folded": row["folded"],
            "preview": row["after_preview"],
        }
        for row in _rows(None, attributes, marks, scrub)
    ]


def _natural(text: str) -> list[Any]:
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def _order(inst: _Instance) -> tuple[Any, ...]:
    """Root module first, then modules; within one, by address (``[2]`` before ``[10]``)."""
    return (inst.module is not None, _natural(inst.module or ""), _natural(inst.address))


# ---------------------------------------------------------------------------------------------
# The diff


def diff_states(old: Any, new: Any) -> dict[str, Any]:
    """What changed from state ``old`` (None: there was none, everything is added) to ``new``.
    Raises ``StateFormatError`` (message prefixed "old state: " / "new state: ") for bad input.
    Shape (JSON-serializable)::

        {
          "summary": {"added": 3, "removed": 1, "changed": 2, "unchanged": 7},   # instances
          "has_changes": true,                     # any instance or output change
          "groups": [                              # non-empty only: create, update, delete
            {"action": "update", "resources": [    # each group ordered by address
              {"address": "module.net.terraform_data.vpc", "unit": null,
               "module": "module.net", "mode": "managed", "type": "terraform_data",
               "name": "vpc", "index": null,       # index_key: 0, "eu", or null
               "provider": "terraform.io/builtin/terraform", "provider_short": "terraform",
               "action": "update", "actions": ["update"], "change": "changed",
               "reason": null,                     # "data source", "tainted", "status ... → ..."
               "deposed": null, "previous_address": null, "importing": false,
               "status": null,                     # "tainted" or null (ready)
               "status_changed": false, "previous_status": null,   # the old status, if changed
               "attributes": [                     # plandiff rows: all for added/removed,
                 {"path": "input.cidr_block", "change": "changed",    # changed ones otherwise
                  "before": "10.0.0.0/16", "after": "10.1.0.0/16",
                  "sensitive": false, "unknown": false, "forces_replacement": false,
                  "folded": false, "before_preview": null, "after_preview": null}]}]}],
          "added": ["terraform_data.cache", ...],  # addresses, ordered as the groups
          "removed": [...], "changed": [...],
          "outputs": [                             # added/removed/changed only, by name
            {"name": "db_password", "action": "update", "change": "changed",
             "before": "(sensitive)", "after": "(sensitive)", "sensitive": true, "unknown": false,
             "folded": false, "before_preview": null, "after_preview": null,
             "type": "string", "previous_type": null}],
          "serial": {"old": 10, "new": 19}, "lineage": {"old": "8b1e…", "new": "8b1e…"},
          "lineage_changed": false,                # both known and different: new is not a
                                                   # later version of old
          "terraform_version": {"old": "1.11.4", "new": "1.11.4"}
        }

    ``before``/``after`` are JSON values, ``null`` on the side that has none; a string is the
    "(sensitive)" marker when the row's ``sensitive`` says so. A deposed object is its own
    instance: ``aws_instance.web (deposed 1a2b3c4d)``. Data sources are listed like resources,
    with ``mode`` "data" and ``reason`` "data source".
    """
    old_state = _load(old, "old") if old is not None else None
    new_state = _load(new, "new")
    old_instances = old_state.instances if old_state else {}
    old_outputs = old_state.outputs if old_state else {}

    found: set[str] = set()
    merged: dict[str, Any] = {}
    for address, inst in new_state.instances.items():
        prior = old_instances.get(address)
        if prior is None:
            marks = inst.marks
        else:
            marks = _merge_marks(prior.marks, inst.marks)
            _collect_secrets(found, prior.attributes, marks)
        merged[address] = marks
        _collect_secrets(found, inst.attributes, marks)
    for address, prior in old_instances.items():
        if address not in new_state.instances:
            merged[address] = prior.marks
            _collect_secrets(found, prior.attributes, prior.marks)
    _output_secrets(found, old_outputs)
    _output_secrets(found, new_state.outputs)
    scrub = _scrubber(found)

    everything = {**old_instances, **new_state.instances}
    groups: dict[str, list[dict[str, Any]]] = {change: [] for change in _ACTIONS}
    unchanged = 0
    for address in sorted(everything, key=lambda a: _order(everything[a])):
        before, after = old_instances.get(address), new_state.instances.get(address)
        if before is None:
            change = "added"
            rows = _rows(None, after.attributes, merged[address], scrub)
        elif after is None:
            change = "removed"
            rows = _rows(before.attributes, None, merged[address], scrub)
        else:
            if before.attributes == after.attributes and before.status == after.status:
                unchanged += 1
                continue
            rows = _rows(before.attributes, after.attributes, merged[address], scrub)
            if not rows and before.status == after.status:
                unchanged += 1
                continue
            change = "changed"
        groups[change].append(_entry(before, after, change, rows))

    outputs = []
    for name in sorted(old_outputs.keys() | new_state.outputs.keys()):
        entry = _output_change(name, old_outputs.get(name), new_state.outputs.get(name), scrub)
        if entry is not None:
            outputs.append(entry)

    summary = {change: len(entries) for change, entries in groups.items()}
    old_lineage = old_state.lineage if old_state else None
    return {
        "summary": {**summary, "unchanged": unchanged},
        "has_changes": any(summary.values()) or bool(outputs),
        "groups": [
            {"action": _ACTIONS[change], "resources": entries}
            for change, entries in groups.items()
            if entries
        ],
        **{change: [e["address"] for e in entries] for change, entries in groups.items()},
        "outputs": outputs,
        "serial": {"old": old_state.serial if old_state else None, "new": new_state.serial},
        "lineage": {"old": old_lineage, "new": new_state.lineage},
        # Only when both are known: an empty stand-in for "no previous version" has none.
        "lineage_changed": bool(old_lineage and new_state.lineage and old_lineage != new_state.lineage),
        "terraform_version": {
            "old": old_state.terraform_version if old_state else None,
            "new": new_state.terraform_version,
        },
    }


def _entry(
    before: _Instance | None, after: _Instance | None, change: str, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    inst = after or before
    assert inst is not None
    action = _ACTIONS[change]
    status_changed = bool(before and after and before.status != after.status)
    reasons = []
    if inst.mode == "data":
        reasons.append("data source")
    if before and after and status_changed:
        reasons.append(f"status {before.status or 'ready'} → {after.status or 'ready'}")
    elif inst.status:
        reasons.append(inst.status)
    return {
        "address": inst.address,
        "unit": None,
        "module": inst.module,
        "mode": inst.mode,
        "type": inst.type,
        "name": inst.name,
        "index": inst.index,
        "provider": inst.provider,
        "provider_short": inst.provider_short,
        "action": action,
        "actions": [action],
        "change": change,
        "reason": ", ".join(reasons) or None,
        "deposed": inst.deposed,
        "previous_address": None,
        "importing": False,
        "status": inst.status,
        "status_changed": status_changed,
        "previous_status": before.status if before and status_changed else None,
        "attributes": rows,
    }


def _output_change(
    name: str, before: _Output | None, after: _Output | None, scrub: _FastScrubber
) -> dict[str, Any] | None:
    # A change of the sensitive flag alone is a change too (shown hidden on both sides).
    if (
        before
        and after
        and (before.value, before.type, before.sensitive) == (after.value, after.type, after.sensitive)
    ):
        return None
    sensitive = bool((before and before.sensitive) or (after and after.sensitive))
    if before is None:
        actions = ["create"]
    elif after is None:
        actions = ["delete"]
    else:
        actions = ["update"]
    change = {
        "actions": actions,
        "before": before.value if before else None,
        "after": after.value if after else None,
        "before_sensitive": sensitive,
        "after_sensitive": sensitive,
    }
    entry = _plan_output_entry(name, change, scrub)
    now, then = (after or before).type, (before.type if before else None)
    entry["type"] = render_type(now) if now is not None else None
    entry["previous_type"] = (
        render_type(then) if before and after and then != now and then is not None else None
    )
    return entry


# ---------------------------------------------------------------------------------------------
# One state: resources and outputs


def _state_scrubber(state: _State) -> _FastScrubber:
    found: set[str] = set()
    for inst in state.instances.values():
        _collect_secrets(found, inst.attributes, inst.marks)
    _output_secrets(found, state.outputs)
    return _scrubber(found)


def list_resources(
    state: Any, type_filter: str | None = None, address_filter: str | None = None
) -> list[dict[str, Any]]:
    """Every instance of ``state``, ordered by address (root module first), optionally only those
    whose type is ``type_filter`` (a trailing ``*`` makes it a prefix: ``aws_iam_*``) and whose
    address contains ``address_filter`` (case-insensitive). Each entry::

        {"address": 'module.net.aws_subnet.private["eu-west-1a"]', "module": "module.net",
         "mode": "managed", "type": "aws_subnet", "name": "private", "index_key": "eu-west-1a",
         "deposed": null, "status": null,                  # "tainted"
         "provider": "registry.terraform.io/hashicorp/aws", "provider_short": "aws",
         "provider_alias": null, "schema_version": 1,
         "dependencies": ["module.net.aws_vpc.main"], "create_before_destroy": false,
         "attributes": [{"path": "tags.Name", "value": "private-a", "sensitive": false,
                         "folded": false, "preview": null}, ...],    # null attributes left out
         "attr_count": 23}
    """
    return resource_page(state, type_filter, address_filter)["data"]


def resource_page(
    state: Any,
    type_filter: str | None = None,
    address_filter: str | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """One page of ``list_resources`` from a single parse: ``{"data": [entry...], "count": the
    instances that match, "types": every type in the state}``. Attribute rows are built for the
    page only, which is what keeps a 10,000-instance state quick to browse."""
    parsed = _load(state)
    wanted_type = (type_filter or "").strip()
    needle = (address_filter or "").strip().casefold()
    matching = []
    for inst in sorted(parsed.instances.values(), key=_order):
        if wanted_type:
            if wanted_type.endswith("*"):
                if not inst.type.startswith(wanted_type[:-1]):
                    continue
            elif inst.type != wanted_type:
                continue
        if needle and needle not in inst.address.casefold():
            continue
        matching.append(inst)
    page = matching[offset:] if limit is None else matching[offset : offset + limit]
    scrub = _state_scrubber(parsed) if page else None
    out = []
    for inst in page:
        rows = _value_rows(inst.attributes, inst.marks, scrub)
        out.append(
            {
                "address": inst.address,
                "module": inst.module,
                "mode": inst.mode,
                "type": inst.type,
                "name": inst.name,
                "index_key": inst.index,
                "deposed": inst.deposed,
                "status": inst.status,
                "provider": inst.provider,
                "provider_short": inst.provider_short,
                "provider_alias": inst.provider_alias,
                "schema_version": inst.schema_version,
                "dependencies": inst.dependencies,
                "create_before_destroy": inst.create_before_destroy,
                "attributes": rows,
                "attr_count": len(rows),
            }
        )
    types = sorted({inst.type for inst in parsed.instances.values()})
    return {"data": out, "count": len(matching), "types": types}


def resource_types(state: Any) -> list[str]:
    """The distinct resource and data source types in ``state``, sorted."""
    return sorted({inst.type for inst in _load(state).instances.values()})


def list_outputs(state: Any) -> list[dict[str, Any]]:
    """The root module outputs of ``state``, by name::

        {"name": "subnet_ids", "type": "list(string)", "value": ["subnet-0a1b", ...],
         "sensitive": false, "folded": false, "preview": null}

    A sensitive output's ``value`` is "(sensitive)" (null stays null); ``type`` is null when the
    state records none.
    """
    parsed = _load(state)
    scrub = _state_scrubber(parsed)
    out = []
    for name in sorted(parsed.outputs):
        output = parsed.outputs[name]
        hidden = SENSITIVE if output.value is not None else None
        value = hidden if output.sensitive else scrub(output.value)
        row = _row((name,), None, value, output.sensitive, False, [], scrub)
        out.append(
            {
                "name": name,
                "type": render_type(output.type) if output.type is not None else None,
                "value": value,
                "sensitive": row["sensitive"],
                "folded": row["folded"],
                "preview": row["after_preview"],
            }
        )
    return out


def render_type(descriptor: Any) -> str:
    """A cty JSON type descriptor as HCL writes the type: ``"string"``; ``["list", "string"]`` →
    ``list(string)``; ``["object", {"a": "number"}]`` → ``object({a = number})`` (attributes
    named in the optional third element as ``optional(...)``); ``["tuple", ["string", "bool"]]``
    → ``tuple([string, bool])``; ``"dynamic"`` → ``any``. Anything else is shown as JSON."""
    if isinstance(descriptor, str):
        return "any" if descriptor == "dynamic" else descriptor
    if isinstance(descriptor, list) and len(descriptor) >= 2:
        kind, inner = descriptor[0], descriptor[1]
        if kind in ("list", "set", "map") and len(descriptor) == 2:
            return f"{kind}({render_type(inner)})"
        if kind == "tuple" and len(descriptor) == 2 and isinstance(inner, list):
            return f"tuple([{', '.join(render_type(t) for t in inner)}])"
        if kind == "object" and isinstance(inner, dict) and len(descriptor) <= 3:
            optional = descriptor[2] if len(descriptor) == 3 and isinstance(descriptor[2], list) else []
            parts = []
            for key, t in inner.items():
                rendered = render_type(t)
                if key in optional:
                    rendered = f"optional({rendered})"
                label = key if _IDENTIFIER.match(key) else json.dumps(key, ensure_ascii=False)
                parts.append(f"{label} = {rendered}")
            return f"object({{{', '.join(parts)}}})"
    return json.dumps(descriptor, ensure_ascii=False)
