"""Tiny, random-weight stand-ins for the official MGIE checkpoint folders, for offline tests.

`build_tiny_mgie_tree(root)` writes the four folders MGIE's demo reads, with exactly the file layout,
file names, state-dict key names and dtypes of the real downloads, but with a few kilobytes of random
weights instead of ~30 GB:

    root/LLaVA-7B-v1/             merged LLaVA-Lightning-7B v1.1 (LLaMA keys + mm_projector, 2 fp16 shards)
    root/mgie_7b/mllm.pt          grown embeddings / lm_head, the edit head, and `emb`
    root/mgie_7b/unet.pt          MGIE's fine-tuned UNet as a flat fp16 state dict
    root/instruct-pix2pix/        diffusers layout of timbrooks/instruct-pix2pix
    root/clip-vit-large-patch14/  layout of openai/clip-vit-large-patch14

So the project's real loaders can be exercised end to end without network or GPU. Everything is
deterministic given `seed`; building takes a couple of seconds on a small CPU.
"""

from __future__ import annotations

import io
import itertools
import json
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

LLAVA_DIR = "LLaVA-7B-v1"
MGIE_DIR = "mgie_7b"
IP2P_DIR = "instruct-pix2pix"
CLIP_DIR = "clip-vit-large-patch14"

LLAVA_TOKENS = ("<im_patch>", "<im_start>", "<im_end>")  # ids V, V+1, V+2 after the SentencePiece vocab
IMG_TOKENS = tuple(f"[IMG{i}]" for i in range(8))  # MGIE's visual tokens, ids V+3 .. V+10
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_STD = 0.02
IP2P_DIFFUSERS_VERSION = "0.12.0.dev0"

# Sub-seeds: each component draws from its own stream, so changing one never shifts another.
_SEED_LLAVA, _SEED_MLLM, _SEED_IP2P_UNET, _SEED_MGIE_UNET, _SEED_VAE, _SEED_TEXT, _SEED_CLIP = range(7)


@dataclass(frozen=True)
class TinySizes:
    """Sizes of every tiny model; the defaults build in about a second."""

    llm_hidden: int = 32
    llm_intermediate: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    vision_hidden: int = 32
    vision_intermediate: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    vision_image_size: int = 32
    vision_patch_size: int = 8  # -> 16 image patches
    head_dim_model: int = 32
    head_heads: int = 4
    head_encoder_layers: int = 2
    head_decoder_layers: int = 2
    head_ffn: int = 64
    head_queries: int = 77
    cross_attention_dim: int = 32  # UNet cross-attention dim == edit head output dim
    sp_vocab: int = 512  # sentencepiece vocabulary (LLaMA has 32000)

    @property
    def llava_vocab(self) -> int:
        """LLaVA's vocabulary: SentencePiece pieces + <im_patch>, <im_start>, <im_end>."""
        return self.sp_vocab + len(LLAVA_TOKENS)

    @property
    def mgie_vocab(self) -> int:
        """MGIE's vocabulary: LLaVA's + [IMG0] .. [IMG7]."""
        return self.llava_vocab + len(IMG_TOKENS)


# --------------------------------------------------------------------------------------------- helpers


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _sub_seed(seed: int, component: int) -> int:
    return seed * 16 + component


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run module constructors under a fixed global torch seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * WEIGHT_STD


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().to(torch.float16).contiguous() for key, value in state.items()}


# ------------------------------------------------------------------------------- LLaMA-style tokenizer

_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "pink", "golden")
_OBJECTS = (
    "sky", "car", "cat", "dog", "tree", "house", "hat", "shirt", "water", "grass",
    "flowers", "sun", "moon", "road", "boat", "bird", "mountain", "face", "hair", "background",
)  # fmt: skip
_STYLES = ("winter", "night", "sunset", "a painting", "a cartoon", "snow", "rain", "fire", "autumn", "summer")


def _edit_sentences() -> list[str]:
    """A few hundred plain English edit instructions (deterministic order)."""
    sentences = []
    for colour, obj in itertools.product(_COLOURS, _OBJECTS):
        sentences.append(f"make the {obj} {colour}")
        sentences.append(f"turn the {obj} {colour}")
    for obj in _OBJECTS:
        sentences += [f"add a {obj}", f"remove the {obj}", f"add a {obj} to the background", f"make it a {obj}"]
    for style in _STYLES:
        sentences += [f"make it {style}", f"turn the sky into {style}", f"what if it was {style}"]
    sentences += [
        "what will this image be like if",
        "make it look older",
        "make the photo brighter and sharper",
        "change the colour of the car to blue",
        "put sunglasses on the man",
        "let the woman smile",
        "replace the cat with a dog",
        "the image shows a person standing in front of a large building with 2 windows and 13 doors",
    ]
    return sentences


