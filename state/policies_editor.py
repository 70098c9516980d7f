"""Policy editor (/policies/new, /policies/{id}): the form and Rego source, its versions and
the stacks it applies to. Tabs live in the URL (?tab=editor|versions|stacks).

A failed save keeps the whole draft; compile errors carry the engine's line and column.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from urllib.parse import urlencode

import reflex as rx
from pydantic import ValidationError

from backend.context import get_context
from backend.errors import FieldError, NotFound, ServiceError
from backend.policies import attachments, service
from backend.policies.schemas import PolicyCreate, PolicyPublic, PolicyUpdate
from backend.stacks import service as stacks_service
from backend.stacks.schemas import field_errors
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db
from state.policies import ORG_ONLY, TEMPLATES, TYPES, gutter
from state.policies_playground import PlaygroundState
from state.policy_backtest import PolicyBacktestState

TABS = ("editor", "versions", "stacks")
VERSIONS_PAGE = 20
STACK_CHOICES = 50
DEFAULT_TYPE = "post_plan"
FORM_FIELDS = ("name", "description", "type", "labels", "applies_to_all", "enabled", "body")


@dataclasses.dataclass
class VersionRow:
    version: int = 0
    type: str = ""
    enabled: bool = True
    changed_by: str = ""
    created_rel: str = ""
    created_exact: str = ""
    size: str = ""
    current: bool = False


@dataclasses.dataclass
class DiffLine:
    kind: str = "ctx"  # add | del | hunk | meta | ctx
    text: str = ""


@dataclasses.dataclass
class AttachedStack:
    stack_id: str = ""
    name: str = ""
    tool: str = ""
    direct: bool = False
    labels: list[str] = dataclasses.field(default_factory=list)
    attached_by: str = ""
    attached_rel: str = ""
    attached_exact: str = ""


@dataclasses.dataclass
class StackChoice:
    id: str = ""
    name: str = ""


def parse_labels(text: str) -> list[str]:
    return [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> list[DiffLine]:
    out = []
    for line in difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name, lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append(DiffLine(kind, line))
    return out


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _policy_id_from_path(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    return parts[1] if len(parts) >= 2 and parts[0] == "policies" else ""


def _stack_choices(s, principal, q: str, exclude: set[str]) -> list[StackChoice]:
    query = stacks_service.StackQuery(q=q or None, limit=STACK_CHOICES + len(exclude))
    data, _n = stacks_service.list_stacks(s, principal, query)
    return [StackChoice(st.id, st.name) for st in data if st.id not in exclude][:STACK_CHOICES]


class PolicyEditorState(AuthState):
    policy_id: str = ""
    saved_name: str = ""  # the heading and the delete confirmation (``name`` is the draft)
    name: str = ""
    description: str = ""
    type_: str = DEFAULT_TYPE
    labels: str = ""
    enabled: bool = True
    applies_to_all: bool = False
    body: str = ""
    editor_key: int = 0
    body_gutter: str = "1"
    body_rows: int = 12
    # A new policy's body is its type's template until the user edits it: switching the
    # type then switches the template too.
    body_is_template: bool = True
    dirty: bool = False
    _saved_sig: str = ""
    _saved_body: str = ""
    _kept_draft: tuple[str, int, str] | None = None  # (policy id, version, body)

    errors: dict[str, str] = {}
    compile_error: str = ""
    compile_line: int = 0
    compile_column: int = 0
    saving: bool = False
    loading: bool = True
    not_found: bool = False
    tab: str = "editor"

    version: int = 0
    created_by: str = ""
    created_exact: str = ""
    updated_by: str = ""
    updated_rel: str = ""
    updated_exact: str = ""

    versions: list[VersionRow] = []
    versions_count: int = 0
    versions_offset: int = 0
    view_version: int = 0
    view_body: str = ""
    view_mode: str = "source"  # source | diff
    diff_lines: list[DiffLine] = []
    diff_added: int = 0
    diff_removed: int = 0
    view_loading: bool = False

    stacks: list[AttachedStack] = []
    org_stacks: int = 0
    reach_truncated: bool = False
    stack_search: str = ""
    stack_choices: list[StackChoice] = []
    attach_stack_id: str = ""
    attaching: bool = False

    delete_open: bool = False
    delete_confirm: str = ""
    deleting: bool = False

    # ------------------------------------------------------------ derived

    @rx.var
    def is_new(self) -> bool:
        return self.policy_id == ""

    @rx.var
    def org_only(self) -> bool:
        return self.type_ in ORG_ONLY

    @rx.var
    def versions_label(self) -> str:
        if self.versions_count == 0:
            return "0 versions"
        end = min(self.versions_offset + VERSIONS_PAGE, self.versions_count)
        return f"{self.versions_offset + 1}-{end} of {self.versions_count} versions"

    @rx.var
    def versions_has_prev(self) -> bool:
        return self.versions_offset > 0

    @rx.var
    def versions_has_next(self) -> bool:
        return self.versions_offset + VERSIONS_PAGE < self.versions_count

    @rx.var
    def reach_summary(self) -> str:
        if self.type_ in ORG_ONLY:
            return f"{self.type_} policies apply to the whole organization, never to a stack."
        parts = []
        if self.applies_to_all:
            parts.append(f"every stack ({self.org_stacks})")
        direct = sum(1 for st in self.stacks if st.direct)
        by_label = sum(1 for st in self.stacks if not st.direct)
        if direct:
            parts.append(f"{direct} stack{'s' if direct != 1 else ''} attached directly")
        if by_label:
            parts.append(f"{by_label} stack{'s' if by_label != 1 else ''} through labels")
        if not parts:
            return "Applies to no stack yet: attach it to a stack, give it labels, or apply it to all stacks."
        return "Applies to " + ", ".join(parts) + "."

    # ------------------------------------------------------------ helpers

    def _payload(self) -> dict:
        return {
            "name": self.name.strip(),
            "description": self.description,
            "type": self.type_,
            "body": self.body,
            "enabled": self.enabled,
            "applies_to_all": self.applies_to_all,
            "labels": parse_labels(self.labels),
        }

    def _signature(self) -> str:
        doc = self._payload()
        doc["labels"] = sorted(set(doc["labels"]))
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _touch(self, field: str | None = None) -> None:
        if field:
            self.errors.pop(field, None)
        self.dirty = self._signature() != self._saved_sig

    def _set_body(self, text: str, remount: bool) -> None:
        self.body = text
        self.body_gutter, self.body_rows = gutter(text)
        if remount:
            self.editor_key += 1

    def _fill(self, p: PolicyPublic) -> None:
        self.policy_id, self.saved_name = p.id, p.name
        self.name, self.description, self.type_ = p.name, p.description, p.type.value
        self.labels = ", ".join(p.labels)
        self.enabled, self.applies_to_all = p.enabled, p.applies_to_all
        self._set_body(p.body, remount=True)
        self.body_is_template = False
        self.version = p.version
        self.created_by, self.created_exact = p.created_by or "", exact(p.created_at)
        self.updated_by = p.updated_by or ""
        self.updated_rel, self.updated_exact = relative(p.updated_at), exact(p.updated_at)
        self._saved_body = p.body
        self._saved_sig = self._signature()
        self.dirty = False

    def _clear_feedback(self) -> None:
        self.errors = {}
        self.compile_error, self.compile_line, self.compile_column = "", 0, 0

    def _reset_tabs(self) -> None:
        self.versions, self.versions_count, self.versions_offset = [], 0, 0
        self._close_view()
        self.stacks, self.org_stacks, self.reach_truncated = [], 0, False
        self.stack_search, self.stack_choices, self.attach_stack_id = "", [], ""
        self.delete_open, self.delete_confirm, self.deleting = False, "", False

    def _close_view(self) -> None:
        self.view_version, self.view_body, self.view_mode = 0, "", "source"
        self.diff_lines, self.diff_added, self.diff_removed = [], 0, 0

    def _tab_from_url(self) -> str:
        wanted = self.router.url.query_parameters.get("tab", "editor")
        return wanted if wanted in TABS else "editor"

    # ------------------------------------------------------------ loading

    @rx.event
    async def load_new(self):
        self.policy_id, self.saved_name, self.tab = "", "", "editor"
        self._clear_feedback()
        self._reset_tabs()
        self.saving = self.not_found = False
        wanted = self.router.url.query_parameters.get("type", DEFAULT_TYPE)
        self.type_ = wanted if wanted in TYPES else DEFAULT_TYPE
        self.name, self.description, self.labels = "", "", ""
        self.enabled, self.applies_to_all = True, False
        self._set_body(TEMPLATES[self.type_], remount=True)
        self.body_is_template = True
        self.version = 0
        self._saved_body, self._saved_sig = "", ""
        self.dirty = False
        self.loading = False
        self.form_ready = True
        return PolicyBacktestState.clear  # never show another policy's replay

    @rx.event
    async def load(self):
        self.loading, self.not_found, self.saving = True, False, False
        self._clear_feedback()
        self._reset_tabs()
        self.tab = self._tab_from_url()
        self.policy_id = _policy_id_from_path(self.router.url.path)
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        policy_id = self.policy_id

        def _q(s):
            p = service.get_policy(s, principal, policy_id)
            versions = service.list_versions(s, principal, policy_id, limit=VERSIONS_PAGE)
            reach = attachments.stacks_for_policy(s, principal, policy_id)
            direct = {st.stack_id for st in reach.stacks if st.direct}
            choices = _stack_choices(s, principal, "", direct) if principal.role.value == "admin" else []
            return p, versions, reach, choices

        try:
            p, (versions, vcount), reach, choices = await run_db(_q, readonly=True)
        except NotFound:
            self.not_found, self.loading = True, False
            return None
        except ServiceError as exc:
            self.loading = False
            return rx.toast.error(exc.message)
        self._fill(p)
        self._apply_versions(versions, vcount, 0)
        self._apply_reach(reach)
        self.stack_choices = choices
        self.loading = False
        self.form_ready = True
        events = [PolicyBacktestState.clear]  # never show another policy's replay
        kept, self._kept_draft = self._kept_draft, None
        if kept is not None and kept[:2] == (p.id, p.version) and kept[2] != p.body:
            self._set_body(kept[2], remount=True)
            self.body_is_template = False
            self._touch()
            events.append(rx.toast.info("Your unsaved draft is back in the editor."))
        return events

    def _apply_versions(self, versions, count: int, offset: int) -> None:
        self.versions = [
            VersionRow(
                version=v.version,
                type=v.type.value,
                enabled=v.enabled,
                changed_by=v.changed_by or "",
                created_rel=relative(v.created_at),
                created_exact=exact(v.created_at),
                size=_size(v.body_bytes),
                current=v.current,
            )
            for v in versions
        ]
        self.versions_count, self.versions_offset = count, offset

    def _apply_reach(self, reach: attachments.PolicyReach) -> None:
        self.stacks = [
            AttachedStack(
                stack_id=st.stack_id,
                name=st.stack_name,
                tool=st.tool,
                direct=st.direct,
                labels=list(st.matched_labels),
                attached_by=st.attached_by or "",
                attached_rel=relative(st.attached_at),
                attached_exact=exact(st.attached_at),
            )
            for st in reach.stacks
        ]
        self.org_stacks = reach.org_stacks
        self.reach_truncated = reach.truncated

    @rx.event
    def set_tab(self, value: str):
        if value not in TABS or (self.policy_id == "" and value != "editor"):
            value = "editor"
        self.tab = value
        if not self.policy_id:
            return None
        url = f"/policies/{self.policy_id}?{urlencode({'tab': value})}"
        return rx.call_script(f"window.history.replaceState(null, '', {url!r})")

    # ------------------------------------------------------------ form

    @rx.event
    def set_name(self, value: str):
        self.name = value
        self._touch("name")

    @rx.event
    def set_description(self, value: str):
        self.description = value
        self._touch("description")

    @rx.event
    def set_labels(self, value: str):
        self.labels = value
        self._touch("labels")

    @rx.event
    def set_enabled(self, value: bool):
        self.enabled = bool(value)
        self._touch("enabled")

    @rx.event
    def set_applies_to_all(self, value: bool):
        self.applies_to_all = bool(value)
        self._touch("applies_to_all")

    @rx.event
    def set_type(self, value: str):
        if value not in TYPES:
            return
        self.type_ = value
        if value in ORG_ONLY:
            # Org-wide types attach to no stack: drop what would be refused on save.
            self.applies_to_all, self.labels = False, ""
        if self.is_new and self.body_is_template:
            self._set_body(TEMPLATES[value], remount=True)
            self.compile_error, self.compile_line, self.compile_column = "", 0, 0
        self._touch("type")

    @rx.event
    def set_body(self, value: str):
        self._set_body(value, remount=False)
        self.body_is_template = False
        self.errors.pop("body", None)
        self._touch()

    @rx.event
    def reset_template(self):
        self._set_body(TEMPLATES.get(self.type_, TEMPLATES[DEFAULT_TYPE]), remount=True)
        self.body_is_template = True
        self.compile_error, self.compile_line, self.compile_column = "", 0, 0
        self._touch("body")

    @rx.event
    def discard_changes(self):
        """Back to the saved policy (the editor's draft is dropped)."""
        if not self.policy_id:
            return None
        return PolicyEditorState.load

    @rx.event
    async def save(self):
        if not self.is_admin:
            yield rx.toast.error("Only admins create and edit policies.")
            return
        if self.policy_id and not self.dirty:
            yield rx.toast.info(f"Nothing changed: version {self.version} is current.")
            return
        self._clear_feedback()
        self.saving = True
        yield
        try:
            principal = await self._principal()
        except SessionExpired:
            self.saving = False
            yield self._login_redirect()
            return
        payload, policy_id = self._payload(), self.policy_id
        before = self.version
        try:
            engine = service.engine_for(get_context().settings)
            if policy_id:
                update = PolicyUpdate.model_validate(payload)
                saved = await run_db(lambda s: service.update_policy(s, principal, engine, policy_id, update))
            else:
                create = PolicyCreate.model_validate(payload)
                saved = await run_db(lambda s: service.create_policy(s, principal, engine, create))
        except ValidationError as exc:
            self.saving = False
            self.errors = field_errors(exc)
            yield rx.toast.error("Fix the highlighted fields; nothing was saved.")
            return
        except service.PolicyCompileFailed as exc:
            self.saving = False
            self.compile_error = exc.message
            self.compile_line, self.compile_column = exc.line or 0, exc.column or 0
            where = f" (line {exc.line})" if exc.line else ""
            yield rx.toast.error(f"The policy does not compile{where}; nothing was saved.")
            return
        except FieldError as exc:
            self.saving = False
            self.errors = {exc.field: exc.message}
            yield rx.toast.error(exc.message)
            return
        except ServiceError as exc:
            self.saving = False
            yield rx.toast.error(exc.message)
            return
        self.saving = False
        if not policy_id:
            yield rx.toast.success(f"Created policy {saved.name} (version 1)")
            yield rx.redirect(f"/policies/{saved.id}")
            return
        self._fill(saved)
        yield PolicyEditorState.refresh_tabs
        if saved.version > before:
            yield rx.toast.success(f"Saved {saved.name} as version {saved.version}")
        else:
            yield rx.toast.success(
                f"Saved {saved.name}; where it applies changed, still version {saved.version}"
            )

    @rx.event
    async def refresh_tabs(self):
        """Versions and stacks after a save or an attachment change."""
        if not self.policy_id:
            return None
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        policy_id, offset, q = self.policy_id, self.versions_offset, self.stack_search

        def _q(s):
            versions = service.list_versions(s, principal, policy_id, limit=VERSIONS_PAGE, offset=offset)
            reach = attachments.stacks_for_policy(s, principal, policy_id)
            direct = {st.stack_id for st in reach.stacks if st.direct}
            choices = _stack_choices(s, principal, q, direct) if principal.role.value == "admin" else []
            return versions, reach, choices

        try:
            (versions, count), reach, choices = await run_db(_q, readonly=True)
        except ServiceError as exc:
            return rx.toast.error(exc.message)
        self._apply_versions(versions, count, offset)
        self._apply_reach(reach)
        self.stack_choices = choices
        return None

    @rx.event
    async def open_playground(self):
        """The playground with the editor's unsaved source pasted in (nothing is saved)."""
        playground = await self.get_state(PlaygroundState)
        playground.prime_draft(self.body, self.type_, self.policy_id, self.saved_name)
        # Coming back to this policy (at the same version) brings the draft back.
        self._kept_draft = (self.policy_id, self.version, self.body)
        return rx.redirect("/policies/test?draft=1")

    # ------------------------------------------------------------ versions

    async def _versions_page(self, offset: int):
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        policy_id = self.policy_id
        try:
            versions, count = await run_db(
                lambda s: service.list_versions(s, principal, policy_id, limit=VERSIONS_PAGE, offset=offset),
                readonly=True,
            )
        except ServiceError as exc:
            return rx.toast.error(exc.message)
        self._apply_versions(versions, count, offset)
        return None

    @rx.event
    async def versions_next(self):
        if self.versions_offset + VERSIONS_PAGE < self.versions_count:
            return await self._versions_page(self.versions_offset + VERSIONS_PAGE)
        return None

    @rx.event
    async def versions_prev(self):
        return await self._versions_page(max(0, self.versions_offset - VERSIONS_PAGE))

    @rx.event
    async def view(self, version: int, mode: str = "source"):
        self.view_loading = True
        yield
        try:
            principal = await self._principal()
        except SessionExpired:
            self.view_loading = False
            yield self._login_redirect()
            return
        policy_id = self.policy_id
        try:
            v = await run_db(lambda s: service.get_version(s, principal, policy_id, version), readonly=True)
        except ServiceError as exc:
            self.view_loading = False
            yield rx.toast.error(exc.message)
            return
        self.view_version, self.view_body = v.version, v.body
        self.diff_lines = unified_diff(
            v.body, self._saved_body, f"version {v.version}", f"version {self.version} (current)"
        )
        self.diff_added = sum(1 for d in self.diff_lines if d.kind == "add")
        self.diff_removed = sum(1 for d in self.diff_lines if d.kind == "del")
        self.view_mode = mode if mode in ("source", "diff") else "source"
        self.view_loading = False

    @rx.event
    def set_view_mode(self, value: str | list[str]):
        value = value if isinstance(value, str) else (value[0] if value else "")
        self.view_mode = value if value in ("source", "diff") else "source"

    @rx.event
    def close_view(self):
        self._close_view()

    @rx.event
    def restore_into_editor(self):
        """Put the viewed version's source in the editor as a draft (saved only on Save)."""
        if not self.view_version:
            return None
        number = self.view_version
        self._set_body(self.view_body, remount=True)
        self.body_is_template = False
        self.compile_error, self.compile_line, self.compile_column = "", 0, 0
        self._touch("body")
        self.tab = "editor"
        url = f"/policies/{self.policy_id}?tab=editor"
        return [
            rx.call_script(f"window.history.replaceState(null, '', {url!r})"),
            rx.toast.info(f"Version {number}'s source is in the editor; Save makes it a new version."),
        ]

    # ------------------------------------------------------------ stacks

    @rx.event
    async def search_stacks(self, value: str):
        self.stack_search = value.strip()[:100]
        self.attach_stack_id = ""
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        q, direct = self.stack_search, {st.stack_id for st in self.stacks if st.direct}
        try:
            self.stack_choices = await run_db(
                lambda s: _stack_choices(s, principal, q, direct), readonly=True
            )
        except ServiceError as exc:
            return rx.toast.error(exc.message)
        return None

    @rx.event
    def set_attach_stack(self, value: str):
        self.attach_stack_id = value

    @rx.event
    async def attach(self):
        stack_id, policy_id = self.attach_stack_id, self.policy_id
        if not stack_id:
            yield rx.toast.error("Pick a stack to attach the policy to.")
            return
        self.attaching = True
        yield
        try:
            principal = await self._principal()
            await run_db(lambda s: service.attach_policy(s, principal, stack_id, policy_id))
        except SessionExpired:
            self.attaching = False
            yield self._login_redirect()
            return
        except ServiceError as exc:
            self.attaching = False
            yield rx.toast.error(exc.message)
            return
        name = next((c.name for c in self.stack_choices if c.id == stack_id), stack_id)
        self.attaching, self.attach_stack_id = False, ""
        yield PolicyEditorState.refresh_tabs
        yield rx.toast.success(f"Attached to {name}")

    @rx.event
    async def detach(self, stack_id: str):
        policy_id = self.policy_id
        try:
            principal = await self._principal()
            await run_db(lambda s: service.detach_policy(s, principal, stack_id, policy_id))
        except SessionExpired:
            yield self._login_redirect()
            return
        except ServiceError as exc:
            yield rx.toast.error(exc.message)
            return
        name = next((st.name for st in self.stacks if st.stack_id == stack_id), stack_id)
        yield PolicyEditorState.refresh_tabs
        yield rx.toast.success(f"Detached from {name}")

    # ------------------------------------------------------------ delete

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
    async def delete_policy(self):
        if self.delete_confirm != self.saved_name:
            return rx.toast.error("Type the policy name exactly to confirm.")
        self.deleting = True
        policy_id, name = self.policy_id, self.saved_name
        try:
            principal = await self._principal()
            await run_db(lambda s: service.delete_policy(s, principal, policy_id))
        except SessionExpired:
            self.deleting = False
            return self._login_redirect()
        except ServiceError as exc:
            self.deleting = False
            return rx.toast.error(exc.message)
        self.deleting, self.delete_open = False, False
        return [rx.toast.success(f"Deleted policy {name}"), rx.redirect("/policies")]
