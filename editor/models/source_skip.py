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

With `coordinate_channels` the first convolution also sees where it is: a 1 x 1 convolution of the (x, y) position
in [-1, 1] (CoordConv, Liu et al. 2018) is added to its output, starting at zero. Deviation from the stock UNet,
whose only sense of position is its zero padding (docs/demo-recipe.md, "Where the UNet is"): the shapes world's
instructions name positions ("add a small white square at the right", "the triangle at the top"), and the demo's
small UNet drew such edits at several places at once. Its weights sit under `conv_in.coordinates.*`; the stock keys
are unchanged, so a UNet trained without them starts a run with them (`zero_start_keys`).
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

CLASS_NAME = "SourceSkipUNet"


class CoordinateConv2d(torch.nn.Conv2d):
    """A `Conv2d` plus `coordinates`, a 1 x 1 convolution of the (x, y) grid in [-1, 1] at its output's size."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        self.load_state_dict(conv.state_dict())
        self.coordinates = torch.nn.Conv2d(2, conv.out_channels, 1)
        torch.nn.init.zeros_(self.coordinates.weight)
        torch.nn.init.zeros_(self.coordinates.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        h, w = out.shape[-2:]
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, h, device=out.device), torch.linspace(-1, 1, w, device=out.device), indexing="ij"
        )
        grid = torch.stack([xs, ys]).unsqueeze(0).to(self.coordinates.weight.dtype)
        return out + self.coordinates(grid).to(out.dtype)


class SourceSkipUNet(UNet2DConditionModel):
    """`UNet2DConditionModel(**config)` whose output is `unet(x) + source_skip_scale * x[:, C:2C]`, C its output
    channels (the image latents IP2P concatenates after the noisy ones); with `coordinate_channels` its `conv_in`
    is a `CoordinateConv2d`."""

    def __init__(self, source_skip_scale: float = 1.0, coordinate_channels: bool = False, **config) -> None:
        super().__init__(**config)
        if self.config.in_channels != 2 * self.config.out_channels:
            raise ValueError(
                "a source skip needs in_channels == 2 * out_channels (noisy and image latents), got "
                f"{self.config.in_channels} and {self.config.out_channels}"
            )
        scale = float(source_skip_scale)
        if not math.isfinite(scale):
            raise ValueError(f"source_skip_scale must be a finite number, got {source_skip_scale!r}")
        if not isinstance(coordinate_channels, bool):
            raise ValueError(f"coordinate_channels must be true or false, got {coordinate_channels!r}")
        self.register_to_config(source_skip_scale=scale, coordinate_channels=coordinate_channels)
        if coordinate_channels:
            self.conv_in = CoordinateConv2d(self.conv_in)

    @property
    def zero_start_keys(self) -> frozenset[str]:
        """Parameters a checkpoint of the UNet without them may lack: they start at zero, the same function."""
        if not self.config.coordinate_channels:
            return frozenset()
        return frozenset(f"conv_in.coordinates.{name}" for name in ("weight", "bias"))

    @staticmethod
    def _get_init_keys(input_class) -> set[str]:
        """diffusers reads a config's keys from `__init__`'s signature; this one takes the UNet's as keywords."""
        keys = set(UNet2DConditionModel._get_init_keys(UNet2DConditionModel))
        return keys | {"source_skip_scale", "coordinate_channels"} if input_class is SourceSkipUNet else keys

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
