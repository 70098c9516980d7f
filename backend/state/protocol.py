"""Terraform's ``http`` state backend, at ``/api/v1/state/{stack_id}``.

Speaks what Terraform's and OpenTofu's client sends (internal/backend/remote-state/http):
GET (200 with the state, 204 when there is none), POST/PUT with ``Content-MD5`` and
``?ID=<lock id>`` while locked, DELETE, and LOCK/UNLOCK (or POST to ``/lock`` and ``/unlock``
for ``lock_method = "POST"``). Lock conflicts answer 423 (LOCK) or 409 (writes, UNLOCK) with the
holder's LockInfo as the body, which is what the client parses. Authentication is HTTP basic:
username = the stack id, password = a stack token.

Uploads stream to a temp file while their MD5 and SHA-256 are computed, are validated with a
streaming JSON parser, then copied into the object store; downloads stream back. A state is never
held in memory whole, so memory stays flat however large it is.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from backend.context import AppContext
from backend.deps import client_ip, get_ctx
from backend.errors import Forbidden, NotAuthenticated, ServiceError
from backend.state import parse, service
from backend.state.schemas import LockInfo, UnlockInfo
from backend.state.service import LockMismatch, PayloadTooLarge, StateLocked, Upload
from backend.state.tokens import StackIdentity, verifier_for
from backend.storage import ObjectNotFound, StorageError

BASIC_REALM = 'Basic realm="crucible"'
_FLUSH_BYTES = 1024 * 1024  # hash and write uploads in ~1 MiB steps, off the event loop
_MAX_LOCK_BODY = 64 * 1024

StackId = Annotated[
    str, Path(pattern=r"^stk-[0-9a-f]{16}$", description="Stack id (also the HTTP basic username)")
]
LockIdQuery = Annotated[
    str | None,
    Query(alias="ID", max_length=256, description="The lock ID, required while the state is locked"),
]


class BasicAuthRequired(NotAuthenticated):
    """401 with an HTTP basic challenge (what Terraform's client understands)."""

    challenge = BASIC_REALM


class _BasicChallengeRoute(APIRoute):
    """Every 401 of the state endpoint challenges HTTP basic, wherever it was raised: also a
    token revoked or expired while the request was under way (tokens.recheck, inside the write
    or lock transaction), which the service raises as a plain NotAuthenticated."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except BasicAuthRequired:
                raise
            except NotAuthenticated as exc:
                raise BasicAuthRequired(exc.message) from None

        return route


router = APIRouter(tags=["state backend"], route_class=_BasicChallengeRoute)


_CREDENTIALS_HELP = (
    "use HTTP basic auth: username = the stack id, password = a stack token (POST /api/v1/stacks/{id}/tokens)"
)


def _basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if not header or scheme.lower() != "basic" or not encoded.strip():
        raise BasicAuthRequired(f"the state endpoint needs credentials: {_CREDENTIALS_HELP}")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BasicAuthRequired(f"malformed basic credentials: {_CREDENTIALS_HELP}") from None
    username, sep, password = decoded.partition(":")
    if not sep or not password:
        raise BasicAuthRequired(f"no password given: {_CREDENTIALS_HELP}")
    return username, password


async def _identify(request: Request, ctx: AppContext, stack_id: str) -> StackIdentity:
    username, password = _basic_credentials(request)
    verifier = verifier_for(ctx.auth)
    ip = client_ip(request)
    user_agent = request.headers.get("user-agent")
    identity = await run_in_threadpool(ctx.read, lambda s: verifier.identify(s, password, ip, user_agent))
    if identity.stack_id != stack_id:
        raise Forbidden(f"this state token belongs to another stack, not {stack_id}")
    if username != stack_id:
        raise BasicAuthRequired(f"the username must be the stack id {stack_id}, not {username[:64]!r}")
    return identity


def _holder_response(status: int, holder: dict[str, str]) -> JSONResponse:
    return JSONResponse(holder, status_code=status)


# ---------------------------------------------------------------- GET


@router.get(
    "/state/{stack_id}",
    summary="Terraform http backend: read the current state",
    responses={
        200: {"description": "The current state, exactly as stored", "content": {"application/json": {}}},
        204: {"description": "The stack has no state"},
        401: {"description": "Missing or invalid stack token (HTTP basic)"},
        403: {"description": "The token belongs to another stack"},
    },
)
async def get_state(stack_id: StackId, request: Request) -> Response:
    ctx = get_ctx(request)
    identity = await _identify(request, ctx, stack_id)

    def open_current():
        # A version pruned between reading the head and opening its object is retried once.
        for attempt in range(2):
            with ctx.session(readonly=True) as s:
                version = service.current_version(s, identity, stack_id)
            if version is None:
                return None, None
            try:
                return version, ctx.objects.iter_chunks(version.object_key)
            except ObjectNotFound:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    version, chunks = await run_in_threadpool(open_current)
    if version is None or chunks is None:
        return Response(status_code=204)
    headers = {
        "Content-Length": str(version.size),
        "Content-MD5": service.md5_base64(version.md5),
        "ETag": f'"{version.sha256}"',
        "X-Crucible-State-Serial": str(version.serial),
        "Cache-Control": "no-store",
    }
    return StreamingResponse(chunks, media_type="application/json", headers=headers)


# ---------------------------------------------------------------- POST / PUT


def _write_chunk(fh, md5, sha, validator: parse.StateValidator, data: bytes) -> None:
    md5.update(data)
    sha.update(data)
    fh.write(data)
    try:
        validator.feed(data)
    except parse.InvalidState as exc:
        raise service.InvalidStateError(str(exc)) from None


async def _receive(request: Request, ctx: AppContext) -> tuple[Upload, parse.StateValidator]:
    """Spool the body to a temp file, hashing and validating it on the way (one pass, in ~1 MiB
    steps off the event loop); never the whole body in memory. A body that can no longer be a
    state is refused at once, without waiting for the rest of it."""
    limit = ctx.settings.state_max_bytes
    too_large = PayloadTooLarge(
        f"the state is larger than the limit of {limit} bytes (CRUCIBLE_STATE_MAX_BYTES)"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    directory = ctx.settings.state_upload_dir
    try:
        await run_in_threadpool(directory.mkdir, parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".tfstate")
    except OSError as exc:
        raise StorageError(f"cannot buffer the upload under {directory}: {exc}") from exc
    path = directory / os.path.basename(name)
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    validator = parse.StateValidator()
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                async for chunk in request.stream():
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= _FLUSH_BYTES:
                        data = b"".join(pending)
                        pending.clear()
                        pending_size = 0
                        await run_in_threadpool(_write_chunk, fh, md5, sha, validator, data)
            except ClientDisconnect:
                raise ServiceError("the client disconnected before the whole state arrived") from None
            if pending:
                await run_in_threadpool(_write_chunk, fh, md5, sha, validator, b"".join(pending))
                pending.clear()
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise StorageError(f"cannot buffer the upload under {directory}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return Upload(path=path, size=size, sha256=sha.hexdigest(), md5=md5.hexdigest()), validator


def _check_content_md5(request: Request, upload: Upload) -> None:
    sent = request.headers.get("content-md5")
    if sent is None:
        return
    try:
        digest = base64.b64decode(sent.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise ServiceError("Content-MD5 must be the base64-encoded MD5 of the body (24 characters)")
    if digest.hex() != upload.md5:
        raise ServiceError(
            f"Content-MD5 does not match the body (sent {sent.strip()}, the body's is "
            f"{service.md5_base64(upload.md5)}): the upload was damaged in transit, send it again"
        )


async def _write(stack_id: str, request: Request, lock_id: str | None) -> Response:
    ctx = get_ctx(request)
    identity = await _identify(request, ctx, stack_id)
    identity.require_write("write state")
    upload, validator = await _receive(request, ctx)
    try:
        if upload.size == 0:
            raise service.InvalidStateError("the request body is empty: send the state JSON")
        _check_content_md5(request, upload)  # a body damaged in transit is reported as such
        try:
            summary = validator.finish()
        except parse.InvalidState as exc:
            raise service.InvalidStateError(str(exc)) from None
        result = await run_in_threadpool(
            lambda: service.write_state(
                ctx.session,
                ctx.objects,
                identity,
                stack_id,
                upload,
                summary,
                lock_id=lock_id or None,
                limits=service.Limits.from_settings(ctx.settings),
            )
        )
    except LockMismatch as exc:
        return _holder_response(409, exc.holder)
    finally:
        with contextlib.suppress(OSError):
            await run_in_threadpool(upload.path.unlink)
    version = result.version
    return JSONResponse({"serial": version.serial, "lineage": version.lineage, "created": result.created})


_WRITE_RESPONSES = {
    200: {"description": "Stored (or an identical retry of the current version)"},
    400: {"description": "Malformed JSON, not a Terraform state, or a Content-MD5 mismatch"},
    401: {"description": "Missing or invalid stack token (HTTP basic)"},
    403: {"description": "Another stack's token, or a token without write access"},
    409: {"description": "Locked by another holder (body: its LockInfo), or a serial/lineage conflict"},
    413: {"description": "Larger than CRUCIBLE_STATE_MAX_BYTES"},
}


@router.post(
    "/state/{stack_id}", summary="Terraform http backend: write the state", responses=_WRITE_RESPONSES
)
async def post_state(stack_id: StackId, request: Request, lock_id: LockIdQuery = None) -> Response:
    return await _write(stack_id, request, lock_id)


@router.put(
    "/state/{stack_id}",
    summary="Terraform http backend: write the state (update_method = PUT)",
    responses=_WRITE_RESPONSES,
)
async def put_state(stack_id: StackId, request: Request, lock_id: LockIdQuery = None) -> Response:
    return await _write(stack_id, request, lock_id)


# ---------------------------------------------------------------- DELETE


@router.delete(
    "/state/{stack_id}",
    summary="Terraform http backend: delete the state (versions are kept)",
    responses={
        200: {"description": "Deleted (or there was nothing to delete)"},
        409: {"description": "Locked by someone else (body: the holder's LockInfo)"},
    },
)
async def delete_state(stack_id: StackId, request: Request, lock_id: LockIdQuery = None) -> Response:
    ctx = get_ctx(request)
    identity = await _identify(request, ctx, stack_id)
    identity.require_write("delete state")

    def run() -> bool:
        with ctx.session() as s:
            return service.delete_state(s, identity, stack_id, lock_id=lock_id or None)

    try:
        deleted = await run_in_threadpool(run)
    except LockMismatch as exc:
        return _holder_response(409, exc.holder)
    return JSONResponse({"deleted": deleted})


# ---------------------------------------------------------------- LOCK / UNLOCK


async def _small_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > _MAX_LOCK_BODY:
                raise PayloadTooLarge(f"a lock request body must be at most {_MAX_LOCK_BODY} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ServiceError("the client disconnected before the request body arrived") from None
    return b"".join(chunks)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _lock(stack_id: str, request: Request) -> Response:
    ctx = get_ctx(request)
    identity = await _identify(request, ctx, stack_id)
    identity.require_lock()
    raw = await _small_body(request)
    if not raw.strip():
        raise ServiceError("a lock request needs Terraform's LockInfo JSON as its body (with an ID)")
    try:
        info = LockInfo.model_validate_json(raw)
    except ValidationError as exc:
        raise ServiceError(f"invalid LockInfo: {_validation_message(exc)}") from None

    def run() -> dict[str, str]:
        with ctx.session() as s:
            return service.lock_state(s, identity, stack_id, info)

    try:
        held = await run_in_threadpool(run)
    except StateLocked as exc:
        return _holder_response(423, exc.holder)
    return JSONResponse(held)


async def _unlock(stack_id: str, request: Request, lock_id: str | None) -> Response:
    ctx = get_ctx(request)
    identity = await _identify(request, ctx, stack_id)
    identity.require_lock()
    raw = await _small_body(request)
    body_id: str | None = None
    if raw.strip():
        try:
            body_id = UnlockInfo.model_validate_json(raw).ID
        except ValidationError as exc:
            raise ServiceError(f"invalid LockInfo: {_validation_message(exc)}") from None
    wanted = body_id or lock_id or None

    def run() -> bool:
        with ctx.session() as s:
            return service.unlock_state(s, identity, stack_id, wanted)

    try:
        released = await run_in_threadpool(run)
    except LockMismatch as exc:
        return _holder_response(409, exc.holder)
    return JSONResponse({"unlocked": released})


_LOCK_RESPONSES = {
    200: {"description": "Locked (or already held with the same ID)"},
    400: {"description": "The body is not a LockInfo with an ID"},
    403: {"description": "Another stack's token, or a read-only token"},
    423: {"description": "Locked by someone else; the body is the holder's LockInfo"},
}
_UNLOCK_RESPONSES = {
    200: {"description": "Unlocked (or it was not locked)"},
    409: {"description": "Held under another lock ID; the body is the holder's LockInfo"},
}


# LOCK and UNLOCK are not OpenAPI methods: these routes stay out of the schema.
@router.api_route("/state/{stack_id}", methods=["LOCK"], include_in_schema=False)
async def lock_method(stack_id: StackId, request: Request) -> Response:
    return await _lock(stack_id, request)


@router.api_route("/state/{stack_id}", methods=["UNLOCK"], include_in_schema=False)
async def unlock_method(stack_id: StackId, request: Request, lock_id: LockIdQuery = None) -> Response:
    return await _unlock(stack_id, request, lock_id)


@router.post(
    "/state/{stack_id}/lock",
    summary="Terraform http backend: lock (lock_method = POST)",
    responses=_LOCK_RESPONSES,
)
async def post_lock(stack_id: StackId, request: Request) -> Response:
    return await _lock(stack_id, request)


@router.post(
    "/state/{stack_id}/unlock",
    summary="Terraform http backend: unlock (unlock_method = POST)",
    responses=_UNLOCK_RESPONSES,
)
async def post_unlock(stack_id: StackId, request: Request, lock_id: LockIdQuery = None) -> Response:
    return await _unlock(stack_id, request, lock_id)


@router.api_route("/state/{stack_id}/lock", methods=["LOCK"], include_in_schema=False)
async def lock_method_on_lock_path(stack_id: StackId, request: Request) -> Response:
    return await _lock(stack_id, request)


@router.api_route("/state/{stack_id}/unlock", methods=["UNLOCK"], include_in_schema=False)
async def unlock_method_on_unlock_path(
    stack_id: StackId, request: Request, lock_id: LockIdQuery = None
) -> Response:
    return await _unlock(stack_id, request, lock_id)
