from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from backend.context import AppContext
from backend.deps import CtxDep, PrincipalDep
from backend.policies import backtest, inputs, service, validation
from backend.policies.engine import PolicyEngine
from backend.policies.models import PolicyType
from backend.policies.schemas import (
    POLICY_ID_PATTERN,
    BacktestRequest,
    BacktestResult,
    EvaluationResult,
    LibraryInstall,
    LibraryPublic,
    PoliciesPublic,
    PolicyCreate,
    PolicyEvaluate,
    PolicyPublic,
    PolicyUpdate,
    PolicyVersionPublic,
    PolicyVersionsPublic,
    StackPoliciesPublic,
    StackPolicyAttach,
    StackPolicyPublic,
    StackValidationsPublic,
)
from backend.runs.api import RunId
from backend.stacks.api import StackId

router = APIRouter(tags=["policies"])

PolicyIdPath = Annotated[
    str, Path(pattern=POLICY_ID_PATTERN, description="Policy id, e.g. pol-0123456789abcdef")
]
# Any unknown slug is a 404 that lists the library's slugs, whatever its spelling.
LibrarySlug = Annotated[
    str, Path(max_length=100, description="Library policy, e.g. no_destroy_outside_destroy_runs")
]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number, from 1")]


def _engine(ctx: AppContext) -> PolicyEngine:
    return service.engine_for(ctx.settings)


