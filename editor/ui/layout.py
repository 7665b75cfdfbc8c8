"""The Blocks layout: every widget, built once into the `Widgets` dataclass, which the handlers (handlers.py) and the
event wiring (wiring.py) use by name. Nothing here loads or launches.

API endpoints (gradio_client: `Client(url).predict(..., api_name="/edit")`; each client has its own session):
  /think /edit /undo /revert /reset /export /restore /explore /keep /compare.
Launch it with `css=CSS` (below). Model events share one concurrency slot, so one model call runs at a time and the
queue shows users their place; history events are instant and never wait behind an edit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.events import Dependency

from editor.core import Editor
from editor.params import DEFAULT_SEED, DEFAULT_SIZE, MAX_GUIDANCE, MAX_SIZE
from editor.ui import views
from editor.ui.banner import live_banner
from editor.ui.examples import EXAMPLES_DIR, load_examples
from editor.ui.explore import MAX_CELLS
from editor.ui.guard import guard_inputs, upload_reader
from editor.ui.handlers import Handlers
from editor.ui.history import MAX_TURNS
from editor.ui.state import remove_files, serve_thumbnails
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
VIEW_PX, IMAGE_PX = 290, 230
# The history strip: square thumbnails (editor/ui/views.py draws them letterboxed) in one row that scrolls, each
# captioned; the current turn is outlined (its caption starts with ▶). The explorer's grid uses the same size, one
# row per αX, and grows to show every row.
STRIP_PX = 100
VARIANTS_PX = 200  # the variations' row, shown only while there are variations to pick from
VARIATIONS = [1, 2, 3, 4]  # seeds per edit: 1 is a plain edit
EXAMPLES_PER_PAGE = 8
CSS = f"""
[data-testid="status-tracker"]:has(span.error) {{ display: none !important; }}
#input-image img, #output-image img, #compare img {{
  width: 100%; height: {IMAGE_PX}px !important; object-fit: contain; image-rendering: pixelated;
}}
#history .strip {{ display: flex; align-items: flex-start; gap: 8px; overflow-x: auto; padding: 4px; }}
#history .thumb {{
  flex: none; width: {STRIP_PX}px; padding: 0; border: none; background: none; cursor: pointer; text-align: center;
}}
#history .thumb img {{
  display: block; margin: 0; width: {STRIP_PX}px; height: {STRIP_PX}px; object-fit: contain;
  image-rendering: pixelated; border: 1px solid var(--border-color-primary);
}}
#history .thumb:has(img[alt^="▶"]) img {{ outline: 3px solid var(--color-accent); }}
#history .thumb span {{
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
  font-size: var(--text-sm); line-height: 1.2;
}}
#example-list img {{ max-height: 44px; width: auto; image-rendering: pixelated; }}
#example-list td {{ padding-top: 2px; padding-bottom: 2px; }}
#sweep .grid-wrap {{ height: auto !important; max-height: none !important; }}
#sweep .grid-container {{ grid-template-columns: repeat(var(--grid-cols), {STRIP_PX}px) !important; }}
#sweep .thumbnail-item {{ width: {STRIP_PX}px; height: {STRIP_PX}px; }}
"""
# The strip's items ({src, caption}, editor/ui/state.py) as buttons; a click is the strip's `select` event (index).
STRIP_HTML = (
    '<div class="strip">{{#each value}}<button type="button" class="thumb" data-index="{{@index}}">'
    '<img src="{{this.src}}" alt="{{this.caption}}"><span>{{this.caption}}</span></button>{{/each}}</div>'
)
STRIP_CLICK = """element.addEventListener('click', (event) => {
  const item = event.target.closest('button[data-index]');
  if (item) trigger('select', {index: Number(item.dataset.index), value: item.querySelector('img').alt});
});"""
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
    variations: gr.Dropdown  # how many seeds an edit tries (1: a plain edit)
    vary_button: gr.Button  # "Edit variations", in place of Edit when variations > 1
    variants: gr.Gallery  # the variations, side by side, until one is picked
    variant: gr.Number  # hidden: /pick's variation number
    pick_api: gr.Button
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
    strip: gr.HTML  # the history strip (editor/ui/state.py says why it is not a gr.Gallery)
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
    startup: Dependency | None  # the banner's poll of a start-up (banner.py); None without one


@dataclass(frozen=True)
class UI:
    """The built app: its Blocks, its widgets and the handlers bound to them (tests drive the handlers)."""

    demo: gr.Blocks
    widgets: Widgets
    handlers: Handlers


def build_demo(
    editors: Mapping[str, Editor],
    notice: str | Callable[[], tuple[str, bool]] | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    preview_every: float | None = PREVIEW_EVERY_S,
) -> gr.Blocks:
    """The app's Blocks for `editors` (name -> loaded editor). `notice` is shown as a banner; `examples_dir=None`
    leaves the examples out; `preview_every` is the time between step previews (None: no previews)."""
    return build_ui(editors, notice, examples_dir, preview_every).demo


def build_ui(
    editors: Mapping[str, Editor],
    notice: str | Callable[[], tuple[str, bool]] | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    preview_every: float | None = PREVIEW_EVERY_S,
) -> UI:
    """`build_demo`, with the widgets and handlers it wired."""
    if not editors:
        raise ValueError("the app needs at least one editor")
    serve_thumbnails()
    with gr.Blocks(
        title="Instruction-based image editor (MGIE)",
        analytics_enabled=False,
        fill_width=True,
        delete_cache=CACHE_SWEEP,
    ) as demo:
        widgets = lay_out(editors, notice, examples_dir)
        handlers = Handlers(editors, widgets, preview_every)
        wire(widgets, handlers)
    # Every input is checked first; the handlers get the upload read by editor.images (checked, downscaled).
    guard_inputs(demo, readers={widgets.image: upload_reader(max_side=MAX_SIZE)})
    return UI(demo, widgets, handlers)


def native_sizes(editors: Mapping[str, Editor]) -> dict[str, int]:
    """Each model's own size (the size slider's default for it)."""
    return {name: editor.native_size or DEFAULT_SIZE for name, editor in editors.items()}


def lay_out(
    editors: Mapping[str, Editor], notice: str | Callable[[], tuple[str, bool]] | None, examples_dir: Path | None
) -> Widgets:
    """Places every component (inside a Blocks context) and returns them by name."""
    sizes = native_sizes(editors)
    first = next(iter(editors))
    defaults = editors[first].defaults  # the first model's own steps and guidance
    # An AppState per browser session, made on first use; dropped (files too) after SESSION_TTL_S idle.
    state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=remove_files)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=720):  # the main flow: images, instruction, Think/Edit, history
            with gr.Row(equal_height=False):
                image = gr.Image(
                    type="filepath", image_mode=None, format="png", label="Input image", height=VIEW_PX,
                    elem_id="input-image",
                )  # fmt: skip
                with gr.Column(min_width=160):
                    output = gr.Image(
                        type="filepath", format="png", label="Edited image", interactive=False, height=VIEW_PX,
                        elem_id="output-image",
                    )  # fmt: skip
                    output_size = gr.Markdown(elem_id="output-size")  # the output's real resolution
                compare = gr.ImageSlider(
                    type="filepath", format="png", label="Before / after", interactive=False, height=VIEW_PX,
                    elem_id="compare",
                )  # fmt: skip
            variants = gr.Gallery(
                label="Variations: click one to keep it as the turn", visible=False, columns=4, height=VARIANTS_PX,
                allow_preview=False, object_fit="contain", format="png", elem_id="variations",
            )  # fmt: skip
            with gr.Row(visible=False):  # /pick keeps a variation by its number, as a click on one does
                variant = gr.Number(value=0, precision=0, minimum=0, maximum=len(VARIATIONS) - 1)
                pick_api = gr.Button()
            used = gr.Markdown(elem_id="used")  # the used-params line; an edit's progress line while it runs
            with gr.Row(equal_height=True):
                instruction = gr.Textbox(
                    label="Instruction", placeholder="make the sky blue", lines=2, max_lines=2, scale=2
                )
                expressive = gr.Textbox(
                    value="", label="Expressive instruction", lines=2, max_lines=4, scale=3,
                    placeholder="Think shows what the MLLM makes of the instruction; rewrite it to steer the edit",
                )  # fmt: skip
            with gr.Row(equal_height=True):
                think_button = gr.Button("Think", min_width=80)
                edit_button = gr.Button("Edit", variant="primary", min_width=80)
                vary_button = gr.Button("Edit variations", variant="primary", min_width=80, visible=False)
                stop_button = gr.Button("Stop", variant="stop", min_width=70, scale=0)
                variations = gr.Dropdown(
                    [(f"Variations: {n}", n) for n in VARIATIONS], value=1, label="Variations", min_width=140, scale=0,
                    container=False,
                    elem_id="variations-count",
                )  # fmt: skip
                plan = gr.Markdown(  # the size the next edit runs at
                    views.size_plan(first, None, defaults.resolution.mode, sizes[first], sizes[first]),
                    elem_id="edit-size",
                )
            with gr.Tabs():
                with gr.Tab("History"):
                    with gr.Row(equal_height=True):
                        status = gr.Markdown("No edits yet", elem_id="status")
                        undo_button = gr.Button("Undo", size="sm", min_width=60, scale=0)
                        turn = gr.Number(
                            value=0, precision=0, minimum=0, maximum=MAX_TURNS, label="Turn (0: original)",
                            min_width=80, scale=0, container=False,
                        )  # fmt: skip
                        revert_button = gr.Button("Go to turn", size="sm", min_width=90, scale=0)
                        # /revert keeps its API (a turn id, 0 for the first turn) on a hidden twin of the box
                        turn_id = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_TURNS - 1, visible=False)
                        revert_api = gr.Button(visible=False)
                        reset_button = gr.Button("Reset", variant="stop", size="sm", min_width=60, scale=0)
                        export_button = gr.Button("Export session", size="sm", min_width=120, scale=0)
                        restore_button = gr.UploadButton(
                            "Restore session", file_types=[".zip"], size="sm", min_width=130, scale=0
                        )
                    strip = gr.HTML(
                        [], html_template=STRIP_HTML, js_on_load=STRIP_CLICK, padding=False, elem_id="history"
                    )
                    archive = gr.DownloadButton(visible=False, elem_id="archive")  # shown by Export, names its file
                    details = gr.Markdown(elem_id="turn-details")
                with gr.Tab("Trade-off explorer"):
                    gr.Markdown(
                        "Same instruction and seed over a grid of αV (and αX). Click a cell to adopt its values."
                    )
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
                        "Two models on the same input, instruction, settings and seed; each writes its own "
                        "expressive instruction. Nothing is added to the history. Load more models with "
                        "`python app.py --also NAME`."
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
        with gr.Column(scale=1, min_width=300):  # the side panel: what a first-time user needs, settings folded
            gr.Markdown("### Instruction-based image editing guided by a multimodal LLM", elem_id="title")
            startup = live_banner(notice) if callable(notice) else None  # a start-up's download and load
            if notice and not callable(notice):
                gr.Markdown(f"**Note:** {notice}", elem_id="notice")
            model = gr.Dropdown(list(editors), value=first, label="Model", visible=len(editors) > 1)
            with gr.Accordion("Settings", open=False):
                steps = gr.Slider(1, MAX_UI_STEPS, value=defaults.steps, step=1, precision=0, label="Steps")
                text_guidance = gr.Slider(
                    1.0, 15.0, value=defaults.text_guidance, step=0.5, label="Text guidance αX",
                    info="Higher follows the instruction harder. At 1 all guidance is off (αV is then ignored).",
                )  # fmt: skip
                image_guidance = gr.Slider(
                    1.0, 5.0, value=defaults.image_guidance, step=0.1, label="Image guidance αV",
                    info="Higher keeps more of the input; lower lets the edit change more.",
                )  # fmt: skip
                with gr.Row():
                    seed = gr.Number(
                        value=DEFAULT_SEED,
                        precision=0,
                        minimum=0,
                        maximum=MAX_UI_SEED,
                        label="Seed (shows the one used)",
                    )
                    randomize_seed = gr.Checkbox(value=False, label="Randomize seed")
                resize = gr.Radio(
                    [("keep aspect ratio", "keep_aspect"), ("centre crop (reference demo)", "center_crop")],
                    value=defaults.resolution.mode,
                    label="Resolution",
                )
                size = gr.Slider(
                    64, MAX_UI_SIZE, value=sizes[first], step=8, precision=0, label="Size (long side)",
                    info="Defaults to the size the selected model was trained at.",
                )  # fmt: skip
                gr.Markdown(TIPS)
            with gr.Accordion("Raw MLLM output", open=False):
                raw_text = gr.Textbox(show_label=False, lines=3, interactive=False)
            if examples_dir is not None:
                gr.Examples(
                    [[e["image"], e["instruction"]] for e in load_examples(examples_dir)], [image, instruction],
                    examples_per_page=EXAMPLES_PER_PAGE, elem_id="example-list",
                )  # fmt: skip
    return Widgets(
        state=state, model=model, image=image, instruction=instruction, think_button=think_button,
        edit_button=edit_button, stop_button=stop_button, plan=plan, expressive=expressive, raw_text=raw_text,
        output=output, output_size=output_size, used=used, compare=compare, variations=variations,
        vary_button=vary_button, variants=variants, variant=variant, pick_api=pick_api, steps=steps,
        text_guidance=text_guidance,
        image_guidance=image_guidance, seed=seed, randomize_seed=randomize_seed, resize=resize, size=size,
        status=status, strip=strip, details=details, undo_button=undo_button, turn=turn,
        revert_button=revert_button, turn_id=turn_id, revert_api=revert_api, reset_button=reset_button,
        export_button=export_button, restore_button=restore_button, archive=archive, sweep_start=sweep_start,
        sweep_stop=sweep_stop, sweep_step=sweep_step, sweep_text=sweep_text, explore_button=explore_button,
        explore_stop=explore_stop, grid=grid, plot=plot, table=table, cell=cell, keep_button=keep_button,
        model_a=model_a, model_b=model_b, compare_button=compare_button, compare_stop=compare_stop,
        image_a=image_a, caption_a=caption_a, image_b=image_b, caption_b=caption_b, startup=startup,
    )  # fmt: skip
