"""The Reflex app: pages + the FastAPI app (REST API, /health, /metrics) on the same port."""

from __future__ import annotations

import reflex as rx

from backend.api import create_api
from backend.context import get_context
from backend.logging_setup import configure_logging
from backend.tasks import BACKGROUND_TASKS
from crucible_app.pages.audit import audit_page
from crucible_app.pages.dashboard import dashboard_page
from crucible_app.pages.login import login_page
from crucible_app.pages.settings import settings_page
from crucible_app.pages.stacks import stack_detail_page, stack_edit_page, stack_new_page, stacks_page
from state.audit import AuditState
from state.base import AuthState
from state.dashboard import DashboardState
from state.guard import SessionGuard
from state.login import LoginState
from state.settings import SettingsState
from state.stacks import StackDetailState, StackFormState, StacksState

_ctx = get_context()
configure_logging(_ctx.settings.log_level, _ctx.settings.log_format)

app = rx.App(
    api_transformer=create_api(_ctx),
    # Top-right keeps toasts clear of forms' submit buttons at the bottom of the page.
    toaster=rx.toast.provider(position="top-right", close_button=True, rich_colors=True),
    head_components=[rx.el.link(rel="icon", href="/favicon.svg", type="image/svg+xml")],
)
app.add_middleware(SessionGuard())
for _task in BACKGROUND_TASKS:
    app.register_lifespan_task(_task)

app.add_page(login_page, route="/login", title="Sign in · Crucible", on_load=LoginState.load)
app.add_page(
    dashboard_page,
    route="/",
    title="Dashboard · Crucible",
    on_load=[AuthState.check_session, DashboardState.load],
)
app.add_page(
    stacks_page,
    route="/stacks",
    title="Stacks · Crucible",
    on_load=[AuthState.check_session, StacksState.load],
)
app.add_page(
    stack_new_page,
    route="/stacks/new",
    title="New stack · Crucible",
    on_load=[AuthState.check_session, StackFormState.load_new],
)
app.add_page(
    stack_detail_page,
    route="/stacks/[stack_id]",
    title="Stack · Crucible",
    on_load=[AuthState.check_session, StackDetailState.load],
)
app.add_page(
    stack_edit_page,
    route="/stacks/[stack_id]/edit",
    title="Edit stack · Crucible",
    on_load=[AuthState.check_session, StackFormState.load_edit],
)

app.add_page(
    audit_page,
    route="/audit",
    title="Audit log · Crucible",
    on_load=[AuthState.check_session, AuditState.load],
)
app.add_page(
    settings_page,
    route="/settings",
    title="Settings · Crucible",
    on_load=[AuthState.check_session, SettingsState.load],
)
