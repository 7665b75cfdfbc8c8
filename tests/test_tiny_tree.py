"""The tiny MGIE tree has the official layout, key names and dtypes, and the real loaders accept it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaTokenizer

from editor import tiny
from editor.layouts.configs import OPENAI_CLIP_MEAN
from editor.layouts.folders import CLIP_L14, IP2P_SHELL, LLAVA_7B, MGIE_7B
from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import LLAVA_TOKENS, VICUNA_SYSTEM, build_clip_tokenizer, build_llama_tokenizer
from editor.prompts import IMG_TOKENS
from editor.tiny import build_edit_mapper_transformer, build_tiny_mgie_tree

LLAVA_DIR, MGIE_DIR, IP2P_DIR, CLIP_DIR = LLAVA_7B.name, MGIE_7B.name, IP2P_SHELL.name, CLIP_L14.name
SIZES = ModelSizes.from_name("tiny")
V = SIZES.sp_vocab
H = SIZES.llm_hidden

LLAVA_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
]
BIN_FILES = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]
SAFETENSORS_FILES = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
]
CLIP_TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
EXPECTED_FILES = [
    *(f"{LLAVA_DIR}/{name}" for name in LLAVA_FILES + BIN_FILES),
    f"{MGIE_DIR}/mllm.pt",
    f"{MGIE_DIR}/unet.pt",
    f"{IP2P_DIR}/model_index.json",
    f"{IP2P_DIR}/scheduler/scheduler_config.json",
    f"{IP2P_DIR}/unet/config.json",
    f"{IP2P_DIR}/unet/diffusion_pytorch_model.safetensors",
    f"{IP2P_DIR}/vae/config.json",
    f"{IP2P_DIR}/vae/diffusion_pytorch_model.safetensors",
    f"{IP2P_DIR}/text_encoder/config.json",
    f"{IP2P_DIR}/text_encoder/model.safetensors",
    *(f"{IP2P_DIR}/tokenizer/{name}" for name in CLIP_TOKENIZER_FILES),
    f"{CLIP_DIR}/config.json",
    f"{CLIP_DIR}/model.safetensors",
    f"{CLIP_DIR}/preprocessor_config.json",
    *(f"{CLIP_DIR}/{name}" for name in CLIP_TOKENIZER_FILES),
]


def expected_llava_keys(sizes: ModelSizes = SIZES) -> set[str]:
    keys = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}
    keys |= {"model.mm_projector.weight", "model.mm_projector.bias"}
    for i in range(sizes.llm_layers):
        layer = f"model.layers.{i}"
        keys |= {f"{layer}.self_attn.{p}_proj.weight" for p in "qkvo"}
        keys |= {f"{layer}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
        keys |= {f"{layer}.self_attn.rotary_emb.inv_freq", f"{layer}.input_layernorm.weight"}
        keys.add(f"{layer}.post_attention_layernorm.weight")
    return keys


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load_shards(folder: Path) -> tuple[dict[str, str], dict[str, dict[str, torch.Tensor]]]:
    """(weight_map, {shard file: its tensors}) of a sharded LLaVA folder in either format."""
    bin_index = folder / "pytorch_model.bin.index.json"
    index = bin_index if bin_index.exists() else folder / "model.safetensors.index.json"
    weight_map = read_json(index)["weight_map"]
    return weight_map, {name: load_tensors(folder / name) for name in sorted(set(weight_map.values()))}


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def merged(shards: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: value for shard in shards.values() for key, value in shard.items()}


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def sentencepiece_processor(tree: Path) -> Any:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(tree / LLAVA_DIR / "tokenizer.model"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_mgie_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def variant_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same seed, safetensors shards and a 3-d `emb`."""
    return build_tiny_mgie_tree(tmp_path_factory.mktemp("variant"), llava_format="safetensors", emb="3d")


@pytest.fixture(scope="module")
def llama_tokenizer(tree: Path) -> LlamaTokenizer:
    return LlamaTokenizer.from_pretrained(tree / LLAVA_DIR)


