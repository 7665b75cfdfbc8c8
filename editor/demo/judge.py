"""Scoring an edit of the shapes world against the generator's own rendering of the requested result.

changed region D: pixels where the rendered source and target differ by more than 2/255 in any channel, dilated
by 2 pixels (anti-aliased edges); the whole image for global (tone) edits.
edit correct: inside D the output is at least twice as close to the target as to the source (mean absolute
error) and within 0.1 of the target; outside D it stays within 0.04 (about 10/255) of the target on average and
at most 1 % of its pixels are off by more than 0.25 in some channel (a missing or recoloured other object fails),
i.e. nothing else changed beyond tolerance.
background PSNR/SSIM: output vs target outside D (not defined for tone edits).
expressive correct: the facts (colour, shape, size, position and change words, in order) of the model's
expressive text equal those of the generator's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from editor.demo import world
from editor.metrics import ssim_map

CHANGE_THRESHOLD = 2 / 255
INSIDE_RATIO, INSIDE_MAX, OUTSIDE_MAX = 0.5, 0.1, 0.04
BAD_PIXEL, MAX_BAD_FRACTION = 0.25, 0.01
FACT_WORDS = frozenset(
    [*world.COLOURS, *world.KINDS, *world.RADIUS, "top", "bottom", "left", "right", "centre", *world.TONES]
    + ["turns", "disappears", "appears", "moves", "becomes"]
)


@dataclass(frozen=True)
class Score:
    correct: bool
    l1: float  # mean |output - target| over the image, in [0, 1]
    background_psnr: float | None  # dB, outside the changed region
    background_ssim: float | None
    inside_error: float
    outside_error: float


def as_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


def changed_region(source: np.ndarray, target: np.ndarray, tone: bool) -> np.ndarray:
    if tone:
        return np.ones(source.shape[:2], dtype=bool)
    region = np.abs(source - target).max(axis=2) > CHANGE_THRESHOLD
    for _ in range(2):  # dilate by one pixel (4-neighbourhood), twice
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        region = grown
    return region


def score(output: Image.Image, sample: world.Sample) -> Score:
    target_image = world.render(sample.target)
    if output.size != target_image.size:
        raise ValueError(f"output is {output.size}, the world renders {target_image.size}")
    return score_images(output, world.render(sample.source), target_image, tone=sample.op == "tone")


def score_images(output: Image.Image, source_image: Image.Image, target_image: Image.Image, tone: bool) -> Score:
    """`score` for any (source, target) pair of equal size, e.g. scenes drawn outside the world's generator."""
    source, target, out = as_float(source_image), as_float(target_image), as_float(output)
    if out.shape != target.shape or source.shape != target.shape:
        raise ValueError(f"images differ in size: {output.size}, {source_image.size}, {target_image.size}")
    region = changed_region(source, target, tone)
    error = np.abs(out - target)
    inside_t = error[region].mean()
    inside_s = np.abs(out - source)[region].mean()
    outside = ~region
    outside_error = float(error[outside].mean()) if outside.any() else 0.0
    bad = float((error.max(axis=2) > BAD_PIXEL)[outside].mean()) if outside.any() else 0.0
    correct = (
        inside_t <= INSIDE_RATIO * inside_s
        and inside_t <= INSIDE_MAX
        and outside_error <= OUTSIDE_MAX
        and bad <= MAX_BAD_FRACTION
    )
    psnr = ssim = None
    if not tone and outside.any():
        mse = float((error**2)[outside].mean())
        psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
        local = ssim_map(output, target_image).mean(dim=0).numpy()  # valid region: 5-pixel border cropped
        keep = outside[5:-5, 5:-5]
        ssim = float(local[keep].mean()) if keep.any() else None
    return Score(bool(correct), float(error.mean()), psnr, ssim, float(inside_t), outside_error)


def facts(text: str) -> tuple[str, ...]:
    """The world's content words in `text`, in order: what an expressive instruction asserts."""
    return tuple(w for w in re.findall(r"[a-z]+", text.lower()) if w in FACT_WORDS)


def expressive_correct(generated: str, sample: world.Sample) -> bool:
    return facts(generated) == facts(sample.expressive)
