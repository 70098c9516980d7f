from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from backend.audit import service
from backend.deps import CtxDep, PrincipalDep
from backend.errors import FieldError
from backend.timeutil import as_utc

router = APIRouter(tags=["audit"])

CATEGORIES = ("auth", "user", "token", "stack")


class AuditEventPublic(BaseModel):
    id: int
    at: str
    actor: str
    actor_type: str
    action: str
    category: str
    resource_type: str | None
    resource_id: str | None
    ip: str | None
    user_agent: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic]
    count: int = Field(description=f"Matching events; counting stops at {service.COUNT_CAP}")
    count_is_exact: bool = Field(True, description="false when more than `count` events match")
    next_before_id: int | None = None


def _utc(name: str, value: datetime | None) -> datetime | None:
    try:
        return as_utc(value) if value else None
    except (OverflowError, ValueError):
        raise FieldError(name, "date is out of range", where="query") from None


def _filter(actor, category, since, until) -> service.AuditFilter:
    return service.AuditFilter(
        actor=actor, category=category, since=_utc("since", since), until=_utc("until", until)
    )


Actor = Annotated[str | None, Query(max_length=254, description="Exact actor (email or token:<name>)")]
Category = Annotated[
    str | None, Query(max_length=32, pattern=r"^[a-z_]+$", description="e.g. stack, auth, token")
]
Since = Annotated[datetime | None, Query(description="ISO 8601; events at or after")]
Until = Annotated[datetime | None, Query(description="ISO 8601; events before")]


@router.get("/audit", response_model=AuditEventsPublic)
def list_audit(
    principal: PrincipalDep,
    ctx: CtxDep,
    actor: Actor = None,
    category: Category = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    before_id: Annotated[int | None, Query(ge=1, le=2**62, description="Keyset cursor")] = None,
) -> dict:
    """Newest first. For deep pages pass `before_id` = the previous page's `next_before_id`."""
    with ctx.session(readonly=True) as s:
        rows, count = service.list_events(
            s,
            principal,
            _filter(actor, category, since, until),
            limit=limit,
            offset=offset,
            before_id=before_id,
        )
    data = [service.to_public(r) for r in rows]
    return {
        "data": data,
        "count": min(count, service.COUNT_CAP),
        "count_is_exact": count <= service.COUNT_CAP,
        "next_before_id": data[-1]["id"] if len(data) == limit else None,
    }


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
def export_audit(
    principal: PrincipalDep,
    ctx: CtxDep,
    format: Literal["csv", "json"] = "csv",
    actor: Actor = None,
    category: Category = None,
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """Stream the (filtered) audit log as CSV or a JSON array, newest first."""
    f = _filter(actor, category, since, until)
    # Authorize before streaming starts, so a refusal is a clean 403.
    with ctx.session(readonly=True) as s:
        service.list_events(s, principal, f, limit=1)
    media = "text/csv" if format == "csv" else "application/json"
    return StreamingResponse(
        service.iter_export(ctx.engine, principal, f, format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="crucible-audit.{format}"'},
    )
