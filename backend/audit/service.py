"""Audit trail: every mutation appends one hash-chained event in the mutation's own transaction."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from backend.audit.models import AuditEvent
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.timeutil import iso, utcnow

GENESIS = "0" * 64
COUNT_CAP = 10_000
# Any constant works: it only has to be the same for every writer of the chain.
_PG_AUDIT_LOCK = 0x43525543  # "CRUC"

EXPORT_COLUMNS = [
    "id",
    "at",
    "actor",
    "actor_type",
    "action",
    "category",
    "resource_type",
    "resource_id",
    "ip",
    "user_agent",
    "before",
    "after",
    "prev_hash",
    "hash",
]


def _canonical(event: AuditEvent) -> bytes:
    body = {
        "prev_hash": event.prev_hash,
        "org_id": event.org_id,
        "at": iso(event.at),
        "actor": event.actor,
        "actor_id": event.actor_id,
        "actor_type": event.actor_type,
        "action": event.action,
        "category": event.category,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "before": event.before,
        "after": event.after,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(event)).hexdigest()


def _lock_chain(session: Session) -> None:
    """Serialize appends so the chain never forks. SQLite already holds BEGIN IMMEDIATE."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})


def record(
    session: Session,
    actor: Principal,
    action: str,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    org_id: str | None = None,
) -> AuditEvent:
    _lock_chain(session)
    last = session.exec(select(AuditEvent.hash).order_by(col(AuditEvent.id).desc()).limit(1)).first()
    event = AuditEvent(
        org_id=org_id if org_id is not None else actor.org_id,
        at=utcnow(),
        actor=actor.label,
        actor_id=None if actor.kind == "system" else actor.id,
        actor_type=actor.kind,
        action=action,
        category=action.split(".", 1)[0],
        resource_type=resource_type,
        resource_id=resource_id,
        ip=(actor.ip or "")[:64] or None,
        user_agent=(actor.user_agent or "")[:255] or None,
        before=before,
        after=after,
        prev_hash=last or GENESIS,
        hash="",
    )
    event.hash = compute_hash(event)
    session.add(event)
    session.flush()
    return event


# ---------------------------------------------------------------- verification


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    head_hash: str
    first_bad_id: int | None = None
    reason: str | None = None


def verify_chain(engine: Engine, batch: int = 2000) -> VerifyResult:
    """Walk the whole chain in id order; report the first entry that does not match."""
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        with Session(engine) as session:
            rows = session.exec(
                select(AuditEvent)
                .where(col(AuditEvent.id) > last_id)
                .order_by(col(AuditEvent.id))
                .limit(batch)
            ).all()
        if not rows:
            return VerifyResult(ok=True, checked=checked, head_hash=prev)
        for ev in rows:
            assert ev.id is not None
            if ev.prev_hash != prev:
                return VerifyResult(
                    False,
                    checked,
                    prev,
                    ev.id,
                    "previous-hash link broken: an entry before it was removed, inserted or altered",
                )
            if compute_hash(ev) != ev.hash:
                return VerifyResult(False, checked, prev, ev.id, "content does not match its hash")
            prev = ev.hash
            last_id = ev.id
            checked += 1


# ---------------------------------------------------------------- queries


@dataclass
class AuditFilter:
    actor: str | None = None
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(org_id: str, f: AuditFilter):
    stmt = select(AuditEvent).where(AuditEvent.org_id == org_id)
    if f.actor:
        stmt = stmt.where(AuditEvent.actor == f.actor)
    if f.category:
        stmt = stmt.where(AuditEvent.category == f.category)
    if f.since:
        stmt = stmt.where(col(AuditEvent.at) >= f.since)
    if f.until:
        stmt = stmt.where(col(AuditEvent.at) < f.until)
    return stmt


def list_events(
    session: Session,
    principal: Principal,
    f: AuditFilter,
    *,
    limit: int = 50,
    offset: int = 0,
    before_id: int | None = None,
) -> tuple[list[AuditEvent], int]:
    """Newest first. ``before_id`` is a keyset cursor (use it for deep pages).

    ``count`` is the number of matching events, capped at COUNT_CAP + 1 (meaning "more than").
    """
    principal.require(Role.viewer, "reading the audit log")
    base = _filtered(principal.org_id, f)
    # Counting a long log exactly on every page costs more than the page itself: stop at the
    # cap (an index-only scan of at most COUNT_CAP entries); callers show "10000+".
    capped = base.with_only_columns(AuditEvent.id).limit(COUNT_CAP + 1).subquery()
    count = session.exec(select(func.count()).select_from(capped)).one()
    stmt = base
    if before_id is not None:
        stmt = stmt.where(col(AuditEvent.id) < before_id)
    stmt = stmt.order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit)
    return list(session.exec(stmt).all()), int(count)


def list_for_resource(
    session: Session, principal: Principal, resource_id: str, limit: int = 10
) -> list[AuditEvent]:
    principal.require(Role.viewer, "reading the audit log")
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.org_id == principal.org_id, AuditEvent.resource_id == resource_id)
        .order_by(col(AuditEvent.id).desc())
        .limit(limit)
    )
    return list(session.exec(stmt).all())


def list_actors(session: Session, principal: Principal) -> list[str]:
    principal.require(Role.viewer, "reading the audit log")
    stmt = select(AuditEvent.actor).where(AuditEvent.org_id == principal.org_id).distinct().limit(500)
    return sorted(session.exec(stmt).all())


def to_public(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": ev.id,
        "at": iso(ev.at),
        "actor": ev.actor,
        "actor_type": ev.actor_type,
        "action": ev.action,
        "category": ev.category,
        "resource_type": ev.resource_type,
        "resource_id": ev.resource_id,
        "ip": ev.ip,
        "user_agent": ev.user_agent,
        "before": ev.before,
        "after": ev.after,
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
    }


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(column: str, value: Any) -> Any:
    """One CSV cell. Text that a spreadsheet would run as a formula (user agents and token
    names are attacker-chosen) gets a leading apostrophe (the OWASP CSV-injection advice)."""
    if value is None:
        return ""
    if column in ("before", "after"):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def iter_export(
    engine: Engine, principal: Principal, f: AuditFilter, fmt: str, batch: int = 1000
) -> Iterator[str]:
    """Stream the filtered log (newest first) in batches; never holds the whole log in memory."""
    principal.require(Role.viewer, "exporting the audit log")
    last_id: int | None = None
    first = True
    if fmt == "json":
        yield "["
    else:
        buf = io.StringIO()
        csv.writer(buf).writerow(EXPORT_COLUMNS)
        yield buf.getvalue()
    while True:
        with Session(engine) as session:
            stmt = _filtered(principal.org_id, f)
            if last_id is not None:
                stmt = stmt.where(col(AuditEvent.id) < last_id)
            rows = session.exec(stmt.order_by(col(AuditEvent.id).desc()).limit(batch)).all()
        if not rows:
            break
        last_id = rows[-1].id
        buf = io.StringIO()
        writer = csv.writer(buf)
        for ev in rows:
            doc = to_public(ev)
            if fmt == "json":
                buf.write(("" if first else ",") + "\n" + json.dumps(doc, ensure_ascii=False))
            else:
                writer.writerow(_csv_cell(c, doc[c]) for c in EXPORT_COLUMNS)
            first = False
        yield buf.getvalue()
    if fmt == "json":
        yield "\n]\n"
