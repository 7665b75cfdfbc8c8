"""Applying a LLaVA v1 weight delta to the original LLaMA (docs/mgie.md §3.5): LLaVA releases deltas, not weights,
because of LLaMA-1's licence.

Rule, as LLaVA's apply_delta does it: for every delta tensor, add the base tensor of the same name and shape; the
grown `embed_tokens`/`lm_head` (the delta has 3 more rows for the image tokens) get the base added into their
top-left block, their new rows keep the delta's values; `model.mm_projector.*` has no base and is copied. The sum is
computed in float32 and stored in the delta's dtype. The result is written as safetensors shards with the delta's
config and tokenizer, so the folder loads like the ready-merged `LLaVA-7B-v1/`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from editor.loading import CheckpointError, TensorRef, open_tensors, weight_files
from editor.weights.convert import save_sharded

GROWN = ("model.embed_tokens.weight", "lm_head.weight")
NEW = "model.mm_projector."
HINT = "pass --llama-base the original LLaMA weights converted to Hugging Face format (config.json + shards)"


def _merged(key: str, delta: TensorRef, base: TensorRef | None) -> TensorRef:
    if base is None:
        if not key.startswith(NEW):
            raise CheckpointError(f"the delta has {key!r}, which the base model lacks; is the base LLaMA? {HINT}")
        return delta
    if base.shape == delta.shape:
        return TensorRef(delta.shape, delta.nbytes, lambda: _add(delta.load(), base.load()))
    if key in GROWN and base.shape[1:] == delta.shape[1:] and base.shape[0] < delta.shape[0]:
        return TensorRef(delta.shape, delta.nbytes, lambda: _add_top(delta.load(), base.load()))
    raise CheckpointError(
        f"{key!r}: delta shape {delta.shape} does not fit base shape {base.shape}; the base is not the model this "
        f"delta was made from (LLaVA-7B deltas need LLaMA-7B, 13B needs 13B). {HINT}"
    )


def _add(delta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    return (delta.float() + base.float()).to(delta.dtype)


def _add_top(delta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    out = delta.clone()
    out[: base.shape[0]] = _add(delta[: base.shape[0]], base)
    return out


def apply_llava_delta(base_dir: Path, delta_dir: Path, out_dir: Path) -> Path:
    base_files, delta_files = weight_files(base_dir, HINT), weight_files(delta_dir, HINT)
    if not base_files:
        raise CheckpointError(
            f"no LLaMA weights found in {base_dir} (model*.safetensors or pytorch_model*.bin); {HINT}"
        )
    if not delta_files:
        raise CheckpointError(f"no weights found in the delta folder {delta_dir}; rerun the download to resume it")
    base, delta = open_tensors(base_files, HINT), open_tensors(delta_files, HINT)
    merged = {
        key: _merged(key, ref, base.get(key)) for key, ref in delta.items() if not key.endswith("rotary_emb.inv_freq")
    }
    staging = out_dir.with_name(f".{out_dir.name}.merging")
    shutil.rmtree(staging, ignore_errors=True)
    save_sharded(merged, staging)
    for item in delta_dir.iterdir():  # config, tokenizer (with the added image tokens), generation config
        if (
            item.is_file()
            and item.suffix in (".json", ".model", ".txt")
            and "index" not in item.name
            and not item.name.startswith(".")
        ):
            shutil.copy2(item, staging / item.name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir
