"""The `crucible` command."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from backend.auth.models import Role

app = typer.Typer(help="Crucible: self-hosted infrastructure automation.", no_args_is_help=True)
admin_app = typer.Typer(help="Administer users and tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="Inspect the audit log.", no_args_is_help=True)
policies_app = typer.Typer(
    help="List and disable policies without logging in (recovery from a broken login policy).",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
app.add_typer(policies_app, name="policies")

REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("crucible.cli")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings():
    from backend.config import ConfigError, load_settings
    from backend.logging_setup import configure_logging

    try:
        settings = load_settings()
        settings.effective_secret_key()
    except ConfigError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _local_state_backend(port: int) -> None:
    """The embedded worker's runs reach the state backend on this very server. Unless the
    operator said where it is (CRUCIBLE_STATE_BACKEND_URL or CRUCIBLE_BASE_URL), that is the
    port this command listens on, over loopback: the default base URL names port 3000, which
    is wrong for `--port 3300`."""
    if not os.environ.get("CRUCIBLE_STATE_BACKEND_URL") and not os.environ.get("CRUCIBLE_BASE_URL"):
        os.environ["CRUCIBLE_STATE_BACKEND_URL"] = f"http://127.0.0.1:{port}"


def _prepare(port: int):
    """Settings → migrations → context → first admin. Shared by `up` and `api`."""
    from backend.auth.service import bootstrap_admin
    from backend.context import build_context, set_context
    from backend.db import migrate

    settings = _settings()
    try:
        migrate(settings)
    except Exception as exc:
        _fail(f"database migration failed ({settings.sqlalchemy_url.split('@')[-1]}): {exc}")
    ctx = build_context(settings)
    set_context(ctx)
    if settings.object_store == "s3":
        from backend.storage import StorageError

        try:
            ctx.objects.ensure_bucket()  # type: ignore[attr-defined]
        except StorageError as exc:
            _fail(f"object store: {exc}")
    with ctx.session() as s:
        result = bootstrap_admin(ctx.auth, s)
    if result.created:
        configured = os.environ.get("CRUCIBLE_BASE_URL")
        login_base = settings.base_url if configured else f"http://localhost:{port}"
        bar = "=" * 64
        typer.echo(
            f"\n{bar}\n  First start: created the administrator account\n"
            f"    email:    {result.email}\n    password: {result.password}\n"
            f"  Log in at {login_base}/login and change it under Settings.\n"
            f"  It is not shown again.\n{bar}\n"
        )
    return ctx


@app.command()
def migrate() -> None:
    """Apply database migrations (also done automatically at start-up)."""
    from backend.db import migrate as run_migrations

    settings = _settings()
    run_migrations(settings)
    typer.echo("database is at the latest revision")


@app.command()
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the REST API (and background tasks) without the UI, for headless nodes and tests."""
    import uvicorn

    from backend.api import create_api
    from runner.worker import embedded_worker

    _local_state_backend(port)
    ctx = _prepare(port)
    uvicorn.run(
        create_api(ctx, run_background_tasks=True, extra_tasks=(embedded_worker,)),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port for the UI and API.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "0.0.0.0",
) -> None:
    """Start the full app (UI + API + background tasks) in production mode."""
    from backend import frontend

    _local_state_backend(port)  # before the settings are read; the server inherits it
    ctx = _prepare(port)
    try:
        frontend.ensure_built(port)
    except (frontend.FrontendError, OSError) as exc:
        _fail(f"could not build the UI: {exc}")
    except subprocess.CalledProcessError as exc:
        _fail(f"could not build the UI: `{' '.join(map(str, exc.cmd))}` exited with {exc.returncode}")
    frontend.reset_ui_state()
    cmd, env = frontend.serve_command(port, host)
    # The server runs from the repository root: pin the data dir this command resolved.
    env["CRUCIBLE_DATA_DIR"] = str(ctx.settings.resolved_data_dir)
    typer.echo(f"Crucible is running at http://localhost:{port}  (API: /api/v1, health: /health)", err=False)
    os.chdir(REPO_ROOT)
    os.execve(cmd[0], cmd, env)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Runs executed at the same time.")] = 2,
) -> None:
    """Execute runs from the queue (scale-out: any number of these against one PostgreSQL)."""
    import asyncio
    import signal

    from backend.context import set_context
    from runner.worker import Worker

    ctx = _prepare_quiet()
    set_context(ctx)
    if ctx.settings.is_sqlite:
        typer.echo("note: with SQLite, run workers on the same host as the server (one database file)")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        w = Worker(ctx, concurrency=concurrency)
        typer.echo(f"worker {w.id} started (concurrency {concurrency}); Ctrl-C stops it")
        await w.run(stop)

    asyncio.run(main())


@app.command("build-ui")
def build_ui(port: Annotated[int, typer.Option(help="Port the UI will be served on.")] = 3000) -> None:
    """Build the UI now (done automatically by `up` when sources changed)."""
    from backend import frontend

    frontend.ensure_built(port)
    typer.echo("UI is built")


