"""Settings: organization members (admins add them) and service-account API tokens (admins only)."""

from __future__ import annotations

import dataclasses

import reflex as rx

from backend.auth.models import Role
from backend.context import get_context
from backend.errors import Conflict, FieldError, ServiceError
from backend.timeutil import iso
from state.base import AuthState, SessionExpired
from state.helpers import exact, relative, run_db

ROLES = [r.value for r in Role]


@dataclasses.dataclass
class MemberRow:
    id: str = ""
    email: str = ""
    role: str = ""
    disabled: bool = False
    created_rel: str = ""
    created_exact: str = ""


@dataclasses.dataclass
class TokenRow:
    id: str = ""
    name: str = ""
    role: str = ""
    created_rel: str = ""
    created_exact: str = ""
    last_used_rel: str = ""
    last_used_exact: str = ""
    revoked: bool = False
    revoked_exact: str = ""


def _token_row(t) -> TokenRow:
    created, used, revoked = iso(t.created_at), iso(t.last_used_at), iso(t.revoked_at)
    return TokenRow(
        id=t.id,
        name=t.name,
        role=t.role,
        created_rel=relative(created),
        created_exact=exact(created),
        last_used_rel=relative(used) if used else "never",
        last_used_exact=exact(used) if used else "Never used",
        revoked=revoked is not None,
        revoked_exact=exact(revoked) if revoked else "",
    )


