"""Policy playground: a saved policy or pasted Rego against a JSON input (typed, pasted, or a
past run's real input); shows deny / warn / approval results, timing, engine and errors."""

from __future__ import annotations

import reflex as rx

from components.layout import page, table_skeleton, testid
from components.policy_widgets import TYPE_LABELS, location_error, rego_view, source_editor, type_badge
from state.policies import TYPES
from state.policies_playground import INPUT_EDIT_MAX, PASTE, SAVED, PlaygroundState

S = PlaygroundState
MUTED = rx.color("gray", 10)


def _muted(*children, **props) -> rx.Component:
    return rx.text(*children, size=props.pop("size", "1"), color=MUTED, **props)


def _card(title: str, *children: rx.Component, actions: rx.Component | None = None, tid: str) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading(title, size="3"),
                rx.spacer(),
                actions if actions is not None else rx.fragment(),
                width="100%",
                align="center",
                wrap="wrap",
                spacing="2",
            ),
            *children,
            spacing="3",
            width="100%",
        ),
        width="100%",
        min_width="0",
        custom_attrs=testid(tid),
    )


# ------------------------------------------------------------------ policy


def _saved_policy() -> rx.Component:
    return rx.vstack(
        rx.select.root(
            rx.select.trigger(
                placeholder=rx.cond(S.policies.length() == 0, "No saved policies yet", "Pick a policy…"),
                width="100%",
                custom_attrs=testid("playground-policy-select"),
            ),
            rx.select.content(
                rx.foreach(
                    S.policies,
                    lambda p: rx.select.item(p.name, value=p.id, custom_attrs={"data-policy-name": p.name}),
                )
            ),
            value=S.policy_id,
            on_change=S.select_policy,
            disabled=S.policies.length() == 0,
        ),
        rx.cond(
            S.policy_body != "",
            rx.vstack(
                rx.hstack(
                    type_badge(S.policy_type, "playground-policy-type"),
                    rx.text("version ", S.policy_version, size="2", font_family="monospace"),
                    rx.spacer(),
                    rx.link("Open policy", href="/policies/" + S.policy_id, size="2"),
                    rx.button(
                        rx.icon("copy", size=12),
                        "Edit a copy",
                        size="1",
                        variant="soft",
                        on_click=S.copy_to_paste,
                        custom_attrs=testid("playground-copy-to-paste"),
                    ),
                    width="100%",
                    align="center",
                    spacing="2",
                ),
                rego_view(S.policy_body, "playground-policy-body", max_height="520px"),
                width="100%",
                spacing="2",
            ),
            _muted(
                rx.cond(
                    S.policies.length() == 0,
                    "Create a policy first, or paste Rego instead.",
                    "The saved policy's current version is evaluated.",
                ),
                size="2",
            ),
        ),
        width="100%",
        spacing="3",
    )


def _pasted_policy() -> rx.Component:
    return rx.vstack(
        rx.cond(
            S.draft_policy_id != "",
            rx.callout(
                rx.text(
                    "The unsaved draft of ",
                    rx.link(
                        S.draft_policy_name,
                        href="/policies/" + S.draft_policy_id,
                        custom_attrs=testid("playground-draft-back"),
                    ),
                    ": nothing here is saved. Going back to the policy keeps the draft in its editor.",
                ),
                icon="pencil",
                size="1",
                variant="surface",
                custom_attrs=testid("playground-draft-note"),
            ),
        ),
        rx.hstack(
            _muted("Evaluate as", size="2"),
            rx.select.root(
                rx.select.trigger(custom_attrs=testid("playground-type-select")),
                rx.select.content(*[rx.select.item(TYPE_LABELS[t], value=t) for t in TYPES]),
                value=S.type_,
                on_change=S.set_type,
                size="1",
            ),
            _muted("(echoed in the result; it does not change what is evaluated)"),
            align="center",
            spacing="2",
            wrap="wrap",
        ),
        source_editor(
            default_value=S.body,
            key=S.body_key,
            gutter=S.body_gutter,
            rows=S.body_rows,
            on_change=S.set_body,
            error_line=S.compile_line,
            tid="playground-body-input",
            max_height="520px",
        ),
        width="100%",
        spacing="2",
    )


def _policy_card() -> rx.Component:
    return _card(
        "Policy",
        rx.segmented_control.root(
            rx.segmented_control.item(
                "Saved policy", value=SAVED, custom_attrs=testid("playground-mode-saved")
            ),
            rx.segmented_control.item(
                "Paste Rego", value=PASTE, custom_attrs=testid("playground-mode-paste")
            ),
            value=S.mode,
            on_change=S.set_mode,
            custom_attrs=testid("playground-mode"),
        ),
        rx.cond(S.mode == SAVED, _saved_policy(), _pasted_policy()),
        tid="playground-policy",
    )


