"""/health and /metrics, outside /api/v1 so that probes and scrapers need no token."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from backend import __version__
from backend.db import check_database
from backend.deps import CtxDep

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(ctx: CtxDep) -> JSONResponse:
    db_ok = await run_in_threadpool(check_database, ctx.engine)
    body = {
        "status": "ok" if db_ok else "degraded",
        "database": "ok" if db_ok else "unreachable",
        "version": __version__,
        "uptime_seconds": round(time.time() - ctx.started_at, 1),
    }
    return JSONResponse(body, status_code=200 if db_ok else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
