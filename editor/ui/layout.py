"""The Blocks layout: every widget, built once into the `Widgets` dataclass, which the handlers (handlers.py) and the
event wiring (wiring.py) use by name. Nothing here loads or launches.

API endpoints (gradio_client: `Client(url).predict(..., api_name="/edit")`; each client has its own session):
  /think /edit /undo /revert /reset /export /restore /explore /keep /compare.
Launch it with `css=CSS` (below). Model events share one concurrency slot, so one model call runs at a time and the
queue shows users their place; history events are instant and never wait behind an edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from editor.core import Editor
from editor.params import DEFAULT_SEED, DEFAULT_SIZE, MAX_GUIDANCE, MAX_SIZE
from editor.ui import views
from editor.ui.examples import EXAMPLES_DIR, load_examples
from editor.ui.explore import MAX_CELLS
from editor.ui.guard import guard_inputs, upload_reader
from editor.ui.handlers import Handlers
from editor.ui.history import MAX_TURNS
from editor.ui.state import remove_files
from editor.ui.streaming import PREVIEW_EVERY_S
from editor.ui.wiring import wire

MAX_UI_STEPS = 150
MAX_UI_SIZE = 1024
SESSION_TTL_S = 3 * 3600  # a session's state (history, images) is dropped after 3 h without an event
CACHE_SWEEP = (1800, SESSION_TTL_S)  # every 30 min, Gradio deletes its cached files older than a session lives
MAX_UI_SEED = 2**32 - 1  # random seeds are drawn below 2**32 (editor.pipelines.diffusion.fresh_seed)
# Launch with `css=CSS` (app.py does). A user error is one toast and leaves every pane as it was: Gradio would also
# cover each output with a red "Error" badge, hiding what it showed; that cover is hidden (tracebacks stay in the log).
# Input, output and before/after show their image at one size (IMAGE_PX high, in boxes VIEW_PX high: the input's box
# also holds its upload bar); a small image is enlarged to fill it without smoothing (image-rendering: pixelated acts
# only when enlarging), so the pixels seen are the pixels the model made.
VIEW_PX, IMAGE_PX = 400, 340
# The history strip: square thumbnails (editor/ui/views.py draws them letterboxed) in one row that scrolls; the
# current turn is outlined (its caption starts with ▶). The explorer's grid uses the same size, one row per αX, and
# grows to show every row.
STRIP_PX = 150
CSS = f"""
[data-testid="status-tracker"]:has(span.error) {{ display: none !important; }}
#input-image img, #output-image img, #compare img {{
  width: 100%; height: {IMAGE_PX}px !important; object-fit: contain; image-rendering: pixelated;
}}
#history .grid-container {{
  grid-template-columns: none !important; grid-auto-flow: column; grid-auto-columns: {STRIP_PX}px;
  overflow-x: auto; justify-content: start;
}}
#history .thumbnail-item {{ width: {STRIP_PX}px; height: {STRIP_PX}px; }}
#history .thumbnail-item:has(img[alt^="▶"]) {{ outline: 3px solid var(--color-accent); }}
#history .caption-label {{ white-space: normal; max-width: 100%; line-height: 1.2; }}
#sweep .grid-wrap {{ height: auto !important; max-height: none !important; }}
#sweep .grid-container {{ grid-template-columns: repeat(var(--grid-cols), {STRIP_PX}px) !important; }}
#sweep .thumbnail-item {{ width: {STRIP_PX}px; height: {STRIP_PX}px; }}
"""
TIPS = (
    "**Too little change?** Lower αV or raise αX. **Too much?** The reverse. Other seeds and more concrete "
    "wording help too; the trade-off explorer sweeps αV for you."
)


@dataclass(frozen=True)
class Widgets:
    """Every component the events read or update, by name. A handler's parameters are named after the fields it
    reads (wiring.py finds them by name) and it returns `{widgets.field: value}` for what it updates."""

    state: gr.State  # the session's AppState (editor/ui/state.py)
    # the main flow
    model: gr.Dropdown
    image: gr.Image
    instruction: gr.Textbox
    think_button: gr.Button
    edit_button: gr.Button
    stop_button: gr.Button
    plan: gr.Markdown  # the size the next edit runs at
    expressive: gr.Textbox
    raw_text: gr.Textbox
    output: gr.Image
    output_size: gr.Markdown  # the output's real resolution
    used: gr.Markdown  # the used-params line; an edit's progress line while it runs
    compare: gr.ImageSlider  # before / after
    # settings
    steps: gr.Slider
    text_guidance: gr.Slider
    image_guidance: gr.Slider
    seed: gr.Number
    randomize_seed: gr.Checkbox
    resize: gr.Radio
    size: gr.Slider
    # history
    status: gr.Markdown
    gallery: gr.Gallery  # the history strip
    details: gr.Markdown
    undo_button: gr.Button
    turn: gr.Number  # "Go to turn" as the strip numbers turns (0: the original)
    revert_button: gr.Button
    turn_id: gr.Number  # hidden: /revert's turn id (0: the first turn)
    revert_api: gr.Button
    reset_button: gr.Button
    export_button: gr.Button
    restore_button: gr.UploadButton
    archive: gr.DownloadButton
    # the trade-off explorer
    sweep_start: gr.Number
    sweep_stop: gr.Number
    sweep_step: gr.Number
    sweep_text: gr.Textbox
    explore_button: gr.Button
    explore_stop: gr.Button
    grid: gr.Gallery
    plot: gr.ScatterPlot
    table: gr.Dataframe
    cell: gr.Number
    keep_button: gr.Button
    # model comparison
    model_a: gr.Dropdown
    model_b: gr.Dropdown
    compare_button: gr.Button
    compare_stop: gr.Button
    image_a: gr.Image
    caption_a: gr.Markdown
    image_b: gr.Image
    caption_b: gr.Markdown


@dataclass(frozen=True)
class UI:
    """The built app: its Blocks, its widgets and the handlers bound to them (tests drive the handlers)."""

    demo: gr.Blocks
    widgets: Widgets
    handlers: Handlers


def build_demo(
    editors: Mapping[str, Editor],
    notice: str | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    preview_every: float | None = PREVIEW_EVERY_S,
) -> gr.Blocks:
    """The app's Blocks for `editors` (name -> loaded editor). `notice` is shown as a banner; `examples_dir=None`
    leaves the examples out; `preview_every` is the time between step previews (None: no previews)."""
    return build_ui(editors, notice, examples_dir, preview_every).demo


def build_ui(
    editors: Mapping[str, Editor],
    notice: str | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    preview_every: float | None = PREVIEW_EVERY_S,
) -> UI:
    """`build_demo`, with the widgets and handlers it wired."""
    if not editors:
        raise ValueError("the app needs at least one editor")
    with gr.Blocks(
        title="Instruction-based image editor (MGIE)",
        analytics_enabled=False,
        fill_width=True,
        delete_cache=CACHE_SWEEP,
    ) as demo:
        widgets = lay_out(editors, notice, examples_dir)
        handlers = Handlers(editors, widgets, preview_every)
        wire(widgets, handlers, {name: editor.defaults for name, editor in editors.items()}, native_sizes(editors))
    # Every input is checked first; the handlers get the upload read by editor.images (checked, downscaled).
    guard_inputs(demo, readers={widgets.image: upload_reader(max_side=MAX_SIZE)})
    return UI(demo, widgets, handlers)


def native_sizes(editors: Mapping[str, Editor]) -> dict[str, int]:
    """Each model's own size (the size slider's default for it)."""
    return {name: editor.native_size or DEFAULT_SIZE for name, editor in editors.items()}


def lay_out(editors: Mapping[str, Editor], notice: str | None, examples_dir: Path | None) -> Widgets:
    """Places every component (inside a Blocks context) and returns them by name."""
    sizes = native_sizes(editors)
    first = next(iter(editors))
    defaults = editors[first].defaults  # the first model's own steps and guidance
    if notice:
        gr.Markdown(f"**Note:** {notice}", elem_id="notice")
    gr.Markdown(
        "## Instruction-based image editing guided by a multimodal LLM\n"
        "Type a terse instruction. **Think** shows how the model understands it (rewrite it if you like); "
        "**Edit** renders it. Each result becomes the next input; the history keeps every turn."
    )
    # An AppState per browser session, made on first use; dropped (files too) after SESSION_TTL_S idle.
    state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=remove_files)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            model = gr.Dropdown(list(editors), value=next(iter(editors)), label="Model", visible=len(editors) > 1)
            image = gr.Image(
                type="filepath", image_mode=None, format="png", label="Input image", height=VIEW_PX,
                elem_id="input-image",
            )  # fmt: skip
            instruction = gr.Textbox(label="Instruction", placeholder="make the sky blue", max_lines=2)
            with gr.Row():
                think_button = gr.Button("Think")
                edit_button = gr.Button("Edit", variant="primary")
                stop_button = gr.Button("Stop", variant="stop", min_width=80, scale=0)
            plan = gr.Markdown(  # the size the next edit runs at
                views.size_plan(first, None, defaults.resolution.mode, sizes[first], sizes[first]), elem_id="edit-size"
            )
            expressive = gr.Textbox(
                value="",
                label="Expressive instruction",
                lines=3,
                info="What the MLLM made of the instruction. Rewrite it to steer the edit.",
            )
            with gr.Accordion("Raw MLLM output", open=False):
                raw_text = gr.Textbox(show_label=False, lines=3, interactive=False)
        with gr.Column(scale=1):
            output = gr.Image(
                type="filepath", format="png", label="Edited image", interactive=False, height=VIEW_PX,
                elem_id="output-image",
            )  # fmt: skip
            output_size = gr.Markdown(elem_id="output-size")  # the output's real resolution
            used = gr.Markdown(elem_id="used")
            compare = gr.ImageSlider(
                type="filepath", format="png", label="Before / after", interactive=False, height=VIEW_PX,
                elem_id="compare",
            )  # fmt: skip
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            steps = gr.Slider(1, MAX_UI_STEPS, value=defaults.steps, step=1, precision=0, label="Steps")
            text_guidance = gr.Slider(
                1.0,
                15.0,
                value=defaults.text_guidance,
                step=0.5,
                label="Text guidance αX",
                info="Higher follows the instruction harder. At 1 all guidance is off (αV is then ignored).",
            )
            image_guidance = gr.Slider(
                1.0,
                5.0,
                value=defaults.image_guidance,
                step=0.1,
                label="Image guidance αV",
                info="Higher keeps more of the input; lower lets the edit change more.",
            )
        with gr.Row():
            seed = gr.Number(
                value=DEFAULT_SEED, precision=0, minimum=0, maximum=MAX_UI_SEED, label="Seed (shows the one used)"
            )
            randomize_seed = gr.Checkbox(value=False, label="Randomize seed")
            resize = gr.Radio(
                [("keep aspect ratio", "keep_aspect"), ("centre crop (reference demo)", "center_crop")],
                value=defaults.resolution.mode,
                label="Resolution",
            )
            size = gr.Slider(
                64, MAX_UI_SIZE, value=sizes[model.value], step=8, precision=0, label="Size (long side)",
                info="Defaults to the size the selected model was trained at.",
            )  # fmt: skip
        gr.Markdown(TIPS)
    with gr.Tabs():
        with gr.Tab("History"):
            status = gr.Markdown("No edits yet", elem_id="status")
            gallery = gr.Gallery(
                label="History", columns=8, rows=1, height=230, allow_preview=False, object_fit="contain",
                format="png", elem_id="history",
            )  # fmt: skip
            with gr.Row():
                undo_button = gr.Button("Undo")
                turn = gr.Number(
                    value=0, precision=0, minimum=0, maximum=MAX_TURNS, label="Turn (0: original)", min_width=80
                )
                revert_button = gr.Button("Go to turn")
                # /revert keeps its API (a turn id, 0 for the first turn) on a hidden twin of the box
                turn_id = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_TURNS - 1, visible=False)
                revert_api = gr.Button(visible=False)
                reset_button = gr.Button("Reset", variant="stop")
                export_button = gr.Button("Export session")
                restore_button = gr.UploadButton("Restore session", file_types=[".zip"])
            details = gr.Markdown(elem_id="turn-details")
            archive = gr.DownloadButton(visible=False, elem_id="archive")  # shown by Export, named after its file
        with gr.Tab("Trade-off explorer"):
            gr.Markdown("Same instruction and seed over a grid of αV (and αX). Click a cell to adopt its values.")
            with gr.Row():
                sweep_start = gr.Number(value=1.0, minimum=0, maximum=MAX_GUIDANCE, label="αV from")
                sweep_stop = gr.Number(value=2.2, minimum=0, maximum=MAX_GUIDANCE, label="αV to")
                sweep_step = gr.Number(value=0.2, minimum=0.01, maximum=MAX_GUIDANCE, label="αV step")
                sweep_text = gr.Textbox(value="7.5", label="αX values (comma-separated)")
                explore_button = gr.Button("Explore", variant="primary")
                explore_stop = gr.Button("Stop", variant="stop", min_width=80, scale=0)
            grid = gr.Gallery(
                label="Sweep", columns=7, height="auto", allow_preview=False, format="png", elem_id="sweep"
            )  # columns: one per αV value, set by each sweep
            with gr.Row():
                plot = gr.ScatterPlot(label="Edit strength vs consistency", height=300)
                table = gr.Dataframe(label="Metrics vs the input", interactive=False)
            with gr.Row():
                cell = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_CELLS - 1, label="Cell #")
                keep_button = gr.Button("Keep this cell as a turn")
        with gr.Tab("Compare models", visible=len(editors) > 1):
            gr.Markdown(
                "Two models on the same input, instruction, settings and seed; each writes its own expressive "
                "instruction. Nothing is added to the history. Load more models with `python app.py --also NAME`."
            )
            with gr.Row():
                names = list(editors)
                model_a = gr.Dropdown(names, value=names[0], label="Model A")
                model_b = gr.Dropdown(names, value=names[-1], label="Model B")
                compare_button = gr.Button("Compare", variant="primary")
                compare_stop = gr.Button("Stop", variant="stop", min_width=80, scale=0)
            with gr.Row():
                with gr.Column():
                    image_a = gr.Image(type="pil", format="png", label="A", interactive=False, height=360)
                    caption_a = gr.Markdown()
                with gr.Column():
                    image_b = gr.Image(type="pil", format="png", label="B", interactive=False, height=360)
                    caption_b = gr.Markdown()
    if examples_dir is not None:
        gr.Examples([[e["image"], e["instruction"]] for e in load_examples(examples_dir)], [image, instruction])

    return Widgets(
        state=state, model=model, image=image, instruction=instruction, think_button=think_button,
        edit_button=edit_button, stop_button=stop_button, plan=plan, expressive=expressive, raw_text=raw_text,
        output=output, output_size=output_size, used=used, compare=compare, steps=steps, text_guidance=text_guidance,
        image_guidance=image_guidance, seed=seed, randomize_seed=randomize_seed, resize=resize, size=size,
        status=status, gallery=gallery, details=details, undo_button=undo_button, turn=turn,
        revert_button=revert_button, turn_id=turn_id, revert_api=revert_api, reset_button=reset_button,
        export_button=export_button, restore_button=restore_button, archive=archive, sweep_start=sweep_start,
        sweep_stop=sweep_stop, sweep_step=sweep_step, sweep_text=sweep_text, explore_button=explore_button,
        explore_stop=explore_stop, grid=grid, plot=plot, table=table, cell=cell, keep_button=keep_button,
        model_a=model_a, model_b=model_b, compare_button=compare_button, compare_stop=compare_stop,
        image_a=image_a, caption_a=caption_a, image_b=image_b, caption_b=caption_b,
    )  # fmt: skip
