"""Stack tokens: the HTTP basic password of a stack's state endpoint.

A token belongs to one stack and has an access level (read, plan, write). Only an argon2id hash
is stored; the token's prefix finds the row. Terraform makes four or more requests per command,
so a verified token is remembered by its SHA-256 for a few minutes; the row is still read on
every request, so revocation and expiry take effect at once. Run tokens are issued by the
worker for one run (bound to its run id) and expire shortly after the run's time limit.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.auth.service import Auth, validate_token_name
from backend.errors import Conflict, FieldError, Forbidden, NotAuthenticated, NotFound
from backend.runs.lifecycle import PLAN_ONLY, RunType
from backend.runs.models import Run
from backend.stacks.models import Stack
from backend.stacks.service import load_stack
from backend.state.models import StateToken, TokenAccess
from backend.state.schemas import StackTokenPublic
from backend.text import require_text
from backend.timeutil import as_utc, iso, new_id, utcnow

TOKEN_PREFIX = "crus_"
_PREFIX_LEN = 12
_MAX_TOKEN_LEN = 200
CACHE_SECONDS = 300.0
LAST_USED_RESOLUTION = timedelta(minutes=5)
RUN_TOKEN_MARGIN = timedelta(minutes=10)
DEFAULT_RUN_TIMEOUT_SECONDS = 3600
MAX_ACTIVE_TOKENS = 100  # per stack, not counting run tokens
USER_ACCESS = (TokenAccess.read.value, TokenAccess.write.value)


@dataclass(frozen=True)
class StackIdentity:
    """A caller of the state endpoint, authenticated by one stack token."""

    token_id: str
    token_name: str
    stack_id: str
    org_id: str
    access: TokenAccess
    run_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    @property
    def label(self) -> str:
        return f"run:{self.run_id}" if self.run_id else f"stack-token:{self.token_name}"

    def principal(self) -> Principal:
        """The identity as an audit actor."""
        role = Role.member if self.access.can_write() else Role.viewer
        return Principal("token", self.token_id, self.label, self.org_id, role, self.ip, self.user_agent)

    def require_lock(self) -> None:
        if not self.access.can_lock():
            raise Forbidden(f"this stack token is {self.access.value}-only: it cannot lock the state")

    def require_write(self, doing: str) -> None:
        if not self.access.can_write():
            raise Forbidden(f"this stack token has {self.access.value} access: it cannot {doing}")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# Tokens known to be genuine, by the SHA-256 of their plaintext → (token id, valid until, in
# time.monotonic()). Filled by a successful argon2 check, and when this process mints a token
# (it knows the plaintext): a run's first state request then skips argon2's time and memory
# (64 MiB by default). Only ever a shortcut to the row, which is read on every request.
_verified: dict[str, tuple[str, float]] = {}
_verified_lock = threading.Lock()
_MAX_CACHED = 10_000


def _remember(plaintext: str, token_id: str) -> None:
    with _verified_lock:
        if len(_verified) >= _MAX_CACHED:
            now = time.monotonic()
            for digest in [d for d, (_id, until) in _verified.items() if until <= now]:
                del _verified[digest]
            if len(_verified) >= _MAX_CACHED:
                _verified.clear()
        _verified[_sha256(plaintext)] = (token_id, time.monotonic() + CACHE_SECONDS)


def _known(plaintext: str) -> str | None:
    digest = _sha256(plaintext)
    with _verified_lock:
        found = _verified.get(digest)
    if found is None or found[1] <= time.monotonic():
        return None
    return found[0]


def _mint(hasher: PasswordHasher) -> tuple[str, str, str]:
    """(prefix, plaintext, argon2 hash) of a fresh token."""
    prefix = secrets.token_hex(_PREFIX_LEN // 2)
    plaintext = f"{TOKEN_PREFIX}{prefix}{secrets.token_urlsafe(32)}"
    return prefix, plaintext, hasher.hash(plaintext)


def to_public(tok: StateToken) -> StackTokenPublic:
    return StackTokenPublic(
        id=tok.id,
        stack_id=tok.stack_id,
        name=tok.name,
        access=tok.access,
        prefix=f"{TOKEN_PREFIX}{tok.prefix}",
        created_by=tok.created_by,
        created_at=iso(tok.created_at) or "",
        last_used_at=iso(tok.last_used_at),
        expires_at=iso(tok.expires_at),
        revoked_at=iso(tok.revoked_at),
        run_id=tok.run_id,
    )


def _is_active(tok: StateToken, now=None) -> bool:
    now = now or utcnow()
    return tok.revoked_at is None and (tok.expires_at is None or as_utc(tok.expires_at) > now)


# ---------------------------------------------------------------- use cases (REST and UI)


def create_token(
    session: Session, hasher: PasswordHasher, principal: Principal, stack_id: str, name: str, access: str
) -> tuple[StackTokenPublic, str]:
    """A new token for the stack's state endpoint; the plaintext is returned only here."""
    principal.require(Role.member, "creating state tokens")
    load_stack(session, principal, stack_id)
    name = validate_token_name(require_text("name", name))
    if access not in USER_ACCESS:
        raise FieldError("access", "access must be 'read' or 'write'")
    active = session.exec(
        select(func.count())
        .select_from(StateToken)
        .where(
            StateToken.stack_id == stack_id,
            col(StateToken.run_id).is_(None),
            col(StateToken.revoked_at).is_(None),
        )
    ).one()
    if int(active) >= MAX_ACTIVE_TOKENS:
        raise Conflict(
            f"stack {stack_id} already has {MAX_ACTIVE_TOKENS} active state tokens: revoke unused ones first"
        )
    prefix, plaintext, hashed = _mint(hasher)
    tok = StateToken(
        id=new_id("stt"),
        stack_id=stack_id,
        name=name,
        access=access,
        prefix=prefix,
        secret_hash=hashed,
        created_by=principal.label,
        created_at=utcnow(),
    )
    session.add(tok)
    session.flush()
    _remember(plaintext, tok.id)  # if this transaction rolls back, the id finds no row
    audit.record(
        session,
        principal,
        "state.token_create",
        resource_type="stack",
        resource_id=stack_id,
        after={"token_id": tok.id, "name": name, "access": access},
    )
    return to_public(tok), plaintext


