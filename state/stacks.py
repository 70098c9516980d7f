"""Stacks list, detail and create/edit form."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlencode

import reflex as rx
from pydantic import ValidationError

from backend.audit import service as audit_service
from backend.context import get_context
from backend.errors import FieldError, NotFound, ServiceError
from backend.runs import service as runs_service
from backend.runs import summary as run_summary
from backend.stacks import approvers as stack_approvers
from backend.stacks import service
from backend.stacks import variables as stack_variables
from backend.stacks.models import DEFAULT_SKIP_MESSAGES, RunnerKind, Tool, VcsProvider
from backend.stacks.schemas import StackCreate, StackPublic, StackUpdate, field_errors
from backend.timeutil import iso
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db, stack_id_from_path
from state.runs import RunRow, run_row
from state.stack_state import STATE_TOOLS, StackStateState
from state.stack_validation import StackValidationState
from state.stack_webhook import StackWebhookState, split_lines, split_list

PAGE_SIZE = 25
# The stack page's tabs (?tab=...); "state" only for tools that keep Terraform state.
TABS = ("overview", "state", "webhook")
TOOLS = [t.value for t in Tool]
RUNNERS = [r.value for r in RunnerKind]
NO_VCS = "none"  # the form's "no VCS provider" choice (Radix selects need a non-empty value)
VCS_PROVIDERS = [NO_VCS, *(p.value for p in VcsProvider)]
ALL = "all"


@dataclasses.dataclass
class StackRow:
    id: str = ""
    name: str = ""
    description: str = ""
    tool: str = ""
    branch: str = ""
    repository_url: str = ""
    labels: list[str] = dataclasses.field(default_factory=list)
    updated_rel: str = ""
    updated_exact: str = ""
    last_run_id: str = ""
    last_run_status: str = ""


@dataclasses.dataclass
class VariableRow:
    name: str = ""
    value: str = ""
    secret: bool = False
    updated_by: str = ""
    updated_rel: str = ""


@dataclasses.dataclass
class ApproverRow:
    user_id: str = ""
    email: str = ""


@dataclasses.dataclass
class ActivityRow:
    id: int = 0
    action: str = ""
    actor: str = ""
    at_rel: str = ""
    at_exact: str = ""


def _approver_lists(s, principal, stack_id: str) -> tuple[list[ApproverRow], list[ApproverRow]]:
    current = stack_approvers.list_approvers(s, principal, stack_id)
    ids = {a.user_id for a in current}
    members = get_context().auth.list_members(s, principal) if principal.role.value == "admin" else []
    candidates = [
        ApproverRow(m["id"], m["email"]) for m in members if m["id"] not in ids and not m["disabled"]
    ]
    return [ApproverRow(a.user_id, a.email) for a in current], candidates


def _variable_row(v) -> VariableRow:
    return VariableRow(
        name=v.name,
        value="" if v.value is None else v.value,
        secret=v.secret,
        updated_by=v.updated_by or "",
        updated_rel=relative(v.updated_at),
    )


def _row(s: StackPublic, last_run: tuple[str, str] | None = None) -> StackRow:
    return StackRow(
        last_run_id=last_run[0] if last_run else "",
        last_run_status=last_run[1] if last_run else "",
        id=s.id,
        name=s.name,
        description=s.description,
        tool=s.tool.value,
        branch=s.branch,
        repository_url=s.repository_url,
        labels=list(s.labels),
        updated_rel=relative(s.updated_at),
        updated_exact=exact(s.updated_at),
    )


class StacksState(AuthState):
    rows: list[StackRow] = []
    count: int = 0
    q: str = ""
    tool: str = ALL
    label: str = ALL
    labels_available: list[str] = []
    offset: int = 0
    loading: bool = True

    @rx.var
    def page_label(self) -> str:
        if self.count == 0:
            return "0 stacks"
        end = min(self.offset + PAGE_SIZE, self.count)
        return f"{self.offset + 1}-{end} of {self.count}"

    @rx.var
    def has_prev(self) -> bool:
        return self.offset > 0

    @rx.var
    def has_next(self) -> bool:
        return self.offset + PAGE_SIZE < self.count

    @rx.var
    def filtered(self) -> bool:
        return bool(self.q) or self.tool != ALL or self.label != ALL

    @rx.event
    async def load(self):
        """on_load: filters come from the URL so that links and reloads keep them."""
        params = self.router.url.query_parameters
        self.q = params.get("q", "")[:100]
        self.tool = params.get("tool", ALL) if params.get("tool") in TOOLS else ALL
        self.label = params.get("label", ALL)[:64] or ALL
        try:
            self.offset = min(max(0, int(params.get("offset", "0"))), 1_000_000)
        except ValueError:
            self.offset = 0
        return await self._fetch()

    async def _fetch(self):
        self.loading = True
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        query = service.StackQuery(
            q=self.q or None,
            tool=None if self.tool == ALL else self.tool,
            label=None if self.label == ALL else self.label,
            limit=PAGE_SIZE,
            offset=self.offset,
        )

        def _q(s):
            data, count = service.list_stacks(s, principal, query)
            last = run_summary.last_runs(s, principal, [st.id for st in data])
            return (data, count), service.all_labels(s, principal), last

        (data, count), labels, last = await run_db(_q, readonly=True)
        self.rows = [_row(s, last.get(s.id)) for s in data]
        self.count = count
        self.labels_available = labels
        self.loading = False

    def _url(self) -> str:
        params = {}
        if self.q:
            params["q"] = self.q
        if self.tool != ALL:
            params["tool"] = self.tool
        if self.label != ALL:
            params["label"] = self.label
        if self.offset:
            params["offset"] = str(self.offset)
        return "/stacks" + ("?" + urlencode(params) if params else "")

    async def _apply(self):
        # Keep filters in the URL (shareable), without a page reload.
        yield rx.call_script(f"window.history.replaceState(null, '', {self._url()!r})")
        out = await self._fetch()
        if out is not None:
            yield out

    @rx.event
    async def set_search(self, value: str):
        self.q = value.strip()[:100]
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_tool(self, value: str):
        self.tool = value if value in TOOLS else ALL
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def set_label(self, value: str):
        self.label = value or ALL
        self.offset = 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def clear_filters(self):
        self.q, self.tool, self.label, self.offset = "", ALL, ALL, 0
        async for ev in self._apply():
            yield ev

    @rx.event
    async def next_page(self):
        if self.offset + PAGE_SIZE < self.count:
            self.offset += PAGE_SIZE
        async for ev in self._apply():
            yield ev

    @rx.event
    async def prev_page(self):
        self.offset = max(0, self.offset - PAGE_SIZE)
        async for ev in self._apply():
            yield ev


class StackDetailState(AuthState):
    stack: StackRow = StackRow()
    project_root: str = ""
    tool_version: str = ""
    runner: str = ""
    runner_image: str = ""
    playbook: str = ""
    auto_apply: bool = False
    vcs_provider: str = ""
    created_by: str = ""
    created_exact: str = ""
    activity: list[ActivityRow] = []
    recent_runs: list[RunRow] = []
    variables: list[VariableRow] = []
    approvers: list[ApproverRow] = []
    approver_candidates: list[ApproverRow] = []  # members who are not approvers yet
    var_name: str = ""
    var_value: str = ""
    var_secret: bool = False
    var_error: str = ""
    var_saving: bool = False
    loading: bool = True
    not_found: bool = False
    delete_open: bool = False
    delete_confirm: str = ""
    deleting: bool = False
    tab: str = "overview"

    @rx.var
    def delete_enabled(self) -> bool:
        return self.delete_confirm == self.stack.name and not self.deleting

    @rx.var
    def has_state_tab(self) -> bool:
        return self.stack.tool in STATE_TOOLS

    def _tab_from_url(self) -> str:
        wanted = self.router.url.query_parameters.get("tab", "overview")
        return wanted if wanted in TABS else "overview"

    @rx.event
    def set_tab(self, value: str):
        """Tabs live in the URL (?tab=state): reloads and shared links land on the same tab."""
        if value not in TABS or (value == "state" and not self.has_state_tab):
            value = "overview"
        changed = value != self.tab
        self.tab = value
        url = f"/stacks/{self.stack.id}?{urlencode({'tab': value})}"
        events = [rx.call_script(f"window.history.replaceState(null, '', {url!r})")]
        if changed and value == "state":
            events.append(StackStateState.load)
        if changed and value == "webhook":
            events.append(StackWebhookState.load)
        return events

    @rx.event
    async def load(self):
        self.loading, self.not_found, self.delete_open, self.delete_confirm = True, False, False, ""
        self.tab = self._tab_from_url()
        # Never show the previous stack while loading.
        self.stack, self.activity, self.recent_runs, self.variables = StackRow(), [], [], []
        self.approvers, self.approver_candidates = [], []
        self.var_name, self.var_value, self.var_secret, self.var_error = "", "", False, ""
        stack_id = stack_id_from_path(self.router.url.path)
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            st = service.get_stack(s, principal, stack_id)
            runs, _n = runs_service.list_runs(s, principal, runs_service.RunQuery(stack_id=st.id, limit=10))
            variables = stack_variables.list_variables(s, principal, get_context().secret_box, st.id)
            events = audit_service.list_for_resource(s, principal, st.id, limit=10)
            return st, events, runs, variables, _approver_lists(s, principal, st.id)

        try:
            st, events, runs, variables, approver_lists = await run_db(_q, readonly=True)
        except NotFound:
            self.not_found, self.loading = True, False
            return
        self.stack = _row(st)
        self.recent_runs = [run_row(r) for r in runs]
        self.variables = [_variable_row(v) for v in variables]
        self.approvers, self.approver_candidates = approver_lists
        self.project_root = st.project_root or "(repository root)"
        self.tool_version = st.tool_version or "latest"
        self.runner = st.runner.value
        self.runner_image = st.runner_image or "—"
        self.playbook = st.playbook or "site.yml, else playbook.yml"
        self.auto_apply = st.auto_apply
        self.vcs_provider = st.vcs_provider.value if st.vcs_provider else "none"
        self.created_by = st.created_by or ""
        self.created_exact = exact(st.created_at)
        self.activity = [
            ActivityRow(
                id=e.id or 0, action=e.action, actor=e.actor, at_rel=relative(e.at), at_exact=exact(iso(e.at))
            )
            for e in events
        ]
        self.loading = False
        then = [StackValidationState.load]  # the overview's Validation card
        if self.tab == "state":
            if not self.has_state_tab:  # e.g. an Ansible stack: it keeps no Terraform state
                self.tab = "overview"
                return then
            return [*then, StackStateState.load]
        if self.tab == "webhook":
            return [*then, StackWebhookState.load]
        return then

    @rx.event
    def set_var_field(self, field: str, value):
        if field in ("var_name", "var_value"):
            setattr(self, field, str(value))
        elif field == "var_secret":
            self.var_secret = bool(value)
        self.var_error = ""

    @rx.event
    async def save_variable(self):
        name = self.var_name.strip()
        if not name:
            self.var_error = "Give the variable a name, e.g. TF_VAR_region"
            return
        self.var_saving = True
        try:
            principal = await self._principal()
            body = stack_variables.VariableWrite(value=self.var_value, secret=self.var_secret)
            stack_id, box = self.stack.id, get_context().secret_box

            def _save(s):
                stack_variables.put_variable(s, principal, box, stack_id, name, body)
                return stack_variables.list_variables(s, principal, box, stack_id)

            variables = await run_db(_save)
        except SessionExpired:
            self.var_saving = False
            return self._login_redirect()
        except ValidationError as exc:
            self.var_saving, self.var_error = False, next(iter(field_errors(exc).values()))
            return None
        except ServiceError as exc:
            self.var_saving, self.var_error = False, exc.message
            return None
        self.variables = [_variable_row(v) for v in variables]
        self.var_name, self.var_value, self.var_secret, self.var_saving = "", "", False, False
        return rx.toast.success(f"Saved variable {name}")

    @rx.event
    async def delete_variable(self, name: str):
        try:
            principal = await self._principal()
            stack_id, box = self.stack.id, get_context().secret_box

            def _delete(s):
                stack_variables.delete_variable(s, principal, stack_id, name)
                return stack_variables.list_variables(s, principal, box, stack_id)

            variables = await run_db(_delete)
        except SessionExpired:
            return self._login_redirect()
        except ServiceError as exc:
            return rx.toast.error(exc.message)
        self.variables = [_variable_row(v) for v in variables]
        return rx.toast.success(f"Deleted variable {name}")

    async def _approver_change(self, fn, done: str):
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        stack_id = self.stack.id

        def _do(s):
            fn(s, principal, stack_id)
            return _approver_lists(s, principal, stack_id)

        try:
            self.approvers, self.approver_candidates = await run_db(_do)
        except ServiceError as exc:
            return rx.toast.error(exc.message)
        return rx.toast.success(done)

    @rx.event
    async def add_approver(self, user_id: str):
        return await self._approver_change(
            lambda s, p, sid: stack_approvers.add_approver(s, p, sid, user_id), "Approver added"
        )

    @rx.event
    async def remove_approver(self, user_id: str):
        return await self._approver_change(
            lambda s, p, sid: stack_approvers.remove_approver(s, p, sid, user_id), "Approver removed"
        )

    @rx.event
    def open_delete(self):
        self.delete_open, self.delete_confirm = True, ""

    @rx.event
    def set_delete_open(self, value: bool):
        self.delete_open = value

    @rx.event
    def set_delete_confirm(self, value: str):
        self.delete_confirm = value

    @rx.event
    async def delete_stack(self):
        if self.delete_confirm != self.stack.name:
            return rx.toast.error("Type the stack name exactly to confirm.")
        self.deleting = True
        try:
            principal = await self._principal()
            stack_id, name = self.stack.id, self.stack.name
            await run_db(lambda s: service.delete_stack(s, principal, stack_id))
        except SessionExpired:
            self.deleting = False
            return self._login_redirect()
        except ServiceError as exc:
            self.deleting = False
            return rx.toast.error(exc.message)
        self.deleting, self.delete_open = False, False
        return [rx.toast.success(f"Deleted stack {name}"), rx.redirect("/stacks")]


EMPTY_FORM = {
    "name": "",
    "description": "",
    "repository_url": "",
    "branch": "main",
    "project_root": "",
    "tool": "opentofu",
    "tool_version": "",
    "runner": "local",
    "runner_image": "",
    "playbook": "",
    "labels": "",
    "vcs_provider": NO_VCS,
    "vcs_base_url": "",
    "vcs_token": "",  # write-only: on edit, empty keeps the stored token
    "trigger_paths": "",  # one glob a line
    "skip_message_patterns": "\n".join(DEFAULT_SKIP_MESSAGES),  # one a line
    "skip_actors": "",  # comma- or newline-separated
}


class StackFormState(AuthState):
    """Create and edit share one form; ``stack_id`` empty means create."""

    stack_id: str = ""
    values: dict[str, str] = dict(EMPTY_FORM)
    auto_apply: bool = False
    vcs_token_set: bool = False  # the stack has a token (edit); the form never shows it
    remove_token: bool = False
    errors: dict[str, str] = {}
    saving: bool = False
    loading: bool = False
    not_found: bool = False

    @rx.var
    def is_edit(self) -> bool:
        return self.stack_id != ""

    @rx.event
    async def load_new(self):
        self.stack_id, self.values, self.auto_apply, self.errors = "", dict(EMPTY_FORM), False, {}
        self.saving = self.loading = self.not_found = self.vcs_token_set = self.remove_token = False
        self.form_ready = True

    @rx.event
    async def load_edit(self):
        self.errors, self.saving, self.not_found, self.loading = {}, False, False, True
        self.vcs_token_set = self.remove_token = False
        self.stack_id = stack_id_from_path(self.router.url.path)
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        stack_id = self.stack_id
        try:
            st = await run_db(lambda s: service.get_stack(s, principal, stack_id), readonly=True)
        except NotFound:
            self.not_found, self.loading = True, False
            return
        self.values = {
            "name": st.name,
            "description": st.description,
            "repository_url": st.repository_url,
            "branch": st.branch,
            "project_root": st.project_root,
            "tool": st.tool.value,
            "tool_version": st.tool_version or "",
            "runner": st.runner.value,
            "runner_image": st.runner_image or "",
            "playbook": st.playbook or "",
            "labels": ", ".join(st.labels),
            "vcs_provider": st.vcs_provider.value if st.vcs_provider else NO_VCS,
            "vcs_base_url": st.vcs_base_url or "",
            "vcs_token": "",
            "trigger_paths": "\n".join(st.trigger_paths),
            "skip_message_patterns": "\n".join(st.skip_message_patterns),
            "skip_actors": ", ".join(st.skip_actors),
        }
        self.auto_apply = st.auto_apply
        self.vcs_token_set = st.vcs_token_set
        self.loading = False
        self.form_ready = True

    @rx.event
    def set_value(self, field: str, value: str):
        if field in EMPTY_FORM:
            self.values[field] = value
            self.errors.pop(field, None)

    @rx.event
    def set_auto_apply(self, value: bool):
        self.auto_apply = bool(value)

    @rx.event
    def set_remove_token(self, value: bool):
        self.remove_token = bool(value)
        if self.remove_token:
            self.values["vcs_token"] = ""
        self.errors.pop("vcs_token", None)

    def _payload(self) -> dict:
        v = self.values
        return {
            "name": v["name"],
            "description": v["description"],
            "repository_url": v["repository_url"],
            "branch": v["branch"],
            "project_root": v["project_root"],
            "tool": v["tool"],
            "tool_version": v["tool_version"] or None,
            "runner": v["runner"],
            "runner_image": v["runner_image"] or None,
            "playbook": v["playbook"] or None,
            "auto_apply": self.auto_apply,
            "labels": split_list(v["labels"]),
            "vcs_provider": None if v["vcs_provider"] == NO_VCS else v["vcs_provider"],
            "vcs_base_url": v["vcs_base_url"] or None,
            "trigger_paths": split_lines(v["trigger_paths"]),
            "skip_message_patterns": split_lines(v["skip_message_patterns"]),
            "skip_actors": split_list(v["skip_actors"]),
            **self._token(),
        }

    def _token(self) -> dict:
        """The write-only token: a typed one replaces the stored one; on edit an empty field
        keeps it (the key is left out) and "Remove token" clears it (null)."""
        typed = self.values["vcs_token"].strip()
        if self.stack_id and self.remove_token:
            return {"vcs_token": None}
        return {"vcs_token": typed} if typed else {}

    @rx.event
    async def submit(self):
        self.saving, self.errors = True, {}
        try:
            principal = await self._principal()
        except SessionExpired:
            self.saving = False
            return self._login_redirect()
        payload = self._payload()
        stack_id, box = self.stack_id, get_context().secret_box
        try:
            if stack_id:
                body = StackUpdate.model_validate(payload)
                saved = await run_db(lambda s: service.update_stack(s, principal, stack_id, body, box))
            else:
                body_c = StackCreate.model_validate(payload)
                saved = await run_db(lambda s: service.create_stack(s, principal, body_c, box))
        except ValidationError as exc:
            self.errors = field_errors(exc)
            self.saving = False
            return rx.toast.error("Fix the highlighted fields.")
        except FieldError as exc:
            self.errors = {exc.field: exc.message}
            self.saving = False
            return rx.toast.error(exc.message)
        except ServiceError as exc:
            self.saving = False
            return rx.toast.error(exc.message)
        self.saving = False
        self.values["vcs_token"] = ""  # saved encrypted: the plaintext leaves the UI state
        verb = "Saved" if stack_id else "Created"
        return [rx.toast.success(f"{verb} stack {saved.name}"), rx.redirect(f"/stacks/{saved.id}")]