@router.get("/policies", response_model=PoliciesPublic)
def list_policies(
    principal: PrincipalDep,
    ctx: CtxDep,
    type: PolicyType | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    with ctx.session(readonly=True) as s:
        data, count = service.list_policies(s, principal, type, limit=limit, offset=offset)
    return {"data": data, "count": count}


@router.post("/policies", status_code=201, response_model=PolicyPublic)
def create_policy(body: PolicyCreate, principal: PrincipalDep, ctx: CtxDep) -> PolicyPublic:
    engine = _engine(ctx)
    with ctx.session() as s:
        return service.create_policy(s, principal, engine, body)


@router.post("/policies/evaluate", response_model=EvaluationResult)
def evaluate_policy(body: PolicyEvaluate, principal: PrincipalDep, ctx: CtxDep) -> EvaluationResult:
    with ctx.session(readonly=True) as s:
        source = service.evaluation_source(s, principal, body)
    # No transaction is held while the policy runs.
    return service.evaluate(principal, _engine(ctx), source, body.input, ctx.settings.policy_timeout_seconds)


# The library (and backtest) routes come before /policies/{policy_id}, which would take the
# word as a policy id and answer 422.


@router.post("/policies/backtest", response_model=BacktestResult)
def backtest_policy(body: BacktestRequest, principal: PrincipalDep, ctx: CtxDep) -> BacktestResult:
    """Replay draft Rego on the newest runs with a stored plan, next to the current version."""
    return backtest.backtest(
        ctx.session,
        ctx.objects,
        principal,
        _engine(ctx),
        body,
        timeout_seconds=ctx.settings.policy_timeout_seconds,
        max_input_bytes=ctx.settings.policy_input_max_bytes,
    )


@router.get("/policies/library", response_model=LibraryPublic)
def list_library(principal: PrincipalDep) -> dict:
    data = service.library(principal)
    return {"data": data, "count": len(data)}


@router.post("/policies/library/{slug}/install", status_code=201, response_model=PolicyPublic)
def install_from_library(
    slug: LibrarySlug, principal: PrincipalDep, ctx: CtxDep, body: LibraryInstall | None = None
) -> PolicyPublic:
    engine = _engine(ctx)
    with ctx.session() as s:
        return service.install_from_library(s, principal, engine, slug, body.name if body else None)


@router.get("/policies/{policy_id}", response_model=PolicyPublic)
def get_policy(policy_id: PolicyIdPath, principal: PrincipalDep, ctx: CtxDep) -> PolicyPublic:
    with ctx.session(readonly=True) as s:
        return service.get_policy(s, principal, policy_id)


@router.put("/policies/{policy_id}", response_model=PolicyPublic)
def update_policy(
    policy_id: PolicyIdPath, body: PolicyUpdate, principal: PrincipalDep, ctx: CtxDep
) -> PolicyPublic:
    engine = _engine(ctx)
    with ctx.session() as s:
        return service.update_policy(s, principal, engine, policy_id, body)


@router.delete("/policies/{policy_id}", status_code=204)
def delete_policy(policy_id: PolicyIdPath, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        service.delete_policy(s, principal, policy_id)
    return Response(status_code=204)


@router.get("/policies/{policy_id}/versions", response_model=PolicyVersionsPublic)
def list_versions(
    policy_id: PolicyIdPath,
    principal: PrincipalDep,
    ctx: CtxDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    with ctx.session(readonly=True) as s:
        data, count = service.list_versions(s, principal, policy_id, limit=limit, offset=offset)
    return {"data": data, "count": count}


@router.get("/policies/{policy_id}/versions/{version}", response_model=PolicyVersionPublic)
def get_version(
    policy_id: PolicyIdPath, version: VersionNumber, principal: PrincipalDep, ctx: CtxDep
) -> PolicyVersionPublic:
    with ctx.session(readonly=True) as s:
        return service.get_version(s, principal, policy_id, version)


@router.get("/stacks/{stack_id}/policies", response_model=StackPoliciesPublic)
def list_stack_policies(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    with ctx.session(readonly=True) as s:
        data = service.stack_policies(s, principal, stack_id)
    return {"data": data, "count": len(data)}


@router.post("/stacks/{stack_id}/policies", status_code=201, response_model=StackPolicyPublic)
def attach_policy(
    stack_id: StackId, body: StackPolicyAttach, principal: PrincipalDep, ctx: CtxDep
) -> StackPolicyPublic:
    with ctx.session() as s:
        return service.attach_policy(s, principal, stack_id, body.policy_id)


@router.delete("/stacks/{stack_id}/policies/{policy_id}", status_code=204)
def detach_policy(
    stack_id: StackId, policy_id: PolicyIdPath, principal: PrincipalDep, ctx: CtxDep
) -> Response:
    with ctx.session() as s:
        service.detach_policy(s, principal, stack_id, policy_id)
    return Response(status_code=204)


@router.post("/stacks/{stack_id}/validate", response_model=StackValidationsPublic)
def validate_stack(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    """Evaluate the stack's enabled validation policies against its current state now (members
    and admins); answers the stack's results, as ``GET /stacks/{id}/validation`` does."""
    engine = _engine(ctx)
    data = validation.validate_stack(
        ctx.session,
        ctx.objects,
        principal,
        engine,
        stack_id,
        trigger="manual",
        timeout_seconds=ctx.settings.policy_timeout_seconds,
        max_input_bytes=ctx.settings.policy_input_max_bytes,
    )
    return {"data": data, "count": len(data)}


@router.get("/stacks/{stack_id}/validation", response_model=StackValidationsPublic)
def list_stack_validation(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    """The latest result of each validation policy about the stack's current state."""
    with ctx.session(readonly=True) as s:
        data = validation.list_validations(s, principal, stack_id)
    return {"data": data, "count": len(data)}


@router.get(
    "/runs/{run_id}/policy-input",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "The run's policy input"}},
)
def run_policy_input(
    run_id: RunId,
    principal: PrincipalDep,
    ctx: CtxDep,
    type: Annotated[
        PolicyType | None, Query(description="pre_plan: the input before the plan (no plan keys)")
    ] = None,
) -> Response:
    """The input document a policy sees for this run: its stored plan JSON (sensitive values
    redacted) at the top level plus ``crucible``. A run without a plan gets ``crucible`` alone."""
    with ctx.session(readonly=True) as s:
        source = inputs.load_run_source(s, principal, run_id)
    # The object store is read outside the transaction: a plan can be megabytes.
    plan = inputs.load_plan(ctx.objects, source, ctx.settings.policy_input_max_bytes)
    doc = inputs.build_input(source, plan, type)
    return Response(json.dumps(doc), media_type="application/json")
