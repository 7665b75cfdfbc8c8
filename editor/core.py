"""The two-stage editor API every model implements.

`think` runs the MLLM and returns a `Guidance` (the expressive instruction shown to the user *before* editing, plus
the conditioning tensors); `render` runs diffusion from a `Guidance`. `guidance_from_text` rebuilds the conditioning
from a user-rewritten expressive instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from PIL import Image

from editor.images import ImageSource
from editor.params import EditParams


@dataclass(frozen=True)
class Step:
    """What `render` reports after every denoising step (progress bars, step previews)."""

    index: int  # 1-based
    total: int
    latents: torch.Tensor  # the scheduler's current sample, 1 x 4 x h/8 x w/8, scaled by the VAE factor
    preview: Callable[[], Image.Image]  # an approximate RGB picture of `latents` at 1/8 size, no VAE decode


StepCallback = Callable[[Step], None]


@dataclass
class Guidance:
    """Output of the MLLM stage: what the user sees and what the diffusion stage consumes."""

    model: str
    instruction: str
    expressive: str  # cleaned expressive instruction, shown to the user
    raw_text: str  # the decoded MLLM answer, special tokens kept
    prompt_embeds: torch.Tensor  # 1 x 77 x C, the UNet's cross-attention condition
    negative_prompt_embeds: torch.Tensor  # 1 x 77 x C, the null condition
    source: Literal["generated", "user", "instruction"] = "generated"
    stats: dict[str, float] = field(default_factory=dict)  # timings (s) and token counts
    image_features: torch.Tensor | None = None  # an image-side condition (SmartEdit's BIM map), None for the rest


@dataclass
class EditResult:
    image: Image.Image  # the edited image
    source: Image.Image  # the input as the diffusion stage saw it (after the resolution policy)
    guidance: Guidance
    params: EditParams  # with the seed actually used
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        assert self.params.seed is not None
        return self.params.seed


class Editor(Protocol):
    name: str
    defaults: EditParams  # the settings the app and CLI start from (EditParams() for the published models)

    @property
    def native_size(self) -> int | None:
        """The longer side the model was trained at (what `Resolution` edits at by default); None: not known."""
        ...

    def think(self, image: ImageSource, instruction: str) -> Guidance: ...

    def guidance_from_text(self, image: ImageSource, instruction: str, expressive_text: str) -> Guidance: ...

    def render(
        self,
        image: ImageSource,
        guidance: Guidance,
        params: EditParams | None = None,
        on_step: StepCallback | None = None,
    ) -> EditResult: ...


@runtime_checkable
class EmbedsImages(Protocol):
    """An editor with a CLIP image tower the trade-off explorer measures consistency with (MGIE has one)."""

    def image_embedding(self, image: ImageSource) -> torch.Tensor: ...
