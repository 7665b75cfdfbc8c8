"""A banner that follows a changing status (the start-up's download and load), refreshed until it settles."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
from gradio.events import Dependency

REFRESH_S = 1.0


def live_banner(status: Callable[[], tuple[str, bool]], every: float = REFRESH_S) -> Dependency:
    """Inside a Blocks: a Markdown showing `status()`'s text, refreshed every `every` seconds while the page is open
    until `status()` says it is settled (each page load then refreshes it once). Also the `/startup_status`
    endpoint, so a script can wait for the model. Returns the refresh event, for events that follow each one."""
    banner = gr.Markdown(status()[0], elem_id="notice")
    timer = gr.Timer(every)

    def refresh() -> tuple[str, gr.Timer]:
        text, settled = status()
        return text, gr.Timer(active=not settled)

    return timer.tick(refresh, outputs=[banner, timer], api_name="startup_status", show_progress="hidden")
