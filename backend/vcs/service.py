"""Webhook use cases: receive a delivery (verify → log → dedupe → decide → maybe start a run,
all in one transaction), replay one, show and rotate a stack's secret, list the log."""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError
from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.context import AppContext
from backend.crypto import SecretBox
from backend.errors import Conflict, NotFound
from backend.runs.schemas import RunCreate
from backend.runs.service import create_run
from backend.stacks.models import Stack
from backend.stacks.service import load_stack
from backend.timeutil import as_utc, iso, new_id, utcnow
from backend.vcs import providers as pv
from backend.vcs import rules
from backend.vcs.models import RunVcs, StackWebhook, WebhookDelivery
from backend.vcs.schemas import DeliveryPublic, WebhookPublic

log = logging.getLogger("crucible.webhooks")

MAX_PAGE = 200
# An unsigned flood is logged, but stored only this often per stack and window: the delivery
# log cannot be filled by someone who knows a stack id.
REJECTED_KEPT_PER_WINDOW = 50
REJECTED_WINDOW = timedelta(minutes=10)


def secret_aad(stack_id: str, which: str = "current") -> str:
    return f"stack/{stack_id}/webhook/{which}"


def webhook_url(base_url: str, stack_id: str) -> str:
    return f"{base_url.rstrip('/')}/api/v1/webhooks/{stack_id}"


@dataclass
class Receipt:
    """The answer to a provider: status code and body."""

    status: int
    body: dict[str, Any]


# --- secrets -----------------------------------------------------------------------------------


def _valid_secrets(box: SecretBox, hook: StackWebhook | None) -> list[str]:
    if hook is None:
        return []
    out = [box.decrypt(hook.secret_encrypted, secret_aad(hook.stack_id))]
    if (
        hook.previous_encrypted
        and hook.previous_valid_until is not None
        and as_utc(hook.previous_valid_until) > utcnow()
    ):
        out.append(box.decrypt(hook.previous_encrypted, secret_aad(hook.stack_id, "previous")))
    return out


def _new_secret() -> str:
    return pysecrets.token_urlsafe(32)


def _ensure_hook(session: Session, box: SecretBox, stack: Stack) -> tuple[StackWebhook, bool]:
    hook = session.get(StackWebhook, stack.id)
    if hook is not None:
        return hook, False
    hook = StackWebhook(stack_id=stack.id, secret_encrypted=box.encrypt(_new_secret(), secret_aad(stack.id)))
    session.add(hook)
    session.flush()
    return hook, True


def _public_hook(ctx: AppContext, hook: StackWebhook) -> WebhookPublic:
    live = hook.previous_valid_until is not None and as_utc(hook.previous_valid_until) > utcnow()
    return WebhookPublic(
        url=webhook_url(ctx.settings.base_url, hook.stack_id),
        secret=ctx.secret_box.decrypt(hook.secret_encrypted, secret_aad(hook.stack_id)),
        previous_valid_until=iso(hook.previous_valid_until) if live else None,
        rotated_at=iso(hook.rotated_at),
        created_at=iso(hook.created_at) or "",
    )


def get_webhook(session: Session, principal: Principal, ctx: AppContext, stack_id: str) -> WebhookPublic:
    """The endpoint URL and the secret (made on first use). Members only, and audited: the
    secret lets anyone start runs on the stack."""
    principal.require(Role.member, "viewing a stack's webhook secret")
    stack = load_stack(session, principal, stack_id)
    hook, created = _ensure_hook(session, ctx.secret_box, stack)
    audit.record(
        session,
        principal,
        "stack.webhook.create" if created else "stack.webhook.reveal",
        resource_type="stack",
        resource_id=stack.id,
    )
    return _public_hook(ctx, hook)


def rotate_webhook(session: Session, principal: Principal, ctx: AppContext, stack_id: str) -> WebhookPublic:
    """A new secret; the one it replaces keeps verifying for CRUCIBLE_WEBHOOK_SECRET_GRACE_HOURS
    so the provider's settings can be updated without refused deliveries."""
    principal.require(Role.member, "rotating a stack's webhook secret")
    stack = load_stack(session, principal, stack_id)
    hook, created = _ensure_hook(session, ctx.secret_box, stack)
    now = utcnow()
    if not created:
        box = ctx.secret_box
        old = box.decrypt(hook.secret_encrypted, secret_aad(stack.id))
        hook.previous_encrypted = box.encrypt(old, secret_aad(stack.id, "previous"))
        hook.previous_valid_until = now + timedelta(hours=ctx.settings.webhook_secret_grace_hours)
        hook.secret_encrypted = box.encrypt(_new_secret(), secret_aad(stack.id))
    hook.rotated_at = now
    session.add(hook)
    session.flush()
    audit.record(
        session,
        principal,
        "stack.webhook.rotate",
        resource_type="stack",
        resource_id=stack.id,
        after={"previous_valid_until": iso(hook.previous_valid_until)},
    )
    return _public_hook(ctx, hook)


