"""The demo model's UNet with a skip from its image input to its output: it predicts the goal as the source plus a
learnt change.

Deviation from MGIE / InstructPix2Pix, whose UNet predicts the goal (or its noise) from scratch (docs/demo-recipe.md,
"The source as a skip"). With the exact, local patch codec (editor/models/patches.py) the goal's latents outside the
edit *are* the source's, and x0 ("sample") prediction asks the UNet for exactly those values; a stock UNet has to
learn that copy through its normalised layers, and on CPU budgets it did not learn it well (background 21 dB after
5000 steps). Here the copy is the skip, `scale * source`, and the UNet's own output is the change, zero where
nothing is edited. `conv_out` starts at zero (`zero_change`), so an untrained model returns its input exactly.

`SourceSkipUNet` is diffusers' `UNet2DConditionModel` (same layers, keys and `config.json`, plus
`source_skip_scale`), so the stock InstructPix2Pix pipeline runs it unchanged: it concatenates the noisy latents and
the unscaled image latents as its input, and this forward adds `source_skip_scale` (the codec's latent scaling
factor) times the image half to the output. In the pipeline's "no image" branch the image half is zero, so that
branch gets no skip, as the training's image dropout has it. editor.loading reads the class a `unet/config.json`
names.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

CLASS_NAME = "SourceSkipUNet"


class SourceSkipUNet(UNet2DConditionModel):
    """`UNet2DConditionModel(**config)` whose output is `unet(x) + source_skip_scale * x[:, C:2C]`, C its output
    channels (the image latents IP2P concatenates after the noisy ones)."""

    def __init__(self, source_skip_scale: float = 1.0, **config) -> None:
        super().__init__(**config)
        if self.config.in_channels != 2 * self.config.out_channels:
            raise ValueError(
                "a source skip needs in_channels == 2 * out_channels (noisy and image latents), got "
                f"{self.config.in_channels} and {self.config.out_channels}"
            )
        scale = float(source_skip_scale)
        if not math.isfinite(scale):
            raise ValueError(f"source_skip_scale must be a finite number, got {source_skip_scale!r}")
        self.register_to_config(source_skip_scale=scale)

    @staticmethod
    def _get_init_keys(input_class) -> set[str]:
        """diffusers reads a config's keys from `__init__`'s signature; this one takes the UNet's as keywords."""
        keys = set(UNet2DConditionModel._get_init_keys(UNet2DConditionModel))
        return keys | {"source_skip_scale"} if input_class is SourceSkipUNet else keys

    @torch.no_grad()
    def zero_change(self) -> SourceSkipUNet:
        """Start from "no change": the output layer at zero, so the model returns `scale * source` exactly."""
        self.conv_out.weight.zero_()
        self.conv_out.bias.zero_()
        return self

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *args,
                return_dict: bool = True, **kwargs):  # fmt: skip
        change = super().forward(sample, timestep, encoder_hidden_states, *args, return_dict=False, **kwargs)[0]
        c = self.config.out_channels
        out = change + self.config.source_skip_scale * sample[:, c : 2 * c].to(change.dtype)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)
