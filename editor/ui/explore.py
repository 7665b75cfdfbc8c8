"""The trade-off explorer: one instruction rendered over a grid of guidance scales with the same seed, each
result scored for edit strength (how far it moved from the input) and consistency (how much of the input it kept).

This is the MGIE paper's Figure 3 for one image: image guidance αV from 1.0 to 2.2 (optionally several text
guidance αX values). Pixel metrics always; a CLIP-I style similarity when the editor exposes its CLIP vision tower
(`editor.core.EmbedsImages`: `image_embedding(image) -> tensor`, as MGIE has).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from PIL import Image

from editor.core import Editor, EditResult, EmbedsImages, Guidance
from editor.metrics import cosine, l1, psnr, ssim
from editor.params import MAX_GUIDANCE, EditParams
from editor.pipelines.diffusion import fresh_seed
from editor.ui.streaming import final_result, stream_render

MAX_CELLS = 36


@dataclass(frozen=True)
class Sweep:
    image_guidance: tuple[float, ...] = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2)
    text_guidance: tuple[float, ...] = (7.5,)

    @classmethod
    def parse(cls, start: object, stop: object, step: object, text_values: object) -> Sweep:
        """αV from `start` to `stop` (inclusive) by `step`; αX from a comma-separated list such as "5, 7.5, 10".
        Anything else (None, text, lists, NaN, huge or tiny numbers) is a ValueError naming the value."""
        start, stop = _guidance_scale(start, "αV start"), _guidance_scale(stop, "αV stop")
        step = _guidance_scale(step, "αV step")
        if step <= 0 or stop < start:
            raise ValueError(f"image guidance sweep needs start <= stop and step > 0, got {start}:{stop}:{step}")
        if (stop - start) / step >= MAX_CELLS:  # checked as a float first: a step of 1e-320 overflows an integer
            raise ValueError(f"the αV step {step:g} makes over {MAX_CELLS} renders; the explorer runs at most that")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if not isinstance(text_values, str):
            raise ValueError(f"αX values must be text such as '5, 7.5', got {type(text_values).__name__}")
        try:
            texts = tuple(float(v) for v in text_values.replace(";", ",").split(",") if v.strip())
        except ValueError:
            raise ValueError(f"text guidance values must be numbers separated by commas, got {text_values!r}") from None
        if not texts:
            raise ValueError("give at least one text guidance value")
        texts = tuple(_guidance_scale(value, "αX value") for value in texts)
        if count * len(texts) > MAX_CELLS:
            raise ValueError(f"the sweep has {count * len(texts)} renders; the explorer runs at most {MAX_CELLS}")
        return cls(tuple(round(start + i * step, 6) for i in range(count)), texts)

    def cells(self) -> list[tuple[float, float]]:
        """(αX, αV) pairs, αV varying fastest."""
        return [(text, image) for text in self.text_guidance for image in self.image_guidance]


def _guidance_scale(value: object, name: str) -> float:
    """A finite number in [0, MAX_GUIDANCE] (EditParams' range), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value) or not 0.0 <= value <= MAX_GUIDANCE:
        raise ValueError(f"{name} must be a number in [0, {MAX_GUIDANCE:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Cell:
    result: EditResult
    metrics: dict[str, float]

    @property
    def params(self) -> EditParams:
        return self.result.params


def measure(
    source: Image.Image, output: Image.Image, editor: Editor | None = None, source_features: torch.Tensor | None = None
) -> dict[str, float]:
    """Edit strength (l1) and consistency (psnr, ssim, clip_i when the editor has a CLIP tower) vs the input.
    `source_features`: the source's CLIP embedding when already computed (a sweep shares one source)."""
    metrics = {"l1": l1(source, output), "psnr": psnr(source, output), "ssim": ssim(source, output)}
    if isinstance(editor, EmbedsImages):
        reference = source_features if source_features is not None else editor.image_embedding(source)
        metrics["clip_i"] = cosine(reference, editor.image_embedding(output))
    return metrics


def explore(
    editor: Editor, image: Image.Image, guidance: Guidance, params: EditParams, sweep: Sweep,
    stop: threading.Event | None = None,
) -> Iterator[Cell]:  # fmt: skip
    """Renders every cell with one seed (the given one, or one drawn once for the whole grid). Setting `stop` (or
    closing the iterator) ends the cell being rendered at its next step and renders no more cells."""
    seed = params.seed if params.seed is not None else fresh_seed()
    reference = None  # every cell has the same source (same resolution policy): embed it once
    for text, image_scale in sweep.cells():
        cell_params = replace(params, text_guidance=text, image_guidance=image_scale, seed=seed)
        result = final_result(stream_render(editor, image, guidance, cell_params, None, stop))
        if result is None:  # stopped
            return
        if isinstance(editor, EmbedsImages) and reference is None:
            reference = editor.image_embedding(result.source)
        yield Cell(result, measure(result.source, result.image, editor, reference))
