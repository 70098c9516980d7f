"""Reflex configuration. Crucible's own settings come from CRUCIBLE_* variables (backend/config.py)."""

import os

import reflex as rx

_port = os.environ.get("REFLEX_FRONTEND_PORT", "3000")
_base_url = os.environ.get("CRUCIBLE_BASE_URL", f"http://localhost:{_port}").rstrip("/")

config = rx.Config(
    app_name="crucible_app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    default_color_mode="system",
    # UI state stays in memory (one server process): the default disk mode would pickle
    # state, including a just-created API token, into .states/ on disk.
    state_manager_mode="memory",
    # Reflex would otherwise accept any Origin with credentials. Users reach the app at
    # CRUCIBLE_BASE_URL, or locally on this port.
    cors_allowed_origins=sorted({_base_url, f"http://localhost:{_port}", f"http://127.0.0.1:{_port}"}),
    # Plugins are explicit: Radix Themes with our design tokens; a private app needs no sitemap.
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(accent_color="teal", gray_color="slate", radius="medium", scaling="95%")
        )
    ],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
