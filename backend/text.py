"""Checks on text that arrives from clients, shared by every service."""

from __future__ import annotations

from backend.errors import FieldError


def require_text(field: str, value: str) -> str:
    """Reject strings that cannot be stored or hashed (lone surrogates from a websocket client)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError(field, f"{field.replace('_', ' ')} contains invalid characters") from None
    return value