def _llama_corpus(extra: Iterable[str]) -> list[str]:
    return [VICUNA_SYSTEM, "USER", "ASSISTANT", "USER: ASSISTANT:", *_edit_sentences(), *extra]


def _train_sentencepiece(vocab_size: int, sentences: list[str]) -> bytes:
    """Train a BPE SentencePiece model configured like LLaMA's tokenizer.model."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        add_dummy_prefix=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _legacy_added_token(content: str, with_type: bool) -> dict[str, Any]:
    token: dict[str, Any] = {
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    return {"__type": "AddedToken", **token} if with_type else token


def _write_legacy_llama_configs(out_dir: Path) -> None:
    """tokenizer_config.json / special_tokens_map.json as transformers 4.28-4.30 wrote them for LLaVA."""
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config: dict[str, Any] = {name: _legacy_added_token(text, True) for name, text in specials.items()}
    config.update(
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 2048,
            "pad_token": None,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        }
    )
    _write_json(out_dir / "tokenizer_config.json", config)
    special_map = {name: _legacy_added_token(text, False) for name, text in specials.items()}
    _write_json(out_dir / "special_tokens_map.json", special_map)


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


def build_llama_tokenizer(
    out_dir: Path, *, vocab_size: int = 512, corpus: Iterable[str] = (), add_llava_tokens: bool = True
) -> None:
    """Write a LLaMA-style tokenizer (SentencePiece BPE + HF files) to `out_dir`.

    Ids: <unk> 0, <s> 1, </s> 2, the 256 byte pieces 3..258 (so "\\n" is <0x0A> = 13 as in LLaMA), then
    BPE merges up to `vocab_size`; with `add_llava_tokens`, <im_patch>, <im_start>, <im_end> get
    vocab_size, +1, +2 the way LLaVA added them (`add_tokens(..., special_tokens=True)`).
    """
    from transformers import LlamaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:  # stale files would be loaded instead of the fresh tokenizer.model
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "tokenizer.model").write_bytes(_train_sentencepiece(vocab_size, _llama_corpus(corpus)))

    tokenizer = LlamaTokenizer.from_pretrained(out_dir, add_bos_token=True, add_eos_token=False)
    if add_llava_tokens:
        tokenizer.add_tokens(list(LLAVA_TOKENS), special_tokens=True)
    tokenizer.save_pretrained(out_dir)  # tokenizer.json (with the BOS post-processor and added tokens)

    for name in _TOKENIZER_FILES[1:]:  # keep tokenizer.model + tokenizer.json, rewrite the rest 4.30-style
        (out_dir / name).unlink(missing_ok=True)
    _write_legacy_llama_configs(out_dir)
    if add_llava_tokens:
        _write_json(out_dir / "added_tokens.json", {tok: vocab_size + i for i, tok in enumerate(LLAVA_TOKENS)})


# --------------------------------------------------------------------------------- CLIP-style tokenizer

_CLIP_WORDS = ("make", "it", "the", "blue", "red", "green", "sky", "turn", "add", "remove", "photo", "of", "a")


def _byte_unicode_chars() -> list[str]:
    """GPT-2/CLIP's byte -> printable unicode table, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(shifted))]


def _clip_vocab_and_merges() -> tuple[list[str], list[tuple[str, str]]]:
    """Bytes, bytes + </w>, a few word merges (left to right), then the two specials."""
    chars = _byte_unicode_chars()
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in _CLIP_WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
                vocab.append(pair[0] + pair[1])
            pieces = [pair[0] + pair[1], *pieces[2:]]
    return [*vocab, "<|startoftext|>", "<|endoftext|>"], merges


