"""The stack page's Webhook tab: the endpoint and its secret (reveal, rotate), the stack's
webhook filters and VCS feedback settings, and the delivery log (paged on the server, with
replay and a payload viewer).

Thin over backend.vcs.service. The secret is fetched only when a member asks for it (every
reveal is audited) and dropped again when the tab loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from urllib.parse import urlsplit

import reflex as rx

from backend.context import get_context
from backend.errors import NotFound, ServiceError
from backend.stacks import service as stacks_service
from backend.vcs import service
from backend.vcs.schemas import DeliveryPublic, WebhookPublic
from state.base import AuthState, SessionExpired
from state.helpers import exact, human_size, relative, run_db, stack_id_from_path

DELIVERIES_PAGE = 20
OUTCOMES = ("created", "skipped", "rejected")
ALL = "all"
# The payload viewer keeps at most this much text in state (the browser gets all of it).
MAX_PAYLOAD_CHARS = 50_000
# Feedback needs a base URL for these providers: they have no public cloud to default to.
NEEDS_BASE_URL = ("gitea", "azure_devops")
PROVIDER_LABELS = {
    "github": "GitHub",
    "gitlab": "GitLab",
    "gitea": "Gitea / Forgejo",
    "gogs": "Gogs",
    "bitbucket": "Bitbucket Cloud",
    "azure_devops": "Azure DevOps",
}


@dataclasses.dataclass
class DeliveryRow:
    id: str = ""
    provider: str = ""
    event: str = ""
    delivery_id: str = ""
    received_rel: str = ""
    received_exact: str = ""
    outcome: str = ""
    reason: str = ""
    status_code: int = 0
    run_id: str = ""
    replay_of: str = ""
    replayed_by: str = ""
    duplicates: int = 0
    replayable: bool = False


@dataclasses.dataclass
class DeliveryDetail:
    id: str = ""
    provider: str = ""
    event: str = ""
    delivery_id: str = ""
    received_exact: str = ""
    outcome: str = ""
    reason: str = ""
    status_code: int = 0
    source_ip: str = ""
    headers: list[list[str]] = dataclasses.field(default_factory=list)
    payload: str = ""
    has_payload: bool = False
    clipped: bool = False
    size: str = ""


def grace_text(hours: float) -> str:
    """CRUCIBLE_WEBHOOK_SECRET_GRACE_HOURS as the rotate dialog says it."""
    if hours <= 0:
        return ""
    if hours < 1:
        return f"{round(hours * 60)} min"
    if hours == int(hours):
        n = int(hours)
        return f"{n} hour" if n == 1 else f"{n} hours"
    return f"{hours:g} hours"


def delivery_row(d: DeliveryPublic) -> DeliveryRow:
    return DeliveryRow(
        id=d.id,
        provider=d.provider,
        event=d.event,
        delivery_id=d.delivery_id or "",
        received_rel=relative(d.received_at),
        received_exact=exact(d.received_at),
        outcome=d.outcome,
        reason=d.reason,
        status_code=d.status_code,
        run_id=d.run_id or "",
        replay_of=d.replay_of or "",
        replayed_by=d.replayed_by or "",
        duplicates=d.duplicates,
        replayable=d.replayable,
    )


def pretty_payload(payload: str | None, limit: int = MAX_PAYLOAD_CHARS) -> tuple[str, bool]:
    """The payload indented when it is JSON (else as received), and whether it was clipped."""
    if payload is None:
        return "", False
    text = payload
    with contextlib.suppress(ValueError, RecursionError):
        text = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    if len(text) > limit:
        return text[:limit], True
    return text, False


def delivery_detail(d: DeliveryPublic) -> DeliveryDetail:
    payload, clipped = pretty_payload(d.payload)
    return DeliveryDetail(
        id=d.id,
        provider=d.provider,
        event=d.event,
        delivery_id=d.delivery_id or "",
        received_exact=exact(d.received_at),
        outcome=d.outcome,
        reason=d.reason,
        status_code=d.status_code,
        source_ip=d.source_ip or "",
        headers=[[k, str(v)] for k, v in sorted(d.headers.items())],
        payload=payload,
        has_payload=d.payload is not None,
        clipped=clipped,
        size=human_size(d.payload_bytes),
    )


def split_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_list(text: str) -> list[str]:
    """Comma- or newline-separated values."""
    return [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]


class StackWebhookState(AuthState):
    stack_id: str = ""
    url: str = ""
    grace: str = ""  # "24 hours"; "" when a rotation ends the old secret at once
    # The secret, once revealed (members and admins).
    secret: str = ""
    previous_valid_until: str = ""  # exact time; "" when no grace period is open
    rotated_exact: str = ""
    revealing: bool = False
    rotate_open: bool = False
    rotating: bool = False
    setup_provider: str = "github"
    # The stack's filters and feedback settings (read-only here: the stack form edits them).
    trigger_paths: list[str] = []
    skip_messages: list[str] = []
    skip_actors: list[str] = []
    vcs_provider: str = ""
    vcs_base_url: str = ""
    vcs_token_set: bool = False
    # The delivery log, one page.
    rows: list[DeliveryRow] = []
    count: int = 0
    offset: int = 0
    outcome: str = ALL
    deliveries_loading: bool = False
    replaying: str = ""  # the delivery being replayed
    # The "View" dialog.
    detail_open: bool = False
    detail_loading: bool = False
    detail: DeliveryDetail = DeliveryDetail()
    loading: bool = True
    error: str = ""

    @rx.var
    def revealed(self) -> bool:
        return self.secret != ""

    @rx.var
    def url_is_local(self) -> bool:
        """CRUCIBLE_BASE_URL names this machine (the default): no provider can reach it."""
        host = (urlsplit(self.url).hostname or "").lower()
        return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")

    @rx.var
    def vcs_provider_label(self) -> str:
        return PROVIDER_LABELS.get(self.vcs_provider, self.vcs_provider) if self.vcs_provider else "none"

    @rx.var
    def base_url_label(self) -> str:
        if self.vcs_base_url:
            return self.vcs_base_url
        if self.vcs_provider in NEEDS_BASE_URL:
            return "not set (required for this provider)"
        return "the provider's public cloud"

    @rx.var
    def feedback_off_reason(self) -> str:
        """Why no commit status or PR comment is sent; "" when feedback is on."""
        if not self.vcs_provider:
            return "Feedback is off: no VCS provider is set."
        if not self.vcs_token_set:
            return "Feedback is off: no VCS token is set."
        if self.vcs_provider in NEEDS_BASE_URL and not self.vcs_base_url:
            return f"Feedback is off: {PROVIDER_LABELS[self.vcs_provider]} needs the server's base URL."
        return ""

    @rx.var
    def page_label(self) -> str:
        if self.count == 0:
            return "0 deliveries"
        end = min(self.offset + DELIVERIES_PAGE, self.count)
        return f"{self.offset + 1}-{end} of {self.count}"

    @rx.var
    def has_prev(self) -> bool:
        return self.offset > 0

    @rx.var
    def has_next(self) -> bool:
        return self.offset + DELIVERIES_PAGE < self.count

    # ------------------------------------------------------------ load

    @rx.event
    async def load(self):
        """Chained from the stack page's load and tab switch (the stack id is in the URL)."""
        stack_id = stack_id_from_path(self.router.url.path)
        self.reset()  # this tab's fields only; also forgets a revealed secret
        self.stack_id = stack_id
        settings = get_context().settings
        self.url = service.webhook_url(settings.base_url, stack_id)
        self.grace = grace_text(settings.webhook_secret_grace_hours)
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            st = stacks_service.get_stack(s, principal, stack_id)
            page, count = service.list_deliveries(s, principal, stack_id, None, DELIVERIES_PAGE, 0)
            return st, page, count

        try:
            st, page, count = await run_db(_q, readonly=True)
        except ServiceError as exc:  # the stack page says "not found" itself
            self.error = "" if isinstance(exc, NotFound) else exc.message
            self.loading = False
            return None
        self.trigger_paths = list(st.trigger_paths)
        self.skip_messages = list(st.skip_message_patterns)
        self.skip_actors = list(st.skip_actors)
        self.vcs_provider = st.vcs_provider.value if st.vcs_provider else ""
        self.vcs_base_url = st.vcs_base_url or ""
        self.vcs_token_set = st.vcs_token_set
        if self.vcs_provider in PROVIDER_LABELS:
            self.setup_provider = "gitea" if self.vcs_provider == "gogs" else self.vcs_provider
        self.rows, self.count = [delivery_row(d) for d in page], count
        self.loading = False
        return None

    # ------------------------------------------------------------ secret

    def _set_hook(self, hook: WebhookPublic) -> None:
        self.url, self.secret = hook.url, hook.secret
        self.previous_valid_until = exact(hook.previous_valid_until)
        self.rotated_exact = exact(hook.rotated_at)

    @rx.event
    async def reveal(self):
        self.revealing = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.revealing = False
            return self._login_redirect()
        ctx, stack_id = get_context(), self.stack_id
        try:
            hook = await run_db(lambda s: service.get_webhook(s, principal, ctx, stack_id))
        except ServiceError as exc:
            self.revealing = False
            return rx.toast.error(exc.message)
        self._set_hook(hook)
        self.revealing = False
        return None

    @rx.event
    def hide(self):
        self.secret = ""

    @rx.event
    def open_rotate(self):
        self.rotate_open = True

    @rx.event
    def set_rotate_open(self, value: bool):
        self.rotate_open = bool(value) and not self.rotating

    @rx.event
    async def rotate(self):
        self.rotating = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.rotating = False
            return self._login_redirect()
        ctx, stack_id = get_context(), self.stack_id
        try:
            hook = await run_db(lambda s: service.rotate_webhook(s, principal, ctx, stack_id))
        except ServiceError as exc:
            self.rotating = False
            return rx.toast.error(exc.message)
        self._set_hook(hook)
        self.rotating, self.rotate_open = False, False
        if self.previous_valid_until:
            return rx.toast.success(f"New secret made; the old one works until {self.previous_valid_until}")
        return rx.toast.success("New secret made; the old one no longer verifies")

    @rx.event
    def set_setup_provider(self, value: str | list[str]):
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, str) and value in ("github", "gitlab", "gitea", "bitbucket", "azure_devops"):
            self.setup_provider = value

    # ------------------------------------------------------------ deliveries

    async def _fetch(self):
        self.deliveries_loading = True
        try:
            principal = await self._principal()
        except SessionExpired:
            self.deliveries_loading = False
            return self._login_redirect()
        stack_id, offset = self.stack_id, self.offset
        outcome = None if self.outcome == ALL else self.outcome

        def _q(s):
            return service.list_deliveries(s, principal, stack_id, outcome, DELIVERIES_PAGE, offset)

        try:
            page, count = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.deliveries_loading = False
            return rx.toast.error(exc.message)
        if not page and count and offset:  # the page emptied (e.g. a filter): back to the first
            self.offset = 0
            return await self._fetch()
        self.rows, self.count = [delivery_row(d) for d in page], count
        self.deliveries_loading = False
        return None

    @rx.event
    async def refresh(self):
        return await self._fetch()

    @rx.event
    async def set_outcome(self, value: str):
        self.outcome = value if value in OUTCOMES else ALL
        self.offset = 0
        return await self._fetch()

    @rx.event
    async def next_page(self):
        if self.offset + DELIVERIES_PAGE < self.count:
            self.offset += DELIVERIES_PAGE
        return await self._fetch()

    @rx.event
    async def prev_page(self):
        self.offset = max(0, self.offset - DELIVERIES_PAGE)
        return await self._fetch()

    @rx.event
    async def replay(self, delivery_id: str):
        if self.replaying:
            return None
        self.replaying = delivery_id
        try:
            principal = await self._principal()
        except SessionExpired:
            self.replaying = ""
            return self._login_redirect()
        box = get_context().secret_box
        try:
            replay = await run_db(lambda s: service.replay_delivery(s, principal, box, delivery_id))
        except ServiceError as exc:
            self.replaying = ""
            return rx.toast.error(exc.message)
        self.offset = 0  # the replay is the newest entry
        out = await self._fetch()
        self.replaying = ""
        if out is not None:
            return out
        if replay.outcome == "created":
            return rx.toast.success(f"Replayed: created run {replay.run_id}")
        if replay.outcome == "skipped":
            return rx.toast.info(f"Replayed: skipped — {replay.reason}")
        return rx.toast.error(f"Replayed: rejected — {replay.reason}")

    @rx.event
    async def view(self, delivery_id: str):
        self.detail_open, self.detail_loading, self.detail = True, True, DeliveryDetail(id=delivery_id)
        try:
            principal = await self._principal()
        except SessionExpired:
            self.detail_open = self.detail_loading = False
            return self._login_redirect()

        def _q(s):
            # Indenting and clipping a large payload stays on the worker thread too.
            return delivery_detail(service.get_delivery(s, principal, delivery_id))

        try:
            detail = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.detail_open = self.detail_loading = False
            return rx.toast.error(exc.message)
        if self.detail.id == delivery_id:  # still the one the user opened
            self.detail, self.detail_loading = detail, False
        return None

    @rx.event
    def set_detail_open(self, value: bool):
        self.detail_open = bool(value)
        if not value:
            self.detail = DeliveryDetail()
