"""Terminal-style run log viewer that streams the log straight from the API.

The log never passes through Reflex state (ARCHITECTURE.md, "Process model"): the browser
fetches ``src`` itself (``GET /api/v1/runs/{id}/logs?follow=true``, same origin, the httpOnly
session cookie authenticates it) and the React component in ``assets/log_viewer/`` renders it:
ANSI colours, line numbers, virtualized rows (100,000 lines stay smooth), auto-scroll with
"Jump to live", search, download, reconnect with backoff.

The JavaScript lives in ``assets/`` rather than next to this module because Reflex copies
``assets/`` into ``.web/public`` on every compile, so ``crucible build-ui`` bundles it with no
extra step (``rx.asset(shared=True)`` would add a symlink under ``assets/external`` at import
time, which changes the build's source hash after the first build).

data-testids (with the default prefix ``run-log``): ``run-log`` (container, ``data-state`` =
connecting|live|ended|error, ``data-following`` = true|false), ``run-log-status`` (text
``connecting``, ``live``, ``ended`` or ``error``), ``run-log-count`` (lines received),
``run-log-line`` (each *rendered* line: rows are virtualized, so count with ``run-log-count``;
``data-line`` holds the 1-based line number), ``run-log-search``, ``run-log-search-count``
("n of m"), ``run-log-search-next``, ``run-log-search-prev``, ``run-log-jump``,
``run-log-download``, ``run-log-skeleton``, ``run-log-empty``, ``run-log-error``,
``run-log-viewport`` (the scroller).
"""

from __future__ import annotations

import reflex as rx

# Copied by Reflex from assets/ to .web/public/; "$/" is the .web root in the bundler.
_LIBRARY = "$/public/log_viewer/log_viewer.jsx"


class LogViewer(rx.Component):
    """The React component ``LogViewer`` from assets/log_viewer/log_viewer.jsx."""

    library = _LIBRARY
    tag = "LogViewer"

    # URL of the plain-text log, e.g. /api/v1/runs/<id>/logs?follow=true. Empty: not yet known.
    src: rx.Var[str]
    # data-testid prefix: "<prefix>", "<prefix>-line", "<prefix>-status", ...
    testid_prefix: rx.Var[str]
    # CSS height of the whole viewer (toolbar + scroller).
    viewport_height: rx.Var[str]


def log_viewer(
    src: rx.Var[str] | str,
    *,
    testid_prefix: str = "run-log",
    height: str = "60vh",
) -> rx.Component:
    """A live log viewer for ``src``; changing ``src`` aborts the old stream and starts over.

    ``log_viewer(RunState.log_url)`` with ``log_url`` = ``f"/api/v1/runs/{run_id}/logs?follow=true"``.
    """
    return LogViewer.create(src=src, testid_prefix=testid_prefix, viewport_height=height)