# ----------------------------------------------------------------------------------------------- layout


def test_every_official_file_exists(tree: Path) -> None:
    missing = [name for name in EXPECTED_FILES if not (tree / name).is_file()]
    assert missing == []
    assert not list((tree / LLAVA_DIR).glob("*.safetensors"))


def test_llava_config_is_the_v1_shape(tree: Path) -> None:
    config = read_json(tree / LLAVA_DIR / "config.json")
    assert config["architectures"] == ["LlavaLlamaForCausalLM"]
    assert config["model_type"] == "llava"
    assert config["vocab_size"] == V + 3
    assert (config["hidden_size"], config["intermediate_size"]) == (H, SIZES.llm_intermediate)
    assert (config["num_hidden_layers"], config["num_attention_heads"]) == (SIZES.llm_layers, SIZES.llm_heads)
    assert config["mm_hidden_size"] == SIZES.vision_hidden
    assert config["mm_vision_select_layer"] == -2
    assert config["mm_use_im_start_end"] is True
    assert config["mm_vision_tower"] == "openai/clip-vit-large-patch14"
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, -1)
    assert config["torch_dtype"] == "float16" and config["tie_word_embeddings"] is False
    assert config["transformers_version"] == "4.28.0.dev0"
    generation = read_json(tree / LLAVA_DIR / "generation_config.json")
    assert generation == {
        "_from_model_config": True,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "transformers_version": "4.30.2",
    }


def test_llava_shard_index_covers_exactly_the_llama_keys(tree: Path) -> None:
    folder = tree / LLAVA_DIR
    index = read_json(folder / "pytorch_model.bin.index.json")
    weight_map, shards = load_shards(folder)
    assert sorted(shards) == BIN_FILES[:2]
    for name, tensors in shards.items():
        assert {key for key, shard in weight_map.items() if shard == name} == set(tensors)
    state = merged(shards)
    assert set(state) == set(weight_map) == expected_llava_keys()
    assert not any("vision_tower" in key for key in state)
    total = sum(t.numel() * t.element_size() for t in state.values())
    assert index["metadata"]["total_size"] == total


