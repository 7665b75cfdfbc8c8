"""What the UI shows, computed from the session: status line, history strip, turn details, result line, sweep
table. Pure functions of the state (the sweep plot is a gr.ScatterPlot value)."""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd
from PIL import Image

from editor.core import EditResult
from editor.images import target_size
from editor.params import EditParams, Resolution
from editor.ui.explore import Cell
from editor.ui.history import History, Turn

THUMB_SIZE = 160


def params_text(params: EditParams) -> str:
    guidance = f"αX {params.text_guidance:g} · αV {params.image_guidance:g}"
    if not params.guidance_enabled:
        guidance += " (guidance off: needs αX > 1 and αV ≥ 1)"
    return f"seed {params.seed} · {guidance} · {params.steps} steps · {params.resolution.mode} {params.resolution.size}"


def result_text(result: EditResult | Turn | None) -> str:
    """The used-params line of a result (or of a turn's, as kept in the history); "" for none."""
    if result is None:
        return ""
    image = result.image if isinstance(result, EditResult) else result.output
    seconds = result.stats.get("render_s", 0.0)
    return f"**Used:** {params_text(result.params)} · {image.width}×{image.height} · {seconds:.1f} s"


def size_text(path: str | None) -> str:
    """ "W × H px" of the image file at `path` (its header only), "" when there is none."""
    if not path:
        return ""
    with Image.open(path) as image:
        width, height = image.size
    return f"{width} × {height} px"


def planned_size(image: Image.Image | None, mode: str, size: int) -> tuple[int, int]:
    """(width, height) the next edit runs at; without an image, the largest it can be (a square)."""
    if image is None:
        return target_size(size, size, Resolution(mode, size))
    return target_size(image.width, image.height, Resolution(mode, size))


def size_plan(model: str, image: Image.Image | None, mode: str, size: int, native: int) -> str:
    """The size the next edit runs at, shown next to Edit; for the offline demo model and a picture from outside
    its world (bigger than the 64-px scenes it was trained on), what it can and cannot do."""
    if image is None:
        return f"Edits at {size} px on the long side" if mode == "keep_aspect" else f"Edits at {size} × {size} px"
    width, height = planned_size(image, mode, size)
    text = f"Edits at **{width} × {height} px**" + (" (the model's own size)" if size == native else "")
    if max(image.size) > max(width, height):
        text += f"; your {image.width} × {image.height} image is scaled down to it"
    if model.endswith("-demo") and max(image.size) > native:
        text += (
            ". The offline demo model only knows 64-px scenes of coloured shapes (try the shapes examples): a photo "
            "comes back as a small image, not meaningfully edited"
        )
    return text


def progress_text(index: int, total: int, elapsed: float, doing: str = "Editing") -> str:
    """An edit's progress: "Editing: step 12 of 50 · 3.1 s · about 10 s left"."""
    left = elapsed / index * (total - index) if index else 0.0
    return f"**{doing}:** step {index} of {total} · {elapsed:.1f} s · about {left:.0f} s left"


def status_text(history: History) -> str:
    """Where the session stands, numbered as the strip is (the original, then turns 1, 2, ...)."""
    if not history.turns:
        return "No edits yet"
    if history.head is None:
        return f"The original image · {len(history.turns)} turns in the history"
    turn = history.turns[history.head]
    source = "the original" if turn.parent is None else f"turn {turn.parent + 1}"
    return f"Turn {history.head + 1} of {len(history.turns)} · edited from {source}"


def thumbnail(image: Image.Image) -> Image.Image:
    """A square THUMB_SIZE picture of the whole image (letterboxed, never cropped); small images enlarged pixel for
    pixel, so a thumbnail of a 64-px result stays sharp."""
    scale = THUMB_SIZE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    nearest = scale >= 1
    small = image.convert("RGB").resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    square = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), (255, 255, 255))
    square.paste(small, ((THUMB_SIZE - size[0]) // 2, (THUMB_SIZE - size[1]) // 2))
    return square


def original_caption(history: History) -> str:
    return f"{'▶ ' if history.head is None else ''}Original"


def caption(history: History, turn: Turn) -> str:
    mark = "▶ " if turn.id == history.head else ""
    return f"{mark}Turn {turn.id + 1}: {turn.instruction}"


def turn_details(turn: Turn | None) -> str:
    if turn is None:
        return ""
    source = {"generated": "the model's", "user": "rewritten by the user", "instruction": "the instruction"}
    return (
        f"**Turn {turn.id + 1}** ({turn.model}, {turn.created})  \n"
        f"**Instruction:** {turn.instruction}  \n"
        f"**Expressive instruction** ({source.get(turn.guidance_source, turn.guidance_source)}): {turn.expressive}  \n"
        f"**Params:** {params_text(turn.params)}"
    )


def before_image(turn: Turn) -> Image.Image:
    """A turn's input at the output's size, for the before/after slider (a first turn's input is the upload)."""
    return turn.input if turn.input.size == turn.output.size else turn.input.resize(turn.output.size)


SWEEP_COLUMNS = {"l1": "edit strength (L1)", "psnr": "PSNR dB", "ssim": "SSIM", "clip_i": "CLIP-I"}


def sweep_table(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        row = {"αX": f"{cell.params.text_guidance:g}", "αV": cell.params.image_guidance}
        row |= {SWEEP_COLUMNS[k]: (round(v, 4) if math.isfinite(v) else 99.0) for k, v in cell.metrics.items()}
        rows.append(row)
    return pd.DataFrame(rows, columns=["αX", "αV", *SWEEP_COLUMNS.values()]).dropna(axis=1, how="all")


def cell_caption(cell: Cell) -> str:
    return f"αX {cell.params.text_guidance:g} · αV {cell.params.image_guidance:g}"


def sweep_plot(table: pd.DataFrame) -> gr.ScatterPlot:
    """Edit strength against consistency, titled axes, one colour per αX (its legend), αV and αX on every point."""
    x, y = consistency_axis(table), SWEEP_COLUMNS["l1"]
    return gr.ScatterPlot(
        table, x=x, y=y, color="αX", x_title=f"consistency with the input ({x})", y_title=f"edit strength ({y})",
        color_title="αX", tooltip=["αX", "αV", x, y],
    )  # fmt: skip


def consistency_axis(table: pd.DataFrame) -> str:
    """The plot's x axis: CLIP-I when the model has a CLIP tower (the MGIE paper's CVS), else SSIM."""
    return SWEEP_COLUMNS["clip_i"] if SWEEP_COLUMNS["clip_i"] in table else SWEEP_COLUMNS["ssim"]
