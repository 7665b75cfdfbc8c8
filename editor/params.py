"""Per-call knobs of an edit, and their defaults: the one source of truth the CLI and the UI show.

Defaults follow MGIE's demo (apple/ml-mgie demo.ipynb) and diffusers' InstructPix2Pix pipeline:
100 Euler-ancestral steps, text guidance 7.5, image guidance 1.5, seed 13331.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

ResizeMode = Literal["keep_aspect", "center_crop"]

DEFAULT_STEPS = 100
DEFAULT_TEXT_GUIDANCE = 7.5  # alpha_X in the MGIE paper, `guidance_scale` in diffusers
DEFAULT_IMAGE_GUIDANCE = 1.5  # alpha_V in the MGIE paper, `image_guidance_scale` in diffusers
DEFAULT_SEED = 13331
DEFAULT_SIZE = 512
MAX_SIZE = 2048
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0


@dataclass(frozen=True)
class Resolution:
    """How the input is sized before editing.

    keep_aspect: the longer side becomes `size` (down- or up-scaled), both sides rounded to multiples of 8.
    center_crop: the reference Gradio demo's behaviour: centre-crop to a square, resize to `size` x `size`.
    """

    mode: ResizeMode = "keep_aspect"
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        if self.mode not in ("keep_aspect", "center_crop"):
            raise ValueError(f"resolution mode must be 'keep_aspect' or 'center_crop', got {self.mode!r}")
        if not isinstance(self.size, int) or not 64 <= self.size <= MAX_SIZE:
            raise ValueError(f"resolution size must be an integer in [64, {MAX_SIZE}], got {self.size!r}")


@dataclass(frozen=True)
class EditParams:
    """Diffusion-stage settings. `seed=None` draws a fresh seed; the used one comes back in the result.

    Guidance follows diffusers' rule: classifier-free guidance is on only when text_guidance > 1 and
    image_guidance >= 1; otherwise the UNet runs once per step on the conditional branch alone.
    """

    steps: int = DEFAULT_STEPS
    text_guidance: float = DEFAULT_TEXT_GUIDANCE
    image_guidance: float = DEFAULT_IMAGE_GUIDANCE
    seed: int | None = DEFAULT_SEED
    resolution: Resolution = field(default_factory=Resolution)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_STEPS}], got {self.steps!r}")
        for name in ("text_guidance", "image_guidance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if not 0.0 <= value <= MAX_GUIDANCE:
                raise ValueError(f"{name} must be in [0, {MAX_GUIDANCE:g}], got {value!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63
        ):
            raise ValueError(f"seed must be None or an integer in [0, 2**63), got {self.seed!r}")

    @property
    def guidance_enabled(self) -> bool:
        """diffusers' `do_classifier_free_guidance`: text > 1 and image >= 1, else no guidance at all."""
        return self.text_guidance > 1.0 and self.image_guidance >= 1.0

    def with_seed(self, seed: int) -> EditParams:
        return replace(self, seed=seed)
