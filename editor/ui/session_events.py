"""The events on a session's history (undo, go to a turn, reset, export, restore, the upload check) and what every
handler shares: `user_errors` at the UI boundary, the history panes (`SessionHandlers._history`) and adding a turn
(`_commit`). The model events build on this (handlers.py). Each returns `{widget: value}` for the widgets its
`updates` mark lists (editor/ui/wiring.py); its parameters are the API's input names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import torch
from PIL import Image

from editor.core import EditResult
from editor.loading import CheckpointError, MissingWeightsError
from editor.ui import views
from editor.ui.guard import public_message, user_error
from editor.ui.history import History, image_key
from editor.ui.state import AppState, fresh, history_view
from editor.ui.wiring import reading, updates

if TYPE_CHECKING:
    from editor.ui.layout import Widgets

STOPPED = "Stopped: nothing was added to the history."
HISTORY = ("image", "output", "compare", "status", "strip", "details", "state")  # what `_history` updates


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors caused by the input or the weights become a message in the UI; the app keeps serving."""
    try:
        yield
    except (ValueError, MissingWeightsError, CheckpointError) as err:
        raise user_error(public_message(str(err))) from err
    except torch.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        raise user_error("out of GPU memory: try a smaller size, or wait for other edits to finish") from err


def as_int(value: float | None, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


class SessionHandlers:
    """The history events of the app whose widgets are `widgets`."""

    def __init__(self, widgets: Widgets) -> None:
        self.w = widgets

    def _history(self, state: AppState) -> dict:
        """The history panes of `state` (the `HISTORY` widgets)."""
        view, w = history_view(state), self.w
        return {w.image: view.input, w.output: view.output, w.compare: view.compare, w.status: view.status,
                w.strip: view.strip, w.details: view.details, w.state: state}  # fmt: skip

    @updates("used")
    def used_text(self, state: AppState | None) -> dict:
        """The used-params line of the current turn (after a failed edit, in place of its progress line)."""
        history = fresh(state).history
        return {self.w.used: views.result_text(None if history.head is None else history.turns[history.head])}

    @updates("used", "output", "variants")
    def stopped(self, state: AppState | None) -> dict:
        """Stop pressed: the render was cancelled; the result box shows the session's current output again, and
        unfinished variations are dropped."""
        state = fresh(state)
        if state.stop is not None:
            state.stop.set()  # reaches the render thread at once (editor/ui/streaming.py)
        state.variants = []
        hidden = gr.update(value=None, visible=False)
        output = history_view(state).output
        return {self.w.used: STOPPED, self.w.output: output, self.w.variants: hidden}

    @updates()
    def halted(self, state: AppState | None) -> None:
        """The explorer's or the compare tab's Stop: the render in progress ends at its next step, no other starts
        (the cells or the side already shown stay; neither touches the history)."""
        state = fresh(state)
        if state.stop is not None:
            state.stop.set()

    @staticmethod
    def _commit(state: AppState, parent: int | None, image: Image.Image, result: EditResult) -> None:
        if parent is None:
            state.history.origin = image
        guidance = result.guidance
        turn = state.history.add(
            parent,
            model=guidance.model,
            instruction=guidance.instruction,
            expressive=guidance.expressive,
            raw_text=guidance.raw_text,
            guidance_source=guidance.source,
            params=result.params,
            input=image,
            output=result.image,
            stats={**guidance.stats, **result.stats},
        )
        before = result.source  # the input exactly as the model saw it; often the parent's output, already saved
        reuse = parent is not None and image_key(before) == image_key(state.history.turns[parent].output)
        state.files[("before", turn.id)] = state.png(("out", parent) if reuse else ("before", turn.id), lambda: before)

    @updates(*HISTORY)
    def undo(self, state: AppState | None) -> dict:
        """Steps back one turn (the undone turn stays in the history)."""
        with user_errors():
            state = fresh(state)
            state.history.undo()
            return self._history(state)

    @updates(*HISTORY)
    @reading(turn="turn_id")  # the API's turn id, on a hidden twin of the visible box
    def revert(self, turn: float, state: AppState | None) -> dict:
        """Makes turn #`turn` current: its output becomes the input; editing from there starts a branch."""
        with user_errors():
            state = fresh(state)
            state.history.revert(as_int(turn, "turn"))
            return self._history(state)

    @updates("state")
    def check_upload(self, image: Image.Image | None, state: AppState | None) -> dict:
        """An upload arrives: the guard's reader has already read it (a file that is no image is refused there, with
        a message, before this runs); a good one is remembered as what the input box shows."""
        state = fresh(state)
        state.shown = image
        return {self.w.state: state}

    @updates("image")
    def shown_input(self, state: AppState | None) -> dict:
        """What the input box showed before a refused upload (None: it was empty)."""
        return {self.w.image: fresh(state).shown}

    @updates("instruction", "expressive", "raw_text")
    def turn_texts(self, state: AppState | None) -> dict:
        """The instruction, expressive and raw text of the turn now current, empty at the original image: after an
        undo or a revert the boxes show what made the image on screen, so the next edit is not a silent repeat."""
        history, w = fresh(state).history, self.w
        turn = None if history.head is None else history.turns[history.head]
        if turn is None:
            return {w.instruction: "", w.expressive: "", w.raw_text: ""}
        return {w.instruction: turn.instruction, w.expressive: turn.expressive, w.raw_text: turn.raw_text}

    @updates(*HISTORY)
    def go_to(self, turn: float, state: AppState | None) -> dict:
        """The visible "Go to turn": `turn` as the strip numbers it (0: the original, 1: the first turn)."""
        with user_errors():
            state = fresh(state)
            number = as_int(turn, "turn")
            if number == 0:
                state.history.go_to_original()
                return self._history(state)
        return self.revert(number - 1, state)

    @updates(*HISTORY)
    def revert_selected(self, state: AppState | None, evt: gr.SelectData) -> dict:
        """A click on the strip: its first picture is the original, then turns 1, 2, ..."""
        return self.go_to(evt.index, state)

    @updates(*HISTORY)
    def reset(self, state: AppState | None) -> dict:
        """Clears the history and starts over from the first image of the current branch."""
        state = fresh(state)
        path = state.history.lineage()
        origin = state.history.turns[path[0]].input if path else state.history.origin
        return self._history(state.restart(History(origin=origin)))

    @updates("archive")
    def export(self, state: AppState | None) -> dict:
        """The session as one zip: every image (PNG) and session.json (turns, params, seeds, texts, models)."""
        with user_errors():
            state = fresh(state)
            if not state.history.turns:
                raise ValueError("nothing to export yet: make an edit first")
            name = f"session-{time.strftime('%Y%m%d-%H%M')}.zip"
            return {self.w.archive: str(state.history.to_archive(state.scratch() / name))}

    @updates(*HISTORY)
    @reading(archive="restore_button")
    def restore(self, archive: str | None, state: AppState | None) -> dict:
        """Replaces this session by the one in an exported zip."""
        with user_errors():
            state = fresh(state)
            if archive is None:
                raise ValueError("no session file: upload a .zip exported by this app")
            return self._history(state.restart(History.from_archive(Path(archive))))
