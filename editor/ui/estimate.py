"""How long the next edit will take, said next to Edit before it starts when that is long (README, "The app"): on a
CPU an edit at a large size or with many steps takes minutes.

    seconds = thinking + steps x (seconds per step per megapixel and guidance branch) x megapixels x branches

(three branches with guidance on: the UNet sees [cond, null, null]; one with it off). The figures come from this
process's own edits (`Timings`): the time between an edit's first and last denoising step, taken in the render
thread, and the MLLM's thinking time, the latest of each per model. Before a model's first edit on a CPU, the
published models (all on Stable Diffusion 1.5's UNet) start from `CPU_STEP_S`, a figure measured once on one CPU
thread and divided by torch's thread count (a rough figure: the text says so, and the first edit replaces it).
Other models (the demo, tiny and test models) and GPUs get an estimate only from their own edits. The UNet's cost
grows a little faster than the area (attention), and fixed per-step costs are counted as if they grew with it, so a
figure measured at one size is least accurate far from it; the text names the size it was measured at.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from editor.core import EditResult, Guidance
from editor.ui.streaming import Progress

THRESHOLD_S = 30.0  # shorter edits get no estimate
# Stable Diffusion 1.5's UNet in float32 on one CPU thread: seconds per UNet call per megapixel and image. Measured
# with `python -m editor.bench.unet_cpu` (editor/bench/unet_cpu.py, the CPU time of one call): 12.9 and 12.5 s at
# 512 x 512 (48 s per megapixel), 4.6-4.9 s at 256 x 256 (72 s per megapixel: fixed costs weigh more when small).
CPU_STEP_S = 48.0
SD_MODELS = ("mgie-7b", "smartedit-7b", "smartedit-13b", "instruct-pix2pix", "magicbrush")
QUICK_THINK = ("instruct-pix2pix", "magicbrush")  # "thinking" is one CLIP text-encoder call: well under a second


@dataclass(frozen=True)
class StepRate:
    """Seconds of one denoising step per megapixel and guidance branch, and the edit it was measured on."""

    seconds: float
    measured_at: tuple[int, int] | None  # (width, height) of that edit; None: the rough figure before any edit


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the whole edit: thinking (when known) and every step
    steps: int
    step_s: float  # one step at the planned size
    think_s: float | None  # None: not measured yet
    device: str  # torch's device type: "cpu", "cuda", ...
    measured_at: tuple[int, int] | None


def branches(text_guidance: float, image_guidance: float) -> int:
    """Images per UNet call: three with guidance on (diffusers' rule, EditParams.guidance_enabled), else one."""
    return 3 if text_guidance > 1.0 and image_guidance >= 1.0 else 1


def render_device(editor: object) -> str | None:
    """Where `editor` renders: its pipeline's execution device (a GPU also under CPU offload), else its `device`;
    None when it says neither."""
    pipe = getattr(editor, "pipe", None)
    device = getattr(pipe, "_execution_device", None) or getattr(editor, "device", None)
    return None if device is None else torch.device(device).type


class Timings:
    """The latest measured step rate and thinking time of each model in this process (shared by every session)."""

    def __init__(self) -> None:
        self._rates: dict[str, StepRate] = {}
        self._think: dict[str, float] = {}

    def thought(self, model: str, guidance: Guidance) -> None:
        """Keeps the thinking time a guidance carries (`think_s`, set where a model thought; none when rewritten)."""
        if "think_s" in guidance.stats:
            self._think[model] = float(guidance.stats["think_s"])

    def rendered(self, model: str, result: EditResult, step_s: float) -> None:
        """Keeps the rate of a finished render whose steps took `step_s` each."""
        width, height = result.source.size
        per_item = step_s / (width * height / 1e6) / branches(result.params.text_guidance, result.params.image_guidance)
        self._rates[model] = StepRate(per_item, (width, height))

    def watch(self, model: str, items: Iterator[Progress | EditResult]) -> Iterator[Progress | EditResult]:
        """Passes a render's stream on unchanged, timing its steps; a render that finishes after two or more steps
        updates the model's rate (a stopped one does not)."""
        first: Progress | None = None
        last: Progress | None = None
        for item in items:
            if isinstance(item, Progress):
                first, last = first or item, item
            elif first is not None and last is not None and last.index > first.index:
                self.rendered(model, item, (last.at - first.at) / (last.index - first.index))
            yield item

    def rate(self, model: str, device: str) -> StepRate | None:
        if model in self._rates:
            return self._rates[model]
        if device == "cpu" and model in SD_MODELS:
            return StepRate(CPU_STEP_S / max(1, torch.get_num_threads()), None)
        return None

    def think_s(self, model: str) -> float | None:
        return self._think.get(model, 0.0 if model in QUICK_THINK else None)


def estimate(
    timings: Timings, model: str, device: str | None, steps: int, size: tuple[int, int], guidance_branches: int
) -> Estimate | None:
    """The next edit's duration at `size` (width, height); None where nothing is known for the model."""
    rate = None if device is None else timings.rate(model, device)
    if rate is None:
        return None
    step_s = rate.seconds * size[0] * size[1] / 1e6 * guidance_branches
    think_s = timings.think_s(model)
    seconds = steps * step_s + (think_s or 0.0)
    return Estimate(seconds, steps, step_s, think_s, device, rate.measured_at)


def duration_text(seconds: float) -> str:
    """The duration in words: "about 40 s", "about 3 min", "about 1.5 h"."""
    if seconds < 90:
        return f"about {max(5, 5 * round(seconds / 5))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def estimate_text(found: Estimate | None, threshold: float = THRESHOLD_S) -> str:
    """The estimate as said next to Edit; "" for none or a short edit."""
    if found is None or not math.isfinite(found.seconds) or found.seconds <= threshold:
        return ""
    where = "this CPU" if found.device == "cpu" else "this GPU"
    thinking = " plus thinking" if found.think_s is None else ""  # not measured yet: left out of the figure
    if found.measured_at is None:
        basis = "rough estimate until the first edit"
    else:
        basis = "estimate from the last edit, at {} × {} px".format(*found.measured_at)
    return f"{duration_text(found.seconds).capitalize()} on {where}{thinking} ({basis})"