def list_tokens(session: Session, principal: Principal, stack_id: str) -> list[StackTokenPublic]:
    """The stack's tokens, newest first: every user-made one (revoked ones too, last) and the
    run tokens that are still active. Never the secret."""
    principal.require(Role.viewer, "listing state tokens")
    load_stack(session, principal, stack_id)
    rows = session.exec(
        select(StateToken)
        .where(StateToken.stack_id == stack_id)
        .order_by(col(StateToken.revoked_at).is_not(None), col(StateToken.created_at).desc())
    ).all()
    now = utcnow()
    return [to_public(t) for t in rows if t.run_id is None or _is_active(t, now)]


def revoke_token(session: Session, principal: Principal, stack_id: str, token_id: str) -> StackTokenPublic:
    """Revoke a token (idempotent). It stops working at once, in every process."""
    principal.require(Role.member, "revoking state tokens")
    load_stack(session, principal, stack_id)
    tok = session.get(StateToken, token_id)
    if tok is None or tok.stack_id != stack_id:
        raise NotFound(f"state token {token_id} not found")
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
        session.add(tok)
        session.flush()
        audit.record(
            session,
            principal,
            "state.token_revoke",
            resource_type="stack",
            resource_id=stack_id,
            before={"token_id": tok.id, "name": tok.name, "access": tok.access},
        )
    return to_public(tok)


# ---------------------------------------------------------------- runs integration


def run_token_access(run_type: str) -> TokenAccess:
    """Tracked and destroy runs write state; proposed and drift runs only read and lock it."""
    return TokenAccess.plan if RunType(run_type) in PLAN_ONLY else TokenAccess.write


def issue_run_token(
    session: Session,
    hasher: PasswordHasher,
    run: Run,
    *,
    timeout_seconds: float = DEFAULT_RUN_TIMEOUT_SECONDS,
    access: TokenAccess | None = None,
) -> tuple[str, str]:
    """A short-lived token for one run's phase: (token id, plaintext).

    It expires ``timeout_seconds`` (pass the run timeout) plus a margin from now; issue a fresh
    one per phase, and call revoke_run_tokens when the run ends. Not audited: one is made for
    every run, and the state versions it writes carry the run id."""
    grant = access or run_token_access(run.type)
    prefix, plaintext, hashed = _mint(hasher)
    now = utcnow()
    tok = StateToken(
        id=new_id("stt"),
        stack_id=run.stack_id,
        name=f"run {run.id}",
        access=grant.value,
        prefix=prefix,
        secret_hash=hashed,
        created_by="system",
        created_at=now,
        expires_at=now + timedelta(seconds=timeout_seconds) + RUN_TOKEN_MARGIN,
        run_id=run.id,
    )
    session.add(tok)
    session.flush()
    _remember(plaintext, tok.id)
    return tok.id, plaintext


