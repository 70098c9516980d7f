"""State versions and locks: the rules of Terraform's http backend, authorized and transactional.

Writes follow one order everywhere: the object is stored first, under an immutable key of its
own (``state/<stack>/<version id>.tfstate``); then one transaction takes the stack's head row
(FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE serializes writers already), re-checks the
token, the lock and the serial/lineage rules, inserts the version and moves the head. If that
transaction fails before its COMMIT, the object is deleted again: a failed write leaves the
previous version current and nothing half-written. An error during or after the COMMIT (a
connection lost) deletes it only once the version row is known to be absent. (A process killed
between the two steps can leave an unreferenced object, never a version without its object.)

Write rules against the current version: a lower serial, another lineage, or the same serial
with other content are refused (409); the same serial with the same bytes is an idempotent
retry (200, no new version). Forced uploads and rollbacks (admins) are stored with serial =
highest stored + 1, the serial inside the state rewritten to match.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from backend.audit import service as audit
from backend.auth.models import Role
from backend.auth.principal import Principal
from backend.errors import Conflict, NotFound, ServiceError
from backend.stacks.service import load_stack
from backend.state import diff as state_diff
from backend.state import tokens
from backend.state.models import StateHead, StateLock, StateVersion
from backend.state.parse import InvalidState, StateSummary, rewrite_serial, validate_state_bytes
from backend.state.schemas import ForceUnlockResult, LockInfo, LockPublic, LockStatus, VersionPublic
from backend.state.tokens import StackIdentity
from backend.storage import ObjectNotFound, ObjectStore
from backend.timeutil import as_utc, iso, new_id, utcnow

log = logging.getLogger(__name__)

MAX_PAGE = 200
DEFAULT_IN_MEMORY_MAX = 32 * 1024 * 1024

Sessions = Callable[..., AbstractContextManager[Session]]


# ---------------------------------------------------------------- errors


class PayloadTooLarge(ServiceError):
    status_code = 413


class StateLocked(ServiceError):
    """LOCK while another lock is held: 423 with the holder's LockInfo."""

    status_code = 423

    def __init__(self, message: str, holder: dict[str, str]):
        super().__init__(message)
        self.holder = holder


class LockMismatch(Conflict):
    """A write or unlock that does not carry the holder's lock ID: 409 with the holder."""

    def __init__(self, message: str, holder: dict[str, str]):
        super().__init__(message)
        self.holder = holder


class InvalidStateError(ServiceError):
    """400: malformed JSON or not a Terraform state."""


class StateNotReadable(ServiceError):
    """422: a stored state the diff/listing code cannot interpret (e.g. format 3)."""

    status_code = 422


# ---------------------------------------------------------------- settings seen by the service


@dataclass(frozen=True)
class Limits:
    in_memory_max_bytes: int = DEFAULT_IN_MEMORY_MAX
    versions_kept: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.state_in_memory_max_bytes, settings.state_versions_kept)


def _limits(limits: Limits | None) -> Limits:
    if limits is not None:
        return limits
    from backend.context import get_context  # the UI calls without limits: use the process's

    return Limits.from_settings(get_context().settings)


@dataclass(frozen=True)
class Upload:
    """A request body spooled to disk with its digests (hex)."""

    path: Path
    size: int
    sha256: str
    md5: str


# ---------------------------------------------------------------- helpers


def object_key(stack_id: str, version_id: str) -> str:
    return f"state/{stack_id}/{version_id}.tfstate"


def md5_base64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def lock_info(lock: StateLock) -> dict[str, str]:
    """The lock as Terraform's LockInfo JSON (what 409 and 423 bodies carry)."""
    return {
        "ID": lock.lock_id,
        "Operation": lock.operation,
        "Info": lock.info,
        "Who": lock.who,
        "Version": lock.version,
        "Created": lock.created,
        "Path": lock.path,
    }


def _lock_public(lock: StateLock) -> LockPublic:
    age = (utcnow() - as_utc(lock.locked_at)).total_seconds()
    return LockPublic(
        **lock_info(lock),
        locked_at=iso(lock.locked_at) or "",
        age_seconds=round(max(age, 0.0), 3),
        token_id=lock.token_id,
        run_id=lock.run_id,
    )


