"""The FastAPI application: REST under /api/v1, plus /health and /metrics."""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from backend import __version__
from backend.audit.api import router as audit_router
from backend.auth.api import router as auth_router
from backend.context import AppContext
from backend.errors import FieldError, ServiceError, TooManyRequests
from backend.ops.api import router as ops_router
from backend.ops.middleware import BodyLimit, Metrics, ObservabilityMiddleware
from backend.policies.api import router as policies_router
from backend.runs.api import router as runs_router
from backend.stacks.api import router as stacks_router
from backend.state.api import router as state_router
from backend.state.protocol import router as state_protocol_router
from backend.storage import StorageError
from backend.tasks import BACKGROUND_TASKS
from backend.vcs.api import router as vcs_router

log = logging.getLogger("crucible.api")
API_PREFIX = "/api/v1"


def create_api(ctx: AppContext, run_background_tasks: bool = False, extra_tasks=()) -> FastAPI:
    """The API app. Under Reflex, background tasks are Reflex lifespan tasks instead, because
    Reflex mounts this app inside its own and only runs the outer lifespan."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        tasks = (
            [asyncio.create_task(t()) for t in (*BACKGROUND_TASKS, *extra_tasks)]
            if run_background_tasks
            else []
        )
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()

    app = FastAPI(
        lifespan=lifespan,
        swagger_ui_oauth2_redirect_url=f"{API_PREFIX}/docs/oauth2-redirect",
        title="Crucible",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.metrics = Metrics()

    app.include_router(auth_router, prefix=API_PREFIX)
    app.include_router(stacks_router, prefix=API_PREFIX)
    app.include_router(runs_router, prefix=API_PREFIX)
    app.include_router(state_router, prefix=API_PREFIX)
    app.include_router(state_protocol_router, prefix=API_PREFIX)
    app.include_router(policies_router, prefix=API_PREFIX)
    app.include_router(vcs_router, prefix=API_PREFIX)
    app.include_router(audit_router, prefix=API_PREFIX)
    app.include_router(ops_router)

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, FieldError):
            return JSONResponse({"detail": exc.detail()}, status_code=422)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        if exc.status_code == 401:
            # The state endpoint answers Terraform's http backend with a basic challenge.
            headers = {"WWW-Authenticate": getattr(exc, "challenge", "Bearer")}
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            item = {
                "loc": list(err.get("loc", [])),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            errors.append(item)
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StorageError)
    async def _storage(_request: Request, exc: StorageError) -> JSONResponse:
        log.error("object store error: %s", exc)
        return JSONResponse(
            {"detail": f"the object store failed: {exc}"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error: %s", exc.orig)
        return JSONResponse({"detail": "the change conflicts with existing data"}, status_code=409)

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        log.warning("data error: %s", exc.orig)
        return JSONResponse({"detail": "a value is out of range for its field"}, status_code=422)

    @app.exception_handler(OperationalError)
    async def _db_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", exc.orig)
        return JSONResponse(
            {"detail": "the database is unavailable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_middleware(
        ObservabilityMiddleware,
        metrics=app.state.metrics,
        max_body=ctx.settings.max_request_bytes,
        body_limits=_body_limits(ctx),
    )
    return app


def _body_limits(ctx: AppContext) -> list[BodyLimit]:
    """Routes allowed past CRUCIBLE_MAX_REQUEST_BYTES: Terraform state uploads (streamed to disk
    by the route itself), the admins' REST upload (read into memory, so its own cap) and policy
    evaluation (its input is a whole plan JSON) and VCS webhooks (a push of many commits is
    large)."""
    return [
        BodyLimit(
            path=re.compile(rf"{API_PREFIX}/state/[^/]+/?"),
            methods=frozenset({"POST", "PUT"}),
            max_bytes=ctx.settings.state_max_bytes,
            setting="CRUCIBLE_STATE_MAX_BYTES",
            streamed=True,
        ),
        BodyLimit(
            path=re.compile(rf"{API_PREFIX}/stacks/[^/]+/state/versions/?"),
            methods=frozenset({"POST"}),
            max_bytes=ctx.settings.state_in_memory_max_bytes,
            setting="CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES",
        ),
        BodyLimit(
            path=re.compile(rf"{API_PREFIX}/policies/evaluate/?"),
            methods=frozenset({"POST"}),
            max_bytes=ctx.settings.policy_input_max_bytes,
            setting="CRUCIBLE_POLICY_INPUT_MAX_BYTES",
        ),
        BodyLimit(
            path=re.compile(rf"{API_PREFIX}/webhooks/[^/]+/?"),
            methods=frozenset({"POST"}),
            max_bytes=ctx.settings.webhook_max_bytes,
            setting="CRUCIBLE_WEBHOOK_MAX_BYTES",
        ),
    ]
