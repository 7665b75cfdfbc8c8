"""Weights on disk: LLaVA delta application, pickle -> safetensors conversion, and verification of a tree."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from editor import loading
from editor.loading import read_state_dict
from editor.pipelines.registry import load_editor
from editor.weights import catalog, convert
from editor.weights.__main__ import main
from editor.weights.catalog import (
    MODELS,
    installed,
)
from editor.weights.delta import apply_llava_delta
from editor.weights.verify import check_files, check_loads


@pytest.fixture
def tree(tiny_tree, tmp_path) -> Path:
    """A private copy of the tiny official-layout tree (the tests below rewrite files)."""
    return Path(shutil.copytree(tiny_tree, tmp_path / "weights"))


def _think(weights: Path) -> torch.Tensor:
    editor = load_editor("mgie-7b", weights, "cpu")
    return editor.think(Image_rgb(), "make it red").prompt_embeds


def Image_rgb():  # noqa: N802 - a tiny fixed input
    from PIL import Image

    return Image.new("RGB", (32, 32), (120, 30, 200))


# ---- LLaVA delta -------------------------------------------------------------------------------------------------


def test_llava_delta_on_llama_rebuilds_the_merged_folder(tree, tmp_path):
    merged_dir = tree / "LLaVA-7B-v1"
    merged = {
        k: v.float()
        for _, sd in [(None, read_state_dict(f, "")) for f in loading.weight_files(merged_dir, "")]
        for k, v in sd.items()
        if not k.endswith("inv_freq")
    }
    gen = torch.Generator().manual_seed(0)
    base, delta = {}, {}
    for key, value in merged.items():
        if key.startswith("model.mm_projector."):
            delta[key] = value
            continue
        rows = value.shape[0] - 3 if key in ("model.embed_tokens.weight", "lm_head.weight") else value.shape[0]
        base[key] = torch.randn(rows, *value.shape[1:], generator=gen)
        delta[key] = value.clone()
        delta[key][:rows] -= base[key]
    (tmp_path / "llama").mkdir()
    (tmp_path / "delta").mkdir()
    convert.save_sharded(
        {k: loading.TensorRef(tuple(v.shape), 0, lambda v=v: v) for k, v in base.items()}, tmp_path / "llama"
    )
    torch.save(delta, tmp_path / "delta" / "pytorch_model.bin")
    for name in (
        "config.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ):
        shutil.copy(merged_dir / name, tmp_path / "delta" / name)
    before = _think(tree)
    out = apply_llava_delta(tmp_path / "llama", tmp_path / "delta", merged_dir)
    rebuilt = loading.open_tensors(loading.weight_files(out, ""), "")
    assert rebuilt.keys() == merged.keys()
    for key, value in merged.items():
        torch.testing.assert_close(rebuilt[key].load(), value, rtol=0, atol=1e-5)
    torch.testing.assert_close(_think(tree), before, rtol=1e-4, atol=1e-4)


def test_a_delta_on_the_wrong_base_is_refused(tmp_path):
    for name, rows in (("base", 5), ("delta", 9)):
        (tmp_path / name).mkdir()
        torch.save({"model.layers.0.mlp.up_proj.weight": torch.zeros(rows, 4)}, tmp_path / name / "pytorch_model.bin")
    with pytest.raises(ValueError, match="does not fit base shape"):
        apply_llava_delta(tmp_path / "base", tmp_path / "delta", tmp_path / "out")


# ---- conversion ---------------------------------------------------------------------------------------------------


def test_convert_writes_safetensors_that_load_identically(tree, monkeypatch, capsys):
    before = _think(tree)
    monkeypatch.setattr(convert, "SHARD_BYTES", 60_000)  # force the LLaVA shards to re-shard
    assert main(["convert", "mgie-7b", "--weights-dir", str(tree), "--remove-originals"]) == 0
    assert "checked equal" in capsys.readouterr().out
    assert not list(tree.rglob("*.bin")) and not list(tree.rglob("*.pt"))
    assert (tree / "LLaVA-7B-v1" / "model.safetensors.index.json").exists()
    assert (tree / "mgie_7b" / "mllm.safetensors").exists()
    assert torch.equal(_think(tree), before)
    assert main(["convert", "mgie-7b", "--weights-dir", str(tree)]) == 0
    assert "nothing to convert" in capsys.readouterr().out


def test_convert_drops_oversized_view_storages(tmp_path):
    big = torch.randn(1000, 100)
    torch.save({"w": big[:2]}, tmp_path / "adapter_model.bin")  # a view: the pickle stores all 100k floats
    convert.convert_folder(tmp_path, "")
    assert (tmp_path / "adapter_model.safetensors").stat().st_size < 2000
    assert torch.equal(loading.open_tensors([tmp_path / "adapter_model.safetensors"], "")["w"].load(), big[:2])


def test_magicbrush_pickles_load_and_convert(tree, tmp_path):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        tree / "instruct-pix2pix", safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(tree / "magicbrush", safe_serialization=False)  # the Hub copy is .bin pickles
    assert list((tree / "magicbrush").rglob("*.bin")) and installed(MODELS["magicbrush"], tree)

    def edit():
        editor = load_editor("magicbrush", tree, "cpu")
        from editor.params import EditParams, Resolution

        guidance = editor.think(Image_rgb(), "make it blue")
        assert guidance.expressive == "make it blue"  # no MLLM: the instruction is the condition
        return editor.render(Image_rgb(), guidance, EditParams(steps=2, resolution=Resolution(size=64))).image

    before = edit()
    convert.convert_folder(tree / "magicbrush", "", remove_originals=True)
    assert not list((tree / "magicbrush").rglob("*.bin"))
    assert list(before.getdata()) == list(edit().getdata())


# ---- verification -------------------------------------------------------------------------------------------------


def test_verify_passes_a_good_tree_and_loads_it(tree, capsys):
    assert main(["verify", "mgie-7b", "--weights-dir", str(tree)]) == 0
    assert "mgie-7b: ok" in capsys.readouterr().out
    future = catalog.ModelEntry("future", "a model the app cannot run yet", (catalog.CLIP_L14,), "", editor=None)
    assert check_loads(future, tree, load_editor)[0].what.endswith("loading is not checked")


def test_verify_catches_truncation_hash_and_load_errors(tree, capsys):
    folder = tree / "mgie_7b"
    body = (folder / "unet.pt").read_bytes()
    record = {
        n: {"size": (folder / n).stat().st_size, "sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest()}
        for n in ("mllm.pt", "unet.pt")
    }
    (folder / ".download.json").write_text(json.dumps({"files": record}))
    (folder / "unet.pt").write_bytes(body[:-10])
    problems = check_files(MODELS["mgie-7b"], tree)
    assert any("unet.pt" in p.where and "the Hub says" in p.what for p in problems)
    assert any("published size about 588,000,000" in p.what and not p.fatal for p in problems)  # tiny != real
    flipped = bytearray(body)
    flipped[-100] ^= 1
    (folder / "unet.pt").write_bytes(bytes(flipped))
    assert not [p for p in check_files(MODELS["mgie-7b"], tree) if p.fatal]  # same size: only the hash can tell
    assert [p.what for p in check_files(MODELS["mgie-7b"], tree, hashes=True) if p.fatal] == [
        "SHA-256 differs from the Hub's; delete it and download again"
    ]
    (folder / "unet.pt").write_bytes(b"not a checkpoint")
    (folder / ".download.json").unlink()
    assert main(["verify", "mgie-7b", "--weights-dir", str(tree)]) == 1
    assert "does not load" in capsys.readouterr().out
