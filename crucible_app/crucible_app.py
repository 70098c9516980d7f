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
from crucible_app.pages.policies import policies_page
from crucible_app.pages.policies_editor import policy_detail_page, policy_new_page
from crucible_app.pages.policies_library import policies_library_page
from crucible_app.pages.policies_playground import policies_playground_page
from crucible_app.pages.runs import run_detail_page, runs_page
from crucible_app.pages.settings import settings_page
from crucible_app.pages.stacks import stack_detail_page, stack_edit_page, stack_new_page, stacks_page
from runner.worker import embedded_worker
from state.audit import AuditState
from state.base import AuthState
from state.dashboard import DashboardState
from state.guard import SessionGuard
from state.login import LoginState
from state.policies import PoliciesState
from state.policies_editor import PolicyEditorState
from state.policies_library import PolicyLibraryState
from state.policies_playground import PlaygroundState
from state.runs import RunDetailState, RunsState
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
for _task in (*BACKGROUND_TASKS, embedded_worker):
    app.register_lifespan_task(_task)

app.add_page(login_page, route="/login", title="Sign in · Crucible", on_load=LoginState.load)

# Every other page checks the session on load (and SessionGuard on every event).
PROTECTED_PAGES = [
    (dashboard_page, "/", "Dashboard", DashboardState.load),
    (stacks_page, "/stacks", "Stacks", StacksState.load),
    (stack_new_page, "/stacks/new", "New stack", StackFormState.load_new),
    (stack_detail_page, "/stacks/[stack_id]", "Stack", StackDetailState.load),
    (stack_edit_page, "/stacks/[stack_id]/edit", "Edit stack", StackFormState.load_edit),
    (runs_page, "/runs", "Runs", RunsState.load),
    (run_detail_page, "/runs/[run_id]", "Run", RunDetailState.load),
    (policies_page, "/policies", "Policies", PoliciesState.load),
    (policy_new_page, "/policies/new", "New policy", PolicyEditorState.load_new),
    (policies_playground_page, "/policies/test", "Policy playground", PlaygroundState.load),
    (policies_library_page, "/policies/library", "Policy library", PolicyLibraryState.load),
    (policy_detail_page, "/policies/[policy_id]", "Policy", PolicyEditorState.load),
    (audit_page, "/audit", "Audit log", AuditState.load),
    (settings_page, "/settings", "Settings", SettingsState.load),
]
for component, route, title, load in PROTECTED_PAGES:
    app.add_page(component, route=route, title=f"{title} · Crucible", on_load=[AuthState.check_session, load])