class SettingsState(AuthState):
    members: list[MemberRow] = []
    members_loading: bool = True
    # Add member: the email and role are bound to state; the password is read from the submitted
    # form only, so it never sits in the UI state.
    member_email: str = ""
    member_role: str = Role.member.value
    member_errors: dict[str, str] = {}
    member_saving: bool = False

    tokens: list[TokenRow] = []
    tokens_loading: bool = True
    token_name: str = ""
    token_role: str = Role.member.value
    token_errors: dict[str, str] = {}
    token_saving: bool = False
    # The new token's secret: shown once in a dialog, dropped from state when it closes.
    new_token_value: str = ""
    new_token_name: str = ""
    revoke_open: bool = False
    revoke_id: str = ""
    revoke_name: str = ""
    revoking: bool = False

    @rx.var
    def new_token_open(self) -> bool:
        return self.new_token_value != ""

    # ------------------------------------------------------------ loading

    @rx.event
    async def load(self):
        self.members_loading, self.tokens_loading = True, True
        self.member_errors, self.token_errors = {}, {}
        self.new_token_value, self.new_token_name, self.revoke_open = "", "", False
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()
        auth = get_context().auth
        admin = principal.role == Role.admin

        def _q(s):
            return auth.list_members(s, principal), (auth.list_tokens(s, principal) if admin else [])

        try:
            members, tokens = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.members_loading = self.tokens_loading = False
            return rx.toast.error(exc.message)
        self._set_members(members)
        self.tokens = [_token_row(t) for t in tokens]
        self.members_loading = self.tokens_loading = False

    def _set_members(self, members: list[dict]) -> None:
        self.members = [
            MemberRow(
                id=m["id"],
                email=m["email"],
                role=m["role"],
                disabled=bool(m["disabled"]),
                created_rel=relative(m["created_at"]),
                created_exact=exact(m["created_at"]),
            )
            for m in members
        ]

    async def _reload_members(self, principal) -> None:
        members = await run_db(lambda s: get_context().auth.list_members(s, principal))
        self._set_members(members)

    async def _reload_tokens(self, principal) -> None:
        tokens = await run_db(lambda s: get_context().auth.list_tokens(s, principal))
        self.tokens = [_token_row(t) for t in tokens]

    # ------------------------------------------------------------ members

    @rx.event
    def set_member_email(self, value: str):
        self.member_email = value[:254]
        self.member_errors.pop("email", None)

    @rx.event
    def set_member_role(self, value: str):
        self.member_role = value if value in ROLES else Role.member.value
        self.member_errors.pop("role", None)

    @rx.event
    async def add_member(self, form_data: dict):
        password = str(form_data.get("password") or "")
        email, role = self.member_email.strip(), self.member_role
        errors = {}
        if not email:
            errors["email"] = "enter the new member's email address"
        if not password:
            errors["password"] = "enter an initial password"
        if role not in ROLES:
            errors["role"] = "choose a role"
        if errors:
            self.member_errors = errors
            return
        self.member_saving, self.member_errors = True, {}
        try:
            principal = await self._principal()
            user = await run_db(
                lambda s: get_context().auth.create_user(s, principal, email, password, Role(role))
            )
            await self._reload_members(principal)
        except SessionExpired:
            self.member_saving = False
            return self._login_redirect()
        except FieldError as exc:
            self.member_saving = False
            self.member_errors = {exc.field: exc.message}
            return rx.toast.error(exc.message)
        except Conflict as exc:
            self.member_saving = False
            self.member_errors = {"email": exc.message}
            return rx.toast.error(exc.message)
        except ServiceError as exc:
            self.member_saving = False
            return rx.toast.error(exc.message)
        self.member_saving = False
        self.member_email, self.member_role = "", Role.member.value
        return [
            rx.call_script("document.getElementById('settings-member-form')?.reset()"),
            rx.toast.success(f"Added {user.email} as {role}"),
        ]

    # ------------------------------------------------------------ tokens

    @rx.event
    def set_token_name(self, value: str):
        self.token_name = value[:100]
        self.token_errors.pop("name", None)

    @rx.event
    def set_token_role(self, value: str):
        self.token_role = value if value in ROLES else Role.member.value
        self.token_errors.pop("role", None)

    @rx.event
    async def create_token(self, _form_data: dict | None = None):
        name, role = self.token_name.strip(), self.token_role
        if not name:
            self.token_errors = {"name": "give the token a name, e.g. ci-pipeline"}
            return
        if role not in ROLES:
            self.token_errors = {"role": "choose a role"}
            return
        self.token_saving, self.token_errors = True, {}
        try:
            principal = await self._principal()
            tok, plaintext = await run_db(
                lambda s: get_context().auth.create_token(s, principal, name, Role(role))
            )
            await self._reload_tokens(principal)
        except SessionExpired:
            self.token_saving = False
            return self._login_redirect()
        except FieldError as exc:
            self.token_saving = False
            self.token_errors = {exc.field: exc.message}
            return rx.toast.error(exc.message)
        except ServiceError as exc:
            self.token_saving = False
            return rx.toast.error(exc.message)
        self.token_saving = False
        self.token_name, self.token_role = "", Role.member.value
        self.new_token_name, self.new_token_value = tok.name, plaintext
        return rx.toast.success(f"Created token {tok.name}")

    @rx.event
    def close_new_token(self):
        self.new_token_value, self.new_token_name = "", ""

    @rx.event
    def set_new_token_open(self, value: bool):
        if not value:
            self.new_token_value, self.new_token_name = "", ""

    @rx.event
    def token_copied(self):
        return rx.toast.success("Token copied to the clipboard")

    @rx.event
    def ask_revoke(self, token_id: str):
        row = next((t for t in self.tokens if t.id == token_id), None)
        if row is None or row.revoked:
            return
        self.revoke_id, self.revoke_name, self.revoke_open = row.id, row.name, True

    @rx.event
    def set_revoke_open(self, value: bool):
        if not self.revoking:
            self.revoke_open = value

    @rx.event
    async def revoke(self):
        token_id, name = self.revoke_id, self.revoke_name
        if not token_id:
            return
        self.revoking = True
        try:
            principal = await self._principal()
            await run_db(lambda s: get_context().auth.revoke_token(s, principal, token_id))
            await self._reload_tokens(principal)
        except SessionExpired:
            self.revoking = False
            return self._login_redirect()
        except ServiceError as exc:
            self.revoking = False
            return rx.toast.error(exc.message)
        self.revoking, self.revoke_open, self.revoke_id = False, False, ""
        return rx.toast.success(f"Revoked token {name}")


class PasswordState(AuthState):
    """Your account: change your own password (all your sessions end)."""

    password_errors: dict[str, str] = {}
    password_saving: bool = False

    @rx.event
    async def change_password(self, form_data: dict):
        current = str(form_data.get("current_password") or "")
        new = str(form_data.get("new_password") or "")
        confirm = str(form_data.get("confirm_password") or "")
        if new != confirm:
            self.password_errors = {"confirm_password": "the two new passwords do not match"}
            return
        self.password_saving, self.password_errors = True, {}
        try:
            principal = await self._principal()
            await run_db(lambda s: get_context().auth.change_password(s, principal, current, new))
        except SessionExpired:
            self.password_saving = False
            return self._login_redirect()
        except FieldError as exc:
            self.password_saving = False
            self.password_errors = {exc.field: exc.message}
            return rx.toast.error(exc.message)
        except ServiceError as exc:
            self.password_saving = False
            return rx.toast.error(exc.message)
        self.password_saving = False
        # Every session of this user ended, including this one: log in again.
        return rx.redirect("/login?notice=password_changed")