def test_llava_shapes_and_dtypes(tree: Path) -> None:
    state = merged(load_shards(tree / LLAVA_DIR)[1])
    head_dim = H // SIZES.llm_heads
    for key, value in state.items():
        expected = torch.float32 if key.endswith("inv_freq") else torch.float16
        assert value.dtype == expected, key
    assert state["model.embed_tokens.weight"].shape == (V + 3, H)
    assert state["lm_head.weight"].shape == (V + 3, H)
    assert state["model.layers.0.self_attn.q_proj.weight"].shape == (H, H)
    assert state["model.layers.1.mlp.gate_proj.weight"].shape == (SIZES.llm_intermediate, H)
    assert state["model.layers.1.mlp.down_proj.weight"].shape == (H, SIZES.llm_intermediate)
    assert state["model.layers.0.self_attn.rotary_emb.inv_freq"].shape == (head_dim // 2,)
    assert state["model.mm_projector.weight"].shape == (H, SIZES.vision_hidden)
    assert torch.equal(state["model.norm.weight"], torch.ones(H, dtype=torch.float16))
    assert 0.01 < state["model.layers.0.self_attn.q_proj.weight"].float().std() < 0.03


def test_llava_weights_load_into_hf_llama(tree: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = read_json(tree / LLAVA_DIR / "config.json")
    llama_keys = {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")}
    model = LlamaForCausalLM(LlamaConfig(**llama_keys, num_attention_heads=config["num_attention_heads"]))
    state = merged(load_shards(tree / LLAVA_DIR)[1])
    llama_state = {k: v for k, v in state.items() if "mm_projector" not in k and not k.endswith("inv_freq")}
    model.load_state_dict(llama_state, strict=True)


# ------------------------------------------------------------------------------------------------ mgie_7b


def test_mllm_keys_shapes_and_emb(tree: Path) -> None:
    state = load_tensors(tree / MGIE_DIR / "mllm.pt")
    mapper_keys = {f"edit_head.mapper.{k}" for k in build_edit_mapper_transformer(SIZES).state_dict()}
    assert "edit_head.mapper.encoder.layers.0.self_attn.in_proj_weight" in mapper_keys
    assert "edit_head.mapper.decoder.layers.1.multihead_attn.out_proj.bias" in mapper_keys
    assert "edit_head.mapper.encoder.norm.weight" in mapper_keys
    other = {"model.embed_tokens.weight", "lm_head.weight", "emb", "edit_head.query"}
    other |= {f"edit_head.{m}.{p}" for m in ("llm2hid", "hid2feat") for p in ("weight", "bias")}
    assert set(state) == mapper_keys | other
    assert all(value.dtype == torch.float16 for value in state.values())
    d_model = SIZES.head_dim_model
    assert state["model.embed_tokens.weight"].shape == (V + 11, H)
    assert state["lm_head.weight"].shape == (V + 11, H)
    assert state["edit_head.llm2hid.weight"].shape == (d_model, H)
    assert state["edit_head.query"].shape == (1, SIZES.head_queries, d_model)
    assert state["edit_head.hid2feat.weight"].shape == (SIZES.cross_attention_dim, d_model)
    assert state["emb"].shape == (8, H)
    assert torch.equal(state["emb"], state["model.embed_tokens.weight"][-8:])


def test_mllm_mapper_loads_strictly_into_nn_transformer(tree: Path) -> None:
    state = load_tensors(tree / MGIE_DIR / "mllm.pt")
    prefix = "edit_head.mapper."
    mapper = build_edit_mapper_transformer(SIZES)
    mapper.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)


def test_mgie_unet_loads_strictly_and_differs_from_ip2p(tree: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet_dir = tree / IP2P_DIR / "unet"
    mgie_state = load_tensors(tree / MGIE_DIR / "unet.pt")
    assert all(value.dtype == torch.float16 for value in mgie_state.values())
    assert mgie_state["conv_in.weight"].shape == (32, 8, 3, 3)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(unet_dir))
    unet.load_state_dict(mgie_state, strict=True)
    ip2p_state = load_file(str(unet_dir / "diffusion_pytorch_model.safetensors"))
    assert set(ip2p_state) == set(mgie_state)
    assert not torch.equal(ip2p_state["conv_in.weight"].half(), mgie_state["conv_in.weight"])


# ---------------------------------------------------------------------------------------- instruct-pix2pix


def test_ip2p_index_and_scheduler(tree: Path) -> None:
    from diffusers import EulerAncestralDiscreteScheduler

    index = read_json(tree / IP2P_DIR / "model_index.json")
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    scheduler = read_json(tree / IP2P_DIR / "scheduler" / "scheduler_config.json")
    assert "timestep_spacing" not in scheduler
    assert scheduler["beta_schedule"] == "scaled_linear" and scheduler["steps_offset"] == 1
    assert (scheduler["beta_start"], scheduler["beta_end"]) == (0.00085, 0.012)
    loaded = EulerAncestralDiscreteScheduler.from_pretrained(tree / IP2P_DIR, subfolder="scheduler")
    assert loaded.config.prediction_type == "epsilon"


def test_ip2p_pipeline_loads_and_runs(tree: Path) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(tree / IP2P_DIR)
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    image = torch.rand(1, 3, 64, 64)
    out = pipe("make it blue", image=image, num_inference_steps=2, output_type="pt")
    assert out.images.shape == (1, 3, 64, 64)
    assert torch.isfinite(out.images).all()


# ------------------------------------------------------------------------------------------------- CLIP


def test_clip_vision_tower_loads_from_the_full_checkpoint(tree: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionModel

    folder = tree / CLIP_DIR
    config = read_json(folder / "config.json")
    assert config["model_type"] == "clip" and config["vision_config"]["hidden_act"] == "quick_gelu"
    keys = set(load_file(str(folder / "model.safetensors")))
    assert {"logit_scale", "visual_projection.weight", "text_projection.weight"} <= keys
    assert any(k.startswith("text_model.") for k in keys) and any(k.startswith("vision_model.") for k in keys)

    model, info = CLIPVisionModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]
    processor = CLIPImageProcessor.from_pretrained(folder)
    assert list(processor.image_mean) == list(OPENAI_CLIP_MEAN)
    pixels = processor(images=torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8), return_tensors="pt")
    assert pixels["pixel_values"].shape == (1, 3, SIZES.vision_image_size, SIZES.vision_image_size)
    with torch.no_grad():
        hidden = model(**pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert hidden.shape == (1, 16, SIZES.vision_hidden)


def test_clip_tokenizer_encodes(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    build_clip_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert tokenizer.model_max_length == 77
    ids = tokenizer("make it blue").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "make</w>", "it</w>", "blue</w>", "<|endoftext|>"]
    assert len(tokenizer("Turn the SKY pink!", padding="max_length").input_ids) == 77


# ---------------------------------------------------------------------------------------------- tokenizer


def test_llama_tokenizer_ids(llama_tokenizer: LlamaTokenizer) -> None:
    tokenizer = llama_tokenizer
    assert len(tokenizer) == V + 3
    assert tokenizer.convert_tokens_to_ids(list(LLAVA_TOKENS)) == [V, V + 1, V + 2]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 2, 0)
    assert tokenizer.model_max_length == 2048
    ids = tokenizer("make the sky blue").input_ids
    assert ids[0] == 1 and 2 not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "make the sky blue"
    assert tokenizer.add_tokens(list(IMG_TOKENS), special_tokens=True) == 8
    assert tokenizer.convert_tokens_to_ids(list(IMG_TOKENS)) == list(range(V + 3, V + 11))


def test_llama_tokenizer_matches_sentencepiece(tree: Path, llama_tokenizer: LlamaTokenizer) -> None:
    processor = sentencepiece_processor(tree)
    assert processor.get_piece_size() == V
    assert [processor.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert processor.id_to_piece(13) == "<0x0A>" and processor.is_byte(13)
    for text in (VICUNA_SYSTEM, "USER: turn the sky red\nASSISTANT:", "add 12 cats, émigré"):
        assert llama_tokenizer(text).input_ids == [1, *processor.encode(text)]


def test_llama_tokenizer_files_are_the_legacy_ones(tree: Path) -> None:
    from sentencepiece import sentencepiece_model_pb2

    folder = tree / LLAVA_DIR
    assert read_json(folder / "added_tokens.json") == {"<im_end>": V + 2, "<im_patch>": V, "<im_start>": V + 1}
    config = read_json(folder / "tokenizer_config.json")
    assert config["tokenizer_class"] == "LlamaTokenizer" and config["pad_token"] is None
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert config["clean_up_tokenization_spaces"] is False
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    spec = proto.trainer_spec
    assert spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert spec.byte_fallback and spec.split_digits and spec.allow_whitespace_only_pieces
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    normalizer = proto.normalizer_spec
    assert normalizer.name == "identity" and normalizer.add_dummy_prefix
    assert not normalizer.remove_extra_whitespaces


def test_whitespace_around_added_tokens(tree: Path, llama_tokenizer: LlamaTokenizer) -> None:
    """Added tokens split the text; only the very first segment gets SentencePiece's dummy-prefix space."""
    processor = sentencepiece_processor(tree)
    newline = llama_tokenizer("\n<im_start>").input_ids
    assert llama_tokenizer.convert_ids_to_tokens(newline) == ["<s>", "▁", "<0x0A>", "<im_start>"]
    after = llama_tokenizer("<im_end> ASSISTANT:").input_ids
    assert after == [1, V + 2, *processor.encode("ASSISTANT:")]  # " ASSISTANT:" -> "▁ASSISTANT:", no "▁▁"
    assert llama_tokenizer.convert_ids_to_tokens(after)[2].startswith("▁A")


def test_llama_tokenizer_without_llava_tokens(tmp_path: Path) -> None:
    from transformers import LlamaTokenizer

    build_llama_tokenizer(tmp_path, vocab_size=400, corpus=["a purple giraffe"], add_llava_tokens=False)
    tokenizer = LlamaTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) == 400
    assert not (tmp_path / "added_tokens.json").exists()
    assert tokenizer("a purple giraffe").input_ids[0] == 1


# ----------------------------------------------------------------------------------------------- variants


def test_safetensors_variant_holds_the_same_llava_tensors(tree: Path, variant_tree: Path) -> None:
    folder = variant_tree / LLAVA_DIR
    assert all((folder / name).is_file() for name in SAFETENSORS_FILES)
    assert not list(folder.glob("*.bin"))
    weight_map, shards = load_shards(folder)
    assert sorted(shards) == SAFETENSORS_FILES[:2]
    bin_state = merged(load_shards(tree / LLAVA_DIR)[1])
    st_state = merged(shards)
    assert set(st_state) == set(weight_map) == set(bin_state)
    assert all(torch.equal(st_state[k], bin_state[k]) and st_state[k].dtype == bin_state[k].dtype for k in st_state)


def test_rebuild_in_the_other_format_replaces_the_shards(tmp_path: Path) -> None:
    folder = tmp_path / LLAVA_DIR
    build_tiny_mgie_tree(tmp_path, llava_format="safetensors")
    build_tiny_mgie_tree(tmp_path, llava_format="bin")
    assert sorted(p.name for p in folder.glob("*.bin*")) == sorted(BIN_FILES)
    assert not list(folder.glob("*.safetensors*"))


def test_emb_3d_variant(tree: Path, variant_tree: Path) -> None:
    state = load_tensors(variant_tree / MGIE_DIR / "mllm.pt")
    assert state["emb"].shape == (1, 8, H)
    assert torch.equal(state["emb"][0], state["model.embed_tokens.weight"][-8:])


def test_emb_missing_variant() -> None:
    state = tiny.mllm_state(SIZES, seed=0, emb="missing")
    assert "emb" not in state and "model.embed_tokens.weight" in state
    with pytest.raises(ValueError, match="emb"):
        tiny.mllm_state(SIZES, seed=0, emb="4d")  # type: ignore[arg-type]


def test_emb_missing_tree(tmp_path: Path) -> None:
    build_tiny_mgie_tree(tmp_path, emb="missing")
    state = load_tensors(tmp_path / MGIE_DIR / "mllm.pt")
    assert "emb" not in state


# -------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tree: Path, tmp_path: Path) -> None:
    again = build_tiny_mgie_tree(tmp_path)
    assert file_digests(again) == file_digests(tree)


def test_other_seed_gives_other_weights() -> None:
    first, other = tiny.llava_shards(SIZES, seed=0), tiny.llava_shards(SIZES, seed=1)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(first[0][key], other[0][key])
    assert not torch.equal(tiny.mllm_state(SIZES, 0)["emb"], tiny.mllm_state(SIZES, 1)["emb"])


def test_building_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    tiny.mllm_state(SIZES, seed=0)
    after_build = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_build)


def test_custom_sizes(tmp_path: Path) -> None:
    sizes = ModelSizes.from_name(
        "tiny", llm_hidden=16, llm_layers=3, llm_heads=2, head_queries=5, cross_attention_dim=16
    )
    shards = tiny.llava_shards(sizes, seed=0)
    assert set(shards[0]) | set(shards[1]) == expected_llava_keys(sizes)
    assert shards[1]["lm_head.weight"].shape == (sizes.sp_vocab + 3, 16)
    state = tiny.mllm_state(sizes, seed=0)
    assert state["edit_head.query"].shape == (1, 5, sizes.head_dim_model)
    assert state["edit_head.hid2feat.weight"].shape == (16, sizes.head_dim_model)
