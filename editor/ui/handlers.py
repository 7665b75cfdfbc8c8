"""What each UI event does, on the per-session `AppState` (kept in a gr.State). No layout here (see layout.py).

Which guidance "Edit" uses (`resolve_guidance`):
  - the expressive box holds text the model did not write (the user's own) -> rebuilt from that text;
  - otherwise the session's guidance, when it was made by this model for this image and instruction;
  - otherwise the MLLM thinks first.
The edit's input is the image in the input box; an API call may leave it out to continue from the current turn.
Model calls (think, render, explore) go through `on_gpu` (gpu.py), which is ZeroGPU's `spaces.GPU` with a
duration computed from each request when the `spaces` package is installed, and the plain function otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from editor.core import Editor, EditResult, Guidance
from editor.images import load_image
from editor.loading import CheckpointError, MissingWeightsError
from editor.params import DEFAULT_IMAGE_GUIDANCE, DEFAULT_SIZE, DEFAULT_TEXT_GUIDANCE, EditParams, Resolution
from editor.pipelines.diffusion import fresh_seed
from editor.ui import views
from editor.ui.explore import Cell, Sweep, explore
from editor.ui.gpu import on_gpu, render_seconds, sweep_seconds, think_seconds
from editor.ui.guard import public_message, user_error
from editor.ui.history import History, image_key
from editor.ui.state import AppState, Session, fresh, history_view
from editor.ui.streaming import PREVIEW_EVERY_S, Progress, stream_render

PROGRESS_EVERY_S = 0.25  # the progress line's updates during an edit, at most this often (besides each preview)


def resolve_guidance(
    editor: Editor, session: Session | None, image: Image.Image, instruction: str, expressive: str
) -> Session:
    """The session "Edit" renders from, with its guidance reused, rebuilt from the user's text, or thought anew (see
    the module docstring)."""
    key, text = image_key(image), (expressive or "").strip()
    previous = session.guidance if session is not None else None
    if session is not None and session.matches(editor.name, key, instruction) and text in ("", previous.expressive):
        return session
    if text and (previous is None or previous.source == "user" or text != previous.expressive):
        return Session(editor.name, key, editor.guidance_from_text(image, instruction, text))
    return Session(editor.name, key, editor.think(image, instruction))


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


def make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size) -> EditParams:
    return EditParams(
        steps=as_int(steps, "steps"),
        text_guidance=text_guidance,
        image_guidance=image_guidance,
        seed=None if randomize_seed else as_int(seed, "seed"),
        resolution=Resolution(resize, as_int(size, "size")),
    )


class Handlers:
    """The event functions, bound to the loaded editors (name -> editor). `preview_every`: seconds between step
    previews during an edit, None for none."""

    def __init__(self, editors: Mapping[str, Editor], preview_every: float | None = PREVIEW_EVERY_S) -> None:
        if not editors:
            raise ValueError("the app needs at least one editor")
        self.editors = editors

        def think(model: str, image, instruction: str, expressive: str, session: Session | None) -> Session:
            return resolve_guidance(editors[model], session, image, instruction, expressive)

        def render(model: str, image, guidance: Guidance, params: EditParams) -> Iterator[Progress | EditResult]:
            yield from stream_render(editors[model], image, guidance, params, preview_every)

        def sweep(model: str, image, guidance: Guidance, params: EditParams, grid: Sweep) -> Iterator[Cell]:
            yield from explore(editors[model], image, guidance, params, grid)

        self._think, self._render = on_gpu(think, think_seconds), on_gpu(render, render_seconds)
        self._explore = on_gpu(sweep, sweep_seconds)

    def _inputs(self, model: str, image, state: AppState) -> tuple[str, Image.Image]:
        if model not in self.editors:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(self.editors)}")
        if image is None:
            image = state.history.current_input()
            if image is None:
                raise ValueError("no input image: upload one or pick an example")
            return model, image
        return model, load_image(image)

    def think(self, model: str, image, instruction: str, state: AppState | None):
        """Runs the MLLM: returns its expressive instruction (editable) and raw text, before any pixel changes."""
        with user_errors():
            state = fresh(state)
            model, image = self._inputs(model, image, state)
            state.thought = self._think(model, image, instruction, "", None)
            return state.thought.guidance.expressive, state.thought.guidance.raw_text, state

    def edit(
        self,
        model,
        image,
        instruction,
        expressive,
        steps,
        text_guidance,
        image_guidance,
        seed,
        randomize_seed,
        resize,
        size,
        state: AppState | None,
    ):
        """Edits the image (thinking first unless the expressive instruction is given). While it runs, the used-params
        line under the result is its one progress display (step, elapsed, time left) and the result box shows the
        step previews. Yields (expressive, raw, used-params line, seed, *history_view); the history changes only
        with the final result, so a stopped edit leaves the session as it was."""
        with user_errors():
            state = fresh(state)
            params = make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size)
            model, image = self._inputs(model, image, state)
            parent, skip = state.history.parent_for(image), gr.skip()
            yield *(skip,) * 2, "Thinking…", *(skip,) * 8
            state.thought = self._think(model, image, instruction, expressive, state.thought)
            guidance, started, shown = state.thought.guidance, time.perf_counter(), 0.0
            yield guidance.expressive, guidance.raw_text, "Editing…", *(skip,) * 8
            for item in self._render(model, image, guidance, params):
                if isinstance(item, Progress):
                    now = time.perf_counter()
                    if item.preview is not None or now - shown >= PROGRESS_EVERY_S:
                        shown, preview = now, skip if item.preview is None else _enlarge(item.preview)
                        line = views.progress_text(item.index, item.total, now - started)
                        yield *(skip,) * 2, line, *(skip,) * 2, preview, *(skip,) * 5
                    continue
                self._commit(state, parent, image, item)
                yield guidance.expressive, guidance.raw_text, views.result_text(item), item.seed, *history_view(state)

    def size_plan(self, model: str, image: Image.Image | None, resize: str, size: float) -> str:
        """The size the next edit will use (next to Edit), from the input, the resolution mode and the size."""
        if model not in self.editors or not isinstance(size, int | float):
            return ""
        native = self.editors[model].native_size or DEFAULT_SIZE
        return views.size_plan(model, image, resize, int(size), native)

    @staticmethod
    def used_text(state: AppState | None) -> str:
        """The used-params line of the current turn (after a failed edit, in place of its progress line)."""
        history = fresh(state).history
        return views.result_text(None if history.head is None else history.turns[history.head])

    @staticmethod
    def stopped(state: AppState | None) -> tuple[str, str | None]:
        """Stop pressed: the render was cancelled; the result box shows the session's current output again."""
        return "Stopped: nothing was added to the history.", history_view(fresh(state))[1]

    def compare(
        self, model_a, model_b, image, instruction, steps, text_guidance, image_guidance, seed, randomize_seed,
        resize, size, state: AppState | None,
    ):  # fmt: skip
        """Two models on the same input, instruction, settings and seed, side by side; each thinks for itself.
        Nothing enters the history. Returns (image A, caption A, image B, caption B, seed)."""
        with user_errors():
            state = fresh(state)
            params = make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size)
            params = params if params.seed is not None else replace(params, seed=fresh_seed())
            shown = []
            for model in (model_a, model_b):
                model, source = self._inputs(model, image, state)
                guidance = self._think(model, source, instruction, "", None).guidance
                *_, result = self._render(model, source, guidance, params)
                shown += [result.image, f"**{model}**: {guidance.expressive}"]
            return *shown, params.seed

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

    def undo(self, state: AppState | None):
        """Steps back one turn (the undone turn stays in the history)."""
        with user_errors():
            state = fresh(state)
            state.history.undo()
            return history_view(state)

    def revert(self, turn: float, state: AppState | None):
        """Makes turn #`turn` current: its output becomes the input; editing from there starts a branch."""
        with user_errors():
            state = fresh(state)
            state.history.revert(as_int(turn, "turn"))
            return history_view(state)

    @staticmethod
    def check_upload(image: Image.Image | None, state: AppState | None) -> AppState:
        """An upload arrives: the guard's reader has already read it (a file that is no image is refused there, with
        a message, before this runs); a good one is remembered as what the input box shows."""
        state = fresh(state)
        state.shown = image
        return state

    @staticmethod
    def shown_input(state: AppState | None) -> str | Image.Image | None:
        """What the input box showed before a refused upload (None: it was empty)."""
        return fresh(state).shown

    @staticmethod
    def turn_texts(state: AppState | None) -> tuple[str, str, str]:
        """(instruction, expressive, raw text) of the turn now current, empty at the original image: after an undo
        or a revert the boxes show what made the image on screen, so the next edit is not a silent repeat."""
        history = fresh(state).history
        if history.head is None:
            return "", "", ""
        turn = history.turns[history.head]
        return turn.instruction, turn.expressive, turn.raw_text

    def go_to(self, number: float, state: AppState | None):
        """The visible "Go to turn": turn `number` as the strip numbers it (0: the original, 1: the first turn)."""
        with user_errors():
            state = fresh(state)
            number = as_int(number, "turn")
            if number == 0:
                state.history.go_to_original()
                return history_view(state)
        return self.revert(number - 1, state)

    def revert_selected(self, state: AppState | None, evt: gr.SelectData):
        """A click on the strip: its first picture is the original, then turns 1, 2, ..."""
        return self.go_to(evt.index, state)

    def reset(self, state: AppState | None):
        """Clears the history and starts over from the first image of the current branch."""
        state = fresh(state)
        path = state.history.lineage()
        origin = state.history.turns[path[0]].input if path else state.history.origin
        return history_view(state.restart(History(origin=origin)))

    def export(self, state: AppState | None) -> str:
        """The session as one zip: every image (PNG) and session.json (turns, params, seeds, texts, models)."""
        with user_errors():
            state = fresh(state)
            if not state.history.turns:
                raise ValueError("nothing to export yet: make an edit first")
            return str(state.history.to_archive(state.scratch() / f"session-{time.strftime('%Y%m%d-%H%M')}.zip"))

    def restore(self, archive: str | None, state: AppState | None):
        """Replaces this session by the one in an exported zip."""
        with user_errors():
            state = fresh(state)
            if archive is None:
                raise ValueError("no session file: upload a .zip exported by this app")
            return history_view(state.restart(History.from_archive(Path(archive))))

    def explore(
        self,
        model,
        image,
        instruction,
        expressive,
        steps,
        text_values,
        start,
        stop,
        step,
        seed,
        randomize_seed,
        resize,
        size,
        state: AppState | None,
        progress=gr.Progress(),  # noqa: B008 - Gradio's progress marker
    ):
        """Renders the instruction over a grid of αV (and αX) with one seed; yields (expressive, raw, grid,
        plot, table, state) as cells finish."""
        with user_errors():
            state = fresh(state)
            sweep = Sweep.parse(start, stop, step, text_values or "")
            guidance_scales = DEFAULT_TEXT_GUIDANCE, DEFAULT_IMAGE_GUIDANCE  # each cell sets its own
            params = make_params(steps, *guidance_scales, seed, randomize_seed, resize, size)
            model, image = self._inputs(model, image, state)
            state.cells, state.cells_parent, state.cells_input = [], state.history.parent_for(image), image
            state.thought = self._think(model, image, instruction, expressive, state.thought)
            guidance, total = state.thought.guidance, len(sweep.cells())
            progress((0, total), desc="Exploring", unit="renders")
            for cell in self._explore(model, image, guidance, params, sweep):
                state.cells.append(cell)
                progress((len(state.cells), total), desc="Exploring", unit="renders")
                table = views.sweep_table(state.cells)
                grid = [(c.result.image, views.cell_caption(c)) for c in state.cells]
                yield guidance.expressive, guidance.raw_text, grid, views.sweep_plot(table), table, state

    @staticmethod
    def sweep_columns(start, stop, step, text_values) -> gr.Gallery:
        """The grid's columns for the sweep about to run: one per αV value, so each αX fills one row."""
        try:
            return gr.Gallery(columns=len(Sweep.parse(start, stop, step, text_values or "").image_guidance))
        except ValueError:  # the explorer itself says what is wrong
            return gr.skip()

    def adopt(self, state: AppState | None, evt: gr.SelectData):
        """Clicking a grid cell takes its αX, αV and seed into the controls and shows its result.
        Returns (αX, αV, seed, randomize, output, before/after, used line, cell number)."""
        cell = fresh(state).cells[evt.index]
        result = cell.result
        adopted = f"{views.cell_caption(cell)} · seed {cell.params.seed}"
        gr.Info(f"Adopted cell {evt.index} ({adopted}) into the settings: the next Edit uses them")
        return (
            cell.params.text_guidance,
            cell.params.image_guidance,
            cell.params.seed,
            False,
            result.image,
            (result.source, result.image),
            views.result_text(result),
            evt.index,
        )

    def keep_cell(self, index: float, state: AppState | None):
        """Adds grid cell `index` to the history as a turn, as if it had been edited on its own."""
        with user_errors():
            state = fresh(state)
            index = as_int(index, "cell")
            if not 0 <= index < len(state.cells):
                raise ValueError(f"no explorer cell {index}: run the explorer first (it has {len(state.cells)})")
            result = state.cells[index].result
            self._commit(state, state.cells_parent, state.cells_input, result)
            return views.result_text(result), result.seed, *history_view(state)


def _enlarge(preview: Image.Image) -> Image.Image:
    """The 1/8-size preview, shown at half the edit's size (small PNGs encode fast)."""
    return preview.resize((preview.width * 4, preview.height * 4), Image.Resampling.BILINEAR)
