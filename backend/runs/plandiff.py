"""Plan JSON → what a reviewer reads, what the API may show, and the run's summary counts.

Input is the document `tofu show -json <planfile>` / `terraform show -json <planfile>` prints
(https://developer.hashicorp.com/terraform/internals/json-format, ``format_version`` 1.x; another
major version is refused, as the format's own compatibility rules ask), or a *plan set*: several
such documents keyed by unit path, which the Terragrunt adapter stores for a `run-all` plan::

    {"format": "crucible.plan-set/1", "units": {"app": {...plan...}, "db": {...plan...}}}

Pure functions: no I/O, no Reflex, no runner imports; callers run them in a thread for big plans.

- ``count_actions(plan)`` → ``{"add", "change", "destroy"}`` the way `tofu plan` counts them (a
  replace is one add and one destroy; reads and no-ops count nothing). The one place this is done.
- ``has_changes(plan)`` → whether applying would change anything: a resource action, an import, a
  move, or an output change (Terraform applies output-only changes too).
- ``build_diff(plan)`` → the UI structure: resources grouped by action, each with its changed
  attributes flattened to paths (``tags.env``, ``ingress[0].cidr_blocks[1]``,
  ``tags["kubernetes.io/role"]``). See ``build_diff`` for the exact shape.
- ``redact_plan(plan)`` → the same document with every sensitive value replaced by
  ``"(sensitive)"``, for ``GET /runs/{id}/plan``.

Sensitive values are hidden twice over. First by position: ``before_sensitive`` /
``after_sensitive`` / ``sensitive_values`` mirror the value with ``true`` leaves, sensitive
variables and outputs say so. Then by value: Terraform does not always carry the mark along (a
``terraform_data`` resource's ``output`` repeats a sensitive ``input`` unmarked), so every string
seen at a marked position is also scrubbed wherever else it appears in a value — the same rule the
log masker applies, with the same minimum length. Over-hiding is the accepted failure mode.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FOLD_CHARS",
    "GROUP_ORDER",
    "PLAN_SET_FORMAT",
    "PREVIEW_CHARS",
    "SENSITIVE",
    "UNKNOWN",
    "PlanFormatError",
    "action_of",
    "build_diff",
    "count_actions",
    "format_path",
    "has_changes",
    "plan_units",
    "redact_plan",
]

SENSITIVE = "(sensitive)"
UNKNOWN = "(known after apply)"
FOLD_CHARS = 200  # longer values (or any multi-line value) are folded in the UI
PREVIEW_CHARS = 80
MIN_SECRET_LENGTH = 4  # as runner.masking: shorter values would hide ordinary words everywhere
PLAN_SET_FORMAT = "crucible.plan-set/1"
# Groups in the order a reviewer reads them; read and no-op are counted, never listed.
GROUP_ORDER = ("create", "update", "replace", "delete", "forget")

_ACTIONS = {
    ("no-op",): "no-op",
    ("create",): "create",
    ("read",): "read",
    ("update",): "update",
    ("delete",): "delete",
    ("forget",): "forget",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MARKERS = (SENSITIVE, UNKNOWN)


class PlanFormatError(ValueError):
    """The document is not a plan JSON this code understands; the message says what it is."""


# ---------------------------------------------------------------------------------------------
# Validation and plan sets


def plan_units(plan: Any) -> dict[str, dict[str, Any]]:
    """The plan documents inside ``plan``: ``{"": plan}`` for a single plan, else the plan set's
    units. Raises ``PlanFormatError`` for anything else."""
    if isinstance(plan, dict) and plan.get("format") == PLAN_SET_FORMAT:
        units = plan.get("units")
        if not isinstance(units, dict):
            raise PlanFormatError("plan set has no 'units' object")
        for name, unit in units.items():
            _check_plan(unit, where=f"unit {name!r}: ")
        return units
    _check_plan(plan)
    return {"": plan}


def _check_plan(plan: Any, where: str = "") -> None:
    if not isinstance(plan, dict):
        raise PlanFormatError(f"{where}plan JSON must be an object, got {type(plan).__name__}")
    version = plan.get("format_version")
    if not isinstance(version, str):
        raise PlanFormatError(f"{where}not a plan JSON document: no format_version")
    if version.split(".", 1)[0] != "1":
        raise PlanFormatError(f"{where}unsupported plan JSON format_version {version} (1.x is supported)")
    if "planned_values" not in plan:
        raise PlanFormatError(f"{where}not a plan JSON document: no planned_values (is it a state file?)")
    changes = plan.get("resource_changes", [])
    if not isinstance(changes, list):
        raise PlanFormatError(f"{where}resource_changes must be a list")
    for rc in changes:
        change = rc.get("change") if isinstance(rc, dict) else None
        actions = change.get("actions") if isinstance(change, dict) else None
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            address = rc.get("address", "?") if isinstance(rc, dict) else "?"
            raise PlanFormatError(f"{where}resource change {address} has no list of actions")


def action_of(actions: Iterable[str]) -> str:
    """One name for a change's action list: create, update, replace, delete, read, no-op, forget;
    an unknown combination (a future Terraform's) is joined with '+'."""
    key = tuple(actions)
    return _ACTIONS.get(key) or "+".join(key) or "no-op"


# ---------------------------------------------------------------------------------------------
# Counting


def count_actions(plan: Any) -> dict[str, int]:
    """``{"add", "change", "destroy"}`` over every unit, as `tofu plan` prints them."""
    totals = {"add": 0, "change": 0, "destroy": 0}
    for unit in plan_units(plan).values():
        for rc in unit.get("resource_changes", []):
            action = action_of(rc["change"]["actions"])
            if action == "create":
                totals["add"] += 1
            elif action == "update":
                totals["change"] += 1
            elif action == "delete":
                totals["destroy"] += 1
            elif action == "replace":
                totals["add"] += 1
                totals["destroy"] += 1
    return totals


def has_changes(plan: Any) -> bool:
    """Whether applying the plan would change anything (resources, imports, moves, outputs)."""
    for unit in plan_units(plan).values():
        for rc in unit.get("resource_changes", []):
            if action_of(rc["change"]["actions"]) not in ("no-op", "read"):
                return True
            if rc["change"].get("importing") or rc.get("previous_address"):
                return True
        for change in (unit.get("output_changes") or {}).values():
            if isinstance(change, dict) and action_of(change.get("actions", [])) != "no-op":
                return True
    return False


# ---------------------------------------------------------------------------------------------
# Sensitive values


def _hide(value: Any, marks: Any, found: set[str]) -> Any:
    """``value`` with every position that ``marks`` sets to true replaced by SENSITIVE; the
    strings hidden are added to ``found``."""
    if marks is True:
        if value is None:
            return None
        _strings(value, found)
        return SENSITIVE
    if isinstance(marks, dict) and isinstance(value, dict):
        return {k: _hide(v, marks.get(k), found) for k, v in value.items()}
    if isinstance(marks, list) and isinstance(value, list):
        return [_hide(v, marks[i] if i < len(marks) else None, found) for i, v in enumerate(value)]
    return value


def _strings(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        if value not in _MARKERS:
            found.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, found)
    elif isinstance(value, list):
        for v in value:
            _strings(v, found)


class _Scrubber:
    """Replaces known secret strings wherever they occur inside a value."""

    def __init__(self, secrets: set[str]):
        # An empty secret gives nothing away; hiding every empty string would only mislead.
        self._exact = {s for s in secrets if s}
        parts = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        for s in list(parts):  # a multi-line secret can leak line by line
            parts.update(line for line in s.splitlines() if len(line) >= MIN_SECRET_LENGTH)
        self._parts = sorted(parts, key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            if value in _MARKERS:
                return value
            if value in self._exact:
                return SENSITIVE
            for part in self._parts:
                if part in value:
                    value = value.replace(part, SENSITIVE)
            return value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def _redact_unit(plan: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Positional redaction of one plan document; returns the copy and the strings it hid."""
    found: set[str] = set()
    out = dict(plan)
    config = plan.get("configuration") or {}
    root_config = config.get("root_module") or {}

    sensitive_vars = {
        name
        for name, spec in (root_config.get("variables") or {}).items()
        if isinstance(spec, dict) and spec.get("sensitive")
    }
    if isinstance(plan.get("variables"), dict):
        out["variables"] = {
            name: (
                {**spec, "value": _hide(spec.get("value"), True, found)}
                if name in sensitive_vars and isinstance(spec, dict) and "value" in spec
                else spec
            )
            for name, spec in plan["variables"].items()
        }
    for key in ("resource_changes", "resource_drift"):
        if isinstance(plan.get(key), list):
            out[key] = [_redact_resource_change(rc, found) for rc in plan[key]]
    if isinstance(plan.get("deferred_changes"), list):
        out["deferred_changes"] = [
            {**d, "resource_change": _redact_resource_change(d["resource_change"], found)}
            if isinstance(d, dict) and isinstance(d.get("resource_change"), dict)
            else d
            for d in plan["deferred_changes"]
        ]
    if isinstance(plan.get("output_changes"), dict):
        out["output_changes"] = {
            name: _redact_change(change, found) if isinstance(change, dict) else change
            for name, change in plan["output_changes"].items()
        }
    if isinstance(plan.get("planned_values"), dict):
        out["planned_values"] = _redact_values(plan["planned_values"], found)
    prior = plan.get("prior_state")
    if isinstance(prior, dict) and isinstance(prior.get("values"), dict):
        out["prior_state"] = {**prior, "values": _redact_values(prior["values"], found)}
    if config:
        out["configuration"] = {**config, "root_module": _redact_module_config(root_config, found)}
    return out, found


def _redact_change(change: dict[str, Any], found: set[str]) -> dict[str, Any]:
    out = dict(change)
    if "before" in change:
        out["before"] = _hide(change["before"], change.get("before_sensitive"), found)
    if "after" in change:
        out["after"] = _hide(change["after"], change.get("after_sensitive"), found)
    return out


def _redact_resource_change(rc: Any, found: set[str]) -> Any:
    if not isinstance(rc, dict) or not isinstance(rc.get("change"), dict):
        return rc
    return {**rc, "change": _redact_change(rc["change"], found)}


def _redact_values(values: dict[str, Any], found: set[str]) -> dict[str, Any]:
    """``planned_values`` / ``prior_state.values``: outputs and a module tree of resources."""
    out = dict(values)
    if isinstance(values.get("outputs"), dict):
        out["outputs"] = {
            name: {**o, "value": _hide(o["value"], True, found)}
            if isinstance(o, dict) and o.get("sensitive") and "value" in o
            else o
            for name, o in values["outputs"].items()
        }
    if isinstance(values.get("root_module"), dict):
        out["root_module"] = _redact_module_values(values["root_module"], found)
    return out


def _redact_module_values(module: dict[str, Any], found: set[str]) -> dict[str, Any]:
    out = dict(module)
    if isinstance(module.get("resources"), list):
        out["resources"] = [
            {**r, "values": _hide(r["values"], r.get("sensitive_values"), found)}
            if isinstance(r, dict) and "values" in r
            else r
            for r in module["resources"]
        ]
    if isinstance(module.get("child_modules"), list):
        out["child_modules"] = [
            _redact_module_values(m, found) if isinstance(m, dict) else m for m in module["child_modules"]
        ]
    return out


def _redact_module_config(module: dict[str, Any], found: set[str]) -> dict[str, Any]:
    """Defaults of sensitive variables, constant expressions of sensitive outputs, and the
    constant arguments a module call passes to a sensitive variable."""
    out = dict(module)
    variables = module.get("variables") or {}
    if isinstance(variables, dict):
        out["variables"] = {
            name: {**spec, "default": _hide(spec["default"], True, found)}
            if isinstance(spec, dict) and spec.get("sensitive") and "default" in spec
            else spec
            for name, spec in variables.items()
        }
    if isinstance(module.get("outputs"), dict):
        out["outputs"] = {
            name: _hide_expression(o, found) if isinstance(o, dict) and o.get("sensitive") else o
            for name, o in module["outputs"].items()
        }
    if isinstance(module.get("module_calls"), dict):
        calls = {}
        for name, call in module["module_calls"].items():
            if not isinstance(call, dict):
                calls[name] = call
                continue
            child = call.get("module") if isinstance(call.get("module"), dict) else {}
            child_vars = child.get("variables") or {}
            call = dict(call)
            if isinstance(call.get("expressions"), dict):
                call["expressions"] = {
                    arg: _hide_expression(expr, found)
                    if isinstance(child_vars.get(arg), dict) and child_vars[arg].get("sensitive")
                    else expr
                    for arg, expr in call["expressions"].items()
                }
            if child:
                call["module"] = _redact_module_config(child, found)
            calls[name] = call
        out["module_calls"] = calls
    return out


def _hide_expression(holder: Any, found: set[str]) -> Any:
    """Hide every ``constant_value`` inside an expression (or a block of expressions)."""
    if isinstance(holder, dict):
        return {
            k: _hide(v, True, found) if k == "constant_value" else _hide_expression(v, found)
            for k, v in holder.items()
        }
    if isinstance(holder, list):
        return [_hide_expression(v, found) for v in holder]
    return holder


def _scrub_unit(plan: dict[str, Any], scrub: _Scrubber) -> dict[str, Any]:
    """Value-based scrubbing, applied only where values live (never to addresses, actions,
    modes and other structure, which a short secret could otherwise garble)."""
    out = dict(plan)
    if isinstance(plan.get("variables"), dict):
        out["variables"] = {
            n: {**v, "value": scrub(v["value"])} if isinstance(v, dict) and "value" in v else v
            for n, v in plan["variables"].items()
        }

    def change(c: Any) -> Any:
        if not isinstance(c, dict):
            return c
        return {k: scrub(v) if k in ("before", "after", "generated_config") else v for k, v in c.items()}

    for key in ("resource_changes", "resource_drift"):
        if isinstance(plan.get(key), list):
            out[key] = [
                {**rc, "change": change(rc["change"])} if isinstance(rc, dict) and "change" in rc else rc
                for rc in plan[key]
            ]
    if isinstance(plan.get("deferred_changes"), list):
        out["deferred_changes"] = [
            {
                **d,
                "resource_change": {
                    **d["resource_change"],
                    "change": change(d["resource_change"].get("change")),
                },
            }
            if isinstance(d, dict) and isinstance(d.get("resource_change"), dict)
            else d
            for d in plan["deferred_changes"]
        ]
    if isinstance(plan.get("output_changes"), dict):
        out["output_changes"] = {n: change(c) for n, c in plan["output_changes"].items()}

    def values(v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        res = dict(v)
        if isinstance(v.get("outputs"), dict):
            res["outputs"] = {
                n: {**o, "value": scrub(o["value"])} if isinstance(o, dict) and "value" in o else o
                for n, o in v["outputs"].items()
            }
        if isinstance(v.get("root_module"), dict):
            res["root_module"] = module(v["root_module"])
        return res

    def module(m: dict[str, Any]) -> dict[str, Any]:
        res = dict(m)
        if isinstance(m.get("resources"), list):
            res["resources"] = [
                {**r, "values": scrub(r["values"])} if isinstance(r, dict) and "values" in r else r
                for r in m["resources"]
            ]
        if isinstance(m.get("child_modules"), list):
            res["child_modules"] = [module(c) if isinstance(c, dict) else c for c in m["child_modules"]]
        return res

    if "planned_values" in plan:
        out["planned_values"] = values(plan["planned_values"])
    prior = plan.get("prior_state")
    if isinstance(prior, dict) and "values" in prior:
        out["prior_state"] = {**prior, "values": values(prior["values"])}

    def config(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: scrub(v) if k in ("constant_value", "default") else config(v) for k, v in node.items()}
        if isinstance(node, list):
            return [config(v) for v in node]
        return node

    if "configuration" in plan:
        out["configuration"] = config(plan["configuration"])
    return out


def _secrets_of(units: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], _Scrubber]:
    redacted: dict[str, dict[str, Any]] = {}
    found: set[str] = set()
    for name, unit in units.items():
        redacted[name], secrets = _redact_unit(unit)
        found |= secrets
    return redacted, _Scrubber(found)


def redact_plan(plan: Any) -> dict[str, Any]:
    """A copy of ``plan`` (a plan or a plan set) in which no sensitive value is left: marked
    values become "(sensitive)", and so does every other occurrence of their text."""
    units = plan_units(plan)
    redacted, scrub = _secrets_of(units)
    cleaned = {name: _scrub_unit(unit, scrub) for name, unit in redacted.items()}
    if plan.get("format") == PLAN_SET_FORMAT:
        return {**plan, "units": cleaned}
    return cleaned[""]


# ---------------------------------------------------------------------------------------------
# The reviewer's diff


def build_diff(plan: Any) -> dict[str, Any]:
    """The plan as the UI renders it. Shape (JSON-serializable)::

        {
          "summary": {"add": 7, "change": 2, "destroy": 3},
          "has_changes": true,
          "counts": {"create": 5, "update": 2, "replace": 2, "delete": 1, "forget": 0,
                     "read": 1, "no-op": 1},
          "groups": [                              # non-empty groups only, in GROUP_ORDER
            {"action": "update", "resources": [
              {"address": "terraform_data.web", "unit": null, "module": null,
               "mode": "managed", "type": "terraform_data", "name": "web", "index": null,
               "provider": "terraform.io/builtin/terraform",
               "action": "update", "actions": ["update"], "reason": null,
               "deposed": null, "previous_address": null, "importing": false,
               "attributes": [
                 {"path": "input.tags.env", "change": "changed",
                  "before": "staging", "after": "prod",
                  "sensitive": false, "unknown": false, "forces_replacement": false,
                  "folded": false, "before_preview": null, "after_preview": null}, ...]}]}],
          "outputs": [{"name": "pw", "action": "update", "change": "changed",
                       "before": "(sensitive)", "after": "(sensitive)", "sensitive": true,
                       "unknown": false, "folded": false, ...}],
          "drift": [ ...resource entries for changes made outside the tool... ],
          "errored": false,
          "tool_version": "1.11.4"
        }

    ``before``/``after`` are JSON values: ``null`` means that side has no value (``added`` /
    ``removed``); a string is shown quoted unless the row's ``sensitive``/``unknown`` flag says it
    is the "(sensitive)" / "(known after apply)" marker. A subtree that is unknown, sensitive as a
    whole, or changes type is one row whose value is the (redacted) object or list. Updates and
    replaces list only changed attributes; creates and deletes list every non-null attribute.
    Folded rows carry a one-line preview of each long side.
    """
    units = plan_units(plan)
    _, scrub = _secrets_of(units)
    is_set = isinstance(plan, dict) and plan.get("format") == PLAN_SET_FORMAT
    counts = dict.fromkeys((*GROUP_ORDER, "read", "no-op"), 0)
    groups: dict[str, list[dict[str, Any]]] = {}
    outputs: list[dict[str, Any]] = []
    drift: list[dict[str, Any]] = []
    versions: set[str] = set()
    errored = False
    for unit_name, unit in units.items():
        unit_label = unit_name if is_set else None
        versions.add(str(unit.get("terraform_version") or ""))
        errored = errored or bool(unit.get("errored"))
        for rc in unit.get("resource_changes", []):
            entry = _resource_entry(rc, unit_label, scrub)
            counts[entry["action"]] = counts.get(entry["action"], 0) + 1
            if entry["action"] not in ("read", "no-op"):
                groups.setdefault(entry["action"], []).append(entry)
        for rc in unit.get("resource_drift", []) or []:
            if isinstance(rc, dict) and isinstance(rc.get("change"), dict):
                drift.append(_resource_entry(rc, unit_label, scrub))
        for name, change in (unit.get("output_changes") or {}).items():
            if isinstance(change, dict) and action_of(change.get("actions", [])) != "no-op":
                outputs.append(
                    _output_entry(name if not unit_label else f"{unit_label}:{name}", change, scrub)
                )
    order = [a for a in GROUP_ORDER if a in groups] + sorted(a for a in groups if a not in GROUP_ORDER)
    return {
        "summary": count_actions(plan),
        "has_changes": has_changes(plan),
        "counts": counts,
        "groups": [{"action": a, "resources": groups[a]} for a in order],
        "outputs": outputs,
        "drift": drift,
        "errored": errored,
        "tool_version": ", ".join(sorted(v for v in versions if v)) or None,
    }


def _resource_entry(rc: dict[str, Any], unit: str | None, scrub: _Scrubber) -> dict[str, Any]:
    change = rc["change"]
    action = action_of(change.get("actions", []))
    replace_paths = [tuple(p) for p in change.get("replace_paths") or [] if isinstance(p, list)]
    rows: list[dict[str, Any]] = []
    _walk(
        (),
        _Side(change.get("before"), change.get("before") is not None, change.get("before_sensitive")),
        _Side(change.get("after"), change.get("after") is not None, change.get("after_sensitive")),
        change.get("after_unknown"),
        rows,
    )
    attributes = [_row(path, b, a, sens, unk, replace_paths, scrub) for path, b, a, sens, unk in rows]
    return {
        "address": rc.get("address"),
        "unit": unit,
        "module": rc.get("module_address"),
        "mode": rc.get("mode", "managed"),
        "type": rc.get("type"),
        "name": rc.get("name"),
        "index": rc.get("index"),
        "provider": rc.get("provider_name"),
        "action": action,
        "actions": list(change.get("actions", [])),
        "reason": rc.get("action_reason"),
        "deposed": rc.get("deposed"),
        "previous_address": rc.get("previous_address"),
        "importing": bool(change.get("importing")),
        "attributes": attributes,
    }


class _Side:
    """One side (before or after) of a change at some path: its value, whether it has one at
    all, and its sensitivity marks."""

    __slots__ = ("marks", "present", "value")

    def __init__(self, value: Any, present: bool, marks: Any):
        self.value = value if present else None
        self.present = present and value is not None
        self.marks = marks

    def child(self, key: str | int) -> _Side:
        value, present = None, False
        in_dict = isinstance(key, str) and isinstance(self.value, dict) and key in self.value
        in_list = isinstance(key, int) and isinstance(self.value, list) and key < len(self.value)
        if in_dict or in_list:
            value, present = self.value[key], True
        return _Side(value, present, _child_marks(self.marks, key))

    @property
    def hidden(self) -> bool:
        return self.marks is True

    def shown(self) -> Any:
        """The value for display: sensitive parts hidden (the scrubber runs later)."""
        if not self.present:
            return None
        return _hide(self.value, self.marks, set())


def _child_marks(marks: Any, key: str | int) -> Any:
    if isinstance(key, str) and isinstance(marks, dict):
        return marks.get(key)
    if isinstance(key, int) and isinstance(marks, list) and key < len(marks):
        return marks[key]
    return None


Row = tuple[tuple[str | int, ...], Any, Any, bool, bool]


def _walk(path: tuple[str | int, ...], before: _Side, after: _Side, unknown: Any, rows: list[Row]) -> None:
    if unknown is True:
        rows.append((path, before.shown(), UNKNOWN, before.hidden, True))
        return
    if before.hidden or after.hidden:
        if before.value != after.value or before.present != after.present:
            b = SENSITIVE if before.hidden and before.present else before.shown()
            a = SENSITIVE if after.hidden and after.present else after.shown()
            rows.append((path, b, a, True, False))
        return
    b_kind, a_kind = _kind(before), _kind(after, unknown)
    if b_kind is None and a_kind is None:
        return
    if b_kind and a_kind and b_kind != a_kind:  # the type changed: one row, both sides whole
        shown = _render(after.value, after.marks, unknown)
        rows.append((path, before.shown(), shown, False, _contains_marker(shown, UNKNOWN)))
        return
    kind = b_kind or a_kind
    if kind == "scalar":
        if before.present != after.present or before.value != after.value:
            rows.append((path, before.shown(), after.shown(), False, False))
        return
    keys: list[str | int]
    if kind == "dict":
        # Sorted, as Terraform shows them; after-only (new or unknown) keys fall into place.
        keys = sorted({k for v in (before.value, after.value, unknown) if isinstance(v, dict) for k in v})
    else:
        keys = list(range(max(len(v) for v in (before.value, after.value, unknown) if isinstance(v, list))))
    if not keys:
        if before.present != after.present:  # an empty map or list appears or goes
            rows.append((path, before.shown(), after.shown(), False, False))
        return
    for key in keys:
        _walk((*path, key), before.child(key), after.child(key), _child_marks(unknown, key), rows)


def _kind(side: _Side, unknown: Any = None) -> str | None:
    if side.present:
        return (
            "dict" if isinstance(side.value, dict) else "list" if isinstance(side.value, list) else "scalar"
        )
    if isinstance(unknown, dict):
        return "dict"
    if isinstance(unknown, list):
        return "list"
    return None


def _row(
    path: tuple[str | int, ...],
    before: Any,
    after: Any,
    sensitive: bool,
    unknown: bool,
    replace_paths: list[tuple[Any, ...]],
    scrub: _Scrubber,
) -> dict[str, Any]:
    before, after = scrub(before), scrub(after)
    if before is None:
        change = "added"
    elif after is None:
        change = "removed"
    else:
        change = "changed"
    forces = any(path[: len(rp)] == rp or rp[: len(path)] == path for rp in replace_paths)
    row = {
        "path": format_path(path),
        "change": change,
        "before": before,
        "after": after,
        "sensitive": sensitive or _contains_marker(before, SENSITIVE) or _contains_marker(after, SENSITIVE),
        "unknown": unknown,
        "forces_replacement": forces,
    }
    return {**row, **_fold(before, after)}


def _output_entry(name: str, change: dict[str, Any], scrub: _Scrubber) -> dict[str, Any]:
    action = action_of(change.get("actions", []))
    before = _render(change.get("before"), change.get("before_sensitive"), None)
    after = _render(change.get("after"), change.get("after_sensitive"), change.get("after_unknown"))
    before, after = scrub(before), scrub(after)
    if action == "create" or (before is None and after is not None):
        kind = "added"
    elif action == "delete" or after is None:
        kind = "removed"
    else:
        kind = "changed"
    return {
        "name": name,
        "action": action,
        "change": kind,
        "before": before,
        "after": after,
        "sensitive": _contains_marker(before, SENSITIVE) or _contains_marker(after, SENSITIVE),
        "unknown": _contains_marker(after, UNKNOWN),
        **_fold(before, after),
    }


def _render(value: Any, sensitive: Any, unknown: Any) -> Any:
    """A whole value with sensitive parts hidden and unknown parts marked."""
    if unknown is True:
        return UNKNOWN
    if sensitive is True:
        return None if value is None else SENSITIVE
    if isinstance(value, dict) or isinstance(unknown, dict):
        base = value if isinstance(value, dict) else {}
        keys = list(base) + [k for k in (unknown or {}) if k not in base]
        return {k: _render(base.get(k), _child_marks(sensitive, k), _child_marks(unknown, k)) for k in keys}
    if isinstance(value, list) or isinstance(unknown, list):
        base = value if isinstance(value, list) else []
        length = max(len(base), len(unknown) if isinstance(unknown, list) else 0)
        return [
            _render(base[i] if i < len(base) else None, _child_marks(sensitive, i), _child_marks(unknown, i))
            for i in range(length)
        ]
    return value


def _contains_marker(value: Any, marker: str) -> bool:
    if isinstance(value, str):
        return value == marker
    if isinstance(value, dict):
        return any(_contains_marker(v, marker) for v in value.values())
    if isinstance(value, list):
        return any(_contains_marker(v, marker) for v in value)
    return False


def _fold(before: Any, after: Any) -> dict[str, Any]:
    b, a = _preview(before), _preview(after)
    return {"folded": b is not None or a is not None, "before_preview": b, "after_preview": a}


def _preview(value: Any) -> str | None:
    """A one-line preview when the value is too long to show unfolded, else None."""
    if value is None or value in _MARKERS:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) <= FOLD_CHARS and "\n" not in text:
        return None
    flat = " ".join(text.split())
    cut = flat[: PREVIEW_CHARS - 1].rstrip()
    lines = len(text.splitlines())
    return f"{cut}… ({len(text)} chars, {lines} lines)" if lines > 1 else f"{cut}… ({len(text)} chars)"


def format_path(path: Iterable[str | int]) -> str:
    """``("tags", "env")`` → ``tags.env``; ``("ingress", 0, "cidr_blocks", 1)`` →
    ``ingress[0].cidr_blocks[1]``; keys that are not identifiers are quoted: ``tags["a.b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out
