"""MGIE's released files read into checked modules, for `load_mgie` (editor/pipelines/mgie.py), which calls these
in order: mllm.pt's state, the LLaVA tokenizer matching its vocabulary, LLaVA v1 (LLaMA + CLIP vision tower +
projector) with mllm.pt's embeddings, then the edit head and its [IMG] embeddings. Each reader checks its file
strictly and names the fix (the GET_* hints) when something is missing or does not match.
"""

from __future__ import annotations

from pathlib import Path

import torch

from editor.loading import (
    CheckpointError,
    assign_state,
    build_empty,
    check_keys,
    clip_vision_config,
    expected_shapes,
    llama_config_from_llava,
    read_clip_vision_state,
    read_json,
    read_llava_v1_state,
    read_state_dict,
    require,
)
from editor.models.edit_head import EditHead, EditHeadConfig
from editor.models.llava import LlavaV1, LlavaV1Config
from editor.models.slow_llama import SlowLlamaTokenizer
from editor.prompts import IM_END, IM_PATCH, IM_START, IMG_TOKENS

# Where each component comes from; shown whenever one is missing or does not match.
GET_LLAVA = (
    "download the merged LLaVA-7B-v1 folder (e.g. `hf download tsujuifu/ml-mgie --local-dir <weights>`, which "
    "holds LLaVA-7B-v1/ and mgie_7b/), or apply liuhaotian/LLaVA-Lightning-7B-delta-v1-1 to LLaMA-7B"
)
GET_MGIE = (
    "download https://docs-assets.developer.apple.com/ml-research/models/mgie/mgie_7b.tar.gz and unpack it so that "
    "<weights>/mgie_7b/mllm.pt and unet.pt exist (or take mgie_7b/ from `hf download tsujuifu/ml-mgie`)"
)
GET_IP2P = "`hf download timbrooks/instruct-pix2pix --local-dir <weights>/instruct-pix2pix`"
GET_CLIP = "`hf download openai/clip-vit-large-patch14 --local-dir <weights>/clip-vit-large-patch14`"
EMBED_KEYS = ("model.embed_tokens.weight", "lm_head.weight")  # mllm.pt's grown vocabulary rows


def weights_file(folder: Path, stem: str) -> Path:
    """`<stem>.safetensors` (converted once, memory-mapped, never unpickled) when present, else the released
    `<stem>.pt`."""
    converted = folder / f"{stem}.safetensors"
    return converted if converted.exists() else folder / f"{stem}.pt"


def read_mllm_state(mllm_file: Path) -> dict[str, torch.Tensor]:
    """mllm.pt: the grown embeddings, lm_head, edit head and the [IMG] embeddings (checked to be MGIE's)."""
    mllm_sd = read_state_dict(mllm_file, GET_MGIE)
    for key in (*EMBED_KEYS, "edit_head.llm2hid.weight"):
        if key not in mllm_sd:
            raise CheckpointError(f"{mllm_file} lacks key {key!r}; is it MGIE's mllm.pt? {GET_MGIE}")
    return mllm_sd


def load_tokenizer(llava_dir: Path) -> SlowLlamaTokenizer:
    """The LLaVA folder's SentencePiece model and added tokens, then [IMG0..7] (apple/ml-mgie demo.ipynb cell 2),
    encoding and decoding as the reference's transformers 4.28 slow tokenizer did (editor.models.slow_llama)."""
    require(llava_dir / "tokenizer.model", "LLaVA tokenizer", GET_LLAVA)
    tokenizer = SlowLlamaTokenizer.from_folder(llava_dir)
    tokenizer.add_tokens(IMG_TOKENS)
    return tokenizer