def build_clip_tokenizer(out_dir: Path) -> None:
    """Write a tiny CLIPTokenizer folder (vocab.json, merges.txt, tokenizer.json, configs); max length 77."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        (out_dir / name).unlink(missing_ok=True)
    vocab, merges = _clip_vocab_and_merges()
    _write_json(out_dir / "vocab.json", {token: i for i, token in enumerate(vocab)})
    merge_lines = [f"{left} {right}" for left, right in merges]
    (out_dir / "merges.txt").write_text("\n".join(["#version: 0.2", *merge_lines]) + "\n", encoding="utf-8")

    CLIPTokenizer.from_pretrained(out_dir, model_max_length=77).save_pretrained(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for loader_state in ("is_local", "local_files_only"):  # facts about this load, not part of the layout
        config.pop(loader_state, None)
    _write_json(config_path, config)
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"}
    specials |= {"pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    _write_json(out_dir / "special_tokens_map.json", specials)


# ------------------------------------------------------------------------------------------ LLaVA folder


def llava_config(sizes: TinySizes) -> dict[str, Any]:
    """config.json of the merged LLaVA-Lightning-7B v1.1 folder, at tiny sizes."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 1,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": sizes.llm_hidden,
        "initializer_range": 0.02,
        "intermediate_size": sizes.llm_intermediate,
        "max_position_embeddings": 2048,
        "max_sequence_length": 2048,
        "mm_hidden_size": sizes.vision_hidden,
        "mm_use_im_start_end": True,
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14",
        "model_type": "llava",
        "num_attention_heads": sizes.llm_heads,
        "num_hidden_layers": sizes.llm_layers,
        "pad_token_id": -1,
        "rms_norm_eps": 1e-06,
        "sep_image_conv_front": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.28.0.dev0",
        "tune_mm_mlp_adapter": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": sizes.llava_vocab,
    }


