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

import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from editor.core import Editor, EditResult, Guidance
from editor.images import load_image
from editor.params import DEFAULT_IMAGE_GUIDANCE, DEFAULT_SIZE, DEFAULT_TEXT_GUIDANCE, EditParams, Resolution
from editor.pipelines.diffusion import fresh_seed
from editor.ui import views
from editor.ui.estimate import Timings, branches, estimate, estimate_text, render_device
from editor.ui.explore import Cell, Sweep, explore
from editor.ui.gpu import on_gpu, render_seconds, sweep_seconds, think_seconds
from editor.ui.history import image_key
from editor.ui.session_events import HISTORY, STOPPED, SessionHandlers, as_int, user_errors
from editor.ui.state import AppState, Session, fresh, history_view
from editor.ui.streaming import PREVIEW_EVERY_S, Progress, final_result, stream_render
from editor.ui.wiring import reading, updates

if TYPE_CHECKING:
    from editor.ui.layout import Widgets

PROGRESS_EVERY_S = 0.25  # the progress line's updates during an edit, at most this often (besides each preview)
MAX_VARIATIONS = 4


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
    start = time.perf_counter()
    guidance = editor.think(image, instruction)
    guidance.stats.setdefault("think_s", time.perf_counter() - start)  # MGIE times it itself (the GPU synchronised)
    return Session(editor.name, key, guidance)


def make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size) -> EditParams:
    return EditParams(
        steps=as_int(steps, "steps"),
        text_guidance=text_guidance,
        image_guidance=image_guidance,
        seed=None if randomize_seed else as_int(seed, "seed"),
        resolution=Resolution(resize, as_int(size, "size")),
    )