def check_vocab(tokenizer, rows: int) -> None:
    """The tokenizer (+8 [IMG] tokens) gives exactly the `rows` ids mllm.pt embeds, its special tokens last."""
    ids = tokenizer.convert_tokens_to_ids([IM_PATCH, IM_START, IM_END, *IMG_TOKENS])
    expected = list(range(rows - len(ids), rows))  # LLaVA's 3 tokens, then [IMG0..7], at the end of the vocabulary
    if ids != expected or len(tokenizer) != rows:
        raise CheckpointError(
            f"tokenizer/embedding mismatch: mllm.pt embeds {rows} tokens, so <im_patch>..[IMG7] should have ids "
            f"{expected[0]}..{expected[-1]}, but the LLaVA tokenizer (+8 [IMG] tokens) gives {len(tokenizer)} tokens "
            f"with ids {ids}. Use the LLaVA-7B-v1 folder that MGIE was trained with. {GET_LLAVA}"
        )


def read_llava(
    llava_dir: Path, clip_dir: Path, mllm_sd: dict[str, torch.Tensor], mllm_file: Path, dtype: torch.dtype
) -> LlavaV1:
    """LLaVA v1: LLaMA + CLIP vision tower + projector; embeddings and lm_head from mllm.pt. Each part is checked
    strictly against the file it comes from."""
    llava_cfg = read_json(llava_dir / "config.json", GET_LLAVA)
    config = LlavaV1Config(
        text=llama_config_from_llava(llava_cfg, vocab_size=mllm_sd[EMBED_KEYS[0]].shape[0]),
        vision=clip_vision_config(clip_dir, GET_CLIP),
        vision_select_layer=llava_cfg.get("mm_vision_select_layer", -2),
    )
    mllm = build_empty(LlavaV1, config)
    embed_state = {"llm." + key: mllm_sd[key] for key in EMBED_KEYS}
    llava_state = {k: v for k, v in read_llava_v1_state(llava_dir, GET_LLAVA).items() if k not in embed_state}
    vision_keys = expected_shapes(mllm.vision)
    vision_state = {"vision." + k: v for k, v in read_clip_vision_state(clip_dir, GET_CLIP, vision_keys).items()}
    parts = {  # each part of LlavaV1, checked strictly against the file it comes from
        "llava": (llava_state, f"{llava_dir} (LLaVA-7B-v1 weights)", GET_LLAVA),
        "vision": (vision_state, f"{clip_dir} (CLIP vision tower)", GET_CLIP),
        "embeddings": (embed_state, str(mllm_file), GET_MGIE),
    }

    def part_of(key: str) -> str:
        return "embeddings" if key in embed_state else "vision" if key.startswith("vision.") else "llava"

    expected = expected_shapes(mllm)
    for part, (state, source, hint) in parts.items():
        check_keys({k: shape for k, shape in expected.items() if part_of(k) == part}, state, source, hint)
    assign_state(mllm, llava_state | vision_state | embed_state, dtype)
    return mllm


def read_edit_head(
    mllm_sd: dict[str, torch.Tensor], mllm_file: Path, hidden_size: int, dtype: torch.dtype
) -> tuple[EditHead, torch.Tensor]:
    """The edit head and its 8 x hidden [IMG] embeddings (`emb`; rows [IMG0..7] of embed_tokens when absent,
    docs/mgie.md §3.3); any other key in mllm.pt is refused."""
    head_state = {k.removeprefix("edit_head."): v for k, v in mllm_sd.items() if k.startswith("edit_head.")}
    head = build_empty(EditHead, EditHeadConfig.from_state_dict(head_state))
    check_keys(expected_shapes(head), head_state, f"{mllm_file} (edit_head.*)", GET_MGIE)
    assign_state(head, head_state, dtype)
    unknown = set(mllm_sd) - {*EMBED_KEYS, "emb"} - {f"edit_head.{k}" for k in head_state}
    if unknown:
        raise CheckpointError(f"{mllm_file} has unexpected keys {sorted(unknown)[:6]}. {GET_MGIE}")
    emb = mllm_sd.get("emb", mllm_sd[EMBED_KEYS[0]][-len(IMG_TOKENS) :])
    emb = emb.reshape(-1, emb.shape[-1])
    if emb.shape != (len(IMG_TOKENS), hidden_size):
        raise CheckpointError(f"{mllm_file}: 'emb' has shape {tuple(emb.shape)}, expected (8, {hidden_size})")
    return head, emb
