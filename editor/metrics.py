"""Image-pair metrics for the trade-off explorer: how far an edit moved from its input, and how much it kept.

All take RGB images of one size, pixels scaled to [0, 1]:
- l1: mean absolute difference (edit strength; MGIE's "L1" in its tables).
- psnr: 10·log10(1 / MSE) in dB; infinite for identical images.
- ssim: Wang et al. 2004 with an 11-tap Gaussian window (σ 1.5), K1 0.01, K2 0.03, population covariances,
  computed per channel and averaged over the valid (un-padded) region: skimage's `structural_similarity` with
  `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`, which the tests compare against.
- cosine: similarity of two feature vectors (CLIP-I style, with the model's own CLIP vision tower).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL -> 3 x H x W float64 in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float64) / 255).permute(2, 0, 1)


def _pair(a: Image.Image, b: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
    return to_tensor(a), to_tensor(b)


def l1(a: Image.Image, b: Image.Image) -> float:
    x, y = _pair(a, b)
    return float((x - y).abs().mean())


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = _pair(a, b)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _valid_blur_matrix(n: int) -> torch.Tensor:
    """(n - 10) x n: row i holds the 11 Gaussian taps at columns i..i+10 (a 'valid' 1-D convolution)."""
    taps = _gaussian_taps()
    matrix = torch.zeros(n - len(taps) + 1, n, dtype=torch.float64)
    for offset, tap in enumerate(taps):
        matrix.diagonal(offset).fill_(tap)
    return matrix


def ssim(a: Image.Image, b: Image.Image) -> float:
    return float(ssim_map(a, b).mean())


def ssim_map(a: Image.Image, b: Image.Image) -> torch.Tensor:
    """Per-channel SSIM over the valid region (11 x 11 Gaussian window): 3 x (H - 10) x (W - 10)."""
    return ssim_map_tensors(*_pair(a, b))


def ssim_map_tensors(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`ssim_map` on float 3 x H x W tensors in [0, 1] (e.g. mask-weighted images that must not be rounded)."""
    if min(x.shape[1:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(x.shape[1:])} (H, W)")
    # the 11 x 11 Gaussian window is separable: blur columns, then rows, as products with banded matrices (float64
    # conv2d is slow on the CPU); the five local moments go through one batched pass
    moments = torch.stack([x, y, x * x, y * y, x * y])  # 5 x C x H x W
    mx, my, xx, yy, xy = _valid_blur_matrix(x.shape[1]) @ moments @ _valid_blur_matrix(x.shape[2]).T
    vx, vy, cxy = xx - mx**2, yy - my**2, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(F.cosine_similarity(u.flatten().double(), v.flatten().double(), dim=0))
