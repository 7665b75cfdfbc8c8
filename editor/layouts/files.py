"""The files of an official layout: JSON with stable bytes, and sharded checkpoints named as HF writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

ShardFormat = Literal["bin", "safetensors"]


def write_json(path: Path, data: Any) -> None:
    """Write `data` as sorted, indented JSON (stable bytes), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_sharded(folder: Path, shards: list[dict[str, torch.Tensor]], fmt: ShardFormat) -> None:
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
    write_json(folder / index_name, {"metadata": {"total_size": total_size}, "weight_map": weight_map})
