"""The tiny trees' outputs pinned to the pixel: a refactor that moves code around must leave them unchanged.

The tiny MGIE and SmartEdit trees (editor.tiny, seed 0) are built fresh; their files are digested, and each editor
they hold (mgie-7b, smartedit-7b, and the instruct-pix2pix folder beside them) thinks and renders one fixed edit with
a fixed seed, on one thread (CPU matmuls sum in another order on two threads, which moves pixels). The texts, the
digests and the edited images are compared with the ones recorded in tests/data/pinned/.

Float kernels differ between CPUs and torch builds, so the pins hold where they were recorded (PINS["env"]); elsewhere
the test skips and says so. Re-record, on purpose only, with `python -m tests.test_pinned_outputs`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from editor.params import EditParams, Resolution
from editor.pipelines.registry import load_editor
from editor.tiny import build_tiny_mgie_tree
from editor.tiny.smartedit import build_tiny_smartedit_tree

PINNED = Path(__file__).parent / "data" / "pinned"
SOURCE = PINNED / "source.png"  # the scene the outputs were pinned on (an earlier examples/shapes-1.png)
INSTRUCTION = "make the circle red"
PARAMS = EditParams(steps=4, seed=7, resolution=Resolution(size=64))
EDITORS = {"mgie-7b": "mgie", "smartedit-7b": "smartedit", "instruct-pix2pix": "mgie"}  # editor -> its tree


def environment() -> str:
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def tree_digest(root: Path) -> str:
    """One SHA-256 over every file's relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_trees(root: Path) -> dict[str, Path]:
    return {
        "mgie": build_tiny_mgie_tree(root / "mgie"),
        "smartedit": build_tiny_smartedit_tree(root / "smartedit"),
    }


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pinned_edit(name: str, tree: Path) -> tuple[dict[str, str], Image.Image]:
    """`name` loaded from `tree` thinks and renders the fixed edit: its texts, and the edited image."""
    editor = load_editor(name, tree, "cpu")
    image = Image.open(SOURCE).convert("RGB")
    guidance = editor.think(image, INSTRUCTION)
    result = editor.render(image, guidance, PARAMS)
    return {"expressive": guidance.expressive, "raw_text": guidance.raw_text}, result.image


def load_pins() -> dict:
    return json.loads((PINNED / "pins.json").read_text())


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    pins = load_pins()
    if pins["env"] != environment():
        pytest.skip(f"pins recorded on {pins['env']}, this is {environment()}: re-record them before a refactor")
    return build_trees(tmp_path_factory.mktemp("pinned"))


@pytest.fixture
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.mark.parametrize("kind", ["mgie", "smartedit"])
def test_tiny_tree_files_are_unchanged(trees, kind):
    assert tree_digest(trees[kind]) == load_pins()["trees"][kind]


@pytest.mark.parametrize("name", list(EDITORS))
def test_tiny_edit_is_pixel_identical(trees, single_thread, name):
    texts, image = pinned_edit(name, trees[EDITORS[name]])
    assert texts == load_pins()["texts"][name]
    got = np.asarray(image)
    want = np.asarray(Image.open(PINNED / f"{name}.png"))
    assert got.shape == want.shape
    changed = int((got != want).any(axis=-1).sum())
    assert changed == 0, f"{name}: {changed} of {got.shape[0] * got.shape[1]} pixels differ from the pinned edit"


def record(root: Path) -> None:
    """Rewrite tests/data/pinned/ from the current code (on purpose only: it redefines 'unchanged')."""
    trees = build_trees(root)
    pins: dict = {"env": environment(), "trees": {kind: tree_digest(path) for kind, path in trees.items()}, "texts": {}}
    PINNED.mkdir(parents=True, exist_ok=True)
    with one_thread():
        for name, kind in EDITORS.items():
            pins["texts"][name], image = pinned_edit(name, trees[kind])
            image.save(PINNED / f"{name}.png")
    (PINNED / "pins.json").write_text(json.dumps(pins, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
    print(f"recorded {sorted(p.name for p in PINNED.iterdir())} ({environment()})", file=sys.stderr)
