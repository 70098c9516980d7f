from __future__ import annotations

import secrets
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """Aware UTC; a naive value is taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def new_id(prefix: str) -> str:
    """Opaque, URL-safe resource id such as ``stk-3f9a0c1b2d4e5f60``."""
    return f"{prefix}-{secrets.token_hex(8)}"


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else as_utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
