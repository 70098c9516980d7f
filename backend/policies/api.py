from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from backend.context import AppContext
from backend.deps import CtxDep, PrincipalDep
from backend.policies import service
from backend.policies.engine import PolicyEngine
from backend.policies.models import PolicyType
from backend.policies.schemas import (
    POLICY_ID_PATTERN,
    EvaluationResult,
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
)
from backend.stacks.api import StackId

router = APIRouter(tags=["policies"])

PolicyIdPath = Annotated[
    str, Path(pattern=POLICY_ID_PATTERN, description="Policy id, e.g. pol-0123456789abcdef")
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
