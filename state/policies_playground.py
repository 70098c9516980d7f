"""Policy playground (/policies/test): a saved policy or pasted Rego, a JSON input (typed, pasted
or a past run's real input), evaluated with the active engine. Nothing is stored.

``?policy=<id>`` opens with that saved policy selected; ``?draft=1`` keeps the Rego that the
editor handed over (its unsaved draft).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import reflex as rx
from pydantic import ValidationError

from backend.context import get_context
from backend.errors import ServiceError
from backend.policies import inputs, service
from backend.policies.models import PolicyType
from backend.policies.schemas import INPUT_MAX_DEPTH, PolicyEvaluate, input_depth
from backend.storage import StorageError
from state.base import AuthState, SessionExpired
from state.helpers import relative, run_db
from state.policies import TEMPLATES, TYPES, gutter

POLICY_CHOICES = 200
RECENT_RUNS = 20
# Reflex's websocket refuses messages above 1 MB: what the browser edits stays below that.
# Larger inputs (a past run's big plan) are kept on the server and shown as a read-only preview.
INPUT_EDIT_MAX = 900_000
PREVIEW_LINES = 400
SAVED, PASTE = "saved", "paste"

EXAMPLE_INPUT = {
    "resource_changes": [
        {
            "address": "aws_s3_bucket.logs",
            "type": "aws_s3_bucket",
            "change": {"actions": ["delete"], "before": {"bucket": "acme-logs"}, "after": None},
        }
    ],
    "crucible": {
        "run": {"id": "run-example", "type": "tracked", "trigger": "ui", "branch": "main"},
        "stack": {"id": "stk-example", "name": "network-prod", "labels": ["env:prod"], "branch": "main"},
        "counts": {"add": 0, "change": 0, "destroy": 1},
    },
}


@dataclasses.dataclass
class PolicyChoice:
    id: str = ""
    name: str = ""
    type: str = ""


@dataclasses.dataclass
class RunChoice:
    id: str = ""
    label: str = ""


def json_error(text: str) -> tuple[str, int, int] | None:
    """Why ``text`` is not a usable input document: (message, line, column), or None."""
    if not text.strip():
        return "Give an input document: a JSON object (the plan JSON plus the crucible key).", 0, 0
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"Not valid JSON: {exc.msg}", exc.lineno, exc.colno
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number"
        )
        return f"The input must be a JSON object (the plan JSON plus the crucible key), not {kind}.", 0, 0
    if input_depth(value, INPUT_MAX_DEPTH) > INPUT_MAX_DEPTH:
        return f"The input is nested more than {INPUT_MAX_DEPTH} levels deep.", 0, 0
    return None


class PlaygroundState(AuthState):
    mode: str = PASTE
    policies: list[PolicyChoice] = []
    policy_id: str = ""
    policy_body: str = ""  # the selected saved policy's current source (read-only view)
    policy_version: int = 0
    policy_type: str = ""

    body: str = TEMPLATES["post_plan"]
    body_key: int = 0
    body_gutter: str = ""
    body_rows: int = 12
    type_: str = "post_plan"

    input_seed: str = ""  # what the input editor starts from (bump input_key to load it)
    input_key: int = 0
    input_gutter: str = "1"
    input_rows: int = 12
    _input_text: str = ""
    # A past run's input too large to edit in the browser: evaluated from here as loaded.
    _input_doc: dict[str, Any] | None = None
    input_readonly: bool = False
    input_preview: str = ""
    input_source: str = ""  # "run run-… (stack)" when loaded from a run
    json_error: str = ""
    json_line: int = 0
    json_column: int = 0

    runs: list[RunChoice] = []
    run_id: str = ""
    loading_run: bool = False

    loading: bool = True
    evaluating: bool = False
    evaluated: bool = False
    deny: list[str] = []
    warn: list[str] = []
    require_approval: bool = False
    required_approvals: int = 0
    engine: str = ""
    duration_ms: str = ""
    unsupported: list[str] = []
    result_type: str = ""
    result_version: int = 0
    compile_error: str = ""
    compile_line: int = 0
    compile_column: int = 0
    eval_error: str = ""

    _draft: tuple[str, str, str, str] | None = None  # body, type, policy id, policy name
    # The policy whose unsaved draft is pasted here (the editor keeps that draft for the way back).
    draft_policy_id: str = ""
    draft_policy_name: str = ""

    # ------------------------------------------------------------ derived

    @rx.var
    def verdict(self) -> str:
        if self.deny:
            return "deny"
        if self.require_approval and self.result_type == "approval":  # runs honour it only there
            return "approval"
        if self.warn:
            return "warn"
        return "allow"

    # ------------------------------------------------------------ loading

    def prime_draft(self, body: str, type_: str, policy_id: str, policy_name: str) -> None:
        """The editor hands over its draft before it opens /policies/test?draft=1."""
        self._draft = (body, type_ if type_ in TYPES else "post_plan", policy_id, policy_name)

    def _set_body(self, text: str) -> None:
        self.body = text
        self.body_gutter, self.body_rows = gutter(text)
        self.body_key += 1

    def _set_input(self, text: str, remount: bool) -> None:
        self._input_text = text
        self.input_gutter, self.input_rows = gutter(text)
        if remount:
            self.input_seed = text
            self.input_key += 1

    def _clear_result(self) -> None:
        self.evaluated = False
        self.deny, self.warn, self.unsupported = [], [], []
        self.require_approval, self.required_approvals = False, 0
        self.engine, self.duration_ms, self.result_type, self.result_version = "", "", "", 0
        self.compile_error, self.compile_line, self.compile_column, self.eval_error = "", 0, 0, ""

    @rx.event
    async def load(self):
        self.loading = True
        self._clear_result()
        self.json_error, self.json_line, self.json_column = "", 0, 0
        params = self.router.url.query_parameters
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            page, _n = service.list_policies(s, principal, limit=POLICY_CHOICES)
            try:
                recent = inputs.recent_plan_runs(s, principal, None, RECENT_RUNS)
                sources = inputs.sources_for(s, recent)
            except ServiceError:
                sources = []
            return page, sources

        page, sources = await run_db(_q, readonly=True)
        self.policies = [PolicyChoice(p.id, p.name, p.type.value) for p in page]
        self.runs = [
            RunChoice(
                src.run.id,
                f"{src.stack.name} · {src.run.type} · {src.run.status} · {relative(src.run.created_at)}"
                f" · {src.run.id}",
            )
            for src in sources
        ]
        if not self._input_text and self._input_doc is None:
            self._set_input(json.dumps(EXAMPLE_INPUT, indent=2), remount=True)
        else:
            self.input_seed, self.input_key = self._input_text, self.input_key + 1
        if not self.body_gutter:
            self._set_body(self.body)
        else:
            self.body_key += 1  # a fresh mount shows the kept draft
        draft, self._draft = self._draft, None
        wanted = params.get("policy", "")
        self.draft_policy_id = self.draft_policy_name = ""
        if params.get("draft") and draft is not None:
            self.mode = PASTE
            self._set_body(draft[0])
            self.type_, self.draft_policy_id, self.draft_policy_name = draft[1], draft[2], draft[3]
        elif wanted:
            self.mode, self.policy_id = SAVED, wanted
        out = await self._load_policy() if self.mode == SAVED else None
        self.loading = False
        return out

    async def _load_policy(self):
        policy_id = self.policy_id
        self.policy_body, self.policy_version, self.policy_type = "", 0, ""
        if not policy_id:
            return None
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        try:
            p = await run_db(lambda s: service.get_policy(s, principal, policy_id), readonly=True)
        except ServiceError as exc:
            self.policy_id = ""
            return rx.toast.error(exc.message)
        self.policy_body, self.policy_version, self.policy_type = p.body, p.version, p.type.value
        if all(c.id != p.id for c in self.policies):
            self.policies = [PolicyChoice(p.id, p.name, p.type.value), *self.policies]
        return None

    # ------------------------------------------------------------ choices

    @rx.event
    def set_mode(self, value: str | list[str]):
        value = value if isinstance(value, str) else (value[0] if value else "")
        self.mode = SAVED if value == SAVED else PASTE
        self._clear_result()

    @rx.event
    async def select_policy(self, value: str):
        self.policy_id = value
        self._clear_result()
        return await self._load_policy()

    @rx.event
    def copy_to_paste(self):
        """Edit a copy of the selected saved policy (the saved policy is not changed)."""
        if not self.policy_body:
            return None
        self._set_body(self.policy_body)
        self.type_ = self.policy_type or self.type_
        self.mode = PASTE
        self._clear_result()
        return rx.toast.info("Copied into the Rego editor: changes here are not saved to the policy.")

    @rx.event
    def set_body(self, value: str):
        self.body = value
        self.body_gutter, self.body_rows = gutter(value)
        self.compile_error, self.compile_line, self.compile_column = "", 0, 0

    @rx.event
    def set_type(self, value: str):
        if value in TYPES:
            self.type_ = value

    @rx.event
    def set_input(self, value: str):
        self._set_input(value, remount=False)
        self.json_error, self.json_line, self.json_column = "", 0, 0

    @rx.event
    def check_input(self, value: str):
        """On blur: say at once where the JSON is broken."""
        self._set_input(value, remount=False)
        problem = json_error(value)
        if problem and value.strip():
            self.json_error, self.json_line, self.json_column = problem
        else:
            self.json_error, self.json_line, self.json_column = "", 0, 0

    @rx.event
    def format_input(self):
        if self.input_readonly:
            return None
        problem = json_error(self._input_text)
        if problem:
            self.json_error, self.json_line, self.json_column = problem
            return None
        self._set_input(json.dumps(json.loads(self._input_text), indent=2), remount=True)
        return None

    @rx.event
    def reset_input(self):
        self._input_doc, self.input_readonly, self.input_preview, self.input_source = None, False, "", ""
        self.run_id = ""
        self._set_input(json.dumps(EXAMPLE_INPUT, indent=2), remount=True)
        self.json_error, self.json_line, self.json_column = "", 0, 0

    @rx.event
    async def load_run_input(self, run_id: str):
        """Replace the input with a past run's real input document (its redacted plan)."""
        self.run_id, self.loading_run = run_id, True
        yield
        try:
            principal = await self._principal()
        except SessionExpired:
            self.loading_run = False
            yield self._login_redirect()
            return
        ctx = get_context()
        type_ = self.policy_type if self.mode == SAVED else self.type_
        try:
            source = await run_db(lambda s: inputs.load_run_source(s, principal, run_id), readonly=True)
            # The object store is read outside any transaction.
            plan = await asyncio.to_thread(
                inputs.load_plan, ctx.objects, source, ctx.settings.policy_input_max_bytes
            )
            doc = inputs.build_input(source, plan, type_ or None)
        except ServiceError as exc:
            self.loading_run = False
            yield rx.toast.error(exc.message)
            return
        except StorageError as exc:  # the object store itself is unavailable
            self.loading_run = False
            yield rx.toast.error(f"the run's plan cannot be read from the object store: {exc}")
            return
        text = json.dumps(doc, indent=2)
        self.input_source = f"run {source.run.id} ({source.stack.name})"
        self.json_error, self.json_line, self.json_column = "", 0, 0
        if len(text) > INPUT_EDIT_MAX:
            self._input_doc, self.input_readonly = doc, True
            lines = text.split("\n")
            self.input_preview = "\n".join(lines[:PREVIEW_LINES]) + (
                f"\n… {len(lines) - PREVIEW_LINES:,} more lines" if len(lines) > PREVIEW_LINES else ""
            )
            self._input_text = ""
        else:
            self._input_doc, self.input_readonly, self.input_preview = None, False, ""
            self._set_input(text, remount=True)
        self.loading_run = False
        self._clear_result()
        note = "" if plan is not None else " (it has no stored plan: only the crucible key)"
        yield rx.toast.success(f"Loaded the input of {self.input_source}{note}")

    # ------------------------------------------------------------ evaluate

    @rx.event
    async def evaluate(self):
        self._clear_result()
        if self._input_doc is not None:
            doc = self._input_doc
        else:
            problem = json_error(self._input_text)
            if problem:
                self.json_error, self.json_line, self.json_column = problem
                yield rx.toast.error("The input is not a JSON object: see the message under it.")
                return
            doc = json.loads(self._input_text)
        if self.mode == SAVED and not self.policy_id:
            yield rx.toast.error("Pick a saved policy, or paste Rego.")
            return
        self.evaluating = True
        yield
        try:
            principal = await self._principal()
        except SessionExpired:
            self.evaluating = False
            yield self._login_redirect()
            return
        ctx = get_context()
        try:
            if self.mode == SAVED:
                request = PolicyEvaluate(policy_id=self.policy_id, input=doc)
            else:
                request = PolicyEvaluate(body=self.body, type=PolicyType(self.type_), input=doc)
        except ValidationError as exc:
            self.evaluating = False
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            msg = err["msg"].removeprefix("Value error, ")
            if field == "input":
                self.json_error = msg
            else:
                self.compile_error = msg
            yield rx.toast.error(msg)
            return
        try:
            source = await run_db(lambda s: service.evaluation_source(s, principal, request), readonly=True)
            engine = service.engine_for(ctx.settings)
            result = await asyncio.to_thread(
                service.evaluate, principal, engine, source, doc, ctx.settings.policy_timeout_seconds
            )
        except service.PolicyCompileFailed as exc:
            self.evaluating = False
            self.compile_error = exc.message
            self.compile_line, self.compile_column = exc.line or 0, exc.column or 0
            return
        except service.PolicyEvaluationFailed as exc:
            self.evaluating, self.eval_error = False, exc.message
            return
        except ServiceError as exc:
            self.evaluating = False
            yield rx.toast.error(exc.message)
            return
        self.deny, self.warn = list(result.deny), list(result.warn)
        self.require_approval, self.required_approvals = result.require_approval, result.required_approvals
        self.engine, self.duration_ms = result.engine, f"{result.duration_ms:.1f} ms"
        self.unsupported = list(result.unsupported_builtins)
        self.result_type, self.result_version = result.type.value, result.version or 0
        self.evaluated, self.evaluating = True, False
