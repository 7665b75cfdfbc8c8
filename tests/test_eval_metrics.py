"""Evaluation metrics against hand-computed values, scikit-image, and direct transformers computations on tiny
random CLIP / ViT backbones saved to temporary folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from editor import metrics
from editor.eval.metrics import (
    ClipScorer,
    DinoScorer,
    background_scores,
    background_weights,
    dino_preprocess,
    l1_distance,
    l2_distance,
    mask_box,
    reason_edit_resize,
    region_l1,
    region_psnr,
)
from editor.tiny.backbones import build_tiny_clip, build_tiny_dino


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _columns(levels: list[int], height: int) -> Image.Image:
    """A grey image (mask) whose column x has grey level levels[x]."""
    return Image.fromarray(np.tile(np.array(levels, np.uint8), (height, 1)))


# ------------------------------------------------------------------------------------------------ pixel metrics


def test_identical_images_score_perfectly():
    image, mask = _noise(16, 12, 0), _columns([0] * 3 + [255] * 2 + [0] * 11, 12)
    scores = background_scores(image, image, mask)
    assert (scores.psnr, scores.ssim, scores.mse) == (math.inf, pytest.approx(1.0), 0)
    assert l1_distance(image, image) == 0 and l2_distance(image, image) == 0
    assert region_l1(image, image, mask, "inside") == 0 and region_psnr(image, image, mask) == math.inf


def test_background_scores_by_hand():
    # 16x16 (SSIM needs 11x11): source black, edit grey 51 (= 0.2). Mask at 255 (w = 0) on the left 8 columns,
    # 0 (w = 1) on the right 8: weighted difference 0 on the left, 0.2 on the right -> MSE = 8 * 0.04 / 16 = 0.02.
    black, grey = Image.new("RGB", (16, 16)), Image.new("RGB", (16, 16), (51, 51, 51))
    half = background_scores(black, grey, _columns([255] * 8 + [0] * 8, 16))
    assert half.mse == pytest.approx(0.02) and half.psnr == pytest.approx(10 * math.log10(1 / 0.02))
    # Grey levels are weights, not binarised: 102 (= 0.4) keeps w = 0.6 of the difference. Columns 8-11 at 102
    # and 12-15 at 0 contribute (0.6 * 0.2)^2 = 0.0144 and 0.04 each -> MSE = (4 * 0.0144 + 4 * 0.04) / 16.
    soft = background_scores(black, grey, _columns([255] * 8 + [102] * 4 + [0] * 4, 16))
    assert soft.mse == pytest.approx(0.0136) and soft.psnr == pytest.approx(10 * math.log10(1 / 0.0136))
    assert background_weights(_columns([102], 1))[:, 0, 0].tolist() == pytest.approx([0.6] * 3)


def test_background_scores_match_scikit_image():
    source, edit = _noise(24, 20, 1), _noise(24, 20, 2)
    mask = Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 24), dtype=np.uint8))
    w = 1 - np.asarray(mask, np.float64)[..., None] / 255
    x, y = np.asarray(source) / 255 * w, np.asarray(edit) / 255 * w
    ssim = structural_similarity(
        x, y, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
    )
    scores = background_scores(source, edit, mask)
    assert scores.ssim == pytest.approx(ssim, rel=1e-9)
    assert scores.mse == pytest.approx(mean_squared_error(x, y), rel=1e-12)
    assert scores.psnr == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1), rel=1e-12)


def test_empty_mask_gives_the_plain_metrics():
    source, edit = _noise(16, 16, 4), _noise(16, 16, 5)
    scores = background_scores(source, edit, Image.new("L", (16, 16)))
    assert scores.psnr == pytest.approx(metrics.psnr(source, edit), rel=1e-12)
    assert scores.ssim == pytest.approx(metrics.ssim(source, edit), rel=1e-12)


def test_region_metrics_by_hand():
    # The edit differs from the source (black) by 0.2 inside the mask (left half) only.
    black, mask = Image.new("RGB", (16, 16)), _columns([255] * 8 + [0] * 8, 16)
    edit = _columns([51] * 8 + [0] * 8, 16).convert("RGB")
    assert region_l1(black, edit, mask, "inside") == pytest.approx(0.2) and region_l1(black, edit, mask) == 0
    assert region_psnr(black, edit, mask, "inside") == pytest.approx(10 * math.log10(1 / 0.04))
    assert region_psnr(black, edit, mask, "outside") == math.inf
    assert background_scores(black, edit, mask).psnr == math.inf  # the Reason-Edit weights hide the edit


def test_magicbrush_distances_resize_to_the_truth():
    # A flat 8x8 grey (0.2) image resized to the 16x16 black truth stays flat: L1 0.2, L2 0.04.
    truth, generated = Image.new("RGB", (16, 16)), Image.new("RGB", (8, 8), (51, 51, 51))
    assert l1_distance(generated, truth) == pytest.approx(0.2) and l2_distance(generated, truth) == pytest.approx(0.04)
    small, big = _noise(10, 8, 6), _noise(20, 16, 7)
    expected = np.asarray(small.resize((20, 16), Image.Resampling.BICUBIC), np.float64) / 255 - np.asarray(big) / 255
    assert l1_distance(small, big) == pytest.approx(np.abs(expected).mean(), rel=1e-12)
    assert l2_distance(small, big) == pytest.approx((expected**2).mean(), rel=1e-12)


def test_reason_edit_resize():
    mask = _columns([0] * 5 + [255] + [0] * 24, 20)
    source, edit, mask = reason_edit_resize(_noise(30, 20, 8), _noise(40, 40, 9), mask)
    assert source.size == edit.size == mask.size == (256, 256) and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) == {0, 255}  # nearest keeps the mask's levels


def test_mask_box_excludes_right_and_bottom():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:6, 3:8] = 255  # rows 2..5, columns 3..7
    assert mask_box(Image.fromarray(mask)) == (3, 2, 7, 5)


def test_pixel_errors():
    image, mask = _noise(16, 12, 0), _columns([255] + [0] * 15, 12)
    with pytest.raises(ValueError, match=r"source and edit differ in size: \(16, 12\) vs \(12, 16\)"):
        background_scores(image, image.resize((12, 16)), mask)
    with pytest.raises(ValueError, match="source and mask differ in size"):
        background_scores(image, image, mask.resize((8, 8)))
    with pytest.raises(ValueError, match="at least 11x11"):
        background_scores(image.resize((8, 8)), image.resize((8, 8)), mask.resize((8, 8)))
    with pytest.raises(ValueError, match="no pixels inside the mask"):
        region_l1(image, image, Image.new("L", (16, 12)), "inside")
    with pytest.raises(ValueError, match="region must be 'inside' or 'outside'"):
        region_psnr(image, image, mask, "everywhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask is empty"):
        mask_box(Image.new("L", (16, 12)))
    with pytest.raises(ValueError, match="no area"):
        mask_box(_columns([0] * 4 + [255] + [0] * 11, 12))  # one column wide


# ---------------------------------------------------------------------------------------------- CLIP backbones


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def clip(clip_folder) -> ClipScorer:
    return ClipScorer(clip_folder)


def test_clip_identical_images(clip):
    image = _noise(40, 30, 10)
    assert clip.image_similarity(image, image) == pytest.approx(1.0)
    assert clip.image_similarity(image, _noise(40, 30, 11)) < 1 - 1e-6


def test_clip_t_matches_transformers(clip, clip_folder):
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    image, text = _noise(40, 30, 12), "make the sky blue"
    model = CLIPModel.from_pretrained(clip_folder).eval()
    pixels = CLIPImageProcessorPil.from_pretrained(clip_folder)(images=image, return_tensors="pt").pixel_values
    tokens = CLIPTokenizer.from_pretrained(clip_folder)(text, return_tensors="pt")
    with torch.no_grad():
        u = model.get_image_features(pixel_values=pixels).pooler_output
        v = model.get_text_features(**tokens).pooler_output
    assert clip.text_similarity(image, text) == pytest.approx(float(F.cosine_similarity(u, v)[0]), abs=1e-6)


def test_foreground_score_scores_the_crop(clip):
    edit, mask = _noise(40, 30, 13), np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 255  # box (10, 5, 29, 19): the crop is columns 10..28, rows 5..18
    mask = Image.fromarray(mask)
    crop = edit.crop((10, 5, 29, 19))
    texts = ["make the sky blue", "add a red car", "remove the photo", "turn it green", "a photo of the sky"]
    text = max(texts, key=lambda t: clip.text_similarity(crop, t))  # a positive cosine, so max(., 0) is not 0
    score = clip.foreground_score(edit, mask, text)
    assert score == pytest.approx(100 * clip.text_similarity(crop, text)) and score > 0

    outside = np.asarray(_noise(40, 30, 14)).copy()
    outside[5:19, 10:29] = np.asarray(edit)[5:19, 10:29]  # same crop, other pixels everywhere else
    assert clip.foreground_score(Image.fromarray(outside), mask, text) == pytest.approx(score, abs=1e-9)
    inside = np.asarray(edit).copy()
    inside[10, 15] = 255 - inside[10, 15]  # one pixel inside the crop
    assert clip.foreground_score(Image.fromarray(inside), mask, text) != pytest.approx(score, abs=1e-9)

    text = min(texts, key=lambda t: clip.text_similarity(crop, t))
    assert clip.text_similarity(crop, text) < 0 and clip.foreground_score(edit, mask, text) == 0


def test_clip_errors(clip, clip_folder, tmp_path):
    image = _noise(16, 16, 15)
    with pytest.raises(ValueError, match="mask is empty"):
        clip.foreground_score(image, Image.new("L", (16, 16)), "add a car")
    with pytest.raises(ValueError, match="image and mask differ in size"):
        clip.foreground_score(image, Image.new("L", (8, 8), 255), "add a car")
    hint = r"(?s)CLIP folder not found: \S*nowhere.*hf download openai/clip-vit-large-patch14"
    with pytest.raises(FileNotFoundError, match=hint):
        ClipScorer(tmp_path / "nowhere")

    for name in ("config.json", "preprocessor_config.json"):  # a vision-only copy: no tokenizer files
        (tmp_path / name).write_bytes((clip_folder / name).read_bytes())
    save_file(load_file(clip_folder / "model.safetensors"), tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no CLIP tokenizer"):
        ClipScorer(tmp_path).text_similarity(image, "add a car")

    state = load_file(clip_folder / "model.safetensors")
    del state["visual_projection.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lacks 1 weight.*visual_projection.weight"):
        ClipScorer(tmp_path)


# ---------------------------------------------------------------------------------------------- DINO backbone


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory):
    return build_tiny_dino(tmp_path_factory.mktemp("dino"))


def test_dino_matches_a_manual_computation(dino_folder):
    from transformers import ViTModel

    scorer = DinoScorer(dino_folder)
    a, b = _noise(48, 40, 16), _noise(48, 40, 17)
    assert scorer.similarity(a, a) == pytest.approx(1.0)

    # image_size 32 -> resize the shorter side to 32 * 256 // 224 = 36: 48x40 -> int(36 * 48 / 40) = 43 x 36;
    # centre crop 32: left round(11 / 2) = 6 (half to even), top round(4 / 2) = 2.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def manual(image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image.resize((43, 36), Image.Resampling.BICUBIC).crop((6, 2, 38, 34))) / 255
        return torch.from_numpy((pixels - mean) / std).permute(2, 0, 1).float()[None]

    model = ViTModel.from_pretrained(dino_folder, add_pooling_layer=False).eval()
    assert torch.equal(dino_preprocess(a, 32), manual(a))
    with torch.no_grad():
        u, v = (model(pixel_values=manual(image)).last_hidden_state[0, 0] for image in (a, b))
    assert scorer.similarity(a, b) == pytest.approx(float(F.cosine_similarity(u, v, dim=0)), abs=1e-6)


def test_dino_preprocess_real_size():
    assert dino_preprocess(_noise(40, 30, 18)).shape == (1, 3, 224, 224)  # 40x30 -> 341x256 -> 224x224


def test_dino_missing_folder(tmp_path):
    hint = r"(?s)DINO ViT folder not found: \S*dino.*hf download facebook/dino-vits16 --local-dir weights/dino-vits16"
    with pytest.raises(FileNotFoundError, match=hint):
        DinoScorer(tmp_path / "dino")
