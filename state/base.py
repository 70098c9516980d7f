"""Session handling shared by every page state.

The browser never sees the session token: the httpOnly cookie travels with the websocket
handshake, and every event re-validates it against the database (``_principal``).
"""

from __future__ import annotations

from urllib.parse import quote

import reflex as rx

from backend.auth.principal import Principal
from backend.context import get_context
from backend.deps import resolve_client_ip
from backend.errors import NotAuthenticated
from state.guard import session_cookie
from state.helpers import run_db


class SessionExpired(Exception):
    """Raised inside handlers when the session is gone; callers redirect to /login."""


class AuthState(rx.State):
    user_label: str = ""
    user_role: str = ""
    # A form shows only after its page's load filled it: every page load clears this first, so
    # a form never flashes (or takes keystrokes into) values left from an earlier visit.
    form_ready: bool = False
    _uid: str = ""  # server-side only: whose data the page states hold

    def _session_token(self) -> str | None:
        return session_cookie(self.router.headers.cookie)

    async def _principal(self) -> Principal:
        """Validate the session cookie against the database; raises SessionExpired."""
        headers = self.router.headers
        token = self._session_token()
        ip = resolve_client_ip(
            self.router.session.client_ip or None,
            headers.raw_headers.get("x-forwarded-for"),
            get_context().settings.trusted_proxy_networks,
        )
        try:
            return await run_db(
                lambda s: get_context().auth.session_principal(s, token, ip, headers.user_agent),
                readonly=True,
            )
        except NotAuthenticated as exc:
            raise SessionExpired(str(exc)) from None

    def _login_redirect(self):
        target = self.router.url.path or "/"
        if self.router.url.query:
            target += "?" + self.router.url.query
        return rx.redirect(f"/login?next={quote(target, safe='')}")

    @rx.event
    async def check_session(self):
        """on_load of every protected page: fill the identity or send the browser to /login."""
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        if self._uid != principal.id:
            # Another user in this tab (logout, then login): drop every page's data first.
            self.reset()
            self._uid = principal.id
        self.user_label = principal.label
        self.user_role = principal.role.value
        self.form_ready = False

    @rx.var
    def is_admin(self) -> bool:
        return self.user_role == "admin"

    @rx.var
    def can_write(self) -> bool:
        return self.user_role in ("member", "admin")
