"""The four official MGIE folders at tiny sizes: LLaVA, mgie_7b, instruct-pix2pix and CLIP.

`ModelSizes` (editor/layouts/sizes.py, its "tiny" preset by default) sets every model's size; one `build_*_folder`
per folder; `build_tiny_mgie_tree` writes all four.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from editor.layouts.configs import clip_config, clip_preprocessor_config, llava_config
from editor.layouts.files import ShardFormat, write_json, write_sharded
from editor.layouts.folders import CLIP_L14, IP2P_SHELL, LLAVA_7B, MGIE_7B
from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import build_clip_tokenizer, build_llama_tokenizer
from editor.prompts import IMG_TOKENS  # MGIE's visual tokens, ids V+3 .. V+10
from editor.tiny._common import (
    SEED_CLIP,
    SEED_LLAVA,
    SEED_MGIE_UNET,
    SEED_MLLM,
    WEIGHT_STD,
    half,
    randn,
    seeded,
    sub_seed,
)
from editor.tiny.diffusion import build_ip2p_folder, build_unet

EmbShape = Literal["2d", "3d", "missing"]


def _check_emb(emb: str) -> None:
    if emb not in ("2d", "3d", "missing"):
        raise ValueError(f"emb must be '2d', '3d' or 'missing', got {emb!r}")


# ------------------------------------------------------------------------------------------ LLaVA folder


def _rotary_inv_freq(head_dim: int) -> torch.Tensor:
    """The fp32 `rotary_emb.inv_freq` buffer old transformers (<4.31) saved in every LLaMA layer."""
    return 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def _llama_layer(prefix: str, sizes: ModelSizes, gen: torch.Generator) -> dict[str, torch.Tensor]:
    hidden, inter = sizes.llm_hidden, sizes.llm_intermediate
    return {
        **{f"{prefix}.self_attn.{p}_proj.weight": randn(gen, hidden, hidden).half() for p in "qkvo"},
        f"{prefix}.self_attn.rotary_emb.inv_freq": _rotary_inv_freq(hidden // sizes.llm_heads),
        f"{prefix}.mlp.gate_proj.weight": randn(gen, inter, hidden).half(),
        f"{prefix}.mlp.down_proj.weight": randn(gen, hidden, inter).half(),
        f"{prefix}.mlp.up_proj.weight": randn(gen, inter, hidden).half(),
        f"{prefix}.input_layernorm.weight": torch.ones(hidden, dtype=torch.float16),
        f"{prefix}.post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.float16),
    }


def llava_shards(sizes: ModelSizes, seed: int) -> list[dict[str, torch.Tensor]]:
    """LLaVA's weights in HF LLaMA key order, split in two shards (later layers + heads in the second)."""
    gen = torch.Generator().manual_seed(sub_seed(seed, SEED_LLAVA))
    hidden = sizes.llm_hidden
    first: dict[str, torch.Tensor] = {"model.embed_tokens.weight": randn(gen, sizes.llava_vocab, hidden).half()}
    second: dict[str, torch.Tensor] = {}
    split = (sizes.llm_layers + 1) // 2
    for i in range(sizes.llm_layers):
        (first if i < split else second).update(_llama_layer(f"model.layers.{i}", sizes, gen))
    second["model.norm.weight"] = torch.ones(hidden, dtype=torch.float16)
    second["model.mm_projector.weight"] = randn(gen, hidden, sizes.vision_hidden).half()
    second["model.mm_projector.bias"] = randn(gen, hidden).half()
    second["lm_head.weight"] = randn(gen, sizes.llava_vocab, hidden).half()
    return [first, second]


def build_llava_folder(folder: Path, sizes: ModelSizes, seed: int, fmt: ShardFormat = "bin") -> None:
    build_llama_tokenizer(folder, vocab_size=sizes.sp_vocab)  # first: it loads from the folder
    write_json(folder / "config.json", llava_config(sizes))
    generation = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    write_json(folder / "generation_config.json", {**generation, "transformers_version": "4.30.2"})
    write_sharded(folder, llava_shards(sizes, seed), fmt)


# ------------------------------------------------------------------------------------------- MGIE folder


