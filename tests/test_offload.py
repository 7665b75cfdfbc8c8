"""Low-VRAM mode (--offload): without a GPU it is refused with a clear message; on a GPU (opt-in, -m gpu) the
offloaded editor gives the resident editor's image and leaves its weights on the CPU between calls."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import app
from editor.params import EditParams, Resolution
from editor.pipelines.registry import load_editor


def test_offload_without_a_gpu_is_refused_clearly(tiny_tree, capsys):
    with pytest.raises(ValueError, match="without a GPU, leave it out"):
        load_editor("mgie-7b", tiny_tree, "cpu", offload=True)
    with pytest.raises(ValueError, match="without a GPU, leave it out"):
        load_editor("instruct-pix2pix", tiny_tree, "cpu", offload=True)
    assert app.main(["--weights-dir", str(tiny_tree), "--device", "cpu", "--offload"]) == 2
    assert "without a GPU" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mgie-7b", "instruct-pix2pix"])
def test_offloaded_editor_matches_the_resident_one(tiny_tree, name):
    image, params = Image.new("RGB", (64, 64), (30, 120, 200)), EditParams(steps=3, resolution=Resolution(size=64))

    def edit(offload: bool):
        editor = load_editor(name, tiny_tree, "cuda", torch.float32, offload=offload)
        guidance = editor.think(image, "make it red")
        weights = editor.mllm if name == "mgie-7b" else editor.pipe.unet
        return editor.render(image, guidance, params).image, next(weights.parameters()).device

    resident, where = edit(False)
    offloaded, home = edit(True)
    assert where.type == "cuda" and home.type == "cpu"
    assert list(offloaded.getdata()) == list(resident.getdata())
