"""Run `render` in a worker thread and report its steps as they happen, so a UI can show progress and previews
while the model works, and stop it when the user leaves.

Previews are throttled by time: one at most every `preview_every` seconds (never after the last step, which the
final image replaces). A preview is a 4x3 matmul on the latents (editor.preview) plus a small PNG for the UI, so
at the default 0.5 s their cost stays far below 5 % of render time on any device (measured in editor.bench.app).

Cancelling stops the render at its next step, without waiting for it: closing the iterator (a client disconnect or
/cancel), or setting the `stop` event the caller passed, which reaches the render thread at once. The app's Stop
button sets it (editor/ui/session_events.py): Gradio closes a cancelled generator only once its worker thread
returns from waiting on the next step, so the close alone let the render run on for a step or more. Renders of one
editor take turns (`render_lock`): one that starts while a cancelled render of the same editor is still finishing
its step waits for it, so no two renders of one model ever overlap (they would share the UNet's hooks, e.g.
SmartEdit's residual, and double the memory).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from editor.core import Editor, EditResult, Guidance, Step
from editor.params import EditParams

PREVIEW_EVERY_S = 0.5
_LOCKS: dict[int, threading.Lock] = {}  # one per editor object (editors live as long as the app)
_LOCKS_GUARD = threading.Lock()


def render_lock(editor: Editor) -> threading.Lock:
    """The lock every render of `editor` holds while it runs."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(editor), threading.Lock())


@dataclass(frozen=True)
class Progress:
    index: int
    total: int
    preview: Image.Image | None  # set on the steps that got a preview
    at: float = 0.0  # time.perf_counter() when the step ended, in the render thread (step times: editor/ui/estimate.py)


def final_result(items: Iterator[Progress | EditResult]) -> EditResult | None:
    """Runs a `stream_render` to its end: the result, or None when it was stopped first."""
    last = None
    for last in items:  # noqa: B007 - only the last item is wanted
        pass
    return last if isinstance(last, EditResult) else None


class Cancelled(Exception):
    """Raised inside the render thread when the consumer stopped listening."""


def stream_render(
    editor: Editor,
    image: Image.Image,
    guidance: Guidance,
    params: EditParams,
    preview_every: float | None = PREVIEW_EVERY_S,
    stop: threading.Event | None = None,
) -> Iterator[Progress | EditResult]:
    """Yields a `Progress` per step and finally the `EditResult` (its stats gain `preview_s`, the time spent on
    previews inside the render). `preview_every=None` turns previews off. Errors of the render are re-raised here;
    closing the iterator early or setting `stop` stops the render at its next step (after `stop`, the iterator
    ends without a result)."""
    events: queue.Queue = queue.Queue()
    closed = threading.Event()  # the consumer stopped listening (the iterator was closed or ran out)

    def cancelled() -> bool:
        return closed.is_set() or (stop is not None and stop.is_set())

    clock = {"last": time.perf_counter(), "spent": 0.0}

    def on_step(step: Step) -> None:
        if cancelled():
            raise Cancelled
        picture = None
        start = time.perf_counter()
        if preview_every is not None and step.index < step.total and start - clock["last"] >= preview_every:
            picture = step.preview()
            clock["last"] = time.perf_counter()
            clock["spent"] += clock["last"] - start
        events.put(Progress(step.index, step.total, picture, start))

    def work() -> None:
        try:
            with render_lock(editor):
                if cancelled():  # cancelled while waiting for the previous render to stop
                    raise Cancelled
                result = editor.render(image, guidance, params, on_step=on_step)
            result.stats["preview_s"] = clock["spent"]
            events.put(result)
        except BaseException as err:  # handed to the consumer's thread, which re-raises it
            events.put(err)

    thread = threading.Thread(target=work, name="render", daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, Cancelled):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, EditResult):
                return
    finally:
        closed.set()
