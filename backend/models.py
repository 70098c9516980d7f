"""Every table, imported in one place for Alembic and for metadata.create_all in tests."""

from backend.audit.models import AuditEvent
from backend.auth.models import ApiToken, Membership, Organization, User, UserSession
from backend.policies.models import Policy, PolicyLabel, PolicyVersion, StackPolicy
from backend.runs.models import Run, RunLogChunk
from backend.stacks.models import Stack, StackApprover, StackLabel, StackVariable
from backend.state.models import StateHead, StateLock, StateToken, StateVersion
from backend.vcs.models import RunVcs, StackWebhook, VcsComment, WebhookDelivery

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Membership",
    "Organization",
    "Policy",
    "PolicyLabel",
    "PolicyVersion",
    "Run",
    "RunLogChunk",
    "RunVcs",
    "Stack",
    "StackApprover",
    "StackLabel",
    "StackPolicy",
    "StackVariable",
    "StackWebhook",
    "StateHead",
    "StateLock",
    "StateToken",
    "StateVersion",
    "User",
    "UserSession",
    "VcsComment",
    "WebhookDelivery",
]
