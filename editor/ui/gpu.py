"""Model calls on ZeroGPU: `on_gpu(fn, seconds)` wraps `fn` in `spaces.GPU` with a duration computed from each
request, and is `fn` itself where the `spaces` package is absent (the decorator is a no-op off ZeroGPU anyway).

ZeroGPU lends a GPU for one call at a time and admits a call by the duration it asks for (README, "Deploy to Hugging
Face Spaces"): asking for too little gets the call cut off, asking for too much costs the visitor's quota and
queue place. So each estimate is an upper bound built from what the call will do: the weights' transfer to the
GPU at the start of every call, the MLLM's answer, and denoising steps that grow with the steps and the picture's
area. The per-model figures are estimates, not measurements (no GPU was lent to this work); they err long.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from editor.params import EditParams

MAX_SECONDS = 300  # ZeroGPU refuses longer requests outright; a longer call is asked at this and may be cut
MIN_SECONDS = 10


@dataclass(frozen=True)
class GpuCost:
    """Upper-bound seconds for one model on a ZeroGPU slice (fp16)."""

    start_s: float  # the call's fixed part: ZeroGPU copies every weight to the GPU first (MGIE-7B: ~16 GB)
    think_s: float  # the MLLM's answer (MGIE: up to 96 new tokens of a 7B LLM)
    step_s: float  # one denoising step at 512 x 512 with both guidances (a batch of three through the UNet)


_SD_STEP_S = 0.15  # Stable Diffusion 1.5's UNet, batch 3, 512², fp16; conservative for an H200 slice
COSTS: dict[str, GpuCost] = {
    "mgie-7b": GpuCost(start_s=30, think_s=15, step_s=_SD_STEP_S),
    "smartedit-7b": GpuCost(start_s=30, think_s=15, step_s=_SD_STEP_S),
    "smartedit-13b": GpuCost(start_s=50, think_s=25, step_s=_SD_STEP_S),
    "instruct-pix2pix": GpuCost(start_s=10, think_s=1, step_s=_SD_STEP_S),
    "magicbrush": GpuCost(start_s=10, think_s=1, step_s=_SD_STEP_S),
}
SMALL = GpuCost(start_s=5, think_s=2, step_s=0.05)  # the demo and tiny models (64 px, a few MB)


def cost(model: str) -> GpuCost:
    return COSTS.get(model, SMALL)


def _bounded(seconds: float) -> int:
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(seconds))))


def render_estimate(model: str, params: EditParams, renders: int = 1) -> float:
    """Seconds for `renders` renders at `params` (unbounded): steps x the picture's area relative to 512²."""
    c = cost(model)
    area = (params.resolution.size / 512) ** 2  # the long side; a square picture is the worst case
    return c.start_s + renders * params.steps * c.step_s * max(area, 0.25)


def think_seconds(model: str, *_args, **_kwargs) -> int:
    """Duration for `think(model, image, instruction, expressive, session)`."""
    c = cost(model)
    return _bounded(c.start_s + c.think_s)


def render_seconds(model: str, image, guidance, params: EditParams, *_args, **_kwargs) -> int:
    """Duration for `render(model, image, guidance, params)`."""
    return _bounded(render_estimate(model, params))


def sweep_seconds(model: str, image, guidance, params: EditParams, grid, *_args, **_kwargs) -> int:
    """Duration for `sweep(model, image, guidance, params, grid)`: one render per cell of the grid."""
    return _bounded(render_estimate(model, params, renders=len(grid.cells())))


def on_gpu(fn: Callable, seconds: Callable[..., int]) -> Callable:
    """`fn` under `spaces.GPU(duration=seconds)`: ZeroGPU calls `seconds` with the same arguments as `fn` before it
    asks for a GPU (spaces' documented dynamic duration). Without the `spaces` package, `fn` itself."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=seconds)(fn)
