from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from backend.deps import CtxDep, PrincipalDep
from backend.errors import Conflict, NotFound
from backend.runs import logs, reviews, service
from backend.runs.lifecycle import RunStatus, RunType
from backend.runs.schemas import (
    ApprovalsPublic,
    CancelRequest,
    PolicyResultsPublic,
    ReviewRequest,
    RunCreate,
    RunPublic,
    RunsPublic,
)
from backend.stacks.api import StackId
from backend.storage import StorageError

router = APIRouter(tags=["runs"])

RunId = Annotated[str, Path(pattern=r"^run-[0-9a-f]{16}$", description="Run id, e.g. run-0123456789abcdef")]


@router.post("/stacks/{stack_id}/runs", status_code=201, response_model=RunPublic)
def trigger_run(stack_id: StackId, body: RunCreate, principal: PrincipalDep, ctx: CtxDep) -> RunPublic:
    with ctx.session() as s:
        return service.create_run(s, principal, ctx.secret_box, stack_id, body)


@router.get("/runs", response_model=RunsPublic)
def list_runs(
    principal: PrincipalDep,
    ctx: CtxDep,
    stack_id: Annotated[str | None, Query(pattern=r"^stk-[0-9a-f]{16}$")] = None,
    status: Annotated[list[RunStatus] | None, Query(description="Repeat for several")] = None,
    type: RunType | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    query = service.RunQuery(
        stack_id=stack_id,
        statuses=[s.value for s in status] if status else None,
        type=type.value if type else None,
        limit=limit,
        offset=offset,
    )
    with ctx.session(readonly=True) as s:
        data, count = service.list_runs(s, principal, query)
    return {"data": data, "count": count}


@router.get("/runs/{run_id}", response_model=RunPublic)
def get_run(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> RunPublic:
    with ctx.session(readonly=True) as s:
        return service.get_run(s, principal, run_id)


@router.post("/runs/{run_id}/confirm", response_model=RunPublic)
def confirm_run(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> RunPublic:
    with ctx.session() as s:
        return service.confirm_run(s, principal, run_id)


@router.post("/runs/{run_id}/approve", response_model=RunPublic)
def approve_run(
    run_id: RunId, principal: PrincipalDep, ctx: CtxDep, body: ReviewRequest | None = None
) -> RunPublic:
    """Approve a run waiting for approval (admins and the stack's approvers, once each)."""
    with ctx.session() as s:
        return reviews.approve_run(s, principal, run_id, body.comment if body else "")


@router.post("/runs/{run_id}/reject", response_model=RunPublic)
def reject_run(
    run_id: RunId, principal: PrincipalDep, ctx: CtxDep, body: ReviewRequest | None = None
) -> RunPublic:
    """Reject a run waiting for approval: it fails with the reviewer's name and comment."""
    with ctx.session() as s:
        return reviews.reject_run(s, principal, run_id, body.comment if body else "")


@router.get("/runs/{run_id}/approvals", response_model=ApprovalsPublic)
def list_approvals(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> ApprovalsPublic:
    with ctx.session(readonly=True) as s:
        return reviews.list_approvals(s, principal, run_id)


@router.get("/runs/{run_id}/policy-results", response_model=PolicyResultsPublic)
def policy_results(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> PolicyResultsPublic:
    """What each policy decided at each hook of the run, in evaluation order."""
    with ctx.session(readonly=True) as s:
        return reviews.policy_results(s, principal, run_id)


@router.post("/runs/{run_id}/discard", response_model=RunPublic)
def discard_run(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> RunPublic:
    with ctx.session() as s:
        return service.discard_run(s, principal, run_id)


@router.post("/runs/{run_id}/cancel", response_model=RunPublic)
def cancel_run(
    run_id: RunId, principal: PrincipalDep, ctx: CtxDep, body: CancelRequest | None = None
) -> RunPublic:
    with ctx.session() as s:
        return service.cancel_run(s, principal, run_id, force=bool(body and body.force))


@router.post("/runs/{run_id}/retrigger", status_code=201, response_model=RunPublic)
def retrigger_run(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> RunPublic:
    with ctx.session() as s:
        return service.retrigger_run(s, principal, ctx.secret_box, run_id)


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        keys = service.delete_run(s, principal, run_id)
    for key in keys:  # after commit: a failed delete leaves an orphan object, never a dangling row
        with contextlib.suppress(StorageError):
            ctx.objects.delete(key)
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "The run's log, masked"}},
)
async def run_logs(
    run_id: RunId,
    principal: PrincipalDep,
    ctx: CtxDep,
    follow: Annotated[bool, Query(description="Stream new lines until the run ends")] = False,
) -> StreamingResponse:
    run = await asyncio.to_thread(ctx.read, lambda s: service.load_run(s, principal, run_id))
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Accel-Buffering": "no"}
    media = "text/plain; charset=utf-8"
    if not follow:
        lines = await asyncio.to_thread(ctx.read, lambda s: logs.read_lines(s, ctx.objects, run))
        text = "\n".join(lines) + ("\n" if lines else "")
        return StreamingResponse(iter([text]), media_type=media, headers=headers)
    return StreamingResponse(logs.follow(ctx.read, ctx.objects, run_id), media_type=media, headers=headers)


@router.get("/runs/{run_id}/plan")
def run_plan(run_id: RunId, principal: PrincipalDep, ctx: CtxDep) -> Response:
    """The plan JSON (OpenTofu/Terraform `show -json` format), sensitive values redacted."""
    from backend.runs.plandiff import PlanFormatError, redact_plan

    with ctx.session(readonly=True) as s:
        run = service.load_run(s, principal, run_id)
    entry = (run.artifacts or {}).get("plan_json")
    if not entry:
        raise NotFound(
            f"run {run_id} has no machine-readable plan (it has not planned yet, or its tool "
            "reports changes only in the log, as Ansible does)"
        )
    try:
        redacted = redact_plan(json.loads(ctx.objects.get(entry["key"])))
    except (PlanFormatError, ValueError) as exc:
        raise Conflict(f"the stored plan of run {run_id} cannot be shown: {exc}") from None
    return Response(json.dumps(redacted), media_type="application/json")