# --- receiving ---------------------------------------------------------------------------------


def _kept_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: headers[k][:500] for k in pv.KEPT_HEADERS if k in headers}


def _store_rejected(
    session: Session,
    stack: Stack,
    provider: str,
    headers: dict[str, str],
    reason: str,
    status: int,
    ip: str | None,
) -> None:
    since = utcnow() - REJECTED_WINDOW
    recent = session.exec(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(
            WebhookDelivery.stack_id == stack.id,
            WebhookDelivery.outcome == "rejected",
            col(WebhookDelivery.received_at) >= since,
        )
    ).one()
    if recent >= REJECTED_KEPT_PER_WINDOW:
        return
    session.add(
        WebhookDelivery(
            id=new_id("whd"),
            org_id=stack.org_id,
            stack_id=stack.id,
            provider=provider,
            event=pv.event_name(provider, headers, None),
            delivery_id=None,
            headers=_kept_headers(headers),
            outcome="rejected",
            reason=reason[:2000],
            status_code=status,
            source_ip=ip,
        )
    )


def _principal(stack: Stack, provider: str, actor: str | None, replayed_by: str | None) -> Principal:
    who = f"{provider} webhook" + (f" ({actor})" if actor else "")
    if replayed_by:
        who = f"{who}, replayed by {replayed_by}"
    return Principal("system", "webhook", who[:254], stack.org_id, Role.admin)


