"""FastAPI dependencies shared by every router."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from backend.auth.principal import Principal
from backend.context import AppContext, get_context
from backend.errors import NotAuthenticated

SESSION_COOKIE = "crucible_session"


def get_ctx(request: Request) -> AppContext:
    return getattr(request.app.state, "ctx", None) or get_context()


CtxDep = Annotated[AppContext, Depends(get_ctx)]


def resolve_client_ip(peer: str | None, forwarded_for: str | None, trusted) -> str:
    """The client address: the TCP peer, unless it is a trusted proxy; then the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries left of it are
    client-supplied and can be forged)."""
    if not peer:
        return "unknown"
    if not trusted or not forwarded_for or not _in(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: fall back to what we know
    return peer


def _in(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: Request) -> str:
    trusted = get_ctx(request).settings.trusted_proxy_networks
    peer = request.client.host if request.client else None
    return resolve_client_ip(peer, request.headers.get("x-forwarded-for"), trusted)


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
