"""The latent preview: a least-squares latents -> RGB map fitted on the source image and its own latents."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from editor.preview import LatentPreview


def _source(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _linear_latents(image: Image.Image, mix: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Latents that are an exact affine function of the 1/8-size colours (a stand-in for a VAE encoder)."""
    small = image.resize((image.width // 8, image.height // 8), Image.Resampling.BOX)
    colours = torch.from_numpy(np.asarray(small, np.float32) / 255).permute(2, 0, 1)  # 3 x h x w
    return (torch.einsum("kc,chw->khw", mix, colours) + bias[:, None, None])[None]  # 1 x 4 x h x w


def test_preview_inverts_an_affine_encoder_exactly():
    torch.manual_seed(0)
    mix, bias, factor = torch.randn(4, 3), torch.randn(4), 0.18215
    source = _source()
    preview = LatentPreview(_linear_latents(source, mix, bias), source, factor)
    other = _source(seed=1)
    picture = preview(_linear_latents(other, mix, bias) * factor)  # latents as the scheduler holds them
    expected = np.asarray(other.resize((12, 8), Image.Resampling.BOX), np.int16)
    assert picture.size == (12, 8)
    assert np.abs(np.asarray(picture, np.int16) - expected).max() <= 1


def test_preview_survives_a_flat_source_and_clamps():
    flat = Image.new("RGB", (64, 64), (200, 30, 30))
    latents = torch.ones(1, 4, 8, 8)  # rank-deficient fit: every row is the same
    preview = LatentPreview(latents, flat, 1.0)
    assert np.abs(np.asarray(preview(latents), np.int16) - (200, 30, 30)).max() <= 1
    wild = preview(torch.randn(1, 4, 8, 8) * 1e4)
    assert np.asarray(wild).min() >= 0 and np.asarray(wild).max() <= 255
