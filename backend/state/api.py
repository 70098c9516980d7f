"""REST routes for people and automation: state versions, diffs, resources, outputs, the lock
and stack tokens. Session or bearer auth (PrincipalDep); the Terraform protocol is protocol.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from backend.auth.models import Role
from backend.deps import CtxDep, PrincipalDep
from backend.errors import ServiceError
from backend.stacks.api import StackId
from backend.state import service, tokens
from backend.state.schemas import (
    ForceUnlockResult,
    LockStatus,
    StackTokenCreate,
    StackTokenCreated,
    StackTokensPublic,
    StateOutputs,
    StateResources,
    VersionPublic,
    VersionsPublic,
)
from backend.state.service import PayloadTooLarge

router = APIRouter(tags=["state"])

MAX_SERIAL = 2**63 - 1
Serial = Annotated[int, Path(ge=0, le=MAX_SERIAL, description="The state's serial")]
OptionalSerial = Annotated[int | None, Query(ge=0, le=MAX_SERIAL)]
TokenId = Annotated[str, Path(pattern=r"^stt-[0-9a-f]{16}$", description="State token id")]


def _limits(ctx) -> service.Limits:
    return service.Limits.from_settings(ctx.settings)


# ---------------------------------------------------------------- versions


@router.get("/stacks/{stack_id}/state/versions", response_model=VersionsPublic)
def list_versions(
    stack_id: StackId,
    principal: PrincipalDep,
    ctx: CtxDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    with ctx.session(readonly=True) as s:
        data, count = service.list_versions(s, principal, stack_id, limit=limit, offset=offset)
    return {"data": data, "count": count}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "A Terraform/OpenTofu state (JSON)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the state is larger than {limit} bytes, the limit for uploads through the REST "
                    "API (CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES); push it through the state endpoint"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise ServiceError("the client disconnected before the whole state arrived") from None
    return b"".join(chunks)


@router.post(
    "/stacks/{stack_id}/state/versions",
    status_code=201,
    response_model=VersionPublic,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "Identical to the current version (force=false): nothing stored"},
        409: {"description": "Serial/lineage conflict (force=false) or the state is locked"},
        413: {"description": "Larger than CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES"},
    },
)
async def upload_version(
    stack_id: StackId,
    request: Request,
    principal: PrincipalDep,
    ctx: CtxDep,
    response: Response,
    force: Annotated[
        bool, Query(description="Break lineage/serial rules; stored as highest serial + 1")
    ] = False,
) -> VersionPublic:
    """Admins: store a state. With ``force=true`` any lineage and serial are accepted and the
    state's serial is rewritten to the highest stored + 1. Refused while the state is locked."""
    # Authorize before reading the body, so a refused caller cannot make us buffer it.
    principal.require(Role.admin, "uploading state")
    data = await _read_body(request, ctx.settings.state_in_memory_max_bytes)

    def run() -> tuple[VersionPublic, bool]:
        with ctx.session() as s:
            return service.upload_state(
                s, ctx.objects, principal, stack_id, data, force=force, limits=_limits(ctx)
            )

    version, created = await run_in_threadpool(run)
    if not created:
        response.status_code = 200
    return version


@router.get("/stacks/{stack_id}/state/versions/{serial}", response_model=VersionPublic)
def get_version(stack_id: StackId, serial: Serial, principal: PrincipalDep, ctx: CtxDep) -> VersionPublic:
    with ctx.session(readonly=True) as s:
        return service.get_version(s, principal, stack_id, serial)


@router.get(
    "/stacks/{stack_id}/state/versions/{serial}/download",
    response_class=StreamingResponse,
    responses={200: {"description": "The state file", "content": {"application/json": {}}}},
)
def download_version(stack_id: StackId, serial: Serial, principal: PrincipalDep, ctx: CtxDep):
    """Members and up (state holds secrets); every download is audited."""
    with ctx.session() as s:
        download = service.download_version(s, ctx.objects, principal, stack_id, serial)
    version = download.version
    headers = {
        "Content-Length": str(version.size),
        "Content-Disposition": f'attachment; filename="{download.filename}"',
        "Content-MD5": service.md5_base64(version.md5),
        "ETag": f'"{version.sha256}"',
        "Cache-Control": "no-store",
    }
    return StreamingResponse(download.chunks, media_type="application/json", headers=headers)


