"""Pixel metrics against known values and scikit-image's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from editor.metrics import cosine, l1, psnr, ssim


def _pair(seed: int = 0, size=(40, 30)) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(a), Image.fromarray(b)


def test_identical_images():
    a, _ = _pair()
    assert l1(a, a) == 0 and psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)


def test_hand_computed_l1_and_psnr():
    black, grey = Image.new("RGB", (16, 16), 0), Image.new("RGB", (16, 16), (51, 51, 51))  # 51/255 = 0.2
    assert l1(black, grey) == pytest.approx(0.2)
    assert psnr(black, grey) == pytest.approx(10 * math.log10(1 / 0.04))


def test_psnr_and_ssim_match_scikit_image():
    a, b = _pair()
    x, y = np.asarray(a) / 255, np.asarray(b) / 255
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1), rel=1e-9)
    reference = structural_similarity(
        x, y, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
    )
    assert ssim(a, b) == pytest.approx(reference, rel=1e-9)


def test_bad_pairs_are_refused():
    a, _ = _pair()
    with pytest.raises(ValueError, match="differ in size"):
        l1(a, a.resize((10, 10)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a.resize((8, 8)), a.resize((8, 8)))


def test_cosine():
    u = torch.tensor([1.0, 0.0, 1.0])
    assert cosine(u, u * 3) == pytest.approx(1.0) and cosine(u, torch.tensor([0.0, 1.0, 0.0])) == 0