def _rotary_inv_freq(head_dim: int) -> torch.Tensor:
    """The fp32 `rotary_emb.inv_freq` buffer old transformers (<4.31) saved in every LLaMA layer."""
    return 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def _llama_layer(prefix: str, sizes: TinySizes, gen: torch.Generator) -> dict[str, torch.Tensor]:
    hidden, inter = sizes.llm_hidden, sizes.llm_intermediate
    return {
        **{f"{prefix}.self_attn.{p}_proj.weight": _randn(gen, hidden, hidden).half() for p in "qkvo"},
        f"{prefix}.self_attn.rotary_emb.inv_freq": _rotary_inv_freq(hidden // sizes.llm_heads),
        f"{prefix}.mlp.gate_proj.weight": _randn(gen, inter, hidden).half(),
        f"{prefix}.mlp.down_proj.weight": _randn(gen, hidden, inter).half(),
        f"{prefix}.mlp.up_proj.weight": _randn(gen, inter, hidden).half(),
        f"{prefix}.input_layernorm.weight": torch.ones(hidden, dtype=torch.float16),
        f"{prefix}.post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.float16),
    }


def llava_shards(sizes: TinySizes, seed: int) -> list[dict[str, torch.Tensor]]:
    """LLaVA's weights in HF LLaMA key order, split in two shards (later layers + heads in the second)."""
    gen = torch.Generator().manual_seed(_sub_seed(seed, _SEED_LLAVA))
    hidden = sizes.llm_hidden
    first: dict[str, torch.Tensor] = {"model.embed_tokens.weight": _randn(gen, sizes.llava_vocab, hidden).half()}
    second: dict[str, torch.Tensor] = {}
    split = (sizes.llm_layers + 1) // 2
    for i in range(sizes.llm_layers):
        (first if i < split else second).update(_llama_layer(f"model.layers.{i}", sizes, gen))
    second["model.norm.weight"] = torch.ones(hidden, dtype=torch.float16)
    second["model.mm_projector.weight"] = _randn(gen, hidden, sizes.vision_hidden).half()
    second["model.mm_projector.bias"] = _randn(gen, hidden).half()
    second["lm_head.weight"] = _randn(gen, sizes.llava_vocab, hidden).half()
    return [first, second]


def _write_sharded(folder: Path, shards: list[dict[str, torch.Tensor]], fmt: Literal["bin", "safetensors"]) -> None:
    """Write shards + index the way HF `save_pretrained(max_shard_size=...)` names them."""
    stem, suffix, index_name = {
        "bin": ("pytorch_model", "bin", "pytorch_model.bin.index.json"),
        "safetensors": ("model", "safetensors", "model.safetensors.index.json"),
    }[fmt]
    for stale in [*folder.glob("pytorch_model*.bin*"), *folder.glob("model*.safetensors*")]:
        stale.unlink()  # a rebuild in the other format must not leave the old shards behind
    weight_map: dict[str, str] = {}
    total_size = 0
    for number, shard in enumerate(shards, start=1):
        name = f"{stem}-{number:05d}-of-{len(shards):05d}.{suffix}"
        if fmt == "bin":
            torch.save(shard, folder / name)
        else:
            from safetensors.torch import save_file

            save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        total_size += sum(t.numel() * t.element_size() for t in shard.values())
    _write_json(folder / index_name, {"metadata": {"total_size": total_size}, "weight_map": weight_map})


def build_llava_folder(folder: Path, sizes: TinySizes, seed: int, fmt: Literal["bin", "safetensors"] = "bin") -> None:
    build_llama_tokenizer(folder, vocab_size=sizes.sp_vocab)  # first: it loads from the folder
    _write_json(folder / "config.json", llava_config(sizes))
    generation = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    _write_json(folder / "generation_config.json", {**generation, "transformers_version": "4.30.2"})
    _write_sharded(folder, llava_shards(sizes, seed), fmt)


# ------------------------------------------------------------------------------------------- MGIE folder


def build_edit_mapper_transformer(sizes: TinySizes) -> nn.Transformer:
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


def _edit_head_state(sizes: TinySizes) -> dict[str, torch.Tensor]:
    """EditMapper: llm2hid -> (query, mapper transformer) -> hid2feat; call under `_seeded`."""
    llm2hid = nn.Linear(sizes.llm_hidden, sizes.head_dim_model)
    query = torch.randn(1, sizes.head_queries, sizes.head_dim_model)
    mapper = build_edit_mapper_transformer(sizes)
    hid2feat = nn.Linear(sizes.head_dim_model, sizes.cross_attention_dim)
    state = {f"llm2hid.{k}": v for k, v in llm2hid.state_dict().items()}
    state["query"] = query
    state.update({f"mapper.{k}": v for k, v in mapper.state_dict().items()})
    state.update({f"hid2feat.{k}": v for k, v in hid2feat.state_dict().items()})
    return {f"edit_head.{k}": v for k, v in state.items()}


def mllm_state(sizes: TinySizes, seed: int, emb: Literal["2d", "3d", "missing"] = "2d") -> dict[str, torch.Tensor]:
    """Contents of mgie_7b/mllm.pt: grown embed_tokens / lm_head, edit head, and `emb` (last 8 rows)."""
    with _seeded(_sub_seed(seed, _SEED_MLLM)):
        embed = torch.randn(sizes.mgie_vocab, sizes.llm_hidden) * WEIGHT_STD
        lm_head = torch.randn(sizes.mgie_vocab, sizes.llm_hidden) * WEIGHT_STD
        state = {"model.embed_tokens.weight": embed, "lm_head.weight": lm_head, **_edit_head_state(sizes)}
    state = _half(state)
    rows = state["model.embed_tokens.weight"][-len(IMG_TOKENS) :].clone()
    if emb == "2d":
        state["emb"] = rows
    elif emb == "3d":
        state["emb"] = rows.unsqueeze(0)
    elif emb != "missing":
        raise ValueError(f"emb must be '2d', '3d' or 'missing', got {emb!r}")
    return state


def unet_config(sizes: TinySizes) -> dict[str, Any]:
    """Constructor arguments of the tiny InstructPix2Pix UNet (8 input channels: noisy + image latents)."""
    return {
        "sample_size": 8,
        "in_channels": 8,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": sizes.cross_attention_dim,
        "attention_head_dim": 8,
    }


def build_unet(sizes: TinySizes, seed: int) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    with _seeded(seed):
        return UNet2DConditionModel(**unet_config(sizes)).eval()


def build_mgie_folder(folder: Path, sizes: TinySizes, seed: int, emb: Literal["2d", "3d", "missing"]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(mllm_state(sizes, seed, emb), folder / "mllm.pt")
    unet = build_unet(sizes, _sub_seed(seed, _SEED_MGIE_UNET))
    torch.save(_half(unet.state_dict()), folder / "unet.pt")


# ---------------------------------------------------------------------------------- InstructPix2Pix folder


def vae_config() -> dict[str, Any]:
    """Tiny AutoencoderKL with four blocks, so the VAE scale factor is 8 as in Stable Diffusion."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (8, 8, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "latent_channels": 4,
        "sample_size": 64,
        "scaling_factor": 0.18215,
    }


def _clip_text_config(hidden: int) -> dict[str, Any]:
    vocab = _clip_vocab_and_merges()[0]
    ids = {token: i for i, token in enumerate(vocab)}
    return {
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": hidden,
        "bos_token_id": ids["<|startoftext|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def ip2p_model_index() -> dict[str, Any]:
    return {
        "_class_name": "StableDiffusionInstructPix2PixPipeline",
        "_diffusers_version": IP2P_DIFFUSERS_VERSION,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def ip2p_scheduler_config() -> dict[str, Any]:
    """timbrooks/instruct-pix2pix's scheduler_config.json (predates diffusers' `timestep_spacing`)."""
    return {
        "_class_name": "EulerAncestralDiscreteScheduler",
        "_diffusers_version": IP2P_DIFFUSERS_VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "trained_betas": None,
    }


def build_ip2p_folder(folder: Path, sizes: TinySizes, seed: int) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "model_index.json", ip2p_model_index())
    _write_json(folder / "scheduler" / "scheduler_config.json", ip2p_scheduler_config())
    build_unet(sizes, _sub_seed(seed, _SEED_IP2P_UNET)).save_pretrained(folder / "unet")
    with _seeded(_sub_seed(seed, _SEED_VAE)):
        AutoencoderKL(**vae_config()).save_pretrained(folder / "vae")
    with _seeded(_sub_seed(seed, _SEED_TEXT)):
        text_config = CLIPTextConfig(**_clip_text_config(sizes.cross_attention_dim))
        CLIPTextModel(text_config).save_pretrained(folder / "text_encoder")
    build_clip_tokenizer(folder / "tokenizer")


# --------------------------------------------------------------------------------------------- CLIP folder


def clip_config(sizes: TinySizes) -> dict[str, Any]:
    """Full CLIPConfig of the tiny openai/clip-vit-large-patch14 stand-in."""
    vision = {
        "hidden_size": sizes.vision_hidden,
        "intermediate_size": sizes.vision_intermediate,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "image_size": sizes.vision_image_size,
        "patch_size": sizes.vision_patch_size,
        "projection_dim": 16,
        "hidden_act": "quick_gelu",
    }
    text = _clip_text_config(sizes.vision_hidden) | {"projection_dim": 16}
    return {"text_config": text, "vision_config": vision, "projection_dim": 16}


def clip_preprocessor_config(sizes: TinySizes) -> dict[str, Any]:
    side = sizes.vision_image_size
    return {
        "crop_size": {"height": side, "width": side},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(OPENAI_CLIP_STD),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": side},
    }


def build_clip_folder(folder: Path, sizes: TinySizes, seed: int) -> None:
    from transformers import CLIPConfig, CLIPModel

    with _seeded(_sub_seed(seed, _SEED_CLIP)):
        CLIPModel(CLIPConfig(**clip_config(sizes))).save_pretrained(folder)
    _write_json(folder / "preprocessor_config.json", clip_preprocessor_config(sizes))
    build_clip_tokenizer(folder)


# ----------------------------------------------------------------------------------------------- the tree


def build_tiny_mgie_tree(
    root: Path,
    *,
    sizes: TinySizes = TinySizes(),  # noqa: B008 - frozen dataclass, safe as a default
    seed: int = 0,
    llava_format: Literal["bin", "safetensors"] = "bin",
    emb: Literal["2d", "3d", "missing"] = "2d",
) -> Path:
    """Write the four official MGIE folders under `root` (see the module docstring) and return `root`."""
    if llava_format not in ("bin", "safetensors"):
        raise ValueError(f"llava_format must be 'bin' or 'safetensors', got {llava_format!r}")
    if emb not in ("2d", "3d", "missing"):
        raise ValueError(f"emb must be '2d', '3d' or 'missing', got {emb!r}")
    root = Path(root)
    build_llava_folder(root / LLAVA_DIR, sizes, seed, llava_format)
    build_mgie_folder(root / MGIE_DIR, sizes, seed, emb)
    build_ip2p_folder(root / IP2P_DIR, sizes, seed)
    build_clip_folder(root / CLIP_DIR, sizes, seed)
    return root