def _act(session: Session, box: SecretBox, stack: Stack, delivery: WebhookDelivery, payload: Any) -> None:
    """Decide on a verified, parsed delivery and start its run: fills in the delivery's outcome."""
    event = pv.parse(delivery.provider, delivery.event, payload, prefer_branch=stack.branch)
    decision = rules.decide(
        event,
        stack_branch=stack.branch,
        trigger_paths=list(stack.trigger_paths or []),
        skip_messages=list(stack.skip_message_patterns or []),
        skip_actors=list(stack.skip_actors or []),
    )
    delivery.reason = decision.reason[:2000]
    if decision.run_type is None:
        delivery.outcome = "skipped"
        return
    try:
        body = RunCreate(
            type=decision.run_type,
            commit=decision.commit,
            branch=decision.branch,
            message=decision.message[:1000],
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        delivery.outcome = "skipped"
        delivery.reason = f"the payload's {first['loc'][0]} is not usable: {first['msg']}"[:2000]
        return
    if decision.run_type.value == "proposed" and delivery.replay_of is None and event.repo:
        # Bitbucket and Azure DevOps also say "updated" for edits, votes and reviewers.
        planned = session.exec(
            select(RunVcs.run_id).where(
                RunVcs.stack_id == stack.id,
                RunVcs.repo == event.repo[:512],
                RunVcs.pr_number == event.pr_number,
                RunVcs.sha == body.commit,
            )
        ).first()
        if planned is not None:
            delivery.outcome = "skipped"
            delivery.reason = (
                f"pull request #{event.pr_number} was already planned at {(body.commit or '')[:12]} "
                f"(run {planned}); replay this delivery to plan it again"
            )
            return
    principal = _principal(stack, delivery.provider, event.actor, delivery.replayed_by)
    run = create_run(session, principal, box, stack.id, body, trigger="webhook")
    delivery.outcome, delivery.run_id = "created", run.id
    if event.repo and body.commit:
        session.add(
            RunVcs(
                run_id=run.id,
                stack_id=stack.id,
                provider=delivery.provider,
                repo=event.repo[:512],
                sha=body.commit,
                pr_number=event.pr_number if decision.run_type.value == "proposed" else None,
                pr_url=(event.pr_url or None) and event.pr_url[:2048],
                delivery_id=delivery.id,
            )
        )


def _answer(delivery: WebhookDelivery, duplicate: bool = False) -> Receipt:
    body: dict[str, Any] = {
        "delivery": delivery.id,
        "outcome": "duplicate" if duplicate else delivery.outcome,
        "reason": (
            f"delivery {delivery.delivery_id} was already processed: {delivery.outcome}"
            if duplicate
            else delivery.reason
        ),
        "run_id": delivery.run_id,
    }
    status = 200 if duplicate else delivery.status_code
    if status >= 400:
        body["detail"] = body["reason"]
    return Receipt(status, body)


def receive(
    ctx: AppContext, stack_id: str, headers: dict[str, str], body: bytes, source_ip: str | None = None
) -> Receipt:
    """Handle one delivery. Unsigned callers get 401 before the stack is even looked up, so
    they learn nothing about which stacks exist; a signed one for an unknown stack gets 404."""
    provider = pv.detect(headers)
    unsigned = pv.missing_credential(provider, headers)
    if unsigned:
        log.warning("unsigned webhook refused", extra={"fields": {"stack": stack_id, "ip": source_ip}})
        raise pv.WebhookError(401, unsigned)
    with ctx.session(readonly=True) as s:
        stack = s.get(Stack, stack_id)
        if stack is None:
            raise pv.WebhookError(404, "no webhook at this address")
        reason = pv.verify(
            provider, headers, body, _valid_secrets(ctx.secret_box, s.get(StackWebhook, stack.id))
        )
    if reason is not None:
        log.warning("webhook refused: %s", reason, extra={"fields": {"stack": stack_id, "ip": source_ip}})
        with ctx.session() as s:
            _store_rejected(s, stack, provider, headers, reason, 401, source_ip)
        return Receipt(401, {"detail": reason})
    payload = _decode(headers.get("content-type", ""), body)
    name = pv.event_name(provider, headers, payload if isinstance(payload, dict) else None)
    ident = pv.delivery_id(provider, headers, payload, body)
    delivery = WebhookDelivery(
        id=new_id("whd"),
        org_id=stack.org_id,
        stack_id=stack.id,
        provider=provider,
        event=name,
        delivery_id=ident,
        dedupe_key=ident,
        headers=_kept_headers(headers),
        # PostgreSQL text holds no NUL; a body with one is not valid JSON anyway.
        payload=body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        payload_bytes=len(body),
        outcome="skipped",
        source_ip=source_ip,
    )
    try:
        with ctx.session() as s:
            duplicate = _count_redelivery(s, stack.id, ident)
            if duplicate is not None:
                return duplicate
            _process(s, ctx.secret_box, delivery, payload)
            s.add(delivery)
            s.flush()
            return _answer(delivery)
    except IntegrityError:
        # The same delivery arrived twice at once and the other copy won.
        with ctx.session() as s:
            duplicate = _count_redelivery(s, stack.id, ident)
            if duplicate is None:
                raise
            return duplicate


def _count_redelivery(session: Session, stack_id: str, ident: str) -> Receipt | None:
    """The answer to a redelivery of a delivery already processed (counted in the log), or
    None when this delivery id is new."""
    earlier = session.exec(
        select(WebhookDelivery)
        .options(defer(WebhookDelivery.payload))  # type: ignore[arg-type]
        .where(WebhookDelivery.stack_id == stack_id, WebhookDelivery.dedupe_key == ident)
    ).first()
    if earlier is None:
        return None
    # One statement: copies counted at the same moment must not overwrite each other's count.
    session.execute(
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == earlier.id)
        .values(duplicates=col(WebhookDelivery.duplicates) + 1)
    )
    return _answer(earlier, duplicate=True)


_MALFORMED = object()


def _decode(content_type: str, body: bytes) -> Any:
    """The JSON payload; GitHub, Gitea and Gogs can also send it form-encoded as ``payload=``."""
    try:
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode(), max_num_fields=10)
            if "payload" not in fields:
                return _MALFORMED
            return json.loads(fields["payload"][0])
        return json.loads(body)
    except (ValueError, RecursionError):
        return _MALFORMED


def _process(session: Session, box: SecretBox, delivery: WebhookDelivery, payload: Any) -> None:
    """Fill in a verified delivery's outcome; starts the run when there is one to start."""
    stack = session.get(Stack, delivery.stack_id)
    if stack is None:
        raise NotFound(f"stack {delivery.stack_id} not found")
    if payload is _MALFORMED:
        delivery.outcome, delivery.status_code = "rejected", 400
        delivery.reason = "the payload is not valid JSON (set the webhook's content type to application/json)"
        return
    if not isinstance(payload, dict):
        delivery.outcome, delivery.status_code = "rejected", 400
        delivery.reason = "the payload must be a JSON object"
        return
    delivery.status_code = 202
    _act(session, box, stack, delivery, payload)


