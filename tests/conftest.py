"""Suite-wide fixtures: one tiny official-layout MGIE tree per session, and the MGIE editor loaded from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; fail fast if something tries


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    from editor.tiny import build_tiny_mgie_tree

    return build_tiny_mgie_tree(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def mgie(tiny_tree):
    from editor.pipelines.mgie import MGIEPaths, load_mgie

    return load_mgie(MGIEPaths.from_weights_dir(tiny_tree), device="cpu")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
