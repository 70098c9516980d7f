from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from backend.auth.models import Role
from backend.deps import CtxDep, PrincipalDep, client_ip
from backend.errors import NotFound
from backend.runs.api import RunId
from backend.runs.service import load_run
from backend.stacks.api import StackId
from backend.vcs import feedback, service
from backend.vcs.providers import WebhookError
from backend.vcs.schemas import DeliveriesPublic, DeliveryPublic, Receipt, RunVcsPublic, WebhookPublic

router = APIRouter(tags=["webhooks"])

DeliveryId = Annotated[str, Path(pattern=r"^whd-[0-9a-f]{16}$", description="Delivery id")]


@router.post(
    "/webhooks/{stack_id}",
    status_code=202,
    response_model=Receipt,
    responses={
        200: {"description": "A redelivery of a delivery already processed"},
        400: {"description": "Not a webhook Crucible knows, or malformed JSON"},
        401: {"description": "Unsigned or wrongly signed"},
        404: {"description": "No such stack (signed callers only)"},
        413: {"description": "Over CRUCIBLE_WEBHOOK_MAX_BYTES"},
    },
)
async def receive_webhook(stack_id: str, request: Request, ctx: CtxDep) -> JSONResponse:
    """The endpoint VCS providers call (GitHub, GitLab, Gitea/Gogs, Bitbucket Cloud, Azure
    DevOps). Authenticated by the stack's webhook secret, never by a session or token."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    ip = client_ip(request)
    try:
        receipt = await anyio.to_thread.run_sync(service.receive, ctx, stack_id, headers, body, ip)
    except WebhookError as exc:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)
    return JSONResponse(receipt.body, status_code=receipt.status)


@router.get("/stacks/{stack_id}/webhook", response_model=WebhookPublic)
def get_webhook(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> WebhookPublic:
    """The URL providers call and the secret they sign with (members; every reveal is audited)."""
    with ctx.session() as s:
        return service.get_webhook(s, principal, ctx, stack_id)


@router.post("/stacks/{stack_id}/webhook/rotate", response_model=WebhookPublic)
def rotate_webhook(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> WebhookPublic:
    """A new secret; the old one keeps verifying for CRUCIBLE_WEBHOOK_SECRET_GRACE_HOURS."""
    with ctx.session() as s:
        return service.rotate_webhook(s, principal, ctx, stack_id)


@router.get("/stacks/{stack_id}/webhook/deliveries", response_model=DeliveriesPublic)
def list_deliveries(
    stack_id: StackId,
    principal: PrincipalDep,
    ctx: CtxDep,
    outcome: Literal["created", "skipped", "rejected"] | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    with ctx.session(readonly=True) as s:
        data, count = service.list_deliveries(s, principal, stack_id, outcome, limit, offset)
    return {"data": data, "count": count}


@router.get("/webhooks/deliveries/{delivery_id}", response_model=DeliveryPublic)
def get_delivery(delivery_id: DeliveryId, principal: PrincipalDep, ctx: CtxDep) -> DeliveryPublic:
    """One delivery with its payload."""
    with ctx.session(readonly=True) as s:
        return service.get_delivery(s, principal, delivery_id)


@router.post("/webhooks/deliveries/{delivery_id}/replay", status_code=201, response_model=DeliveryPublic)
def replay_delivery(delivery_id: DeliveryId, principal: PrincipalDep, ctx: CtxDep) -> DeliveryPublic:
    """Process a stored delivery again, with the stack's current settings (a new log entry)."""
    with ctx.session() as s:
        return service.replay_delivery(s, principal, ctx.secret_box, delivery_id)


@router.get("/runs/{run_id}/vcs", response_model=RunVcsPublic, tags=["runs"])
def run_vcs_feedback(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    """A webhook-made run's origin (repository, commit, pull request) and the commit status and
    PR/MR comment sent for it, with the last error when the VCS refused or was unreachable."""
    principal.require(Role.viewer, "viewing runs")
    with ctx.session(readonly=True) as s:
        load_run(s, principal, run_id)
        found = feedback.feedback_of(s, run_id)
    if found is None:
        raise NotFound(f"run {run_id} was not started by a webhook")
    return found