# --- the log and replays -----------------------------------------------------------------------


def _delivery_public(
    d: WebhookDelivery, replayable: bool | None = None, with_payload: bool = False
) -> DeliveryPublic:
    return DeliveryPublic(
        id=d.id,
        stack_id=d.stack_id,
        provider=d.provider,
        event=d.event,
        delivery_id=d.delivery_id,
        received_at=iso(d.received_at) or "",
        outcome=d.outcome,
        reason=d.reason,
        status_code=d.status_code,
        run_id=d.run_id,
        replay_of=d.replay_of,
        replayed_by=d.replayed_by,
        duplicates=d.duplicates,
        payload_bytes=d.payload_bytes,
        source_ip=d.source_ip,
        headers=dict(d.headers or {}),
        replayable=d.payload is not None if replayable is None else replayable,
        payload=d.payload if with_payload else None,
    )


def list_deliveries(
    session: Session,
    principal: Principal,
    stack_id: str,
    outcome: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[DeliveryPublic], int]:
    principal.require(Role.viewer, "viewing webhook deliveries")
    stack = load_stack(session, principal, stack_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.stack_id == stack.id)
    if outcome:
        stmt = stmt.where(WebhookDelivery.outcome == outcome)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    # A page never loads the payloads (up to CRUCIBLE_WEBHOOK_MAX_BYTES each).
    page = (
        select(WebhookDelivery, col(WebhookDelivery.payload).is_not(None))
        .options(defer(WebhookDelivery.payload))  # type: ignore[arg-type]
        .where(WebhookDelivery.stack_id == stack.id)
    )
    if outcome:
        page = page.where(WebhookDelivery.outcome == outcome)
    rows = session.exec(
        page.order_by(col(WebhookDelivery.received_at).desc(), col(WebhookDelivery.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [_delivery_public(d, replayable=bool(kept)) for d, kept in rows], int(total)


def _load_delivery(session: Session, principal: Principal, delivery_id: str) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.org_id != principal.org_id:
        raise NotFound(f"delivery {delivery_id} not found")
    return delivery


def get_delivery(session: Session, principal: Principal, delivery_id: str) -> DeliveryPublic:
    principal.require(Role.viewer, "viewing webhook deliveries")
    return _delivery_public(_load_delivery(session, principal, delivery_id), with_payload=True)


def replay_delivery(
    session: Session, principal: Principal, box: SecretBox, delivery_id: str
) -> DeliveryPublic:
    """Process a stored delivery again, as a new entry in the log (never deduplicated: a replay
    is asked for), against the stack's settings as they are now."""
    principal.require(Role.member, "replaying webhook deliveries")
    original = _load_delivery(session, principal, delivery_id)
    if original.payload is None:
        raise Conflict("this delivery was refused before it was verified; its payload was not kept")
    payload = _decode(str((original.headers or {}).get("content-type", "")), original.payload.encode())
    replay = WebhookDelivery(
        id=new_id("whd"),
        org_id=original.org_id,
        stack_id=original.stack_id,
        provider=original.provider,
        event=original.event,
        delivery_id=original.delivery_id,
        dedupe_key=None,
        headers=dict(original.headers or {}),
        payload=original.payload,
        payload_bytes=original.payload_bytes,
        outcome="skipped",
        replay_of=original.id,
        replayed_by=principal.label,
        source_ip=principal.ip,
    )
    _process(session, box, replay, payload)
    session.add(replay)
    session.flush()
    audit.record(
        session,
        principal,
        "webhook.replay",
        resource_type="stack",
        resource_id=original.stack_id,
        after={
            "delivery": original.id,
            "replay": replay.id,
            "outcome": replay.outcome,
            "run_id": replay.run_id,
        },
    )
    return _delivery_public(replay)


def purge_deliveries(session: Session, older_than: datetime) -> int:
    """Delete deliveries received before ``older_than`` (CRUCIBLE_WEBHOOK_DELIVERY_RETENTION_DAYS):
    payloads are up to CRUCIBLE_WEBHOOK_MAX_BYTES each. Their runs stay."""
    result = session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.received_at) < older_than))
    return int(result.rowcount or 0)