@router.post(
    "/stacks/{stack_id}/state/versions/{serial}/rollback", status_code=201, response_model=VersionPublic
)
def rollback(stack_id: StackId, serial: Serial, principal: PrincipalDep, ctx: CtxDep) -> VersionPublic:
    """Admins: a new current version with that version's content and serial = highest + 1."""
    with ctx.session() as s:
        return service.rollback(s, ctx.objects, principal, stack_id, serial, limits=_limits(ctx))


# ---------------------------------------------------------------- contents


@router.get("/stacks/{stack_id}/state/diff")
def diff(
    stack_id: StackId,
    principal: PrincipalDep,
    ctx: CtxDep,
    from_serial: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_SERIAL, description="Default: the version before")
    ] = None,
    to_serial: Annotated[
        int | None, Query(alias="to", ge=0, le=MAX_SERIAL, description="Default: the current version")
    ] = None,
) -> dict[str, Any]:
    with ctx.session(readonly=True) as s:
        return service.diff_versions(
            s, ctx.objects, principal, stack_id, from_serial, to_serial, limits=_limits(ctx)
        )


@router.get("/stacks/{stack_id}/state/resources", response_model=StateResources)
def resources(
    stack_id: StackId,
    principal: PrincipalDep,
    ctx: CtxDep,
    serial: OptionalSerial = None,
    type: Annotated[str | None, Query(max_length=200, description="Resource type, e.g. aws_instance")] = None,
    address: Annotated[str | None, Query(max_length=1000, description="Address substring")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Instances per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    with ctx.session(readonly=True) as s:
        return service.resources(
            s,
            ctx.objects,
            principal,
            stack_id,
            serial,
            type,
            address,
            offset=offset,
            limit=limit,
            limits=_limits(ctx),
        )


@router.get("/stacks/{stack_id}/state/outputs", response_model=StateOutputs)
def outputs(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep, serial: OptionalSerial = None) -> dict:
    with ctx.session(readonly=True) as s:
        used, data = service.outputs_of(s, ctx.objects, principal, stack_id, serial, limits=_limits(ctx))
    return {"serial": used, "data": data, "count": len(data)}


# ---------------------------------------------------------------- lock


@router.get("/stacks/{stack_id}/state/lock", response_model=LockStatus)
def lock_status(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> LockStatus:
    with ctx.session(readonly=True) as s:
        return service.lock_status(s, principal, stack_id)


@router.delete("/stacks/{stack_id}/state/lock", response_model=ForceUnlockResult)
def force_unlock(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> ForceUnlockResult:
    """Admins: remove the lock whoever holds it. 200 either way; ``unlocked`` says whether there
    was a lock."""
    with ctx.session() as s:
        return service.force_unlock(s, principal, stack_id)


# ---------------------------------------------------------------- stack tokens


@router.post("/stacks/{stack_id}/tokens", status_code=201, response_model=StackTokenCreated)
def create_token(
    stack_id: StackId, body: StackTokenCreate, principal: PrincipalDep, ctx: CtxDep
) -> StackTokenCreated:
    """Members: a token for the stack's state endpoint. The ``token`` is shown only here."""
    with ctx.session() as s:
        public, secret = tokens.create_token(s, ctx.auth.hasher, principal, stack_id, body.name, body.access)
    return StackTokenCreated(**public.model_dump(), token=secret)


@router.get("/stacks/{stack_id}/tokens", response_model=StackTokensPublic)
def list_tokens(stack_id: StackId, principal: PrincipalDep, ctx: CtxDep) -> dict:
    with ctx.session(readonly=True) as s:
        data = tokens.list_tokens(s, principal, stack_id)
    return {"data": data, "count": len(data)}


@router.delete("/stacks/{stack_id}/tokens/{token_id}", status_code=204)
def revoke_token(stack_id: StackId, token_id: TokenId, principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        tokens.revoke_token(s, principal, stack_id, token_id)
    return Response(status_code=204)
