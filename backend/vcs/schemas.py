"""Webhook response models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class WebhookPublic(BaseModel):
    url: str
    secret: str
    # Until then the secret before the last rotation still verifies (None: no grace period open).
    previous_valid_until: str | None = None
    rotated_at: str | None = None
    created_at: str


class DeliveryPublic(BaseModel):
    id: str
    stack_id: str
    provider: str
    event: str
    delivery_id: str | None
    received_at: str
    outcome: Literal["created", "skipped", "rejected"]
    reason: str
    status_code: int
    run_id: str | None
    replay_of: str | None
    replayed_by: str | None
    duplicates: int
    payload_bytes: int
    source_ip: str | None
    headers: dict[str, Any]
    replayable: bool
    payload: str | None = None  # only when one delivery is fetched


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int


class Receipt(BaseModel):
    """What the endpoint answers a provider."""

    delivery: str
    outcome: Literal["created", "skipped", "rejected", "duplicate"]
    reason: str
    run_id: str | None = None


class FeedbackCall(BaseModel):
    """The last outcome of one kind of call to the VCS."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    error: str | None = None
    at: str | None = None


class RunVcsPublic(BaseModel):
    """Where a webhook-made run came from and what Crucible told the VCS about it."""

    provider: str
    repo: str
    sha: str
    pr_number: int | None
    pr_url: str | None
    status_result: FeedbackCall | None  # the commit status: state, description, url
    comment_result: FeedbackCall | None  # the PR/MR comment: url
    synced_status: str | None  # the run status last reported
    done: bool
    attempts: int  # failed attempts at the current status
    next_attempt_at: str | None
