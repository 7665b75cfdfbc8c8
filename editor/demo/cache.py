"""The training stream encoded once, so that every diffusion step spends its time in the UNet (docs/demo-recipe.md).

Encoding a 64 x 64 scene with the demo VAE costs about as much as a UNet step per sample, and the frozen MLLM's
forward about as much again; the diffusion stages visit each sample several times, so both are computed once:

    <out>/cache/latents-NNNNN.pt   samples [N*PART, (N+1)*PART): source latent (VAE mode), target latent mean and
                                   std (unscaled, fp16), the terse instruction
    <out>/cache/states-NNNNN.pt    the frozen MLLM's final-norm states predicting [IMG0..7] after the ground-truth
                                   expressive text (teacher-forced), fp16; and `emb`, the [IMG] embedding rows

Each part is written whole (a temporary file renamed), so building resumes at the first missing part; a part made
for another seed or sample count is rebuilt. The states
belong to one MLLM checkpoint: `states` refuses parts made by another one (rebuild them after training it more).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from editor.demo import stages, world

PART = 1024


@dataclass
class Batch:
    source: torch.Tensor  # B x C x h x w, unscaled VAE mode of the source scene
    target_mean: torch.Tensor
    target_std: torch.Tensor
    terse: list[str]
    states: torch.Tensor | None = None  # B x 8 x hidden


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def part_count(samples: int) -> int:
    return -(-samples // PART)


def part_range(part: int, samples: int) -> range:
    """The sample indices of `part` (the last part of a cache holds the remainder)."""
    return range(part * PART, min((part + 1) * PART, samples))


def _current(path: Path, count: int, **expected) -> bool:
    if not path.exists():
        return False
    saved = torch.load(path, weights_only=True)
    return len(saved["terse" if "terse" in saved else "states"]) == count and all(
        saved[k] == v for k, v in expected.items()
    )


@torch.no_grad()
def build_latents(out: Path, vae, samples: int, seed: int, device, batch: int = 64, shard=(0, 1)) -> None:
    """`shard` (k, n): only parts p with p % n == k, so that n processes build the cache side by side."""
    folder = out / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    for part in tqdm(range(shard[0], part_count(samples), shard[1]), desc="latents", unit="part"):
        path, indices = folder / f"latents-{part:05d}.pt", part_range(part, samples)
        if _current(path, len(indices), seed=seed):
            continue
        rows = {"source": [], "target_mean": [], "target_std": [], "terse": []}
        for start in range(indices.start, indices.stop, batch):
            chunk = [stages.train_sample(seed, i) for i in range(start, min(start + batch, indices.stop))]
            source = vae.encode(stages.to_tensor([s.source for s in chunk], device)).latent_dist.mode()
            target = vae.encode(stages.to_tensor([s.target for s in chunk], device)).latent_dist
            rows["source"].append(source.half().cpu())
            rows["target_mean"].append(target.mean.half().cpu())
            rows["target_std"].append(target.std.half().cpu())
            rows["terse"] += [s.terse for s in chunk]
        _save({k: v if k == "terse" else torch.cat(v) for k, v in rows.items()} | {"seed": seed}, path)


@torch.no_grad()
def build_states(out: Path, mllm_stage, mllm_step: int, samples: int, seed: int, batch: int = 64, shard=(0, 1)):
    folder = out / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    mllm_stage.mllm.eval()
    emb = mllm_stage.img_embeddings().detach().cpu().clone()
    for part in tqdm(range(shard[0], part_count(samples), shard[1]), desc="states", unit="part"):
        path, indices = folder / f"states-{part:05d}.pt", part_range(part, samples)
        if _current(path, len(indices), seed=seed, mllm_step=mllm_step):
            continue
        rows = []
        for start in range(indices.start, indices.stop, batch):
            chunk = [stages.train_sample(seed, i) for i in range(start, min(start + batch, indices.stop))]
            rows.append(mllm_stage.forward(chunk)[1].half().cpu())
        _save({"states": torch.cat(rows), "emb": emb, "mllm_step": mllm_step, "seed": seed}, path)


def load_states(out: Path, samples: int, mllm_step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples x 8 x hidden states, the 8 [IMG] embedding rows) of MLLM step `mllm_step`."""
    folder = out / "cache"
    states = [torch.load(folder / f"states-{p:05d}.pt", weights_only=True) for p in range(part_count(samples))]
    stale = sorted({d["mllm_step"] for d in states} - {mllm_step})
    if stale:
        raise ValueError(f"cached states come from MLLM step(s) {stale}, not {mllm_step}: rebuild the cache")
    return torch.cat([d["states"] for d in states])[:samples], states[0]["emb"].float()


def cache_seed(out: Path) -> int:
    """The seed of the training stream the cache under `out` encodes (sample i is stages.train_sample(seed, i))."""
    return torch.load(out / "cache" / "latents-00000.pt", weights_only=True)["seed"]


def canonical_instructions(out: Path, samples: int) -> list[str]:
    """world.canonical_terse of each of the first `samples` cached samples: the plainest wording of the same edit."""
    seed = cache_seed(out)
    return [world.canonical_terse(stages.train_sample(seed, i)) for i in range(samples)]


class Cache:
    """All cached parts in memory; `batch(seed, step, size)` walks seeded permutations, one per epoch."""

    def __init__(self, out: Path, samples: int, with_states: bool, mllm_step: int | None = None) -> None:
        folder = out / "cache"
        parts = range(part_count(samples))
        missing = [p for p in parts if not (folder / f"latents-{p:05d}.pt").exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} latent parts missing under {folder}: run the cache stage")
        loaded = [torch.load(folder / f"latents-{p:05d}.pt", weights_only=True) for p in parts]
        if sum(len(d["terse"]) for d in loaded) != samples:
            raise ValueError(f"the cache under {folder} was built for another sample count: rebuild it")
        self.source = torch.cat([d["source"] for d in loaded])
        self.target_mean = torch.cat([d["target_mean"] for d in loaded])
        self.target_std = torch.cat([d["target_std"] for d in loaded])
        self.terse = [t for d in loaded for t in d["terse"]]
        self.states = self.emb = None
        if with_states:
            self.states, self.emb = load_states(out, samples, mllm_step)
        self.size = samples

    def rows(self, seed: int, step: int, size: int) -> torch.Tensor:
        """The sample indices of batch `step`: position p of the stream is row order_e[p % samples] of epoch e."""
        positions = torch.arange(step * size, (step + 1) * size)
        rows = torch.empty(size, dtype=torch.long)
        for epoch in positions.div(self.size, rounding_mode="floor").unique().tolist():
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            here = positions // self.size == epoch
            rows[here] = order[positions[here] % self.size]
        return rows

    def batch(self, seed: int, step: int, size: int, device) -> Batch:
        rows = self.rows(seed, step, size)
        states = self.states[rows].to(device) if self.states is not None else None
        return Batch(
            self.source[rows].to(device), self.target_mean[rows].to(device), self.target_std[rows].to(device),
            [self.terse[i] for i in rows.tolist()], states,
        )  # fmt: skip
