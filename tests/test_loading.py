"""Strict loading of the official layout: every missing file/key and every mismatch names the file, the key,
expected vs found, and what to download."""

import json
import shutil

import pytest
import torch

from editor.layouts.configs import ip2p_scheduler_config
from editor.loading import CheckpointError, MissingWeightsError, load_scheduler
from editor.pipelines.mgie import MGIEPaths, load_mgie
from editor.pipelines.spec import LoadOptions
from editor.tiny import build_tiny_mgie_tree


@pytest.fixture
def tree(tiny_tree, tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(tiny_tree, copy)
    return copy


def _load(root):
    return load_mgie(MGIEPaths.from_weights_dir(root), options=LoadOptions("cpu"))


def _edit_pt(path, change):
    sd = torch.load(path, weights_only=True)
    change(sd)
    torch.save(sd, path)


@pytest.mark.parametrize(
    ("folder", "hint"),
    [("LLaVA-7B-v1", "LLaVA-Lightning-7B-delta"), ("mgie_7b", "mgie_7b.tar.gz"),
     ("instruct-pix2pix", "timbrooks/instruct-pix2pix"), ("clip-vit-large-patch14", "openai/clip-vit-large-patch14")],
)  # fmt: skip
def test_missing_folder_says_what_to_download(tree, folder, hint):
    shutil.rmtree(tree / folder)
    with pytest.raises(MissingWeightsError, match=rf"(?s){folder}.*How to get it.*{hint}"):
        _load(tree)


def test_missing_file(tree):
    (tree / "mgie_7b" / "unet.pt").unlink()
    with pytest.raises(MissingWeightsError, match=r"(?s)unet\.pt.*mgie_7b\.tar\.gz"):
        _load(tree)


def test_missing_shard_listed_in_the_index(tree):
    (tree / "LLaVA-7B-v1" / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(MissingWeightsError, match=r"pytorch_model-00002-of-00002\.bin"):
        _load(tree)


def test_missing_key_names_file_and_key(tree):
    _edit_pt(tree / "mgie_7b" / "mllm.pt", lambda sd: sd.pop("edit_head.mapper.decoder.norm.weight"))
    with pytest.raises(CheckpointError, match=r"mllm\.pt.*lacks 1 expected key.*mapper\.decoder\.norm\.weight"):
        _load(tree)


def test_shape_mismatch_names_expected_and_found(tree):
    def widen(sd):
        sd["conv_in.weight"] = torch.zeros(32, 4, 3, 3, dtype=torch.float16)

    _edit_pt(tree / "mgie_7b" / "unet.pt", widen)
    with pytest.raises(
        CheckpointError, match=r"unet\.pt.*'conv_in\.weight' has shape \(32, 4, 3, 3\), expected \(32, 8, 3, 3\)"
    ):
        _load(tree)


def test_unexpected_key_is_reported(tree):
    _edit_pt(tree / "mgie_7b" / "unet.pt", lambda sd: sd.update(stray=torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unet\.pt.*does not use: stray"):
        _load(tree)


def test_vocabulary_mismatch_between_tokenizer_and_mllm(tree):
    def shrink(sd):
        sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:-1]
        sd["lm_head.weight"] = sd["lm_head.weight"][:-1]

    _edit_pt(tree / "mgie_7b" / "mllm.pt", shrink)
    with pytest.raises(CheckpointError, match=r"tokenizer/embedding mismatch"):
        _load(tree)


def test_llava_layer_count_comes_from_config(tree):
    cfg = json.loads((tree / "LLaVA-7B-v1" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tree / "LLaVA-7B-v1" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"LLaVA-7B-v1 weights.*lacks.*llm\.model\.layers\.2\."):
        _load(tree)


def test_truncated_checkpoint(tree):
    path = tree / "mgie_7b" / "mllm.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"could not read .*mllm\.pt"):
        _load(tree)


class Payload:  # a non-tensor object: refused by weights_only unpickling
    pass


def test_pickles_are_loaded_weights_only(tree):
    torch.save({"model.embed_tokens.weight": torch.zeros(1), "x": Payload()}, tree / "mgie_7b" / "mllm.pt")
    with pytest.raises(CheckpointError, match=r"mllm\.pt"):
        _load(tree)


def test_bad_json_config(tree):
    (tree / "LLaVA-7B-v1" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        _load(tree)


@pytest.mark.parametrize(("fmt", "emb"), [("safetensors", "2d"), ("bin", "3d"), ("bin", "missing")])
def test_layout_variants_load_to_the_same_model(mgie, tmp_path, fmt, emb):
    """Sharded safetensors instead of .bin, and `emb` as [1, 8, H] or absent (then rows [IMG0..7] of
    embed_tokens) all give the same editor as the reference layout."""
    other = _load(build_tiny_mgie_tree(tmp_path / "w", llava_format=fmt, emb=emb))
    assert torch.equal(other.img_embeddings, mgie.img_embeddings)
    a = mgie.guidance_from_text(torch.zeros(16, 16, 3).numpy(), "make it red", "It turns red.")
    b = other.guidance_from_text(torch.zeros(16, 16, 3).numpy(), "make it red", "It turns red.")
    assert torch.equal(a.prompt_embeds, b.prompt_embeds)


def test_the_scheduler_is_the_class_its_config_names(tmp_path):
    folder = tmp_path / "scheduler"
    folder.mkdir()
    for name, expected in (
        ("EulerDiscreteScheduler", "EulerDiscreteScheduler"),
        (None, "EulerAncestralDiscreteScheduler"),
    ):
        config = ip2p_scheduler_config() | {"_class_name": name}
        if name is None:
            del config["_class_name"]  # a config without a class: Euler ancestral, as MGIE's demo sets
        (folder / "scheduler_config.json").write_text(json.dumps(config))
        assert type(load_scheduler(folder, "hint")).__name__ == expected
    for name in ("UNet2DConditionModel", "load_file", 3):
        (folder / "scheduler_config.json").write_text(json.dumps(ip2p_scheduler_config() | {"_class_name": name}))
        with pytest.raises(CheckpointError, match="not a diffusers scheduler"):
            load_scheduler(folder, "hint")
