"""SmartEdit's image residual: the BIM's image output added to the UNet's features right after `conv_in`, in every
branch of the classifier-free-guidance batch (docs/smartedit.md §2.7).

Done by composing the stock diffusers `UNet2DConditionModel` with a forward hook on `conv_in`, held only for the
duration of one render, so the same UNet serves other editors unchanged. No fork of the UNet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel


@contextmanager
def residual_after_conv_in(unet: UNet2DConditionModel, residual: torch.Tensor) -> Iterator[None]:
    """While inside, `conv_in(x) + residual` feeds the rest of the UNet. `residual` is [B, C, h, w] for B images;
    the UNet's batch (B x the number of guidance branches) gets it tiled."""

    def add(_module, _inputs, output: torch.Tensor) -> torch.Tensor:
        if output.shape[1:] != residual.shape[1:]:
            raise ValueError(
                f"BIM residual has shape {tuple(residual.shape[1:])} but conv_in gives {tuple(output.shape[1:])}: "
                "render at the resolution the residual was computed for"
            )
        repeats = output.shape[0] // residual.shape[0]
        return output + residual.to(output.dtype).repeat(repeats, 1, 1, 1)

    handle = unet.conv_in.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()