# ------------------------------------------------------------------ input


def _runs_select() -> rx.Component:
    return rx.cond(
        S.runs.length() == 0,
        rx.tooltip(
            rx.button(
                rx.icon("history", size=14),
                "Load a past run's input",
                size="1",
                variant="soft",
                disabled=True,
                custom_attrs=testid("playground-run-select"),
            ),
            content="No run has a stored plan yet: trigger a run on a stack first",
        ),
        rx.select.root(
            rx.select.trigger(
                placeholder="Load a past run's input…",
                custom_attrs=testid("playground-run-select"),
            ),
            rx.select.content(
                rx.foreach(
                    S.runs,
                    lambda r: rx.select.item(r.label, value=r.id, custom_attrs={"data-run-id": r.id}),
                )
            ),
            value=S.run_id,
            on_change=S.load_run_input,
            disabled=~S.can_write | S.loading_run,
            size="1",
        ),
    )


def _input_card() -> rx.Component:
    actions = rx.hstack(
        _runs_select(),
        rx.button(
            "Format",
            size="1",
            variant="ghost",
            color_scheme="gray",
            on_click=S.format_input,
            disabled=S.input_readonly,
            custom_attrs=testid("playground-input-format"),
        ),
        rx.button(
            "Example",
            size="1",
            variant="ghost",
            color_scheme="gray",
            on_click=S.reset_input,
            custom_attrs=testid("playground-input-reset"),
        ),
        spacing="2",
        align="center",
    )
    editor = source_editor(
        default_value=S.input_seed,
        key=S.input_key,
        gutter=S.input_gutter,
        rows=S.input_rows,
        on_change=S.set_input,
        on_blur=S.check_input,
        error_line=S.json_line,
        tid="playground-input",
        language="json",
        max_height="520px",
        max_length=INPUT_EDIT_MAX,
    )
    readonly = rx.vstack(
        rx.callout(
            rx.text(
                "The input of ",
                S.input_source,
                " is too large to edit in the browser. It is evaluated in full as loaded; the first lines "
                "are shown below.",
            ),
            icon="info",
            size="1",
            variant="surface",
            custom_attrs=testid("playground-input-readonly"),
        ),
        rx.el.pre(
            S.input_preview,
            font_family="monospace",
            font_size="12px",
            max_height="480px",
            overflow="auto",
            width="100%",
            margin="0",
            padding="0.75rem",
            background=rx.color("gray", 2),
            border=f"1px solid {rx.color('gray', 5)}",
            border_radius="6px",
        ),
        width="100%",
        spacing="2",
    )
    return _card(
        "Input",
        _muted(
            "The plan JSON's keys at the top level plus ",
            rx.code("crucible"),
            " (run, stack, counts), as runs give it to policies.",
            rx.cond(S.input_source != "", rx.text.span(" Loaded from ", S.input_source, ".")),
            f" Up to {INPUT_EDIT_MAX // 1000} KB here; for a larger plan, load a past run's input.",
            size="2",
            custom_attrs=testid("playground-input-hint"),
        ),
        rx.cond(S.loading_run, table_skeleton(6, 1), rx.cond(S.input_readonly, readonly, editor)),
        rx.cond(
            S.json_error != "",
            location_error(S.json_error, S.json_line, S.json_column, "playground-input-error"),
        ),
        actions=actions,
        tid="playground-input-card",
    )


# ------------------------------------------------------------------ results


def _messages(title: str, items, color: str, tid: str) -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.text(title, weight="bold", size="2"),
            rx.badge(items.length(), color_scheme=color, variant="soft", radius="full"),
            spacing="2",
            align="center",
        ),
        rx.cond(
            items.length() == 0,
            _muted("none", size="2"),
            rx.vstack(
                rx.foreach(
                    items,
                    lambda m: rx.hstack(
                        rx.icon("chevron-right", size=14, color=rx.color(color, 10), flex_shrink="0"),
                        rx.text(m, size="2", font_family="monospace", word_break="break-word"),
                        spacing="1",
                        align="start",
                        custom_attrs=testid(f"{tid}-message"),
                    ),
                ),
                spacing="1",
                width="100%",
            ),
        ),
        spacing="1",
        width="100%",
        custom_attrs=testid(tid),
    )


