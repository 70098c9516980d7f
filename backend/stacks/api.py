from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from backend.deps import CtxDep, PrincipalDep
from backend.stacks import service
from backend.stacks.models import Tool
from backend.stacks.schemas import StackCreate, StackPublic, StacksPublic, StackUpdate

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
        return service.create_stack(s, principal, body)


@router.get("/stacks/{stack_id}", response_model=StackPublic)
def get_stack(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> StackPublic:
    with ctx.session(readonly=True) as s:
        return service.get_stack(s, principal, stack_id)


@router.patch("/stacks/{stack_id}", response_model=StackPublic)
def update_stack(stack_id: StackId, body: StackUpdate, principal: PrincipalDep, ctx: CtxDep) -> StackPublic:
    with ctx.session() as s:
        return service.update_stack(s, principal, stack_id, body)


@router.delete("/stacks/{stack_id}", status_code=204)
def delete_stack(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        service.delete_stack(s, principal, stack_id)
    return Response(status_code=204)
