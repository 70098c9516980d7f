"""Validates the session server-side before every UI event (except on the login page)."""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie
from urllib.parse import quote

import reflex as rx
from reflex.middleware import Middleware
from reflex.state import StateUpdate
from reflex_base.event import Event

from backend.context import get_context
from backend.deps import SESSION_COOKIE
from backend.errors import NotAuthenticated

PUBLIC_PATHS = frozenset({"/login"})


def session_cookie(raw_cookie_header: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(raw_cookie_header or "")
    except Exception:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel else None


def _valid(token: str | None) -> bool:
    ctx = get_context()
    try:
        ctx.read(lambda s: ctx.auth.session_principal(s, token))
        return True
    except NotAuthenticated:
        return False


class SessionGuard(Middleware):
    async def preprocess(self, app, state, event: Event) -> StateUpdate | None:
        path = state.router.url.path or "/"
        if (path.rstrip("/") or "/") in PUBLIC_PATHS:
            return None
        token = session_cookie(state.router.headers.cookie)
        if await asyncio.to_thread(_valid, token):
            return None
        if state.router.url.query:
            path += "?" + state.router.url.query
        redirect = rx.redirect(f"/login?next={quote(path, safe='')}")
        return StateUpdate(delta={}, events=Event.from_event_type([redirect]))
