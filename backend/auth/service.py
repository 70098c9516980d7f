"""Accounts, sessions and API tokens. Every public function authorizes before it acts."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from backend.audit import service as audit
from backend.auth.models import ApiToken, Membership, Organization, Role, User, UserSession
from backend.auth.principal import Principal, system_principal
from backend.auth.ratelimit import LoginRateLimiter
from backend.errors import Conflict, FieldError, Forbidden, NotAuthenticated, NotFound
from backend.policies import login as login_policies
from backend.policies.enforcement import org_policies
from backend.text import require_text
from backend.timeutil import iso, new_id, utcnow

TOKEN_PREFIX = "cru_"
_PREFIX_LEN = 12
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")
MIN_PASSWORD = 10
DEFAULT_ORG_NAME = "default"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Auth:
    """Holds the hasher, the login limiter and the verified-token cache for one process."""

    def __init__(self, hasher: PasswordHasher, limiter: LoginRateLimiter, session_ttl: timedelta):
        self.hasher = hasher
        self.limiter = limiter
        self.session_ttl = session_ttl
        # Argon2 is deliberately slow, so a token verified once is remembered by its SHA-256
        # for a few minutes; revocation still takes effect at once (the row is read each call).
        self._token_cache: dict[str, tuple[str, float]] = {}
        self._cache_lock = threading.Lock()
        self._dummy_hash = hasher.hash(secrets.token_urlsafe(16))

    # ------------------------------------------------------------ passwords

    def hash_password(self, password: str) -> str:
        return self.hasher.hash(password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    # ------------------------------------------------------------ users & orgs

    def ensure_default_org(self, session: Session) -> Organization:
        org = session.exec(select(Organization).order_by(col(Organization.created_at)).limit(1)).first()
        if org is None:
            org = Organization(id=new_id("org"), name=DEFAULT_ORG_NAME)
            session.add(org)
            session.flush()
        return org

    def create_user(self, session: Session, actor: Principal, email: str, password: str, role: Role) -> User:
        """Create a user in the actor's org (admins only)."""
        actor.require(Role.admin, "creating users")
        email = validate_email(require_text("email", email))
        require_text("password", password)
        if len(password) < MIN_PASSWORD:
            raise FieldError("password", f"password must be at least {MIN_PASSWORD} characters")
        if len(password) > 1024:
            raise FieldError("password", "password must be at most 1024 characters")
        if session.exec(select(User).where(User.email == email)).first():
            raise Conflict(f"a user with email {email} already exists")
        user = User(id=new_id("usr"), email=email, password_hash=self.hash_password(password))
        try:
            session.add(user)
            session.flush()  # rows without an ORM relationship are not ordered by FK: flush the user first
            session.add(Membership(user_id=user.id, org_id=actor.org_id, role=role.value))
            session.flush()
        except IntegrityError:
            raise Conflict(f"a user with email {email} already exists") from None
        audit.record(
            session,
            actor,
            "user.create",
            resource_type="user",
            resource_id=user.id,
            after={"email": email, "role": role.value},
        )
        return user

    def change_password(self, session: Session, actor: Principal, current: str, new: str) -> None:
        """A user changes their own password; every other session of theirs is ended."""
        if actor.kind != "user":
            raise Forbidden("only users have passwords; API tokens are rotated by creating a new one")
        user = session.get(User, actor.id)
        if user is None:
            raise NotAuthenticated("session expired or invalid; log in again")
        require_text("current_password", current)
        require_text("new_password", new)
        # Same throttle as login: a borrowed session must not become a password-guessing oracle.
        self.limiter.check_and_count(actor.ip or "unknown", user.email)
        if not self._verify(user.password_hash, current):
            raise FieldError("current_password", "current password is not correct")
        self.limiter.record_success(user.email)
        if len(new) < MIN_PASSWORD:
            raise FieldError("new_password", f"password must be at least {MIN_PASSWORD} characters")
        if len(new) > 1024:
            raise FieldError("new_password", "password must be at most 1024 characters")
        if new == current:
            raise FieldError("new_password", "choose a password different from the current one")
        user.password_hash = self.hash_password(new)
        session.add(user)
        session.execute(delete(UserSession).where(col(UserSession.user_id) == user.id))
        audit.record(session, actor, "user.password_change", resource_type="user", resource_id=user.id)

    def count_users(self, session: Session) -> int:
        return int(session.exec(select(func.count()).select_from(User)).one())

    def list_members(self, session: Session, actor: Principal) -> list[dict]:
        actor.require(Role.viewer, "listing members")
        rows = session.exec(
            select(User, Membership)
            .join(Membership, col(Membership.user_id) == col(User.id))
            .where(Membership.org_id == actor.org_id)
            .order_by(col(User.email))
        ).all()
        return [
            {
                "id": u.id,
                "email": u.email,
                "role": m.role,
                "disabled": u.disabled,
                "created_at": iso(u.created_at),
            }
            for u, m in rows
        ]

    # ------------------------------------------------------------ sessions

    def login(
        self,
        sessions: Callable[..., AbstractContextManager[Session]],
        email: str,
        password: str,
        ip: str,
        user_agent: str | None,
        settings: Any = None,
    ) -> tuple[str, Principal]:
        """Check the password, let the organization's login policies judge, and open a session;
        returns (cookie value, principal).

        ``sessions(readonly=...)`` opens transactions. The slow argon2 check runs in a read
        transaction, so on SQLite it never holds the write lock; only the outcome is written.
        Login policies (``settings`` chooses their engine and time limit) run only once the
        password is right, outside any transaction; a refusal raises ``LoginRefused`` (403).
        """
        email = (email or "").strip().lower()[:254].replace("\x00", "")
        self.limiter.check_and_count(ip, email)
        with sessions(readonly=True) as s:
            user = s.exec(select(User).where(User.email == email)).first()
            membership = (
                s.exec(
                    select(Membership).where(Membership.user_id == user.id).order_by(col(Membership.id))
                ).first()
                if user is not None
                else None
            )
            # Read with the user, whatever the password: a wrong one costs the same query.
            checks = (
                org_policies(s, membership.org_id, login_policies.LOGIN) if membership is not None else []
            )
            org = s.get(Organization, membership.org_id) if checks and membership is not None else None
        if user is None:
            self._verify(self._dummy_hash, password)  # same cost whether or not the user exists
            raise NotAuthenticated("invalid email or password")
        ok = self._verify(user.password_hash, password) and not user.disabled and membership is not None
        if not ok or membership is None:
            if membership is not None:
                p = Principal(
                    "user", user.id, user.email, membership.org_id, Role(membership.role), ip, user_agent
                )
                with sessions() as s:
                    audit.record(s, p, "auth.login_failed", resource_type="user", resource_id=user.id)
            raise NotAuthenticated("invalid email or password")
        principal = Principal(
            "user", user.id, user.email, membership.org_id, Role(membership.role), ip, user_agent
        )
        verdict = login_policies.judge(
            settings,
            checks,
            login_policies.LoginAttempt(
                user_id=user.id,
                email=user.email,
                role=principal.role,
                org_id=membership.org_id,
                org_name=org.name if org is not None else "",
                ip=principal.ip,
                user_agent=principal.user_agent,
                at=utcnow(),
            ),
        )
        refusal = verdict.refusal()
        if refusal is not None:
            # Not a success for the throttle: the attempt stays counted against the account.
            with sessions() as s:
                audit.record(
                    s,
                    principal,
                    "auth.login_denied",
                    resource_type="user",
                    resource_id=user.id,
                    after=verdict.audit(),
                )
            raise refusal
        self.limiter.record_success(email)
        if verdict.role is not None:
            principal = replace(principal, role=verdict.role)
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with sessions() as s:
            if self.hasher.check_needs_rehash(user.password_hash):
                fresh = s.get(User, user.id)
                if fresh is not None:
                    fresh.password_hash = self.hash_password(password)
                    s.add(fresh)
            s.add(
                UserSession(
                    id=sha256_hex(token),
                    user_id=user.id,
                    org_id=membership.org_id,
                    created_at=now,
                    expires_at=now + self.session_ttl,
                    last_seen_at=now,
                    ip=principal.ip,
                    user_agent=principal.user_agent,
                    role=verdict.role.value if verdict.role is not None else None,
                )
            )
            audit.record(
                s,
                principal,
                "auth.login",
                resource_type="user",
                resource_id=user.id,
                # Which login policies decided what (none: no policies, the event as before).
                after={"membership_role": membership.role, **verdict.audit()} if checks else None,
            )
        return token, principal

    def session_principal(
        self,
        session: Session,
        token: str | None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> Principal:
        """Validate a session cookie server-side; raises NotAuthenticated."""
        if not token or len(token) > 256:
            raise NotAuthenticated("not logged in")
        row = session.exec(
            select(UserSession, User, Membership)
            .join(User, col(User.id) == col(UserSession.user_id))
            .join(
                Membership,
                (col(Membership.user_id) == col(User.id))
                & (col(Membership.org_id) == col(UserSession.org_id)),
            )
            .where(UserSession.id == sha256_hex(token))
        ).first()
        now = utcnow()
        if row is None:
            raise NotAuthenticated("session expired or invalid; log in again")
        us, user, membership = row
        if us.expires_at <= now or user.disabled:
            raise NotAuthenticated("session expired or invalid; log in again")
        if now - us.last_seen_at > timedelta(minutes=5):
            us.last_seen_at = now
            session.add(us)
        # A login policy's role, when one set it, holds for the whole session.
        role = Role(us.role or membership.role)
        return Principal("user", user.id, user.email, us.org_id, role, ip, user_agent)

    def logout(self, session: Session, token: str | None, ip: str | None, user_agent: str | None) -> None:
        if not token:
            return
        try:
            principal = self.session_principal(session, token, ip, user_agent)
        except NotAuthenticated:
            return
        us = session.get(UserSession, sha256_hex(token))
        if us is not None:
            session.delete(us)
        audit.record(session, principal, "auth.logout", resource_type="user", resource_id=principal.id)

    def purge_expired_sessions(self, session: Session) -> int:
        result = session.execute(delete(UserSession).where(col(UserSession.expires_at) <= utcnow()))
        return int(result.rowcount or 0)

    # ------------------------------------------------------------ API tokens

    def create_token(self, session: Session, actor: Principal, name: str, role: Role) -> tuple[ApiToken, str]:
        actor.require(Role.admin, "creating API tokens")
        name = validate_token_name(require_text("name", name))
        if not actor.role.at_least(role):
            raise FieldError("role", "a token cannot have a higher role than its creator")
        prefix = secrets.token_hex(_PREFIX_LEN // 2)
        secret = secrets.token_urlsafe(32)
        plaintext = f"{TOKEN_PREFIX}{prefix}{secret}"
        tok = ApiToken(
            id=new_id("tok"),
            org_id=actor.org_id,
            name=name,
            role=role.value,
            prefix=prefix,
            secret_hash=self.hasher.hash(plaintext),
            created_by=actor.id,
        )
        session.add(tok)
        session.flush()
        audit.record(
            session,
            actor,
            "token.create",
            resource_type="token",
            resource_id=tok.id,
            after={"name": name, "role": role.value},
        )
        return tok, plaintext

    def create_token_as_system(self, session: Session, name: str, role: Role) -> tuple[ApiToken, str]:
        org = self.ensure_default_org(session)
        return self.create_token(session, system_principal(org.id), name, role)

    def list_tokens(self, session: Session, actor: Principal) -> list[ApiToken]:
        actor.require(Role.admin, "listing API tokens")
        return list(
            session.exec(
                select(ApiToken)
                .where(ApiToken.org_id == actor.org_id)
                .order_by(col(ApiToken.revoked_at).is_not(None), col(ApiToken.created_at).desc())
            ).all()
        )

    def revoke_token(self, session: Session, actor: Principal, token_id: str) -> ApiToken:
        actor.require(Role.admin, "revoking API tokens")
        tok = session.get(ApiToken, token_id)
        if tok is None or tok.org_id != actor.org_id:
            raise NotFound("token not found")
        if tok.revoked_at is None:
            tok.revoked_at = utcnow()
            session.add(tok)
            audit.record(
                session,
                actor,
                "token.revoke",
                resource_type="token",
                resource_id=tok.id,
                before={"name": tok.name, "role": tok.role},
            )
        return tok

    def token_principal(
        self, session: Session, bearer: str, ip: str | None = None, user_agent: str | None = None
    ) -> Principal:
        invalid = NotAuthenticated("invalid or revoked API token")
        if not bearer.startswith(TOKEN_PREFIX) or len(bearer) > 200:
            raise invalid
        digest = sha256_hex(bearer)
        now_mono = time.monotonic()
        with self._cache_lock:
            cached = self._token_cache.get(digest)
        tok: ApiToken | None
        if cached and cached[1] > now_mono:
            tok = session.get(ApiToken, cached[0])
        else:
            prefix = bearer[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + _PREFIX_LEN]
            tok = session.exec(select(ApiToken).where(ApiToken.prefix == prefix)).first()
            if tok is None or not self._verify(tok.secret_hash, bearer):
                raise invalid
            with self._cache_lock:
                if len(self._token_cache) > 10_000:
                    self._token_cache.clear()
                self._token_cache[digest] = (tok.id, now_mono + 300)
        if tok is None or tok.revoked_at is not None:
            raise invalid
        now = utcnow()
        if tok.last_used_at is None or now - tok.last_used_at > timedelta(minutes=5):
            tok.last_used_at = now
            session.add(tok)
        return Principal("token", tok.id, f"token:{tok.name}", tok.org_id, Role(tok.role), ip, user_agent)


@dataclass
class BootstrapResult:
    created: bool
    email: str | None = None
    password: str | None = None


def bootstrap_admin(auth: Auth, session: Session, email: str = "admin@crucible.local") -> BootstrapResult:
    """On first start (no users at all) create the default org and an admin with a random password."""
    if auth.count_users(session) > 0:
        return BootstrapResult(created=False)
    org = auth.ensure_default_org(session)
    password = secrets.token_urlsafe(15)
    auth.create_user(session, system_principal(org.id), email, password, Role.admin)
    return BootstrapResult(created=True, email=email, password=password)


def validate_email(email: str) -> str:
    email = (email or "").strip().lower()
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise FieldError("email", "enter a valid email address such as ops@example.com")
    return email


def validate_token_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
        raise FieldError("name", "token name must be 1-100 printable characters")
    return name
