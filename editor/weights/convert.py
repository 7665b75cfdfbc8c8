"""Pickled checkpoints (.bin/.pt) -> safetensors, once, so that later loads are memory-mapped and never unpickle.

Each pickle is read with `weights_only=True` and memory-mapped; tensors are copied one shard at a time (at most
`SHARD_BYTES` in memory), so a 10 GB shard converts on a machine with little RAM. Copies also drop the oversized
storages some checkpoints were saved with (tensors saved as views of larger buffers). Every written tensor is read
back and compared with its source before the originals may be removed.

Naming follows the libraries that read the result: a transformers shard index `pytorch_model.bin.index.json`
becomes `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`; `pytorch_model.bin` ->
`model.safetensors`; `diffusion_pytorch_model.bin` -> `diffusion_pytorch_model.safetensors`; `X.pt` -> `X.safetensors`.
All of them prefer the safetensors file when both exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from editor.loading import TensorRef, open_tensors, read_json
from editor.weights.catalog import MANIFEST

SHARD_BYTES = 2_000_000_000
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def save_sharded(
    tensors: dict[str, TensorRef], out: Path, stem: str = "model", max_bytes: int = SHARD_BYTES
) -> list[Path]:
    """Write `tensors` as `<stem>.safetensors`, or as numbered shards + `<stem>.safetensors.index.json` when they
    exceed `max_bytes`; at most one shard is held in memory."""
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    size = 0
    for key, ref in tensors.items():
        if shards[-1] and size + ref.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += ref.nbytes
    names = (
        [f"{stem}.safetensors"]
        if len(shards) == 1
        else [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name, keys in zip(names, shards, strict=True):
        # clone(): contiguous, private storage (safetensors refuses shared or oversized views)
        save_file({k: tensors[k].load().contiguous().clone() for k in keys}, out / name, metadata={"format": "pt"})
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(r.nbytes for r in tensors.values())},
            "weight_map": {k: name for name, keys in zip(names, shards, strict=True) for k in keys},
        }
        (out / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return [out / n for n in names]


def check_equal(sources: dict[str, TensorRef], written: list[Path], hint: str) -> None:
    copies = open_tensors(written, hint)
    if copies.keys() != sources.keys():
        raise RuntimeError(f"conversion lost keys: {sorted(sources.keys() ^ copies.keys())[:6]}")
    for key, ref in sources.items():
        if not torch.equal(ref.load(), copies[key].load()):
            raise RuntimeError(f"conversion changed tensor {key!r}; the originals were kept")


@dataclass
class Conversion:
    sources: list[Path]
    written: list[Path]


def convert_folder(folder: Path, hint: str, remove_originals: bool = False) -> list[Conversion]:
    """Convert every pickle under `folder` that has no safetensors twin yet."""
    done: list[Conversion] = []
    pending = [p for p in sorted(folder.rglob("*")) if p.suffix in PICKLE_SUFFIXES and _visible(p, folder)]
    for index in sorted(folder.rglob("pytorch_model.bin.index.json")):
        shards = [index.parent / f for f in sorted(set(read_json(index, hint)["weight_map"].values()))]
        pending = [p for p in pending if p not in shards]
        if not (index.parent / "model.safetensors.index.json").exists():
            done.append(_convert(shards, index.parent, "model", hint, max_bytes=SHARD_BYTES, extra=[index]))
    for path in pending:
        stem = {"pytorch_model": "model"}.get(path.stem, path.stem)
        if not (path.parent / f"{stem}.safetensors").exists():
            done.append(_convert([path], path.parent, stem, hint, max_bytes=1 << 62))
    if remove_originals:
        for conversion in done:
            for path in conversion.sources:
                path.unlink()
        _forget(folder, [p for c in done for p in c.sources])
    return done


def _forget(folder: Path, removed: list[Path]) -> None:
    """Drop removed originals from the folder's download record (the safetensors copies replace them)."""
    manifest = folder / MANIFEST
    if manifest.exists():
        record = json.loads(manifest.read_text())
        gone = {str(p.relative_to(folder)) for p in removed}
        record["files"] = {k: v for k, v in record.get("files", {}).items() if k not in gone}
        manifest.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _convert(sources: list[Path], out: Path, stem: str, hint: str, max_bytes: int, extra=()) -> Conversion:
    tensors = open_tensors(sources, hint)
    written = save_sharded(tensors, out, stem, max_bytes)
    check_equal(tensors, written, hint)
    return Conversion([*sources, *extra], written)