class Handlers(SessionHandlers):
    """The event functions, bound to the loaded editors (name -> editor) and the layout's widgets: the model events
    here, the history events in `SessionHandlers`. Each returns `{widget: value}` for the widgets it updates (listed
    by its `updates` mark, editor/ui/wiring.py); its parameters are the API's input names. `preview_every`: seconds
    between step previews during an edit, None for none."""

    def __init__(
        self, editors: Mapping[str, Editor], widgets: Widgets, preview_every: float | None = PREVIEW_EVERY_S
    ) -> None:
        if not editors:
            raise ValueError("the app needs at least one editor")
        super().__init__(widgets)
        self.editors = editors

        def think(model: str, image, instruction: str, expressive: str, session: Session | None) -> Session:
            return resolve_guidance(editors[model], session, image, instruction, expressive)

        def render(
            model: str, image, guidance: Guidance, params: EditParams, stop: threading.Event | None = None
        ) -> Iterator[Progress | EditResult]:
            yield from stream_render(editors[model], image, guidance, params, preview_every, stop)

        def sweep(
            model: str, image, guidance: Guidance, params: EditParams, grid: Sweep, stop: threading.Event | None = None
        ) -> Iterator[Cell]:
            yield from explore(editors[model], image, guidance, params, grid, stop)

        self._explore = on_gpu(sweep, sweep_seconds)
        # Timed outside `on_gpu`: on ZeroGPU the call runs in another process, whose changes would be lost.
        self.timings = Timings()  # what the size plan's time estimate is made of (editor/ui/estimate.py)
        thinking, rendering = on_gpu(think, think_seconds), on_gpu(render, render_seconds)

        def timed_think(model: str, *args) -> Session:
            session = thinking(model, *args)
            self.timings.thought(model, session.guidance)
            return session

        def timed_render(model: str, *args) -> Iterator[Progress | EditResult]:
            yield from self.timings.watch(model, rendering(model, *args))

        self._think, self._render = timed_think, timed_render

    def _inputs(self, model: str, image, state: AppState) -> tuple[str, Image.Image]:
        if model not in self.editors:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(self.editors)}")
        if image is None:
            image = state.history.current_input()
            if image is None:
                raise ValueError("no input image: upload one or pick an example")
            return model, image
        return model, load_image(image)

    @updates("expressive", "raw_text", "state")
    def think(self, model: str, image, instruction: str, state: AppState | None) -> dict:
        """Runs the MLLM: returns its expressive instruction (editable) and raw text, before any pixel changes."""
        with user_errors():
            state = fresh(state)
            model, image = self._inputs(model, image, state)
            state.thought = self._think(model, image, instruction, "", None)
            guidance = state.thought.guidance
            return {self.w.expressive: guidance.expressive, self.w.raw_text: guidance.raw_text, self.w.state: state}

    @updates("expressive", "raw_text", "used", "seed", *HISTORY)
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
    ) -> Iterator[dict]:
        """Edits the image (thinking first unless the expressive instruction is given). While it runs, the used-params
        line under the result is its one progress display (step, elapsed, time left) and the result box shows the
        step previews. The history changes only with the final result, so a stopped edit leaves the session as it
        was."""
        w = self.w
        with user_errors():
            state = fresh(state)
            params = make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size)
            model, image = self._inputs(model, image, state)
            parent = state.history.parent_for(image)
            yield {w.used: "Thinking…"}
            state.thought = self._think(model, image, instruction, expressive, state.thought)
            guidance, started, shown = state.thought.guidance, time.perf_counter(), 0.0
            texts = {w.expressive: guidance.expressive, w.raw_text: guidance.raw_text}
            yield texts | {w.used: "Editing…"}
            state.stop = threading.Event()  # Stop sets it: the render ends at its next step, nothing is committed
            for item in self._render(model, image, guidance, params, state.stop):
                if isinstance(item, Progress):
                    now = time.perf_counter()
                    if item.preview is not None or now - shown >= PROGRESS_EVERY_S:
                        shown, line = now, views.progress_text(item.index, item.total, now - started)
                        yield {w.used: line} | ({} if item.preview is None else {w.output: _enlarge(item.preview)})
                    continue
                self._commit(state, parent, image, item)
                yield texts | {w.used: views.result_text(item), w.seed: item.seed} | self._history(state)
            if state.stop.is_set():  # Gradio re-sends a generator's last update when it ends: make it Stop's
                yield {w.used: STOPPED, w.output: history_view(state).output}

    @updates("expressive", "raw_text", "used", "variants", "state")
    def variations(
        self, model, image, instruction, expressive, steps, text_guidance, image_guidance, seed, randomize_seed,
        resize, size, variations, state: AppState | None,
    ) -> Iterator[dict]:  # fmt: skip
        """The same edit with `variations` seeds (2 to 4: the seed, then the next ones), shown side by side with one
        progress line. Nothing enters the history until one is picked (`pick`)."""
        w = self.w
        with user_errors():
            state = fresh(state)
            count = as_int(variations, "variations")
            if not 2 <= count <= MAX_VARIATIONS:
                raise ValueError(f"variations must be 2 to {MAX_VARIATIONS}, got {count}")
            params = make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size)
            first = params.seed if params.seed is not None else fresh_seed()
            model, image = self._inputs(model, image, state)
            parent, hidden = state.history.parent_for(image), gr.update(value=None, visible=False)
            state.variants, state.stop = [], threading.Event()
            yield {w.used: "Thinking…", w.variants: hidden}
            state.thought = self._think(model, image, instruction, expressive, state.thought)
            guidance, started, shown, results = state.thought.guidance, time.perf_counter(), 0.0, []
            texts = {w.expressive: guidance.expressive, w.raw_text: guidance.raw_text}
            yield texts | {w.used: "Editing…"}
            for number in range(count):
                seeded = replace(params, seed=(first + number) % 2**32)
                for item in self._render(model, image, guidance, seeded, state.stop):
                    if isinstance(item, EditResult):
                        results.append(item)
                    elif (now := time.perf_counter()) - shown >= PROGRESS_EVERY_S:
                        done, doing = number * params.steps + item.index, f"Variation {number + 1} of {count}"
                        shown = now
                        yield {w.used: views.progress_text(done, count * params.steps, now - started, doing)}
                if state.stop.is_set():  # stopped: no variation is kept (this is the update Gradio re-sends)
                    yield {w.used: STOPPED, w.variants: gr.update(value=None, visible=False)}
                    return
                pictures = [(r.image, f"#{i + 1} · seed {r.seed}") for i, r in enumerate(results)]
                yield {w.variants: gr.update(value=pictures, visible=True)}
            state.variants, state.variants_parent, state.variants_input = results, parent, image
            line = f"**{count} variations** (seeds {first}–{results[-1].seed}): click one to keep it as the turn."
            yield texts | {w.used: line, w.variants: gr.update(value=pictures, visible=True), w.state: state}

    @updates("used", "seed", "variants", *HISTORY)
    @reading(index="variant")
    def pick(self, index: float, state: AppState | None) -> dict:
        """Makes variation `index` (0: the first) the next turn; the others are dropped."""
        with user_errors():
            state = fresh(state)
            index = as_int(index, "index")
            if not 0 <= index < len(state.variants):
                raise ValueError(f"no variation {index}: edit with variations first (there are {len(state.variants)})")
            result = state.variants[index]
            self._commit(state, state.variants_parent, state.variants_input, result)
            state.variants = []
            hidden = gr.update(value=None, visible=False)
            return {self.w.used: views.result_text(result), self.w.seed: result.seed, self.w.variants: hidden} | (
                self._history(state)
            )

    @updates("used", "seed", "variants", *HISTORY)
    def pick_selected(self, state: AppState | None, evt: gr.SelectData) -> dict:
        """A click on a variation keeps it."""
        return self.pick(evt.index, state)

    @updates("steps", "text_guidance", "image_guidance", "size")
    def model_settings(self, model: str) -> dict:
        """The model's own steps, guidance and size, read from the editor now (a start-up's stand-in reports the
        model's once it is loaded, or the demo model's after a fallback); nothing for a value that is not a name."""
        if not isinstance(model, str) or model not in self.editors:
            return {}
        editor, w = self.editors[model], self.w
        own = editor.defaults
        return {w.steps: own.steps, w.text_guidance: own.text_guidance, w.image_guidance: own.image_guidance,
                w.size: editor.native_size or DEFAULT_SIZE}  # fmt: skip

    @updates("steps", "text_guidance", "image_guidance", "size")
    def follow_model(self, model: str, steps: float, text_guidance: float, image_guidance: float, size: float) -> dict:
        """During a start-up: the model's own settings once it is loaded, on the sliders that still show the value
        the page was built with (the stand-in's); a slider the user moved keeps the user's value."""
        shown = {self.w.steps: steps, self.w.text_guidance: text_guidance, self.w.image_guidance: image_guidance,
                 self.w.size: size}  # fmt: skip
        own = self.model_settings(model).items()
        return {slider: v for slider, v in own if shown[slider] == slider.value and v != slider.value}

    @updates("plan")
    def size_plan(
        self, model: str, image: Image.Image | None, resize: str, size: float, steps: float, text_guidance: float,
        image_guidance: float,
    ) -> dict:  # fmt: skip
        """The size the next edit will use (next to Edit), from the input, the resolution mode and the size; when
        the edit will be long (minutes on a CPU), how long, estimated from the steps, guidance and measured speed."""
        return {self.w.plan: self.plan_text(model, image, resize, size, steps, text_guidance, image_guidance)}

    def plan_text(
        self, model: str, image: Image.Image | None, resize: str, size: float, steps: float | None = None,
        text_guidance: float = DEFAULT_TEXT_GUIDANCE, image_guidance: float = DEFAULT_IMAGE_GUIDANCE,
    ) -> str:  # fmt: skip
        numbers = (size, steps or 1, text_guidance, image_guidance)
        if model not in self.editors or not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            return ""
        editor = self.editors[model]
        plan = views.size_plan(model, image, resize, int(size), editor.native_size or DEFAULT_SIZE)
        if not steps or steps < 1:
            return plan
        planned = views.planned_size(image, resize, int(size))
        found = estimate(self.timings, model, render_device(editor), int(steps), planned,
                         branches(text_guidance, image_guidance))  # fmt: skip
        note = estimate_text(found)
        return f"{plan}. {note}" if note else plan

    @updates("image_a", "caption_a", "image_b", "caption_b", "seed")
    def compare(
        self, model_a, model_b, image, instruction, steps, text_guidance, image_guidance, seed, randomize_seed,
        resize, size, state: AppState | None,
    ) -> dict:  # fmt: skip
        """Two models on the same input, instruction, settings and seed, side by side; each thinks for itself.
        Nothing enters the history."""
        with user_errors():
            state = fresh(state)
            params = make_params(steps, text_guidance, image_guidance, seed, randomize_seed, resize, size)
            params = params if params.seed is not None else replace(params, seed=fresh_seed())
            shown = {self.w.seed: params.seed}
            state.stop = threading.Event()  # the compare tab's Stop sets it: the render ends at its next step
            for model, picture, caption in ((model_a, self.w.image_a, self.w.caption_a),
                                            (model_b, self.w.image_b, self.w.caption_b)):  # fmt: skip
                model, source = self._inputs(model, image, state)
                guidance = self._think(model, source, instruction, "", None).guidance
                result = final_result(self._render(model, source, guidance, params, state.stop))
                if result is None:  # stopped: what finished is shown, nothing else runs
                    return shown
                shown |= {picture: result.image, caption: f"**{model}**: {guidance.expressive}"}
            return shown

    @updates("expressive", "raw_text", "grid", "plot", "table", "state")
    @reading(text_values="sweep_text", start="sweep_start", stop="sweep_stop", step="sweep_step")
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
    ) -> Iterator[dict]:
        """Renders the instruction over a grid of αV (and αX) with one seed; yields the grid, plot and table as
        cells finish."""
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
            state.stop = threading.Event()  # the explorer's Stop sets it: the cell ends at its next step, no other
            for cell in self._explore(model, image, guidance, params, sweep, state.stop):
                state.cells.append(cell)
                progress((len(state.cells), total), desc="Exploring", unit="renders")
                table, w = views.sweep_table(state.cells), self.w
                grid = [(c.result.image, views.cell_caption(c)) for c in state.cells]
                yield {w.expressive: guidance.expressive, w.raw_text: guidance.raw_text, w.grid: grid,
                       w.plot: views.sweep_plot(table), w.table: table, w.state: state}  # fmt: skip

    @updates("grid")
    @reading(text_values="sweep_text", start="sweep_start", stop="sweep_stop", step="sweep_step")
    def sweep_columns(self, start, stop, step, text_values) -> dict:
        """The grid's columns for the sweep about to run: one per αV value, so each αX fills one row."""
        try:
            columns = len(Sweep.parse(start, stop, step, text_values or "").image_guidance)
        except ValueError:  # the explorer itself says what is wrong
            return {}
        return {self.w.grid: gr.Gallery(columns=columns)}

    @updates("text_guidance", "image_guidance", "seed", "randomize_seed", "output", "compare", "used", "cell")
    def adopt(self, state: AppState | None, evt: gr.SelectData) -> dict:
        """Clicking a grid cell takes its αX, αV and seed into the controls and shows its result."""
        cell, w = fresh(state).cells[evt.index], self.w
        result = cell.result
        adopted = f"{views.cell_caption(cell)} · seed {cell.params.seed}"
        gr.Info(f"Adopted cell {evt.index} ({adopted}) into the settings: the next Edit uses them")
        return {
            w.text_guidance: cell.params.text_guidance,
            w.image_guidance: cell.params.image_guidance,
            w.seed: cell.params.seed,
            w.randomize_seed: False,
            w.output: result.image,
            w.compare: (result.source, result.image),
            w.used: views.result_text(result),
            w.cell: evt.index,
        }

    @updates("used", "seed", *HISTORY)
    @reading(index="cell")
    def keep_cell(self, index: float, state: AppState | None) -> dict:
        """Adds grid cell `index` to the history as a turn, as if it had been edited on its own."""
        with user_errors():
            state = fresh(state)
            index = as_int(index, "cell")
            if not 0 <= index < len(state.cells):
                raise ValueError(f"no explorer cell {index}: run the explorer first (it has {len(state.cells)})")
            result = state.cells[index].result
            self._commit(state, state.cells_parent, state.cells_input, result)
            return {self.w.used: views.result_text(result), self.w.seed: result.seed} | self._history(state)


def _enlarge(preview: Image.Image) -> Image.Image:
    """The 1/8-size preview, shown at half the edit's size (small PNGs encode fast)."""
    return preview.resize((preview.width * 4, preview.height * 4), Image.Resampling.BILINEAR)