def to_public(version: StateVersion, current_id: str | None) -> VersionPublic:
    return VersionPublic(
        id=version.id,
        stack_id=version.stack_id,
        serial=version.serial,
        lineage=version.lineage,
        sha256=version.sha256,
        md5=version.md5,
        size=version.size,
        state_format=version.state_format,
        resource_count=version.resource_count,
        instance_count=version.instance_count,
        terraform_version=version.terraform_version,
        created_by=version.created_by,
        token_id=version.token_id,
        run_id=version.run_id,
        created_at=iso(version.created_at) or "",
        forced=version.forced,
        note=version.note,
        current=version.id == current_id,
    )


def _after(session: Session, kind: Literal["commit", "rollback"], fn: Callable[[], None]) -> None:
    """Run fn once after this session's transaction commits (or rolls back). Used for object
    store effects that must follow the database: delete a new object if its row never lands,
    delete pruned objects once their rows are gone."""
    info = session.info
    if not info.get("crucible.state.hooked"):
        info["crucible.state.hooked"] = True

        def fire(which: str) -> None:
            hooks = info.pop(f"crucible.state.{which}", [])
            info.pop(f"crucible.state.{'rollback' if which == 'commit' else 'commit'}", None)
            for hook in hooks:
                try:
                    hook()
                except Exception:  # the database outcome stands; log what could not follow it
                    log.exception("state: object store clean-up after %s failed", which)

        event.listen(session, "after_commit", lambda _s: fire("commit"))
        event.listen(session, "after_rollback", lambda _s: fire("rollback"))
    info.setdefault(f"crucible.state.{kind}", []).append(fn)


