from __future__ import annotations

import reflex as rx

from state.base import AuthState, SessionExpired

# Messages are chosen by code, so a crafted link cannot put its own words on the login page.
ERRORS = {
    "invalid": "Invalid email or password.",
    "too_many": "Too many login attempts. Wait before trying again.",
    "denied": "Your organization's login policy refused this sign-in. Ask an administrator.",
    "policy_error": (
        "Your organization's login policy could not be checked, so this sign-in was refused. "
        "Ask an administrator."
    ),
}
NOTICES = {"password_changed": "Password changed. Log in with your new password."}


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


class LoginState(AuthState):
    error: str = ""
    notice: str = ""
    retry_after: str = ""
    next_url: str = "/"

    @rx.event
    async def load(self):
        # Whoever used this tab before (logout lands here) leaves no data behind.
        auth = await self.get_state(AuthState)
        auth.reset()
        auth._uid = ""
        params = self.router.url.query_parameters
        self.error = ERRORS.get(params.get("error", ""), "") if params.get("error") else ""
        if params.get("error") and not self.error:
            self.error = "Login failed. Try again."
        self.notice = NOTICES.get(params.get("notice", ""), "")
        retry = params.get("retry_after", "")
        self.retry_after = retry if retry.isdigit() and len(retry) < 7 else ""
        self.next_url = _safe_next(params.get("next", "/"))
        # Already logged in? Go straight on.
        try:
            await self._principal()
        except SessionExpired:
            return None
        return rx.redirect(self.next_url)
