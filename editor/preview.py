"""Step previews without running the VAE decoder: a linear map from latents to RGB, fitted per edit.

Stable Diffusion latents are close to a linear function of the colours at 1/8 resolution (the cheap previews of
SD front-ends use fixed 4x3 factors for SD-1.5). Instead of fixed factors, the map is fitted by least squares on
the source image and its own VAE latents, which the IP2P pipeline computes anyway. That works for any VAE, the
tiny test ones and our own demo model included, and costs one 5x3 solve per edit plus a 4x3 matmul per preview.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class LatentPreview:
    """`preview(latents)` -> an approximate RGB image at latent resolution (1/8 of the edit size)."""

    def __init__(self, image_latents: torch.Tensor, source: Image.Image, scaling_factor: float) -> None:
        """`image_latents`: 1 x C x h x w, the VAE mode of `source`, unscaled (as the IP2P pipeline keeps them)."""
        latents = image_latents[0].detach().float().cpu()
        channels, height, width = latents.shape
        colours = np.asarray(source.convert("RGB").resize((width, height), Image.Resampling.BOX), np.float32) / 255
        inputs = torch.cat([latents.reshape(channels, -1).T, torch.ones(height * width, 1)], dim=1)  # N x (C+1)
        targets = torch.from_numpy(colours.reshape(-1, 3))  # N x 3
        self.weights = torch.linalg.lstsq(inputs, targets, driver="gelsd").solution  # (C+1) x 3
        self.scaling_factor = scaling_factor

    def __call__(self, latents: torch.Tensor) -> Image.Image:
        """`latents`: the scheduler's sample (1 x C x h x w, scaled by the VAE factor, as the UNet sees it)."""
        z = latents[0].detach().float().cpu() / self.scaling_factor
        channels, height, width = z.shape
        rgb = z.reshape(channels, -1).T @ self.weights[:-1] + self.weights[-1]
        pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).reshape(height, width, 3)
        return Image.fromarray(pixels.numpy())