@admin_app.command("create-user")
def create_user(
    email: Annotated[str, typer.Option(help="Login email.")],
    password: Annotated[str, typer.Option(help="At least 10 characters.", prompt=True, hide_input=True)],
    role: Annotated[Role, typer.Option(help="viewer, member or admin.")] = Role.member,
) -> None:
    """Create a user in the default organization."""
    from backend.auth.principal import system_principal
    from backend.errors import ServiceError

    ctx = _prepare_quiet()
    try:
        with ctx.session() as s:
            org = ctx.auth.ensure_default_org(s)
            user = ctx.auth.create_user(s, system_principal(org.id), email, password, role)
    except ServiceError as exc:
        _fail(exc.message)
    typer.echo(f"created {role.value} {user.email} ({user.id})")


@admin_app.command("create-token")
def create_token(
    name: Annotated[str, typer.Option(help="What the token is for, e.g. ci-pipeline.")],
    role: Annotated[Role, typer.Option(help="viewer, member or admin.")] = Role.member,
) -> None:
    """Create a service-account API token and print it (shown only once)."""
    from backend.errors import ServiceError

    ctx = _prepare_quiet()
    try:
        with ctx.session() as s:
            _tok, plaintext = ctx.auth.create_token_as_system(s, name, role)
    except ServiceError as exc:
        _fail(exc.message)
    typer.echo(plaintext)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain; exit 1 and name the first tampered entry if it is broken."""
    from backend.audit.service import verify_chain

    ctx = _prepare_quiet()
    result = verify_chain(ctx.engine)
    if result.ok:
        typer.echo(f"audit log intact: {result.checked} entries, head hash {result.head_hash}")
        return
    typer.secho(
        f"audit log TAMPERED at entry {result.first_bad_id}: {result.reason} "
        f"({result.checked} entries before it verified)",
        fg=typer.colors.RED,
        err=True,
    )
    raise typer.Exit(1)


def _find_policy(session, name_or_id: str):
    """The policy with this id, else the one with this name (ignoring case) in any organization;
    fails when there is none, or when several organizations have a policy of that name."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from backend.policies.models import Policy

    policy = session.get(Policy, name_or_id)
    if policy is not None:
        return policy
    matches = session.exec(
        select(Policy).where(func.lower(Policy.name) == name_or_id.lower()).order_by(col(Policy.id))
    ).all()
    if not matches:
        _fail(f"no policy has the id or name {name_or_id!r}; `crucible policies list` shows them")
    if len(matches) > 1:
        ids = ", ".join(f"{p.id} (organization {p.org_id})" for p in matches)
        _fail(f"several policies are named {name_or_id!r}: {ids}; give the id instead")
    return matches[0]


class _NoEngine:
    """Disabling a policy changes no Rego, so nothing needs compiling: the CLI works even when
    the configured engine is what is broken (an unreachable OPA server, say)."""

    name = "none"

    def compile(self, source: str) -> None:
        from backend.policies.engine import PolicyEvalError

        raise PolicyEvalError("the CLI does not compile policies")

    def evaluate(self, source: str, input: dict, *, timeout_seconds: float = 5.0):
        from backend.policies.engine import PolicyEvalError

        raise PolicyEvalError("the CLI does not evaluate policies")

    def builtins_used_unsupported(self, source: str) -> list[str]:
        return []


@policies_app.command("list")
def policies_list(
    type_: Annotated[str | None, typer.Option("--type", help="Only this type, e.g. login.")] = None,
) -> None:
    """List every organization's policies: id, type, enabled or not, name."""
    from sqlmodel import col, select

    from backend.policies.models import Policy

    ctx = _prepare_quiet()
    try:
        with ctx.session(readonly=True) as s:
            stmt = select(Policy).order_by(col(Policy.org_id), col(Policy.name))
            if type_:
                stmt = stmt.where(Policy.type == type_)
            rows = [(p.id, p.org_id, p.type, p.enabled, p.name) for p in s.exec(stmt).all()]
    finally:
        ctx.engine.dispose()
    for policy_id, org_id, kind, enabled, name in rows:
        state = "enabled" if enabled else "disabled"
        typer.echo(f"{policy_id}  {org_id}  {kind:<10}  {state:<8}  {name}")
    if not rows:
        typer.echo("no policies")


@policies_app.command("disable")
def policies_disable(
    name_or_id: Annotated[str, typer.Argument(help="The policy's id (pol-…) or name.")],
) -> None:
    """Disable a policy, as an admin would in the UI (a new version, audited as `system`).

    The way back in when a login policy refuses every login: it needs the server's configuration
    (CRUCIBLE_DATABASE_URL), not a session."""
    from backend.auth.principal import system_principal
    from backend.errors import ServiceError
    from backend.policies import service
    from backend.policies.schemas import PolicyUpdate

    ctx = _prepare_quiet()
    try:
        with ctx.session() as s:
            policy = _find_policy(s, name_or_id)
            if not policy.enabled:
                typer.echo(f"policy {policy.name!r} ({policy.id}, {policy.type}) is already disabled")
                return
            updated = service.update_policy(
                s, system_principal(policy.org_id), _NoEngine(), policy.id, PolicyUpdate(enabled=False)
            )
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        ctx.engine.dispose()
    typer.echo(
        f"disabled policy {updated.name!r} ({updated.id}, {updated.type}); now at version {updated.version}"
    )


def _prepare_quiet():
    from backend.context import build_context
    from backend.db import migrate as run_migrations

    settings = _settings()
    run_migrations(settings)
    return build_context(settings)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
