"""Starter library (/policies/library): ready-made policies an admin installs with one click;
the installed copy opens in the editor. Installing attaches it to no stack."""

from __future__ import annotations

import dataclasses

import reflex as rx

from backend.context import get_context
from backend.errors import FieldError, ServiceError
from backend.policies import service
from state.base import AuthState, SessionExpired
from state.helpers import run_db


@dataclasses.dataclass
class LibraryRow:
    slug: str = ""
    name: str = ""
    description: str = ""
    type: str = ""
    body: str = ""
    lines: int = 0
    installed_id: str = ""  # a policy of this organization with the entry's name, if any


def _org_policy_names(s, principal) -> dict[str, str]:
    """Lower-cased name → id of every policy of the organization."""
    out: dict[str, str] = {}
    offset = 0
    while True:
        page, total = service.list_policies(s, principal, limit=service.MAX_PAGE, offset=offset)
        out.update({p.name.casefold(): p.id for p in page})
        offset += len(page)
        if not page or offset >= total:
            return out


class PolicyLibraryState(AuthState):
    entries: list[LibraryRow] = []
    loading: bool = True
    install_open: bool = False
    install_slug: str = ""
    install_title: str = ""
    install_name: str = ""
    install_error: str = ""
    installing: bool = False
    _taken: set[str] = set()

    @rx.event
    async def load(self):
        self.loading, self.install_open = True, False
        try:
            principal = await self._principal()
        except SessionExpired:
            return self._login_redirect()

        def _q(s):
            return service.library(principal), _org_policy_names(s, principal)

        try:
            items, names = await run_db(_q, readonly=True)
        except ServiceError as exc:
            self.loading = False
            return rx.toast.error(exc.message)
        self._taken = set(names)
        self.entries = [
            LibraryRow(
                slug=p.slug,
                name=p.name,
                description=p.description,
                type=p.type.value,
                body=p.body,
                lines=p.body.count("\n") + 1,
                installed_id=names.get(p.name.casefold(), ""),
            )
            for p in items
        ]
        self.loading = False
        return None

    @rx.event
    def open_install(self, slug: str):
        entry = next((e for e in self.entries if e.slug == slug), None)
        if entry is None:
            return None
        self.install_slug, self.install_title = slug, entry.name
        self.install_name = service.free_name(entry.name, self._taken)
        self.install_error, self.install_open = "", True
        return None

    @rx.event
    def set_install_open(self, value: bool):
        self.install_open = bool(value)

    @rx.event
    def set_install_name(self, value: str):
        self.install_name, self.install_error = value, ""

    @rx.event
    async def install(self):
        if not self.is_admin:
            yield rx.toast.error("Only admins install library policies.")
            return
        slug, name = self.install_slug, self.install_name.strip()
        if not name:
            self.install_error = "Give the policy a name."
            return
        self.installing, self.install_error = True, ""
        yield
        try:
            principal = await self._principal()
        except SessionExpired:
            self.installing = False
            yield self._login_redirect()
            return
        try:
            engine = service.engine_for(get_context().settings)
            saved = await run_db(lambda s: service.install_from_library(s, principal, engine, slug, name))
        except FieldError as exc:
            self.installing, self.install_error = False, exc.message
            return
        except ServiceError as exc:
            # A name taken meanwhile is a Conflict whose message suggests a free name.
            self.installing, self.install_error = False, exc.message
            return
        self.installing, self.install_open = False, False
        yield rx.toast.success(f"Installed {saved.name}: attach it to stacks (Stacks tab) to enforce it")
        yield rx.redirect(f"/policies/{saved.id}")