def _discard(objects: ObjectStore, key: str) -> None:
    try:
        objects.delete(key)
    except Exception:
        log.exception("state: could not delete unreferenced object %s", key)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _lock_head(session: Session, stack_id: str) -> StateHead:
    """The stack's head row, created if missing and locked for the rest of the transaction."""
    insert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    session.execute(
        insert(StateHead)
        .values(stack_id=stack_id, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["stack_id"])
    )
    return session.exec(
        select(StateHead)
        .where(StateHead.stack_id == stack_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _current(session: Session, head: StateHead | None) -> StateVersion | None:
    if head is None or head.current_version_id is None:
        return None
    return session.get(StateVersion, head.current_version_id)


def _check_lock(session: Session, stack_id: str, lock_id: str | None, doing: str) -> None:
    lock = session.get(StateLock, stack_id)
    if lock is not None and lock.lock_id != lock_id:
        given = f"lock ID {lock_id!r}" if lock_id else "no lock ID"
        raise LockMismatch(
            f"the state is locked by {lock.who or 'someone'} (lock {lock.lock_id}); "
            f"{doing} came with {given}",
            lock_info(lock),
        )


def decide(
    current: StateVersion | None, max_serial: int | None, summary: StateSummary, sha256: str
) -> Literal["create", "same"]:
    """The write rules (pure). Raises Conflict with what was wrong and what to do."""
    if current is None:
        if max_serial is not None and summary.serial <= max_serial:
            raise Conflict(
                f"the state was deleted, and serial {summary.serial} was already used by an earlier "
                f"version (the highest is {max_serial}): push a state with a serial above "
                f"{max_serial}, or have an admin force-upload it"
            )
        return "create"
    if summary.lineage != current.lineage:
        raise Conflict(
            f"lineage {summary.lineage!r} differs from the current state's lineage "
            f"{current.lineage!r}: this is a different state; an admin can force-upload it"
        )
    if summary.serial < current.serial:
        raise Conflict(
            f"serial {summary.serial} is lower than the current serial {current.serial}: the state "
            "changed since it was read; refresh and try again"
        )
    if summary.serial == current.serial:
        if sha256 == current.sha256:
            return "same"
        raise Conflict(
            f"serial {summary.serial} is already stored with different content: a changed state "
            f"needs a serial above {current.serial}"
        )
    return "create"


def _new_version(
    *,
    version_id: str,
    stack_id: str,
    summary: StateSummary,
    sha256: str,
    md5: str,
    size: int,
    created_by: str,
    token_id: str | None = None,
    run_id: str | None = None,
    forced: bool = False,
    note: str | None = None,
) -> StateVersion:
    return StateVersion(
        id=version_id,
        stack_id=stack_id,
        serial=summary.serial,
        lineage=summary.lineage,
        sha256=sha256,
        md5=md5,
        size=size,
        state_format=summary.format,
        resource_count=summary.resource_count,
        instance_count=summary.instance_count,
        terraform_version=summary.terraform_version,
        object_key=object_key(stack_id, version_id),
        created_by=created_by[:254],
        token_id=token_id,
        run_id=run_id,
        created_at=utcnow(),
        forced=forced,
        note=note,
    )


def _advance(session: Session, head: StateHead, version: StateVersion) -> None:
    session.add(version)
    head.current_version_id = version.id
    head.max_serial = max(version.serial, head.max_serial if head.max_serial is not None else -1)
    head.updated_at = utcnow()
    head.deleted_at = None
    head.deleted_by = None
    session.add(head)
    try:
        session.flush()
    except IntegrityError:
        # The rules make a duplicate serial unreachable (the unique index is the last line of
        # defence); a run or stack deleted meanwhile lands here too.
        raise Conflict(
            f"serial {version.serial} could not be stored: the stack changed meanwhile; read the "
            "state and try again"
        ) from None


def _prune(session: Session, objects: ObjectStore, stack_id: str, kept: int) -> None:
    """Drop versions beyond the newest ``kept`` (rows now, objects after the commit)."""
    if kept <= 0:
        return
    old = session.exec(
        select(StateVersion)
        .where(StateVersion.stack_id == stack_id)
        .order_by(col(StateVersion.serial).desc())
        .offset(kept)
    ).all()
    for version in old:
        session.delete(version)
        _after(session, "commit", lambda key=version.object_key: _discard(objects, key))
    if old:
        session.flush()


def _snapshot(version: StateVersion) -> dict[str, Any]:
    return {
        "version_id": version.id,
        "serial": version.serial,
        "lineage": version.lineage,
        "sha256": version.sha256,
        "size": version.size,
        "resource_count": version.resource_count,
    }


# ---------------------------------------------------------------- protocol: writes


@dataclass(frozen=True)
class WriteResult:
    version: VersionPublic
    created: bool  # False: an idempotent retry of the current version


class _Identical(Exception):
    def __init__(self, version: StateVersion):
        self.version = version


class _CommitWatch:
    """Whether a session's transaction was committed, may have been, or surely was not."""

    def __init__(self) -> None:
        self.attempted = False
        self.done = False

    def watch(self, session: Session) -> None:
        event.listen(session, "before_commit", lambda _s: setattr(self, "attempted", True))
        event.listen(session, "after_commit", lambda _s: setattr(self, "done", True))

    def maybe_landed(self, sessions: Sessions, version_id: str) -> bool:
        if self.done:
            return True
        if not self.attempted:  # failed before COMMIT: rolled back
            return False
        try:
            with sessions(readonly=True) as s:
                return s.get(StateVersion, version_id) is not None
        except Exception:  # cannot tell: an unreferenced object is harmless, a lost one is not
            log.warning("state: keeping object of version %s: its commit is in doubt", version_id)
            return True


def write_state(
    sessions: Sessions,
    objects: ObjectStore,
    identity: StackIdentity,
    stack_id: str,
    upload: Upload,
    summary: StateSummary,
    *,
    lock_id: str | None,
    limits: Limits | None = None,
) -> WriteResult:
    """Store an uploaded (already validated) state as the stack's new version."""
    identity.require_write("write state")
    limits = _limits(limits)
    # A read-only pre-check refuses most bad writes before any bytes go to the object store.
    with sessions(readonly=True) as s:
        tokens.recheck(s, identity)
        _check_lock(s, stack_id, lock_id, "the write")
        head = s.get(StateHead, stack_id)
        current = _current(s, head)
        if decide(current, head.max_serial if head else None, summary, upload.sha256) == "same":
            assert current is not None
            return WriteResult(to_public(current, current.id), created=False)

    version_id = new_id("stv")
    key = object_key(stack_id, version_id)
    objects.put_file(key, upload.path, upload.sha256)
    commit = _CommitWatch()
    try:
        with sessions() as s:
            commit.watch(s)
            head = _lock_head(s, stack_id)
            tokens.recheck(s, identity)
            _check_lock(s, stack_id, lock_id, "the write")
            current = _current(s, head)
            if decide(current, head.max_serial, summary, upload.sha256) == "same":
                assert current is not None
                raise _Identical(current)  # a concurrent retry won: keep its version
            version = _new_version(
                version_id=version_id,
                stack_id=stack_id,
                summary=summary,
                sha256=upload.sha256,
                md5=upload.md5,
                size=upload.size,
                created_by=identity.label,
                token_id=identity.token_id,
                run_id=identity.run_id,
            )
            _advance(s, head, version)
            audit.record(
                s,
                identity.principal(),
                "state.write",
                resource_type="stack",
                resource_id=stack_id,
                after=_snapshot(version),
                org_id=identity.org_id,
            )
            _prune(s, objects, stack_id, limits.versions_kept)
    except _Identical as same:
        _discard(objects, key)
        return WriteResult(to_public(same.version, same.version.id), created=False)
    except BaseException:
        # The object goes only if its row surely never landed: an error after the commit (the
        # connection lost while closing) or during it (the COMMIT sent, its answer lost) may
        # have left a committed version, which must keep its object.
        if not commit.maybe_landed(sessions, version_id):
            _discard(objects, key)
        raise
    return WriteResult(to_public(version, version.id), created=True)


def delete_state(session: Session, identity: StackIdentity, stack_id: str, *, lock_id: str | None) -> bool:
    """DELETE: the stack has no current state afterwards; every version is kept. Returns
    whether there was a state to delete."""
    identity.require_write("delete state")
    head = _lock_head(session, stack_id)
    tokens.recheck(session, identity)
    _check_lock(session, stack_id, lock_id, "the delete")
    current = _current(session, head)
    if current is None:
        return False
    head.current_version_id = None
    head.deleted_at = utcnow()
    head.deleted_by = identity.label
    head.updated_at = head.deleted_at
    session.add(head)
    session.flush()
    audit.record(
        session,
        identity.principal(),
        "state.delete",
        resource_type="stack",
        resource_id=stack_id,
        before=_snapshot(current),
        org_id=identity.org_id,
    )
    return True


def current_version(session: Session, identity: StackIdentity, stack_id: str) -> StateVersion | None:
    """GET: the version Terraform should read, or None (204)."""
    if identity.stack_id != stack_id:  # the protocol layer checks this too
        raise NotFound(f"stack {stack_id} not found")
    return _current(session, session.get(StateHead, stack_id))


# ---------------------------------------------------------------- protocol: locks


def lock_state(session: Session, identity: StackIdentity, stack_id: str, info: LockInfo) -> dict[str, str]:
    """LOCK: take the lock, or raise StateLocked with the holder. Re-locking with the holder's
    own ID succeeds (a retried request whose first answer was lost)."""
    identity.require_lock()
    _lock_head(session, stack_id)  # serializes with writes, deletes and other locks
    tokens.recheck(session, identity)
    insert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    session.execute(
        insert(StateLock)
        .values(
            stack_id=stack_id,
            lock_id=info.ID,
            operation=info.Operation,
            info=info.Info,
            who=info.Who,
            version=info.Version,
            created=info.Created,
            path=info.Path,
            locked_at=utcnow(),
            token_id=identity.token_id,
            run_id=identity.run_id,
        )
        .on_conflict_do_nothing(index_elements=["stack_id"])
    )
    lock = session.get(StateLock, stack_id, populate_existing=True)
    if lock is None:  # pragma: no cover - the head row lock makes this impossible
        raise Conflict("the lock changed concurrently; try again")
    # Our row, or one that was there first (the insert did nothing): the ID tells them apart.
    if lock.lock_id != info.ID:
        raise StateLocked(
            f"the state is already locked by {lock.who or 'someone'} (lock {lock.lock_id})",
            lock_info(lock),
        )
    return lock_info(lock)


def unlock_state(session: Session, identity: StackIdentity, stack_id: str, lock_id: str | None) -> bool:
    """UNLOCK with the holder's ID. Not locked: success (nothing to do). Another or no ID:
    LockMismatch (409) with the holder; admins force-unlock through the REST API."""
    identity.require_lock()
    _lock_head(session, stack_id)
    tokens.recheck(session, identity)
    lock = session.get(StateLock, stack_id)
    if lock is None:
        return False
    if lock_id != lock.lock_id:
        given = f"lock ID {lock_id!r}" if lock_id else "no lock ID"
        raise LockMismatch(
            f"the state is locked by {lock.who or 'someone'} (lock {lock.lock_id}); the unlock came "
            f"with {given}. An admin can force-unlock: DELETE /api/v1/stacks/{stack_id}/state/lock",
            lock_info(lock),
        )
    session.delete(lock)
    session.flush()
    return True


# ---------------------------------------------------------------- REST / UI: reads


def _version_by_serial(session: Session, stack_id: str, serial: int) -> StateVersion:
    version = session.exec(
        select(StateVersion).where(StateVersion.stack_id == stack_id, StateVersion.serial == serial)
    ).first()
    if version is None:
        raise NotFound(f"stack {stack_id} has no state version with serial {serial}")
    return version


def _chosen(session: Session, stack_id: str, serial: int | None) -> StateVersion:
    if serial is not None:
        return _version_by_serial(session, stack_id, serial)
    head = session.get(StateHead, stack_id)
    current = _current(session, head)
    if current is None:
        if head is not None and head.deleted_at is not None:
            raise NotFound(
                f"stack {stack_id} has no current state (deleted at {iso(head.deleted_at)}); "
                "ask for an earlier version by serial"
            )
        raise NotFound(f"stack {stack_id} has no state yet")
    return current


def _current_id(session: Session, stack_id: str) -> str | None:
    head = session.get(StateHead, stack_id)
    return head.current_version_id if head else None


def list_versions(
    session: Session, principal: Principal, stack_id: str, limit: int = 50, offset: int = 0
) -> tuple[list[VersionPublic], int]:
    """Newest (highest serial) first."""
    principal.require(Role.viewer, "viewing state versions")
    load_stack(session, principal, stack_id)
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    total = session.exec(
        select(func.count()).select_from(StateVersion).where(StateVersion.stack_id == stack_id)
    ).one()
    rows = session.exec(
        select(StateVersion)
        .where(StateVersion.stack_id == stack_id)
        .order_by(col(StateVersion.serial).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    current_id = _current_id(session, stack_id)
    return [to_public(v, current_id) for v in rows], int(total)


def get_version(session: Session, principal: Principal, stack_id: str, serial: int) -> VersionPublic:
    principal.require(Role.viewer, "viewing state versions")
    load_stack(session, principal, stack_id)
    return to_public(_version_by_serial(session, stack_id, serial), _current_id(session, stack_id))


@dataclass
class Download:
    version: VersionPublic
    filename: str
    chunks: Iterator[bytes]


def download_version(
    session: Session, objects: ObjectStore, principal: Principal, stack_id: str, serial: int
) -> Download:
    """The version's bytes, streamed (members and up: state holds secrets). Audited in the
    caller's transaction; the object is opened before this returns."""
    principal.require(Role.member, "downloading state")
    stack = load_stack(session, principal, stack_id)
    version = _version_by_serial(session, stack_id, serial)
    audit.record(
        session,
        principal,
        "state.download",
        resource_type="stack",
        resource_id=stack_id,
        after={"version_id": version.id, "serial": version.serial},
    )
    chunks = objects.iter_chunks(version.object_key)
    safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in stack.name)
    return Download(
        to_public(version, _current_id(session, stack_id)), f"{safe_name}-{version.serial}.tfstate", chunks
    )


def _load_state(objects: ObjectStore, version: StateVersion, max_bytes: int, doing: str) -> dict[str, Any]:
    if version.size > max_bytes:
        raise PayloadTooLarge(
            f"state serial {version.serial} is {_mib(version.size)}; {doing} handles states of at most "
            f"{_mib(max_bytes)} (CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES)"
        )
    doc = json.loads(objects.get(version.object_key))
    if not isinstance(doc, dict):  # validated on write; a damaged object is caught by its hash
        raise InvalidStateError(f"state serial {version.serial} is not a JSON object")
    return doc


def _readable(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except state_diff.StateFormatError as exc:
        raise StateNotReadable(f"the state cannot be shown: {exc}") from None


def diff_versions(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    from_serial: int | None,
    to_serial: int | None,
    *,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """diff.diff_states between two versions, plus ``from_serial``/``to_serial``. Defaults: ``to``
    is the current version, ``from`` the version just before ``to`` (none: everything is added)."""
    principal.require(Role.viewer, "viewing state diffs")
    load_stack(session, principal, stack_id)
    max_bytes = _limits(limits).in_memory_max_bytes
    new = _chosen(session, stack_id, to_serial)
    old: StateVersion | None
    if from_serial is not None:
        old = _version_by_serial(session, stack_id, from_serial)
    else:
        old = session.exec(
            select(StateVersion)
            .where(StateVersion.stack_id == stack_id, col(StateVersion.serial) < new.serial)
            .order_by(col(StateVersion.serial).desc())
            .limit(1)
        ).first()
    old_doc = _load_state(objects, old, max_bytes, "a diff") if old is not None else None
    new_doc = _load_state(objects, new, max_bytes, "a diff")
    result = dict(_readable(lambda: state_diff.diff_states(old_doc, new_doc)))
    result["from_serial"] = old.serial if old is not None else None
    result["to_serial"] = new.serial
    return result


def resources(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    serial: int | None = None,
    type_filter: str | None = None,
    address_filter: str | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """``{"serial", "data": [resource...], "count", "offset", "types"}`` of a version (default:
    current): one page of the instances that match (``count`` of them in all), and every
    resource type in the version, for a filter."""
    principal.require(Role.viewer, "viewing state resources")
    load_stack(session, principal, stack_id)
    version = _chosen(session, stack_id, serial)
    doc = _load_state(objects, version, _limits(limits).in_memory_max_bytes, "listing resources")
    page = _readable(
        lambda: state_diff.resource_page(
            doc, type_filter or None, address_filter or None, offset=offset, limit=limit
        )
    )
    return {"serial": version.serial, "offset": offset, **page}


def outputs(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    serial: int | None = None,
    *,
    limits: Limits | None = None,
) -> list[dict[str, Any]]:
    """The outputs of a version (default: current), sensitive values hidden."""
    return outputs_of(session, objects, principal, stack_id, serial, limits=limits)[1]


def outputs_of(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    serial: int | None = None,
    *,
    limits: Limits | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(serial, outputs): what the REST route answers."""
    principal.require(Role.viewer, "viewing state outputs")
    load_stack(session, principal, stack_id)
    version = _chosen(session, stack_id, serial)
    doc = _load_state(objects, version, _limits(limits).in_memory_max_bytes, "listing outputs")
    return version.serial, list(_readable(lambda: state_diff.list_outputs(doc)))


def lock_status(session: Session, principal: Principal, stack_id: str) -> LockStatus:
    principal.require(Role.viewer, "viewing the state lock")
    load_stack(session, principal, stack_id)
    lock = session.get(StateLock, stack_id)
    return LockStatus(locked=lock is not None, lock=_lock_public(lock) if lock else None)


def force_unlock(session: Session, principal: Principal, stack_id: str) -> ForceUnlockResult:
    """Remove the lock whoever holds it (admins; audited). Idempotent: no lock → unlocked=false."""
    principal.require(Role.admin, "force-unlocking state")
    load_stack(session, principal, stack_id)
    _lock_head(session, stack_id)
    lock = session.get(StateLock, stack_id)
    if lock is None:
        return ForceUnlockResult(unlocked=False, lock=None)
    public = _lock_public(lock)
    session.delete(lock)
    session.flush()
    audit.record(
        session,
        principal,
        "state.force_unlock",
        resource_type="stack",
        resource_id=stack_id,
        before={**lock_info(lock), "locked_at": public.locked_at, "token_id": lock.token_id},
    )
    return ForceUnlockResult(unlocked=True, lock=public)


# ---------------------------------------------------------------- REST / UI: admin writes


def _refuse_if_locked(session: Session, stack_id: str, doing: str) -> None:
    lock = session.get(StateLock, stack_id)
    if lock is not None:
        raise LockMismatch(
            f"the state is locked by {lock.who or 'someone'} (lock {lock.lock_id}): {doing} would race "
            f"with it; wait for it to finish or force-unlock first",
            lock_info(lock),
        )


def _store_bytes(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    head: StateHead,
    data: bytes,
    summary: StateSummary,
    *,
    action: str,
    forced: bool,
    note: str | None,
    limits: Limits,
    extra: dict[str, Any] | None = None,
) -> VersionPublic:
    version_id = new_id("stv")
    sha256 = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    key = object_key(stack_id, version_id)
    objects.put(key, data)
    # The row lands with the caller's commit; if that transaction rolls back instead, the
    # object goes too — unless the rollback follows a COMMIT that failed, which may have landed.
    commit = _CommitWatch()
    commit.watch(session)
    _after(session, "rollback", lambda: None if commit.attempted else _discard(objects, key))
    version = _new_version(
        version_id=version_id,
        stack_id=stack_id,
        summary=summary,
        sha256=sha256,
        md5=md5,
        size=len(data),
        created_by=principal.label,
        forced=forced,
        note=note,
    )
    _advance(session, head, version)
    audit.record(
        session,
        principal,
        action,
        resource_type="stack",
        resource_id=stack_id,
        after={**_snapshot(version), "forced": forced, "note": note, **(extra or {})},
    )
    _prune(session, objects, stack_id, limits.versions_kept)
    return to_public(version, version.id)


def _summarize(data: bytes) -> StateSummary:
    try:
        return validate_state_bytes(data)
    except InvalidState as exc:
        raise InvalidStateError(str(exc)) from None


def upload_state(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    data: bytes,
    *,
    force: bool,
    limits: Limits | None = None,
) -> tuple[VersionPublic, bool]:
    """Admin upload of a whole state (in memory, capped). Returns (version, created).

    force=False applies the protocol's rules and stores the bytes as sent. force=True breaks
    lineage/serial rules: the state is stored with serial = highest stored + 1, its ``serial``
    field rewritten to match (so Terraform's next write, serial + 1, fits)."""
    principal.require(Role.admin, "uploading state")
    load_stack(session, principal, stack_id)
    limits = _limits(limits)
    if len(data) > limits.in_memory_max_bytes:
        raise PayloadTooLarge(
            f"the state is {_mib(len(data))}; uploads through the REST API are limited to "
            f"{_mib(limits.in_memory_max_bytes)} (CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES): push larger "
            "states through the state backend endpoint"
        )
    if not data.strip():
        raise InvalidStateError("the request body is empty: send the state JSON")
    summary = _summarize(data)
    head = _lock_head(session, stack_id)
    _refuse_if_locked(session, stack_id, "an upload")
    extra: dict[str, Any] | None = None
    if not force:
        current = _current(session, head)
        sha256 = hashlib.sha256(data).hexdigest()
        if decide(current, head.max_serial, summary, sha256) == "same":
            assert current is not None
            return to_public(current, current.id), False
        note = "uploaded through the REST API"
    else:
        new_serial = (head.max_serial if head.max_serial is not None else -1) + 1
        original = summary.serial
        if original != new_serial:
            data = rewrite_serial(data, new_serial)
            summary = _summarize(data)
        note = f"forced upload (serial {original} stored as {new_serial})"
        extra = {"original_serial": original}
    version = _store_bytes(
        session,
        objects,
        principal,
        stack_id,
        head,
        data,
        summary,
        action="state.upload",
        forced=force,
        note=note,
        limits=limits,
        extra=extra,
    )
    return version, True


def rollback(
    session: Session,
    objects: ObjectStore,
    principal: Principal,
    stack_id: str,
    serial: int,
    *,
    limits: Limits | None = None,
) -> VersionPublic:
    """A new current version with the content of version ``serial`` and serial = highest + 1
    (its lineage becomes current). Admins; audited; refused while the state is locked."""
    principal.require(Role.admin, "rolling back state")
    load_stack(session, principal, stack_id)
    limits = _limits(limits)
    head = _lock_head(session, stack_id)
    target = _version_by_serial(session, stack_id, serial)
    _refuse_if_locked(session, stack_id, "a rollback")
    if target.size > limits.in_memory_max_bytes:
        raise PayloadTooLarge(
            f"state serial {serial} is {_mib(target.size)}; rollbacks rewrite the state in memory and "
            f"are limited to {_mib(limits.in_memory_max_bytes)} (CRUCIBLE_STATE_IN_MEMORY_MAX_BYTES)"
        )
    try:
        raw = objects.get(target.object_key)
    except ObjectNotFound:
        raise NotFound(f"the object of state serial {serial} is missing from the object store") from None
    new_serial = (head.max_serial if head.max_serial is not None else -1) + 1
    data = rewrite_serial(raw, new_serial)
    summary = _summarize(data)
    return _store_bytes(
        session,
        objects,
        principal,
        stack_id,
        head,
        data,
        summary,
        action="state.rollback",
        forced=False,
        note=f"rollback of serial {serial}",
        limits=limits,
        extra={"rolled_back_to": serial, "rolled_back_version_id": target.id},
    )


__all__ = [
    "Download",
    "InvalidStateError",
    "Limits",
    "LockMismatch",
    "PayloadTooLarge",
    "StateLocked",
    "StateNotReadable",
    "Upload",
    "WriteResult",
    "current_version",
    "decide",
    "delete_state",
    "diff_versions",
    "download_version",
    "force_unlock",
    "get_version",
    "list_versions",
    "lock_state",
    "lock_status",
    "md5_base64",
    "outputs",
    "resources",
    "rollback",
    "unlock_state",
    "upload_state",
    "write_state",
]
