from __future__ import annotations

import reflex as rx

from state.base import AuthState, SessionExpired


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


class LoginState(AuthState):
    error: str = ""
    notice: str = ""
    retry_after: str = ""
    next_url: str = "/"

    @rx.event
    async def load(self):
        params = self.router.url.query_parameters
        self.error = params.get("error", "")[:200]
        self.notice = params.get("notice", "")[:200]
        self.retry_after = params.get("retry_after", "")[:10]
        self.next_url = _safe_next(params.get("next", "/"))
        # Already logged in? Go straight on.
        try:
            await self._principal()
        except SessionExpired:
            return None
        return rx.redirect(self.next_url)
