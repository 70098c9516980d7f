"""FastAPI dependencies shared by every router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.auth.principal import Principal
from backend.context import AppContext, get_context
from backend.errors import NotAuthenticated

SESSION_COOKIE = "crucible_session"


def get_ctx(request: Request) -> AppContext:
    return getattr(request.app.state, "ctx", None) or get_context()


CtxDep = Annotated[AppContext, Depends(get_ctx)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_principal(request: Request, ctx: CtxDep) -> Principal:
    ip = client_ip(request)
    ua = request.headers.get("user-agent")
    header = request.headers.get("authorization", "")

    def resolve(s) -> Principal:
        if header:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise NotAuthenticated("Authorization header must be 'Bearer <token>'")
            return ctx.auth.token_principal(s, credentials.strip(), ip, ua)
        return ctx.auth.session_principal(s, request.cookies.get(SESSION_COOKIE), ip, ua)

    return ctx.read(resolve)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
