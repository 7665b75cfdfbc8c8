"""SmartEdit through the same API as MGIE, on a tiny tree with the official layout and key names (random weights,
a locally made tokenizer): strict loading, think -> render end to end, determinism, the BIM's residual path, and
clear errors for broken folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from editor.loading import CheckpointError, MissingWeightsError
from editor.params import EditParams, Resolution
from editor.pipelines.diffusion import render_edit
from editor.pipelines.registry import installed_editors, load_editor
from editor.tiny.smartedit import build_tiny_smartedit_tree

IMAGE = Image.new("RGB", (80, 64), (10, 200, 30))
PARAMS = EditParams(steps=3, resolution=Resolution(size=64))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tiny_smartedit_tree(tmp_path_factory.mktemp("smartedit"))


@pytest.fixture(scope="module")
def smartedit(tree):
    return load_editor("smartedit-7b", tree, "cpu")


def test_the_official_layout_has_the_released_key_counts(tree):
    layers = 2  # tiny; the 7B file has 32 layers -> 14 * 32 + 2 = 450 keys (docs/smartedit.md §3.3 A)
    files = {p.relative_to(tree / "SmartEdit-7B").as_posix(): p for p in (tree / "SmartEdit-7B").rglob("*.bin")}
    assert len(torch.load(files["LLM-15000/adapter_model.bin"])) == 14 * layers + 2
    assert len(torch.load(files["embeddings_qformer/checkpoint-15000_embeddings_qformer.bin"])) == 133
    assert "smartedit-7b" in installed_editors(tree)


def test_think_then_render_end_to_end_and_deterministic(smartedit):
    guidance = smartedit.think(IMAGE, "make it red")
    assert guidance.prompt_embeds.shape == (1, 77, 32) and guidance.image_features.shape[:2] == (1, 32)
    assert guidance.negative_prompt_embeds.shape == (1, 77, 32)
    first = smartedit.render(IMAGE, guidance, PARAMS)
    again = smartedit.render(IMAGE, smartedit.think(IMAGE, "make it red"), PARAMS)
    assert first.image.size == (64, 48) and list(first.image.getdata()) == list(again.image.getdata())
    user = smartedit.guidance_from_text(IMAGE, "make it red", "the picture turns red")
    assert user.source == "user" and not torch.equal(user.prompt_embeds, guidance.prompt_embeds)


def test_the_bim_image_residual_reaches_the_unet(smartedit):
    guidance = smartedit.think(IMAGE, "make it red")
    with_residual = smartedit.render(IMAGE, guidance, PARAMS)
    stock = render_edit(smartedit.pipe, IMAGE, guidance, PARAMS)  # the same condition, no residual
    assert list(with_residual.image.getdata()) != list(stock.image.getdata())
    conv = smartedit.bim.dimension_reduction_head_zeroconv
    saved = conv.weight.detach().clone(), conv.bias.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
        zeroed = smartedit.render(IMAGE, guidance, PARAMS)
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved[0])
            conv.bias.copy_(saved[1])
    assert list(zeroed.image.getdata()) == list(stock.image.getdata())


def test_foreign_guidance_is_refused(smartedit):
    guidance = smartedit.think(IMAGE, "make it red")
    guidance.image_features = None
    with pytest.raises(ValueError, match="renders only guidance it made itself"):
        smartedit.render(IMAGE, guidance, PARAMS)


def test_broken_folders_give_specific_errors(tree, tmp_path):
    broken = Path(shutil.copytree(tree, tmp_path / "w"))
    path = broken / "SmartEdit-7B" / "modulate-15000" / "adapter_model.bin"
    state = torch.load(path)
    state.pop(next(k for k in state if "norm_final_attn" in k))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="modulate"):
        load_editor("smartedit-7b", broken, "cpu")
    path.unlink()
    with pytest.raises(MissingWeightsError, match="python -m editor.weights download smartedit-7b"):
        load_editor("smartedit-7b", broken, "cpu")


def test_the_app_serves_smartedit_with_its_think_text_and_multi_turn(tree, smartedit):
    import app
    from editor.ui.layout import build_ui

    editors, notice = app.load_editors("smartedit-7b", [], tree, "cpu")
    assert list(editors) == ["smartedit-7b"] and notice is None
    ui = build_ui({"smartedit-7b": smartedit}, examples_dir=None, preview_every=None)
    handlers, w = ui.handlers, ui.widgets
    thought = handlers.think("smartedit-7b", IMAGE, "make it red", None)
    expressive, state = thought[w.expressive], thought[w.state]
    assert (
        state.thought.guidance.model == "smartedit-7b"
        and expressive == smartedit.think(IMAGE, "make it red").expressive
    )
    controls = (3, 7.5, 1.5, 7, False, "keep_aspect", 64)
    *_, first = handlers.edit("smartedit-7b", IMAGE, "make it red", expressive, *controls, state)
    *_, second = handlers.edit("smartedit-7b", None, "now blue", "", *controls, first[w.state])  # from turn 1
    history = second[w.state].history
    assert len(history.turns) == 2 and history.turns[1].parent == 0