def _verdict() -> rx.Component:
    return rx.badge(
        rx.match(
            S.verdict,
            ("deny", "Denied"),
            ("approval", "Needs approval"),
            ("warn", "Allowed with warnings"),
            "Allowed",
        ),
        color_scheme=rx.match(S.verdict, ("deny", "red"), ("approval", "amber"), ("warn", "amber"), "green"),
        size="3",
        variant="solid",
        custom_attrs={"data-testid": "playground-verdict", "data-verdict": S.verdict},
    )


def _results() -> rx.Component:
    done = rx.vstack(
        rx.hstack(
            _verdict(),
            rx.spacer(),
            rx.hstack(
                rx.icon("timer", size=14, color=MUTED),
                rx.text(
                    S.duration_ms,
                    size="2",
                    font_family="monospace",
                    custom_attrs=testid("playground-duration"),
                ),
                _muted("·", size="2"),
                rx.text("engine ", rx.code(S.engine), size="2", custom_attrs=testid("playground-engine")),
                rx.cond(
                    S.result_type != "",
                    rx.hstack(_muted("as", size="2"), type_badge(S.result_type), spacing="1", align="center"),
                ),
                rx.cond(S.result_version > 0, _muted("version ", S.result_version, size="2")),
                spacing="2",
                align="center",
                wrap="wrap",
            ),
            width="100%",
            align="center",
            wrap="wrap",
        ),
        rx.cond(
            S.unsupported.length() > 0,
            rx.callout(
                rx.text(
                    "The active engine (",
                    S.engine,
                    ") lacks builtins this policy calls: ",
                    rx.text.span(S.unsupported.join(", "), font_family="monospace"),
                    ". Evaluating them is an error, and a run with this policy fails closed "
                    "(docs/policies-engines.md).",
                ),
                icon="triangle-alert",
                color_scheme="amber",
                size="1",
                custom_attrs=testid("playground-unsupported"),
            ),
        ),
        rx.grid(
            _messages("deny", S.deny, "red", "playground-deny"),
            _messages("warn", S.warn, "amber", "playground-warn"),
            rx.vstack(
                rx.text("approval", weight="bold", size="2"),
                rx.text(
                    "require_approval: ",
                    rx.code(rx.cond(S.require_approval, "true", "false")),
                    size="2",
                    custom_attrs=testid("playground-require-approval"),
                ),
                rx.text(
                    "required_approvals: ",
                    rx.code(S.required_approvals),
                    size="2",
                    custom_attrs=testid("playground-required-approvals"),
                ),
                spacing="1",
            ),
            columns=rx.breakpoints(initial="1", md="3"),
            spacing="4",
            width="100%",
        ),
        spacing="4",
        width="100%",
    )
    return _card(
        "Result",
        rx.cond(
            S.compile_error != "",
            location_error(S.compile_error, S.compile_line, S.compile_column, "playground-compile-error"),
        ),
        rx.cond(
            S.eval_error != "",
            rx.callout(
                S.eval_error,
                icon="circle-x",
                color_scheme="red",
                size="1",
                custom_attrs=testid("playground-eval-error"),
            ),
        ),
        rx.cond(
            S.evaluating,
            table_skeleton(3, 3),
            rx.cond(
                S.evaluated,
                done,
                rx.cond(
                    (S.compile_error == "") & (S.eval_error == ""),
                    _muted(
                        "Evaluate to see what the policy decides: deny and warn messages, and whether "
                        "the run would need approval. Nothing is stored.",
                        size="2",
                        custom_attrs=testid("playground-result-empty"),
                    ),
                ),
            ),
        ),
        actions=rx.cond(
            S.can_write,
            rx.button(
                rx.icon("play", size=14),
                "Evaluate",
                on_click=S.evaluate,
                loading=S.evaluating,
                custom_attrs=testid("playground-evaluate"),
            ),
            rx.tooltip(
                rx.button("Evaluate", disabled=True, custom_attrs=testid("playground-evaluate")),
                content="Members and admins evaluate policies (it runs code on the server)",
            ),
        ),
        tid="playground-result",
    )


def policies_playground_page() -> rx.Component:
    body = rx.cond(
        S.loading,
        table_skeleton(8, 2),
        rx.vstack(
            rx.grid(
                _policy_card(),
                _input_card(),
                columns=rx.breakpoints(initial="1", lg="2"),
                spacing="4",
                width="100%",
            ),
            _results(),
            spacing="4",
            width="100%",
        ),
    )
    return page("policies", "Policy playground", body, breadcrumb=[("Policies", "/policies")])
