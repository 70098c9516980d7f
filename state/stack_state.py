"""The stack page's State tab: lock, version history, diffs, a resource explorer, outputs and the
stack's state tokens.

Thin over backend.state.service/tokens. A state can hold thousands of resources: this state only
ever keeps one page of them (without their attributes) and the attributes of the one instance
the user opened; the full listing is built and sliced in the worker thread.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import reflex as rx

from backend.context import get_context
from backend.errors import FieldError, NotFound, ServiceError
from backend.state import service, tokens
from backend.state.schemas import LockStatus, TokenPublic, VersionPublic
from state.base import AuthState, SessionExpired
from state.helpers import exact, human_size, relative, run_db
from state.runs import DiffGroup, diff_groups

# Tools that keep Terraform state (terragrunt drives one of them); the others get no State tab.
STATE_TOOLS = ("opentofu", "terraform", "terragrunt")
VERSIONS_PAGE = 20
SERIAL_CHOICES = service.MAX_PAGE  # the newest versions offered in the diff/browse selects
RESOURCES_PAGE = 100
MAX_ATTRIBUTES = 500
MAX_OUTPUTS = 200
ALL = "all"
ACCESS = ("write", "read")
SENSITIVE = "(sensitive)"


@dataclasses.dataclass
class VersionRow:
    serial: int = 0
    current: bool = False
    created_rel: str = ""
    created_exact: str = ""
    created_by: str = ""
    run_id: str = ""
    resources: int = 0
    instances: int = 0
    size: str = ""
    sha256: str = ""
    sha_short: str = ""
    forced: bool = False
    note: str = ""
    terraform_version: str = ""
    is_rollback: bool = False


@dataclasses.dataclass
class LockRow:
    lock_id: str = ""
    who: str = ""
    operation: str = ""
    info: str = ""
    version: str = ""
    path: str = ""
    age_rel: str = ""
    locked_exact: str = ""
    run_id: str = ""


@dataclasses.dataclass
class ResourceRow:
    address: str = ""
    type: str = ""
    mode: str = ""
    module: str = ""
    provider: str = ""
    status: str = ""
    deposed: str = ""
    attr_count: int = 0


@dataclasses.dataclass
class AttrRow:
    path: str = ""
    value: str = ""
    sensitive: bool = False
    folded: bool = False
    preview: str = ""


@dataclasses.dataclass
class OutputRow:
    name: str = ""
    type: str = ""
    value: str = ""
    sensitive: bool = False
    folded: bool = False
    preview: str = ""


@dataclasses.dataclass
class OutputChangeRow:
    name: str = ""
    change: str = ""  # added | removed | changed
    action: str = ""  # create | delete | update: the symbol the plan diff uses
    before: str = ""
    after: str = ""
    sensitive: bool = False
    before_folded: bool = False
    after_folded: bool = False
    before_preview: str = ""
    after_preview: str = ""


@dataclasses.dataclass
class TokenRow:
    id: str = ""
    name: str = ""
    access: str = ""
    prefix: str = ""
    created_by: str = ""
    created_rel: str = ""
    created_exact: str = ""
    last_used_rel: str = ""
    last_used_exact: str = ""
    revoked: bool = False
    revoked_exact: str = ""


# ---------------------------------------------------------------- conversions (pure)


def shown(value: Any, sensitive: bool = False) -> str:
    """A JSON value as the tab shows it: strings quoted, objects indented, markers bare."""
    if sensitive:
        return SENSITIVE
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _by(created_by: str) -> str:
    if created_by.startswith("stack-token:"):
        return "token " + created_by.removeprefix("stack-token:")
    return created_by


def version_row(v: VersionPublic) -> VersionRow:
    return VersionRow(
        serial=v.serial,
        current=v.current,
        created_rel=relative(v.created_at),
        created_exact=exact(v.created_at),
        created_by="" if v.run_id else _by(v.created_by),
        run_id=v.run_id or "",
        resources=v.resource_count,
        instances=v.instance_count,
        size=human_size(v.size),
        sha256=v.sha256,
        sha_short=v.sha256[:12],
        forced=v.forced,
        note=v.note or "",
        terraform_version=v.terraform_version or "",
        is_rollback=(v.note or "").startswith("rollback of"),
    )


def lock_row(status: LockStatus) -> LockRow:
    lock = status.lock
    if lock is None:
        return LockRow()
    return LockRow(
        lock_id=lock.ID,
        who=lock.Who,
        operation=lock.Operation,
        info=lock.Info,
        version=lock.Version,
        path=lock.Path,
        age_rel=relative(lock.locked_at),
        locked_exact=exact(lock.locked_at),
        run_id=lock.run_id or "",
    )


def token_row(t: TokenPublic) -> TokenRow:
    return TokenRow(
        id=t.id,
        name=t.name,
        access=t.access,
        prefix=t.prefix,
        created_by=t.created_by or "",
        created_rel=relative(t.created_at),
        created_exact=exact(t.created_at),
        last_used_rel=relative(t.last_used_at) if t.last_used_at else "never",
        last_used_exact=exact(t.last_used_at) if t.last_used_at else "Never used",
        revoked=t.revoked_at is not None,
        revoked_exact=exact(t.revoked_at),
    )


def resource_row(r: dict[str, Any]) -> ResourceRow:
    return ResourceRow(
        address=r["address"],
        type=r.get("type") or "",
        mode=r.get("mode") or "",
        module=r.get("module") or "",
        provider=r.get("provider_short") or r.get("provider") or "",
        status=r.get("status") or "",
        deposed=r.get("deposed") or "",
        attr_count=int(r.get("attr_count") or 0),
    )


def attr_rows(attributes: list[dict[str, Any]]) -> list[AttrRow]:
    rows = []
    for a in attributes[:MAX_ATTRIBUTES]:
        sensitive = bool(a.get("sensitive"))
        rows.append(
            AttrRow(
                path=a["path"],
                value=shown(a.get("value"), sensitive),
                sensitive=sensitive,
                folded=bool(a.get("folded") and a.get("preview") and not sensitive),
                preview=a.get("preview") or "",
            )
        )
    return rows


def output_rows(outputs: list[dict[str, Any]]) -> list[OutputRow]:
    return [
        OutputRow(
            name=o["name"],
            type=o.get("type") or "",
            value=shown(o.get("value"), bool(o.get("sensitive"))),
            sensitive=bool(o.get("sensitive")),
            folded=bool(o.get("folded") and o.get("preview") and not o.get("sensitive")),
            preview=o.get("preview") or "",
        )
        for o in outputs[:MAX_OUTPUTS]
    ]


def output_change_rows(changes: list[dict[str, Any]]) -> list[OutputChangeRow]:
    rows = []
    for o in changes[:MAX_OUTPUTS]:
        sensitive = bool(o.get("sensitive"))
        change = o.get("change") or ""
        rows.append(
            OutputChangeRow(
                name=o["name"],
                change=change,
                action={"added": "create", "removed": "delete"}.get(change, "update"),
                before="" if change == "added" else shown(o.get("before"), sensitive),
                after="" if change == "removed" else shown(o.get("after"), sensitive),
                sensitive=sensitive,
                before_folded=bool(o.get("folded") and o.get("before_preview")) and not sensitive,
                after_folded=bool(o.get("folded") and o.get("after_preview")) and not sensitive,
                before_preview=o.get("before_preview") or "",
                after_preview=o.get("after_preview") or "",
            )
        )
    return rows


def backend_address(stack_id: str) -> str:
    """The state endpoint as people reach it: the install's public URL (CRUCIBLE_BASE_URL).
    (CRUCIBLE_STATE_BACKEND_URL is how runners reach it, e.g. from inside containers.)"""
    base = get_context().settings.base_url.rstrip("/")
    return f"{base}/api/v1/state/{stack_id}"


def backend_block(stack_id: str) -> str:
    address = backend_address(stack_id)
    return (
        "terraform {\n"
        '  backend "http" {\n'
        f'    address        = "{address}"\n'
        f'    lock_address   = "{address}"\n'
        f'    unlock_address = "{address}"\n'
        f'    username       = "{stack_id}"\n'
        "    # password: the TF_HTTP_PASSWORD environment variable (a state token)\n"
        "  }\n"
        "}\n"
    )


def env_block(stack_id: str, token: str) -> str:
    address = backend_address(stack_id)
    return (
        f"export TF_HTTP_ADDRESS={address}\n"
        f"export TF_HTTP_LOCK_ADDRESS={address}\n"
        f"export TF_HTTP_UNLOCK_ADDRESS={address}\n"
        f"export TF_HTTP_USERNAME={stack_id}\n"
        f"export TF_HTTP_PASSWORD={token}\n"
    )


def _serial(value: str) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


class StackStateState(AuthState):
    stack_id: str = ""
    backend_snippet: str = ""
    loading: bool = True
    error: str = ""

    # lock
    locked: bool = False
    lock: LockRow = LockRow()
    unlock_open: bool = False
    unlocking: bool = False

    # history
    versions: list[VersionRow] = []
    versions_count: int = 0
    versions_offset: int = 0
    versions_loading: bool = False
    serial_options: list[str] = []  # newest first
    current_serial: str = ""
    rollback_open: bool = False
    rollback_serial: str = ""
    rolling_back: bool = False

    # diff
    diff_from: str = ""
    diff_to: str = ""
    diff: list[DiffGroup] = []
    diff_hidden: int = 0
    diff_outputs: list[OutputChangeRow] = []
    diff_added: int = 0
    diff_removed: int = 0
    diff_changed: int = 0
    diff_unchanged: int = 0
    diff_has_changes: bool = False
    diff_lineage_changed: bool = False
    diff_error: str = ""
    diff_loading: bool = False
    diff_loaded: bool = False
    # Typed serials, for versions older than the selects offer (any two versions can be compared).
    compare_open: bool = False
    compare_error: str = ""

    # contents of one version: resources and outputs
    contents_serial: str = ""
    resource_types: list[str] = []
    type_filter: str = ALL
    address_filter: str = ""
    resources: list[ResourceRow] = []
    resources_count: int = 0
    resources_offset: int = 0
    resources_loading: bool = False
    contents_error: str = ""
    selected_address: str = ""
    selected: ResourceRow = ResourceRow()
    selected_attrs: list[AttrRow] = []
    selected_hidden: int = 0
    selected_loading: bool = False
    outputs: list[OutputRow] = []

    # tokens
    tokens: list[TokenRow] = []
    run_tokens: int = 0
    token_name: str = ""
    token_access: str = "write"
    token_errors: dict[str, str] = {}
    token_saving: bool = False
    # The new token's secret: shown once in a dialog, dropped from state when it closes.
    new_token_value: str = ""
    new_token_name: str = ""
    new_token_env: str = ""
    revoke_open: bool = False
    revoke_id: str = ""
    revoke_name: str = ""
    revoking: bool = False

    # ------------------------------------------------------------ computed

    @rx.var
    def has_versions(self) -> bool:
        return self.versions_count > 0

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
    def resources_label(self) -> str:
        if self.resources_count == 0:
            return "0 instances"
        end = min(self.resources_offset + RESOURCES_PAGE, self.resources_count)
        return f"{self.resources_offset + 1}-{end} of {self.resources_count} instances"

    @rx.var
    def resources_has_prev(self) -> bool:
        return self.resources_offset > 0

    @rx.var
    def resources_has_next(self) -> bool:
        return self.resources_offset + RESOURCES_PAGE < self.resources_count

    @rx.var
    def resources_filtered(self) -> bool:
        return self.type_filter != ALL or self.address_filter != ""

    @rx.var
    def diff_from_choice(self) -> str:
        # Radix selects need a non-empty value; "none" = no earlier version (all added).
        return self.diff_from or "none"

    @rx.var
    def new_token_open(self) -> bool:
        return self.new_token_value != ""

    # ------------------------------------------------------------ load

    @rx.event
    async def load(self):
        """Everything cheap at once (lock, history, tokens); then the diff and the current
        version's contents, which read state objects, as their own events."""
        parts = [p for p in self.router.url.path.split("/") if p]
        stack_id = parts[1] if len(parts) >= 2 and parts[0] == "stacks" else ""
        self.reset()  # this tab's fields only (never the identity in AuthState)
        self.stack_id = stack_id
        self.backend_snippet = backend_block(stack_id)
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            lock = service.lock_status(s, principal, stack_id)
            page, count = service.list_versions(s, principal, stack_id, limit=VERSIONS_PAGE)
            serials, _n = service.list_versions(s, principal, stack_id, limit=SERIAL_CHOICES)
            return lock, page, count, serials, tokens.list_tokens(s, principal, stack_id)

        try:
            lock, page, count, serials, toks = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.error, self.loading = exc.message, False
            return None
        self._set_lock(lock)
        self.versions = [version_row(v) for v in page]
        self.versions_count = count
        self._set_serials(serials)
        self._set_tokens(toks)
        self.loading = False
        if count == 0:
            return None
        self.diff_to = self.contents_serial = self.current_serial
        return [StackStateState.load_diff, StackStateState.load_contents]

    def _set_lock(self, status: LockStatus) -> None:
        self.locked, self.lock = status.locked, lock_row(status)

    def _set_serials(self, versions: list[VersionPublic]) -> None:
        self.serial_options = [str(v.serial) for v in versions]
        current = next((v for v in versions if v.current), None)
        self.current_serial = str(current.serial) if current else ""
        if not self.current_serial and versions:  # the state was deleted: the newest then
            self.current_serial = str(versions[0].serial)

    def _set_tokens(self, toks: list[TokenPublic]) -> None:
        self.tokens = [token_row(t) for t in toks if t.run_id is None]
        self.run_tokens = sum(1 for t in toks if t.run_id is not None)

    def _choices_with(self, *serials: str) -> None:
        # A version from a later history page may be older than the select's choices.
        for value in serials:
            if value and value not in self.serial_options:
                self.serial_options = sorted([*self.serial_options, value], key=int, reverse=True)

    async def _reload_head(self, principal) -> None:
        """History page, choices and lock after something changed the state."""
        stack_id, offset = self.stack_id, self.versions_offset

        def _q(s):
            lock = service.lock_status(s, principal, stack_id)
            page, count = service.list_versions(s, principal, stack_id, limit=VERSIONS_PAGE, offset=offset)
            serials, _n = service.list_versions(s, principal, stack_id, limit=SERIAL_CHOICES)
            return lock, page, count, serials

        lock, page, count, serials = await run_db(_q, readonly=True)
        self._set_lock(lock)
        self.versions, self.versions_count = [version_row(v) for v in page], count
        self._set_serials(serials)

    # ------------------------------------------------------------ lock

    @rx.event
    async def refresh_lock(self):
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        stack_id = self.stack_id
        try:
            self._set_lock(await run_db(lambda s: service.lock_status(s, principal, stack_id), readonly=True))
        except ServiceError as exc:
            return rx.toast.error(exc.message)
        return None

    @rx.event
    def set_unlock_open(self, value: bool):
        if not self.unlocking:
            self.unlock_open = bool(value)

    @rx.event
    async def force_unlock(self):
        self.unlocking = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.unlocking = False
            return self._login_redirect()
        stack_id = self.stack_id

        def _do(s):
            result = service.force_unlock(s, principal, stack_id)
            return result, service.lock_status(s, principal, stack_id)

        try:
            result, status = await run_db(_do)
        except ServiceError as exc:
            self.unlocking = False
            return rx.toast.error(exc.message)
        self._set_lock(status)
        self.unlocking, self.unlock_open = False, False
        if not result.unlocked or result.lock is None:
            return rx.toast.info("The state was not locked any more: nothing to unlock")
        who = result.lock.Who or "someone"
        return rx.toast.success(f"Unlocked: removed lock {result.lock.ID} held by {who}")

    # ------------------------------------------------------------ history

    async def _versions_page(self, offset: int):
        self.versions_loading = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.versions_loading = False
            return self._login_redirect()
        stack_id = self.stack_id
        try:
            page, count = await run_db(
                lambda s: service.list_versions(s, principal, stack_id, limit=VERSIONS_PAGE, offset=offset),
                readonly=True,
            )
        except ServiceError as exc:
            self.versions_loading = False
            return rx.toast.error(exc.message)
        self.versions, self.versions_count, self.versions_offset = (
            [version_row(v) for v in page],
            count,
            offset,
        )
        self.versions_loading = False
        return None

    @rx.event
    async def next_versions(self):
        if self.versions_offset + VERSIONS_PAGE < self.versions_count:
            return await self._versions_page(self.versions_offset + VERSIONS_PAGE)
        return None

    @rx.event
    async def prev_versions(self):
        return await self._versions_page(max(0, self.versions_offset - VERSIONS_PAGE))

    @rx.event
    def ask_rollback(self, serial: int):
        self.rollback_serial, self.rollback_open = str(serial), True

    @rx.event
    def set_rollback_open(self, value: bool):
        if not self.rolling_back:
            self.rollback_open = bool(value)

    @rx.event
    async def rollback(self):
        target = _serial(self.rollback_serial)
        if target is None:
            return None
        self.rolling_back = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.rolling_back = False
            return self._login_redirect()
        stack_id = self.stack_id
        ctx = get_context()
        try:
            version = await run_db(lambda s: service.rollback(s, ctx.objects, principal, stack_id, target))
            self.versions_offset = 0
            await self._reload_head(principal)
        except ServiceError as exc:
            self.rolling_back = False
            return rx.toast.error(exc.message)
        self.rolling_back, self.rollback_open = False, False
        self.diff_from, self.diff_to = "", str(version.serial)
        self.contents_serial = str(version.serial)
        return [
            rx.toast.success(
                f"Rolled back: serial {version.serial} now holds the content of serial {target}"
            ),
            StackStateState.load_diff,
            StackStateState.load_contents,
        ]

    # ------------------------------------------------------------ diff

    @rx.event
    async def load_diff(self):
        to_serial = _serial(self.diff_to)
        from_serial = _serial(self.diff_from)
        self.diff_loading, self.diff_error = True, ""
        yield
        try:
            principal = await self._principal()
        except SessionExpired:
            self.diff_loading = False
            yield self._login_redirect()
            return
        stack_id, objects = self.stack_id, get_context().objects

        def _q(s):
            result = service.diff_versions(s, objects, principal, stack_id, from_serial, to_serial)
            groups, hidden = diff_groups(result)
            return result, groups, hidden

        try:
            result, groups, hidden = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.diff, self.diff_outputs, self.diff_hidden = [], [], 0
            self.diff_error, self.diff_loading, self.diff_loaded = exc.message, False, True
            return
        summary = result.get("summary", {})
        self.diff, self.diff_hidden = groups, hidden
        self.diff_outputs = output_change_rows(result.get("outputs", []))
        self.diff_added = int(summary.get("added", 0))
        self.diff_removed = int(summary.get("removed", 0))
        self.diff_changed = int(summary.get("changed", 0))
        self.diff_unchanged = int(summary.get("unchanged", 0))
        self.diff_has_changes = bool(result.get("has_changes"))
        self.diff_lineage_changed = bool(result.get("lineage_changed"))
        used_from = result.get("from_serial")
        self.diff_from = "" if used_from is None else str(used_from)
        self.diff_to = str(result.get("to_serial", self.diff_to))
        self._choices_with(self.diff_from, self.diff_to)
        self.diff_loading, self.diff_loaded = False, True

    @rx.event
    def set_diff_from(self, value: str):
        self.diff_from = "" if value == "none" else value
        return StackStateState.load_diff

    @rx.event
    def set_diff_to(self, value: str):
        self.diff_to = value
        return StackStateState.load_diff

    @rx.event
    def toggle_compare(self):
        self.compare_open, self.compare_error = not self.compare_open, ""

    @rx.event
    def compare_serials(self, form: dict):
        """Diff two typed serials; an empty "from" means the version just before "to"."""
        raw_from, raw_to = str(form.get("from") or "").strip(), str(form.get("to") or "").strip()
        to_serial = _serial(raw_to)
        if to_serial is None:
            self.compare_error = "Enter the serial to compare to: a whole number, 0 or more."
            return None
        from_serial = _serial(raw_from)
        if raw_from and from_serial is None:
            self.compare_error = (
                "The serial to compare from must be a whole number, 0 or more (or empty: the version before)."
            )
            return None
        self.compare_error = ""
        self.diff_from = "" if from_serial is None else str(from_serial)
        self.diff_to = str(to_serial)
        return StackStateState.load_diff

    @rx.event
    def diff_previous(self, serial: int):
        """A history row's "Diff": that version against the one before it."""
        self.diff_to, self.diff_from = str(serial), ""
        return [StackStateState.load_diff, rx.scroll_to("stack-state-diff")]

    # ------------------------------------------------------------ contents

    async def _fetch_resources(self, *, with_types: bool):
        """One page of the chosen version's instances; with_types (a new version) also its
        resource types and outputs."""
        serial = _serial(self.contents_serial)
        self.resources_loading, self.contents_error = True, ""
        try:
            principal = await self._principal()
        except SessionExpired:
            self.resources_loading = False
            return self._login_redirect()
        stack_id, objects = self.stack_id, get_context().objects
        type_filter = None if self.type_filter == ALL else self.type_filter
        address, offset = self.address_filter or None, self.resources_offset

        def _q(s):
            # One page from the server: only that page's rows are built and reach the state.
            def page(type_: str | None, at: int) -> dict:
                return service.resources(
                    s, objects, principal, stack_id, serial, type_, address, offset=at, limit=RESOURCES_PAGE
                )

            used_type, listed = type_filter, page(type_filter, offset)
            if type_filter and type_filter not in listed["types"]:  # that type is not in this version
                used_type, listed = None, page(None, 0)
            if listed["offset"] and not listed["data"] and listed["count"]:  # past the end: last page
                listed = page(used_type, (listed["count"] - 1) // RESOURCES_PAGE * RESOURCES_PAGE)
            types = listed["types"] if with_types else None
            outputs = service.outputs(s, objects, principal, stack_id, serial) if with_types else None
            rows = [resource_row(r) for r in listed["data"]]
            return listed["serial"], types, outputs, used_type, rows, listed["count"], listed["offset"]

        try:
            used, types, outputs, used_type, rows, count, start = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.resources, self.resources_count, self.outputs = [], 0, []
            self.contents_error, self.resources_loading = exc.message, False
            return None
        self.contents_serial = str(used)
        self._choices_with(self.contents_serial)
        if types is not None:
            self.resource_types = types
        if outputs is not None:
            self.outputs = output_rows(outputs)
        self.type_filter = used_type or ALL
        self.resources, self.resources_count, self.resources_offset = rows, count, start
        self.resources_loading = False
        return None

    @rx.event
    async def load_contents(self):
        self.resources_offset = 0
        self.selected_address, self.selected, self.selected_attrs = "", ResourceRow(), []
        return await self._fetch_resources(with_types=True)

    @rx.event
    async def set_contents_serial(self, value: str):
        self.contents_serial = value
        return await self.load_contents()

    @rx.event
    async def browse(self, serial: int):
        """A history row's "Browse": show that version's resources and outputs."""
        self.contents_serial = str(serial)
        out = await self.load_contents()
        return out if out is not None else rx.scroll_to("stack-state-contents")

    @rx.event
    async def set_type_filter(self, value: str):
        self.type_filter = value or ALL
        self.resources_offset = 0
        return await self._fetch_resources(with_types=False)

    @rx.event
    async def set_address_filter(self, value: str):
        self.address_filter = value.strip()[:1000]
        self.resources_offset = 0
        return await self._fetch_resources(with_types=False)

    @rx.event
    async def clear_filters(self):
        self.type_filter, self.address_filter, self.resources_offset = ALL, "", 0
        return await self._fetch_resources(with_types=False)

    @rx.event
    async def next_resources(self):
        if self.resources_offset + RESOURCES_PAGE < self.resources_count:
            self.resources_offset += RESOURCES_PAGE
            return await self._fetch_resources(with_types=False)
        return None

    @rx.event
    async def prev_resources(self):
        self.resources_offset = max(0, self.resources_offset - RESOURCES_PAGE)
        return await self._fetch_resources(with_types=False)

    @rx.event
    async def select_resource(self, address: str):
        if address == self.selected_address:
            return None
        self.selected_address, self.selected_loading = address, True
        self.selected_attrs, self.selected_hidden = [], 0
        try:
            principal = await self._principal()
        except SessionExpired:
            self.selected_loading = False
            return self._login_redirect()
        stack_id, objects, serial = self.stack_id, get_context().objects, _serial(self.contents_serial)

        def _q(s):
            found = service.resources(s, objects, principal, stack_id, serial, None, address)
            match = next((r for r in found["data"] if r["address"] == address), None)
            if match is None:
                raise NotFound(f"{address} is not in state serial {found['serial']}")
            return resource_row(match), match["attributes"]

        try:
            row, attributes = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.selected_address, self.selected_loading = "", False
            return rx.toast.error(exc.message)
        if self.selected_address != address:  # another click won meanwhile
            return None
        self.selected, self.selected_attrs = row, attr_rows(attributes)
        self.selected_hidden = max(0, len(attributes) - MAX_ATTRIBUTES)
        self.selected_loading = False
        return None

    @rx.event
    def close_resource(self):
        self.selected_address, self.selected, self.selected_attrs = "", ResourceRow(), []

    # ------------------------------------------------------------ tokens

    async def _reload_tokens(self, principal) -> None:
        stack_id = self.stack_id
        self._set_tokens(await run_db(lambda s: tokens.list_tokens(s, principal, stack_id), readonly=True))

    @rx.event
    def set_token_name(self, value: str):
        self.token_name = value[:100]
        self.token_errors.pop("name", None)

    @rx.event
    def set_token_access(self, value: str):
        self.token_access = value if value in ACCESS else "write"
        self.token_errors.pop("access", None)

    @rx.event
    async def create_token(self, _form_data: dict | None = None):
        name, access = self.token_name.strip(), self.token_access
        if not name:
            self.token_errors = {"name": "give the token a name, e.g. laptop or ci"}
            return None
        self.token_saving, self.token_errors = True, {}
        try:
            principal = await self._principal()
        except SessionExpired:
            self.token_saving = False
            return self._login_redirect()
        stack_id, hasher = self.stack_id, get_context().auth.hasher
        try:
            tok, plaintext = await run_db(
                lambda s: tokens.create_token(s, hasher, principal, stack_id, name, access)
            )
            await self._reload_tokens(principal)
        except FieldError as exc:
            self.token_saving = False
            self.token_errors = {exc.field: exc.message}
            return rx.toast.error(exc.message)
        except ServiceError as exc:
            self.token_saving = False
            return rx.toast.error(exc.message)
        self.token_saving, self.token_name, self.token_access = False, "", "write"
        self.new_token_name, self.new_token_value = tok.name, plaintext
        self.new_token_env = env_block(stack_id, plaintext)
        return rx.toast.success(f"Created state token {tok.name}")

    @rx.event
    def close_new_token(self):
        self.new_token_value, self.new_token_name, self.new_token_env = "", "", ""

    @rx.event
    def set_new_token_open(self, value: bool):
        if not value:
            self.new_token_value, self.new_token_name, self.new_token_env = "", "", ""

    @rx.event
    def copied(self, what: str):
        return rx.toast.success(f"{what} copied to the clipboard")

    @rx.event
    def ask_revoke(self, token_id: str):
        row = next((t for t in self.tokens if t.id == token_id), None)
        if row is None or row.revoked:
            return
        self.revoke_id, self.revoke_name, self.revoke_open = row.id, row.name, True

    @rx.event
    def set_revoke_open(self, value: bool):
        if not self.revoking:
            self.revoke_open = bool(value)

    @rx.event
    async def revoke(self):
        token_id, name = self.revoke_id, self.revoke_name
        if not token_id:
            return None
        self.revoking = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.revoking = False
            return self._login_redirect()
        stack_id = self.stack_id
        try:
            await run_db(lambda s: tokens.revoke_token(s, principal, stack_id, token_id))
            await self._reload_tokens(principal)
        except ServiceError as exc:
            self.revoking = False
            return rx.toast.error(exc.message)
        self.revoking, self.revoke_open, self.revoke_id = False, False, ""
        return rx.toast.success(f"Revoked state token {name}: it stops working at once")
