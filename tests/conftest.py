"""Suite-wide fixtures: one tiny official-layout MGIE tree per session, the MGIE editor loaded from it, and the app
serving it."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    from editor.pipelines.spec import LoadOptions

    return load_mgie(MGIEPaths.from_weights_dir(tiny_tree), options=LoadOptions("cpu"))


@pytest.fixture(scope="module")
def app_url(mgie) -> Iterator[str]:
    """The app with the tiny MGIE, served on a free local port for the module's tests."""
    from editor.ui import build_demo
    from editor.ui.layout import CSS
    from tests.fakes import free_port

    demo = build_demo({mgie.name: mgie}).queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
