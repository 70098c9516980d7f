from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from backend.deps import CtxDep, PrincipalDep
from backend.stacks import approvers, service, variables
from backend.stacks.approvers import ApproverPublic, ApproversPublic
from backend.stacks.models import Tool
from backend.stacks.schemas import StackCreate, StackPublic, StacksPublic, StackUpdate
from backend.stacks.variables import VariablePublic, VariablesPublic, VariableWrite

router = APIRouter(tags=["stacks"])

StackId = Annotated[
    str, Path(pattern=r"^stk-[0-9a-f]{16}$", description="Stack id, e.g. stk-0123456789abcdef")
]


@router.get("/stacks", response_model=StacksPublic)
def list_stacks(
    principal: PrincipalDep,
    ctx: CtxDep,
    q: Annotated[
        str | None, Query(max_length=100, description="Search name, description, repository")
    ] = None,
    tool: Tool | None = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    query = service.StackQuery(
        q=q, tool=tool.value if tool else None, label=label, limit=limit, offset=offset
    )
    with ctx.session(readonly=True) as s:
        data, count = service.list_stacks(s, principal, query)
    return {"data": data, "count": count}


@router.post("/stacks", status_code=201, response_model=StackPublic)
def create_stack(body: StackCreate, principal: PrincipalDep, ctx: CtxDep) -> StackPublic:
    with ctx.session() as s:
        return service.create_stack(s, principal, body, ctx.secret_box)


@router.get("/stacks/{stack_id}", response_model=StackPublic)
def get_stack(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> StackPublic:
    with ctx.session(readonly=True) as s:
        return service.get_stack(s, principal, stack_id)


@router.patch("/stacks/{stack_id}", response_model=StackPublic)
def update_stack(stack_id: StackId, body: StackUpdate, principal: PrincipalDep, ctx: CtxDep) -> StackPublic:
    with ctx.session() as s:
        return service.update_stack(s, principal, stack_id, body, ctx.secret_box)


@router.delete("/stacks/{stack_id}", status_code=204)
def delete_stack(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        service.delete_stack(s, principal, stack_id)
    return Response(status_code=204)


VarName = Annotated[str, Path(max_length=128, description="Environment variable name, e.g. TF_VAR_region")]


@router.get("/stacks/{stack_id}/variables", response_model=VariablesPublic)
def list_variables(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    with ctx.session(readonly=True) as s:
        data = variables.list_variables(s, principal, ctx.secret_box, stack_id)
    return {"data": data, "count": len(data)}


@router.put("/stacks/{stack_id}/variables/{name}", response_model=VariablePublic)
def put_variable(
    stack_id: StackId, name: VarName, body: VariableWrite, principal: PrincipalDep, ctx: CtxDep
) -> VariablePublic:
    with ctx.session() as s:
        return variables.put_variable(s, principal, ctx.secret_box, stack_id, name, body)


@router.delete("/stacks/{stack_id}/variables/{name}", status_code=204)
def delete_variable(stack_id: StackId, name: VarName, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        variables.delete_variable(s, principal, stack_id, name)
    return Response(status_code=204)


UserId = Annotated[str, Path(pattern=r"^usr-[0-9a-f]{16}$", description="User id")]


@router.get("/stacks/{stack_id}/approvers", response_model=ApproversPublic)
def list_approvers(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    with ctx.session(readonly=True) as s:
        data = approvers.list_approvers(s, principal, stack_id)
    return {"data": data, "count": len(data)}


@router.put("/stacks/{stack_id}/approvers/{user_id}", response_model=ApproverPublic)
def add_approver(stack_id: StackId, user_id: UserId, principal: PrincipalDep, ctx: CtxDep) -> ApproverPublic:
    with ctx.session() as s:
        return approvers.add_approver(s, principal, stack_id, user_id)


@router.delete("/stacks/{stack_id}/approvers/{user_id}", status_code=204)
def remove_approver(stack_id: StackId, user_id: UserId, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        approvers.remove_approver(s, principal, stack_id, user_id)
    return Response(status_code=204)
