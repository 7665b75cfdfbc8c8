"""The evaluation backbones with their real weights (opt-in: `pytest -m slow`, after
`python -m editor.weights download eval-metrics`). They check what tiny random backbones cannot: that the loaded
models see. Photos: scikit-image's sample data. Missing weights fail with the download command (no skip)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFilter
from skimage import data

from editor.eval.lpips import LpipsScorer
from editor.eval.metrics import ClipScorer, DinoScorer
from editor.pipelines.registry import DEFAULT_WEIGHTS_DIR

pytestmark = pytest.mark.slow


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB").resize((256, 256), Image.Resampling.BICUBIC)


def _folder(name: str):
    folder = DEFAULT_WEIGHTS_DIR / name
    assert folder.is_dir(), f"no {folder}: run `python -m editor.weights download eval-metrics` first"
    return folder


@pytest.mark.parametrize("clip_name", ["clip-vit-base-patch32", "clip-vit-large-patch14"])
def test_clip_sees_what_the_photo_shows(clip_name):
    clip = ClipScorer(_folder(clip_name))
    astronaut, cat = _photo("astronaut"), _photo("chelsea")
    assert clip.image_similarity(astronaut, astronaut) == pytest.approx(1.0, abs=1e-6)
    assert clip.text_similarity(astronaut, "an astronaut") > clip.text_similarity(astronaut, "a cup of coffee")
    assert clip.text_similarity(cat, "a photo of a cat") > clip.text_similarity(cat, "a photo of a rocket")
    flipped = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert clip.image_similarity(astronaut, flipped) > clip.image_similarity(astronaut, cat)


def test_dino_prefers_the_same_scene():
    dino = DinoScorer(_folder("dino-vits16"))
    cat, coffee = _photo("chelsea"), _photo("coffee")
    blurred = cat.filter(ImageFilter.GaussianBlur(2))
    assert dino.similarity(cat, blurred) > dino.similarity(cat, coffee)


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg"])
def test_lpips_orders_distortions(net):
    lpips = LpipsScorer(_folder("lpips"), net=net)
    cat = _photo("chelsea")
    slight, strong = cat.filter(ImageFilter.GaussianBlur(1)), cat.filter(ImageFilter.GaussianBlur(4))
    assert lpips.distance(cat, cat) == 0
    assert 0 < lpips.distance(cat, slight) < lpips.distance(cat, strong) < lpips.distance(cat, _photo("coffee"))