def revoke_run_tokens(session: Session, run_id: str) -> int:
    """Revoke every token of the run; returns how many were still unrevoked."""
    result = session.execute(
        update(StateToken)
        .where(col(StateToken.run_id) == run_id, col(StateToken.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


# ---------------------------------------------------------------- verification


class TokenVerifier:
    """Checks stack tokens with one hasher (argon2 only when the token is not known yet)."""

    def __init__(self, hasher: PasswordHasher):
        self.hasher = hasher
        self._dummy: str | None = None  # made on first need: hashing costs what verifying does

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def _verify_hash(self, stored: str, plaintext: str) -> bool:
        try:
            return self.hasher.verify(stored, plaintext)
        except (VerificationError, InvalidHashError):
            return False

    def verify(self, session: Session, plaintext: str) -> StateToken:
        """The active token row for plaintext; NotAuthenticated if it is unknown, wrong,
        revoked or expired. Argon2 runs only on a cache miss."""
        invalid = NotAuthenticated("invalid state token: the password must be a stack token (crus_...)")
        if (
            not plaintext.startswith(TOKEN_PREFIX)
            or len(plaintext) > _MAX_TOKEN_LEN
            or len(plaintext) < len(TOKEN_PREFIX) + _PREFIX_LEN + 1
        ):
            raise invalid
        known = _known(plaintext)
        tok: StateToken | None
        if known is not None:
            tok = session.get(StateToken, known)
        else:
            prefix = plaintext[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + _PREFIX_LEN]
            tok = session.exec(select(StateToken).where(StateToken.prefix == prefix)).first()
            if tok is None:
                self._verify_hash(self._dummy_hash(), plaintext)  # same cost either way
                raise invalid
            if not self._verify_hash(tok.secret_hash, plaintext):
                raise invalid
            _remember(plaintext, tok.id)
        if tok is None:
            raise invalid
        check_active(tok)
        return tok

    def identify(
        self, session: Session, plaintext: str, ip: str | None = None, user_agent: str | None = None
    ) -> StackIdentity:
        tok = self.verify(session, plaintext)
        stack = session.get(Stack, tok.stack_id)
        if stack is None:  # deleted a moment ago (tokens go with their stack)
            raise NotAuthenticated("invalid state token: its stack no longer exists")
        now = utcnow()
        if tok.last_used_at is None or now - as_utc(tok.last_used_at) > LAST_USED_RESOLUTION:
            tok.last_used_at = now
            session.add(tok)
        return StackIdentity(
            token_id=tok.id,
            token_name=tok.name,
            stack_id=tok.stack_id,
            org_id=stack.org_id,
            access=TokenAccess(tok.access),
            run_id=tok.run_id,
            ip=ip,
            user_agent=user_agent,
        )


def check_active(tok: StateToken) -> None:
    if tok.revoked_at is not None:
        raise NotAuthenticated("this state token has been revoked: create a new one")
    if tok.expires_at is not None and as_utc(tok.expires_at) <= utcnow():
        raise NotAuthenticated("this state token has expired")


def recheck(session: Session, identity: StackIdentity) -> None:
    """Inside a write transaction: the token must still be active (revocation is immediate,
    even for a request that was authenticated before its body finished uploading)."""
    tok = session.get(StateToken, identity.token_id)
    if tok is None:
        raise NotAuthenticated("invalid state token: it no longer exists")
    check_active(tok)


_verifiers: weakref.WeakKeyDictionary[Auth, TokenVerifier] = weakref.WeakKeyDictionary()
_verifiers_lock = threading.Lock()


def verifier_for(auth: Auth) -> TokenVerifier:
    """One verifier (and cache) per process-wide Auth, using its hasher."""
    with _verifiers_lock:
        found = _verifiers.get(auth)
        if found is None:
            found = _verifiers[auth] = TokenVerifier(auth.hasher)
        return found
