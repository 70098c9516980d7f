from __future__ import annotations

import reflex as rx

from components.layout import empty_state, page, rel_time, table_skeleton, testid, tool_badge
from components.runs import plan_chips, status_badge
from state.dashboard import DashboardState


def _stat(label: str, value, href: str, tid: str) -> rx.Component:
    return rx.link(
        rx.card(
            rx.vstack(
                rx.text(label, size="2", color=rx.color("gray", 10)),
                rx.heading(value, size="7", custom_attrs=testid(tid)),
                spacing="1",
            ),
            width="100%",
        ),
        href=href,
        underline="none",
        width="100%",
    )


def dashboard_page() -> rx.Component:
    d = DashboardState
    stats = rx.grid(
        _stat("Stacks", d.stacks_total, "/stacks", "dashboard-stacks-count"),
        _stat("Members", d.members_total, "/settings", "dashboard-members-count"),
        _stat("Audit events (24 h)", d.events_24h, "/audit", "dashboard-events-count"),
        columns=rx.breakpoints(initial="1", sm="3"),
        spacing="4",
        width="100%",
    )
    tools = rx.card(
        rx.vstack(
            rx.heading("Stacks by tool", size="3"),
            rx.cond(
                d.by_tool.length() == 0,
                rx.text("No stacks yet.", size="2", color=rx.color("gray", 10)),
                rx.vstack(
                    rx.foreach(
                        d.by_tool,
                        lambda t: rx.hstack(
                            tool_badge(t.tool),
                            rx.spacer(),
                            rx.text(t.count, weight="bold"),
                            width="100%",
                            custom_attrs=testid("dashboard-tool-row"),
                        ),
                    ),
                    width="100%",
                ),
            ),
            spacing="3",
        ),
        width="100%",
    )
    recent = rx.card(
        rx.vstack(
            rx.heading("Recent activity", size="3"),
            rx.cond(
                d.recent.length() == 0,
                rx.text("Nothing in the last 24 hours.", size="2", color=rx.color("gray", 10)),
                rx.vstack(
                    rx.foreach(
                        d.recent,
                        lambda e: rx.hstack(
                            rx.code(e.action, variant="ghost"),
                            rx.text(e.actor, size="2"),
                            rx.spacer(),
                            rel_time(e.at_rel, e.at_exact),
                            width="100%",
                            custom_attrs=testid("dashboard-recent-row"),
                        ),
                    ),
                    width="100%",
                ),
            ),
            rx.link("Open the audit log →", href="/audit", size="2"),
            spacing="3",
        ),
        width="100%",
    )
    action_required = rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading("Action required", size="3"),
                rx.badge(
                    d.waiting_count, color_scheme="amber", custom_attrs=testid("dashboard-waiting-count")
                ),
                rx.spacer(),
                rx.link("All →", href="/runs?status=unconfirmed", size="2"),
                width="100%",
                align="center",
            ),
            rx.cond(
                d.waiting_runs.length() == 0,
                rx.text("No plans are waiting for review.", size="2", color=rx.color("gray", 10)),
                rx.vstack(
                    rx.foreach(
                        d.waiting_runs,
                        lambda r: rx.hstack(
                            status_badge(r.status, tid="dashboard-waiting-status"),
                            rx.link(r.stack_name, href="/runs/" + r.id, weight="medium", size="2"),
                            plan_chips(r, tid="dashboard-waiting-plan"),
                            rx.spacer(),
                            rx.cond(
                                d.is_admin & (r.status == "unconfirmed"),
                                rx.button(
                                    "Confirm",
                                    size="1",
                                    loading=d.busy_run == r.id,
                                    on_click=DashboardState.confirm_run(r.id),
                                    custom_attrs=testid("dashboard-confirm-button"),
                                ),
                            ),
                            rx.cond(
                                d.can_write,
                                rx.button(
                                    "Discard",
                                    size="1",
                                    variant="soft",
                                    color_scheme="gray",
                                    disabled=d.busy_run == r.id,
                                    on_click=DashboardState.discard_run(r.id),
                                    custom_attrs=testid("dashboard-discard-button"),
                                ),
                            ),
                            width="100%",
                            align="center",
                            custom_attrs={"data-testid": "dashboard-waiting-row", "data-run-id": r.id},
                        ),
                    ),
                    width="100%",
                ),
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
    )

    def run_list(title: str, rows, count, empty: str, tid: str, href: str) -> rx.Component:
        return rx.card(
            rx.vstack(
                rx.hstack(
                    rx.heading(title, size="3"),
                    rx.badge(count, variant="soft") if count is not None else rx.fragment(),
                    rx.spacer(),
                    rx.link("All →", href=href, size="2"),
                    width="100%",
                    align="center",
                ),
                rx.cond(
                    rows.length() == 0,
                    rx.text(empty, size="2", color=rx.color("gray", 10)),
                    rx.vstack(
                        rx.foreach(
                            rows,
                            lambda r: rx.hstack(
                                status_badge(r.status, tid=f"{tid}-status"),
                                rx.link(r.stack_name, href="/runs/" + r.id, size="2"),
                                rx.text(r.type, size="1", color=rx.color("gray", 10)),
                                rx.spacer(),
                                rel_time(r.created_rel, r.created_exact),
                                width="100%",
                                align="center",
                                custom_attrs={"data-testid": f"{tid}-row", "data-run-id": r.id},
                            ),
                        ),
                        width="100%",
                    ),
                ),
                spacing="3",
                width="100%",
            ),
            width="100%",
        )

    live = run_list(
        "Live", d.live_runs, d.live_count, "Nothing is running.", "dashboard-live", "/runs?status=active"
    )
    ended = run_list("Recent runs", d.ended_runs, None, "No finished runs yet.", "dashboard-ended", "/runs")
    runs_grid = rx.grid(
        action_required, live, ended, columns=rx.breakpoints(initial="1", lg="3"), spacing="4", width="100%"
    )
    body = rx.cond(
        d.loading,
        table_skeleton(3, 3),
        rx.cond(
            d.stacks_total == 0,
            rx.vstack(
                stats,
                empty_state(
                    "layers",
                    "No stacks yet",
                    "Create your first stack to connect a repository.",
                    rx.link(
                        rx.button("New stack", custom_attrs=testid("dashboard-new-stack")), href="/stacks/new"
                    ),
                    tid="dashboard-empty",
                ),
                recent,
                width="100%",
                spacing="4",
            ),
            rx.vstack(
                stats,
                runs_grid,
                rx.grid(
                    tools, recent, columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"
                ),
                width="100%",
                spacing="4",
            ),
        ),
    )
    return page("dashboard", "Dashboard", body)
