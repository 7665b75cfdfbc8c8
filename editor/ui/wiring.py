"""Which event calls which handler, found by name: a handler reads the widgets its parameters are named after (with
the few differences in `Reads`) and updates the widgets its `updates` mark lists, returning `{widget: value}` for
the ones it changes (those left out stay as they are). The order of `updates` is the order an API client gets.

Model events share one concurrency slot (`GPU`); history events are instant and never wait behind an edit.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from editor.ui import views

if TYPE_CHECKING:
    from editor.ui.handlers import Handlers
    from editor.ui.layout import Widgets

GPU = {"concurrency_limit": 1, "concurrency_id": "gpu"}
PRIVATE = {"api_visibility": "private"}
INSTANT = {"api_visibility": "private", "queue": False}
# Once there is something to lose, leaving or reloading the page asks first; a reset or restore clears the flag.
WARN_ON_LEAVE = "() => { window.onbeforeunload = (e) => { e.preventDefault(); return ''; }; }"
NO_WARN = "() => { window.onbeforeunload = null; }"


def updates(*names: str) -> Callable[[Callable], Callable]:
    """Marks a handler with the widgets it may update, by field name of `Widgets`, in API order."""

    def mark(fn: Callable) -> Callable:
        fn.updates = names
        return fn

    return mark


def reads(fn: Callable, widgets: Widgets) -> list[gr.components.Component]:
    """The widgets `fn` reads: one per parameter without a default, by the parameter's name (or the field its
    `reads_from` mark names for it); event data (a gr.SelectData parameter) is Gradio's to fill."""
    renamed: Mapping[str, str] = getattr(fn, "reads_from", {})
    found = []
    for param in inspect.signature(fn, eval_str=True).parameters.values():
        event_data = isinstance(param.annotation, type) and issubclass(param.annotation, gr.EventData)
        if param.default is inspect.Parameter.empty and not event_data:
            found.append(getattr(widgets, renamed.get(param.name, param.name)))
    return found


def reading(**renamed: str) -> Callable[[Callable], Callable]:
    """Marks a handler whose API parameter names differ from the fields they read (`parameter="field"`)."""

    def mark(fn: Callable) -> Callable:
        fn.reads_from = renamed
        return fn

    return mark


def written(fn: Callable, widgets: Widgets) -> list[gr.components.Component]:
    return [getattr(widgets, name) for name in fn.updates]


def on(trigger: Callable, fn: Callable, widgets: Widgets, **options: Any):
    """`trigger(fn)` with its inputs and outputs found by name."""
    return trigger(fn, reads(fn, widgets), written(fn, widgets), **options)


def archive_button(path: str | None) -> gr.DownloadButton:
    """The exported zip as a download button that names its file."""
    return gr.DownloadButton(f"Download {Path(path).name}" if path else "Download", visible=path is not None)


def hide_archive() -> gr.DownloadButton:
    """The session changed: an exported zip no longer matches it."""
    return gr.DownloadButton(value=None, visible=False)


