"""What one browser session owns (`AppState`, kept in a gr.State) and what the history panes show of it.

The history strip is an HTML list of thumbnail URLs, not a gr.Gallery: Gradio copies and hashes every file of a
gallery on every update, so an edit cost more with each turn in the history (issue 17 point 13; measured with
`python -m editor.bench.app`). Each thumbnail is written once into this session's folder under `THUMBNAILS`, which
`serve_thumbnails` makes a Gradio static path (served as it is, never copied); an update sends only the list.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import quote

import gradio as gr
from PIL import Image

from editor.core import EditResult, Guidance
from editor.ui import views
from editor.ui.explore import Cell
from editor.ui.history import History, image_key

THUMBNAILS = Path(tempfile.gettempdir()) / "editor-thumbnails"  # one unguessable folder per session inside
FILE_ROUTE = "gradio_api/file="  # Gradio's file route, relative to the page (so it works under a root path too)


@cache  # once per process: Gradio's static paths are global
def serve_thumbnails() -> None:
    """Lets Gradio serve the history thumbnails straight from `THUMBNAILS` (a static path, for every app of this
    process). Only thumbnails are there; a session's folder name carries 128 random bits."""
    THUMBNAILS.mkdir(exist_ok=True)
    gr.set_static_paths([THUMBNAILS])


@dataclass(frozen=True)
class Session:
    """The last guidance and what it was made for."""

    model: str
    image_key: str
    guidance: Guidance

    def matches(self, model: str, key: str, instruction: str) -> bool:
        return (self.model, self.image_key, self.guidance.instruction) == (model, key, instruction.strip())


@dataclass
class AppState:
    """Everything one browser session owns. Handlers return it, so it also works where they run elsewhere."""

    history: History = field(default_factory=History)
    thought: Session | None = None
    cells: list[Cell] = field(default_factory=list)  # the explorer's last grid
    cells_parent: int | None = None  # the turn the grid's input came from
    cells_input: Image.Image | None = None
    variants: list[EditResult] = field(default_factory=list)  # the last variations, until one is picked
    variants_parent: int | None = None  # the turn their input came from
    variants_input: Image.Image | None = None
    stop: threading.Event | None = None  # set by Stop: the running edit's render ends at its next step
    shown: str | Image.Image | None = None  # what the input box shows: put back when an upload is refused
    folder: str | None = None  # this session's PNGs for display, each written once (see `png`)
    files: dict[tuple, str] = field(default_factory=dict)
    thumbnails: str | None = None  # this session's folder under THUMBNAILS

    def scratch(self) -> Path:
        """This session's folder of temporary files (display PNGs, exports), removed with the session."""
        self.folder = self.folder or tempfile.mkdtemp(prefix="editor-session-")
        return Path(self.folder)

    def png(self, key: tuple, make: Callable[[], Image.Image]) -> str:
        """The path of a PNG of `make()`, written on first use (fast zlib level 1; lossless). Returning paths
        instead of PIL images spares Gradio re-encoding every image of every turn on every event."""
        if key not in self.files:
            path = self.scratch() / f"{len(self.files):05d}.png"
            make().save(path, format="PNG", compress_level=1)
            self.files[key] = str(path)
        return self.files[key]

    def thumbnail_url(self, key: tuple, make: Callable[[], Image.Image]) -> str:
        """The URL of a thumbnail of `make()`, written on first use into this session's served folder."""
        if key not in self.files:
            THUMBNAILS.mkdir(exist_ok=True)
            self.thumbnails = self.thumbnails or tempfile.mkdtemp(prefix=secrets.token_hex(16), dir=THUMBNAILS)
            path = Path(self.thumbnails) / f"{len(self.files):05d}.png"
            make().save(path, format="PNG", compress_level=1)
            self.files[key] = FILE_ROUTE + quote(str(path))
        return self.files[key]

    def restart(self, history: History) -> AppState:
        """A new session state; the old one's temporary files go now (Gradio has served its own copies)."""
        remove_files(self)
        return AppState(history=history)


def remove_files(state: AppState | None) -> None:
    """gr.State's delete_callback (the session ended or expired): its temporary files go with it."""
    for folder in (state.folder, state.thumbnails) if state is not None else ():
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def fresh(state: AppState | None) -> AppState:
    """The gr.State starts as None in every browser session (a factory would show up as an API endpoint)."""
    return state if state is not None else AppState()


@dataclass(frozen=True)
class HistoryView:
    """What the history panes show of a session; images as PNG paths."""

    input: str | None  # the next edit's input
    output: str | None
    compare: tuple[str, str] | None  # before/after
    status: str
    strip: list[dict[str, str]]  # {src: URL, caption}: the branch's original image, then turns 1, 2, ...
    details: str


def history_view(state: AppState) -> HistoryView:
    """The history panes of `state`. The strip starts with the branch's original image, then turns 1, 2, ... (turn
    ids 0, 1, ...)."""
    history = state.history
    head = history.turns[history.head] if history.head is not None else None
    original = history.original()
    pictures = [] if original is None else [(("thumb", image_key(original)), original, views.original_caption(history))]
    pictures += [(("thumb", t.id), t.output, views.caption(history, t)) for t in history.turns]
    strip = [{"src": state.thumbnail_url(key, lambda p=picture: views.thumbnail(p)), "caption": caption}
             for key, picture, caption in pictures]  # fmt: skip
    if head is not None:
        current = output = state.png(("out", head.id), lambda: head.output)
        compare = state.png(("before", head.id), lambda: views.before_image(head)), output
    else:
        origin = history.origin
        current = None if origin is None else state.png(("origin", image_key(origin)), lambda: origin)
        output = compare = None
    state.shown = current
    return HistoryView(current, output, compare, views.status_text(history), strip, views.turn_details(head))
