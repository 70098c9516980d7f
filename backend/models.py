"""Every table, imported in one place for Alembic and for metadata.create_all in tests."""

from backend.audit.models import AuditEvent
from backend.auth.models import ApiToken, Membership, Organization, User, UserSession
from backend.runs.models import Run
from backend.stacks.models import Stack, StackLabel

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Membership",
    "Organization",
    "Run",
    "Stack",
    "StackLabel",
    "User",
    "UserSession",
]