def wire(w: Widgets, handlers: Handlers) -> None:
    """Connects every event of the layout `w` to `handlers`."""
    on(w.model.change, handlers.model_settings, w, **INSTANT)  # the sliders take the chosen model's own settings
    if w.startup is not None:
        # Gradio sends an open page new values only in answer to one of the page's events. The banner polls the
        # start-up once a second until it settles, and once on each page load (banner.py), so each poll is followed
        # by the settings of the model loaded by then (after a fallback, the demo model's). Chained after the poll,
        # not beside it: the poll that finds the start-up settled, and stops, is followed by the loaded model's.
        on(w.startup.then, handlers.follow_model, w, **INSTANT)
    # An upload is read when it arrives: a refused one (not an image, too large) gets its message at once and the
    # input box goes back to what it showed before. A quick second upload is checked too.
    on(w.image.upload, handlers.check_upload, w, trigger_mode="always_last", **PRIVATE).failure(
        handlers.shown_input, [w.state], [w.image], **INSTANT
    )
    # The size plan (and, for a long edit, its time estimate) follows everything it is computed from. One event for
    # all of them, "always_last": a change made while the plan is computed reruns it after, so an older answer
    # never lands last (separate events ran side by side, and a stale size could win).
    planned = (w.image, w.size, w.resize, w.model, w.steps, w.text_guidance, w.image_guidance)
    any_change = partial(gr.on, [changed.change for changed in planned])
    on(any_change, handlers.size_plan, w, trigger_mode="always_last", **INSTANT)
    w.instruction.input(lambda: {w.expressive: "", w.raw_text: ""}, None, [w.expressive, w.raw_text], **INSTANT)
    on(w.think_button.click, handlers.think, w, api_name="think", **GPU)
    edited = on(w.edit_button.click, handlers.edit, w, api_name="edit", show_progress="hidden", **GPU)
    # show_progress hidden: the edit has its own progress line under the result (views.progress_text)
    # Variations: with more than one, "Edit variations" takes Edit's place; a picked variation becomes the turn.
    w.variations.change(
        lambda count: {w.edit_button: gr.Button(visible=count == 1),
                       w.vary_button: gr.Button(f"Edit {count} variations", visible=count != 1)},
        [w.variations], [w.edit_button, w.vary_button], **INSTANT,
    )  # fmt: skip
    varied = on(w.vary_button.click, handlers.variations, w, api_name="variations", show_progress="hidden", **GPU)
    picked = [
        on(w.variants.select, handlers.pick_selected, w, **PRIVATE),
        on(w.pick_api.click, handlers.pick, w, api_name="pick"),
    ]
    for started in (edited, *picked):
        started.success(None, js=WARN_ON_LEAVE)
    for started in (edited, varied):
        on(started.failure, handlers.used_text, w, **INSTANT)
    # Stop cancels the edit (the render stops at its next step, editor/ui/streaming.py); the session is unchanged.
    on(w.stop_button.click, handlers.stopped, w, cancels=[edited, varied], **PRIVATE)
    changes = [  # events that change the session: the boxes follow its current turn, an exported zip is stale
        on(w.undo_button.click, handlers.undo, w, api_name="undo"),
        on(w.revert_api.click, handlers.revert, w, api_name="revert"),
        on(w.revert_button.click, handlers.go_to, w, **PRIVATE),
        on(w.strip.select, handlers.revert_selected, w, **PRIVATE),
    ]
    for started in changes:
        on(started.success, handlers.turn_texts, w, **INSTANT)
    for started in (
        on(w.reset_button.click, handlers.reset, w, api_name="reset"),
        on(w.restore_button.upload, handlers.restore, w, api_name="restore"),
    ):
        on(started.success, handlers.turn_texts, w, **INSTANT)
        started.then(None, js=NO_WARN)
        changes.append(started)
    exported = on(w.export_button.click, handlers.export, w, api_name="export")
    exported.success(archive_button, [w.archive], [w.archive], **INSTANT)
    explored = on(w.explore_button.click, handlers.explore, w, api_name="explore", show_progress_on=[w.grid], **GPU)
    # show_progress_on: one progress display, where the cells appear
    on(w.explore_stop.click, handlers.halted, w, cancels=[explored], **PRIVATE)  # ends the cell at its next step
    on(w.explore_button.click, handlers.sweep_columns, w, **INSTANT)
    adopted = on(w.grid.select, handlers.adopt, w, **PRIVATE)
    compared = on(
        w.compare_button.click, handlers.compare, w, api_name="compare", show_progress_on=[w.image_a, w.image_b], **GPU
    )
    on(w.compare_stop.click, handlers.halted, w, cancels=[compared], **PRIVATE)
    # A finished render's timings are the time estimate's from now on. Not `.then`: it also runs after Stop, and the
    # Stop message was then lost in the browser (a stopped render changes no timing anyway).
    for rendered in (edited, varied, compared):
        on(rendered.success, handlers.size_plan, w, **INSTANT)
    kept = on(w.keep_button.click, handlers.keep_cell, w, api_name="keep")
    for started in (edited, kept, *picked, *changes):
        started.success(hide_archive, None, [w.archive], **INSTANT)
    for started in (edited, kept, adopted, *picked, *changes):  # the real resolution of what the output box shows
        started.success(views.size_text, [w.output], [w.output_size], **INSTANT)
