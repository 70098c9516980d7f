"""Process-wide wiring: settings, engine and auth, built once and shared by API and UI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from argon2 import PasswordHasher
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from backend.auth.ratelimit import LoginRateLimiter
from backend.auth.service import Auth
from backend.config import Settings, load_settings
from backend.crypto import SecretBox
from backend.db import make_engine, session_scope
from backend.storage import ObjectStore, build_object_store

T = TypeVar("T")


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    auth: Auth
    objects: ObjectStore
    secret_box: SecretBox
    started_at: float = field(default_factory=time.time)

    @contextmanager
    def session(self, readonly: bool = False) -> Iterator[Session]:
        with session_scope(self.engine, readonly=readonly) as s:
            yield s

    def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a read transaction. A rare incidental write (a last-seen stamp) that
        SQLite refuses to upgrade from a stale snapshot is retried as a write transaction."""
        try:
            with self.session(readonly=True) as s:
                return fn(s)
        except OperationalError:
            with self.session() as s:
                return fn(s)


def build_context(settings: Settings, engine: Engine | None = None) -> AppContext:
    key = settings.effective_secret_key()  # generate/persist it on first start, fail early if corrupt
    hasher = PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib)
    limiter = LoginRateLimiter(
        settings.login_max_attempts_per_ip,
        settings.login_max_failures_per_account,
        settings.login_window_seconds,
    )
    auth = Auth(hasher, limiter, timedelta(hours=settings.session_ttl_hours))
    return AppContext(
        settings=settings,
        engine=engine or make_engine(settings.sqlalchemy_url),
        auth=auth,
        objects=object_store_for(settings),
        secret_box=SecretBox(key),
    )


def object_store_for(settings: Settings) -> ObjectStore:
    if settings.object_store == "filesystem":
        return build_object_store("filesystem", root=settings.resolved_data_dir / "objects")
    secret = settings.s3_secret_access_key
    return build_object_store(
        "s3",
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        prefix=settings.s3_prefix,
    )


_ctx: AppContext | None = None
_lock = threading.Lock()


def get_context() -> AppContext:
    """The process's context, built from CRUCIBLE_* variables on first use."""
    global _ctx
    with _lock:
        if _ctx is None:
            _ctx = build_context(load_settings())
        return _ctx


def set_context(ctx: AppContext | None) -> None:
    global _ctx
    with _lock:
        _ctx = ctx
