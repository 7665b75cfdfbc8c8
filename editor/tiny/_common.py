"""Helpers shared by the tiny-tree builders: per-component seeding and weight tensors (the files themselves are
written by editor.layouts.files)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

WEIGHT_STD = 0.02

# Sub-seeds: each component draws from its own stream, so changing one never shifts another.
SEED_LLAVA, SEED_MLLM, SEED_IP2P_UNET, SEED_MGIE_UNET, SEED_VAE, SEED_TEXT, SEED_CLIP = range(7)


def sub_seed(seed: int, component: int) -> int:
    """The seed of one component's random stream (one of the SEED_* ids) for a tree built with `seed`."""
    return seed * 16 + component


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run module constructors under a fixed global torch seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * WEIGHT_STD


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().to(torch.float16).contiguous() for key, value in state.items()}
