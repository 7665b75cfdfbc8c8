"""The editors this app knows, by name (used as argparse `choices`), and how to load each from a weights folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from editor.core import Editor
from editor.pipelines.mgie import CLIP_DIR, IP2P_DIR, LLAVA_DIR, MGIE_DIR, MGIEPaths, load_mgie

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class EditorSpec:
    name: str
    title: str
    folders: tuple[str, ...]  # what must exist under the weights folder, as the downloads name them
    load: Callable[[Path, torch.device | str | None, torch.dtype | None], Editor]


def _load_mgie(weights_dir: Path, device, dtype) -> Editor:
    return load_mgie(MGIEPaths.from_weights_dir(weights_dir), device=device, dtype=dtype)


EDITORS: dict[str, EditorSpec] = {
    "mgie": EditorSpec(
        name="mgie",
        title="MGIE-7B (Apple, ICLR 2024)",
        folders=(LLAVA_DIR, MGIE_DIR, IP2P_DIR, CLIP_DIR),
        load=_load_mgie,
    ),
}


def load_editor(
    name: str,
    weights_dir: str | Path = DEFAULT_WEIGHTS_DIR,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Editor:
    if name not in EDITORS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(EDITORS)}")
    return EDITORS[name].load(Path(weights_dir), device, dtype)
