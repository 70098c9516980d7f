from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from backend.auth.models import Role
from backend.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    """Who is calling, in which org, with which role, and from where."""

    kind: Literal["user", "token", "system"]
    id: str
    label: str
    org_id: str
    role: Role
    ip: str | None = None
    user_agent: str | None = None

    def require(self, role: Role, doing: str) -> None:
        if not self.role.at_least(role):
            raise Forbidden(f"{doing} requires the {role.value} role; you are {self.role.value}")

    def __post_init__(self) -> None:
        # Origins come from request headers: keep them within what the audit log stores.
        object.__setattr__(self, "ip", (self.ip or "")[:64] or None)
        object.__setattr__(self, "user_agent", (self.user_agent or "")[:255] or None)


def system_principal(org_id: str) -> Principal:
    return Principal(kind="system", id="system", label="system", org_id=org_id, role=Role.admin)
