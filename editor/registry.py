"""The editors this app knows, by name (used as argparse `choices`), and how to load each from a weights folder.

`mgie` is the real MGIE-7B (downloads, see weights/README.md). `mgie-demo` and `ip2p-demo` are the offline demo
models this project trains on the shapes world (editor.demo, editor.train): MGIE's architecture and its
InstructPix2Pix-style ablation, shipped in the repository under weights/demo/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from editor.core import Editor
from editor.pipelines.ip2p import load_ip2p
from editor.pipelines.mgie import CLIP_DIR, IP2P_DIR, LLAVA_DIR, MGIE_DIR, DecodeConfig, MGIEPaths, load_mgie

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEMO_DIR = DEFAULT_WEIGHTS_DIR / "demo"  # committed to the repository
GET_DEMO = "the demo weights ship with the repository under weights/demo/; `python -m editor.train` rebuilds them"


@dataclass(frozen=True)
class EditorSpec:
    name: str
    title: str
    folders: tuple[str, ...]  # what must exist under the weights folder, as the downloads name them
    load: Callable[[Path, torch.device | str | None, torch.dtype | None], Editor]


def demo_folder(weights_dir: Path, part: str) -> Path:
    """`<weights_dir>/demo/<part>` when present (e.g. a retrained copy), else the one in the repository."""
    local = Path(weights_dir) / "demo" / part
    return local if local.is_dir() else DEMO_DIR / part


def _load_mgie(weights_dir: Path, device, dtype) -> Editor:
    return load_mgie(MGIEPaths.from_weights_dir(weights_dir), device=device, dtype=dtype)


def _load_mgie_demo(weights_dir: Path, device, dtype) -> Editor:
    editor = load_mgie(MGIEPaths.from_weights_dir(demo_folder(weights_dir, "mgie")), device=device, dtype=dtype)
    editor.name = "mgie-demo"
    # No trigram ban: the world's expressive texts repeat the instruction's words ("... at the top left turns
    # blue"), which MGIE's ban over prompt + output (mgie.md G8) would forbid; MGIE's own training targets were
    # written under such a ban, these were not.
    editor.decode = DecodeConfig(no_repeat_ngram_size=0)
    return editor


def _load_ip2p_demo(weights_dir: Path, device, dtype) -> Editor:
    return load_ip2p(demo_folder(weights_dir, "ip2p"), GET_DEMO, name="ip2p-demo", device=device, dtype=dtype)


EDITORS: dict[str, EditorSpec] = {
    "mgie": EditorSpec(
        name="mgie",
        title="MGIE-7B (Apple, ICLR 2024)",
        folders=(LLAVA_DIR, MGIE_DIR, IP2P_DIR, CLIP_DIR),
        load=_load_mgie,
    ),
    "mgie-demo": EditorSpec(
        name="mgie-demo",
        title="Offline demo: MGIE architecture trained on the shapes world",
        folders=("demo/mgie",),
        load=_load_mgie_demo,
    ),
    "ip2p-demo": EditorSpec(
        name="ip2p-demo",
        title="Offline demo ablation: InstructPix2Pix-style, terse instruction only",
        folders=("demo/ip2p",),
        load=_load_ip2p_demo,
    ),
}
DEMO_EDITORS = ("mgie-demo", "ip2p-demo")


def load_editor(
    name: str,
    weights_dir: str | Path = DEFAULT_WEIGHTS_DIR,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Editor:
    if name not in EDITORS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(EDITORS)}")
    return EDITORS[name].load(Path(weights_dir), device, dtype)