def build_edit_mapper_transformer(sizes: ModelSizes) -> nn.Transformer:
    """The `edit_head.mapper` module of MGIE's EditMapper, at tiny sizes."""
    with warnings.catch_warnings():  # norm_first disables the nested-tensor fast path; torch says so loudly
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        return nn.Transformer(
            d_model=sizes.head_dim_model,
            nhead=sizes.head_heads,
            num_encoder_layers=sizes.head_encoder_layers,
            num_decoder_layers=sizes.head_decoder_layers,
            dim_feedforward=sizes.head_ffn,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value for key, value in state.items()}


def _edit_head_state(sizes: ModelSizes) -> dict[str, torch.Tensor]:
    """EditMapper: llm2hid -> (query, mapper transformer) -> hid2feat; call under `seeded`."""
    llm2hid = nn.Linear(sizes.llm_hidden, sizes.head_dim_model)  # built in this order: it fixes the weights
    query = torch.randn(1, sizes.head_queries, sizes.head_dim_model)
    mapper = build_edit_mapper_transformer(sizes)
    hid2feat = nn.Linear(sizes.head_dim_model, sizes.cross_attention_dim)
    state = {
        **_prefixed("llm2hid", llm2hid.state_dict()),
        "query": query,
        **_prefixed("mapper", mapper.state_dict()),
        **_prefixed("hid2feat", hid2feat.state_dict()),
    }
    return _prefixed("edit_head", state)


def mllm_state(sizes: ModelSizes, seed: int, emb: EmbShape = "2d") -> dict[str, torch.Tensor]:
    """Contents of mgie_7b/mllm.pt: grown embed_tokens / lm_head, edit head, and `emb` (last 8 rows)."""
    _check_emb(emb)
    with seeded(sub_seed(seed, SEED_MLLM)):
        embed = torch.randn(sizes.mgie_vocab, sizes.llm_hidden) * WEIGHT_STD
        lm_head = torch.randn(sizes.mgie_vocab, sizes.llm_hidden) * WEIGHT_STD
        state = half({"model.embed_tokens.weight": embed, "lm_head.weight": lm_head, **_edit_head_state(sizes)})
    rows = state["model.embed_tokens.weight"][-len(IMG_TOKENS) :].clone()
    if emb != "missing":
        state["emb"] = rows if emb == "2d" else rows.unsqueeze(0)
    return state


def build_mgie_folder(folder: Path, sizes: ModelSizes, seed: int, emb: EmbShape) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(mllm_state(sizes, seed, emb), folder / "mllm.pt")
    unet = build_unet(sizes, sub_seed(seed, SEED_MGIE_UNET))
    torch.save(half(unet.state_dict()), folder / "unet.pt")


# --------------------------------------------------------------------------------------------- CLIP folder


def build_clip_folder(folder: Path, sizes: ModelSizes, seed: int) -> None:
    from transformers import CLIPConfig, CLIPModel

    with seeded(sub_seed(seed, SEED_CLIP)):
        CLIPModel(CLIPConfig(**clip_config(sizes))).save_pretrained(folder)
    write_json(folder / "preprocessor_config.json", clip_preprocessor_config(sizes))
    build_clip_tokenizer(folder)


# ----------------------------------------------------------------------------------------------- the tree


def build_tiny_mgie_tree(
    root: Path,
    *,
    sizes: ModelSizes = ModelSizes(),  # noqa: B008 - frozen dataclass, safe as a default
    seed: int = 0,
    llava_format: ShardFormat = "bin",
    emb: EmbShape = "2d",
) -> Path:
    """Write the four official MGIE folders under `root` (see `editor.tiny`) and return `root`."""
    if llava_format not in ("bin", "safetensors"):
        raise ValueError(f"llava_format must be 'bin' or 'safetensors', got {llava_format!r}")
    _check_emb(emb)
    root = Path(root)
    build_llava_folder(root / LLAVA_7B.name, sizes, seed, llava_format)
    build_mgie_folder(root / MGIE_7B.name, sizes, seed, emb)
    build_ip2p_folder(root / IP2P_SHELL.name, sizes, seed)
    build_clip_folder(root / CLIP_L14.name, sizes, seed)
    return root
