"""The editors this app can run, by name (used as argparse `choices`), and how to load each from a weights folder.

`mgie-7b`, `smartedit-7b`, `smartedit-13b`, `instruct-pix2pix` and `magicbrush` are the published models
(`python -m editor.weights download NAME` gets them; editor.weights.catalog says what each is made of).
`mgie-demo` and `ip2p-demo` are the offline demo models this project trains on the shapes world (editor.demo,
editor.demo.train): MGIE's architecture and its InstructPix2Pix-style ablation, shipped under weights/demo/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from editor.core import Editor
from editor.loading import CheckpointError, MissingWeightsError
from editor.params import EditParams
from editor.pipelines.ip2p import load_ip2p
from editor.pipelines.mgie import DecodeConfig, MGIEPaths, load_mgie
from editor.pipelines.smartedit import SmartEditPaths, load_smartedit
from editor.weights import catalog
from editor.weights.catalog import (
    DEFAULT_WEIGHTS_DIR,
    MODELS,
    PREFERENCE,
    REPO_WEIGHTS_DIR,
    component_dir,
    download_command,
    installed,
)

DEMO_DIR = REPO_WEIGHTS_DIR / "demo"  # committed to the repository
GET_DEMO = "the demo weights ship with the repository under weights/demo/; `python -m editor.demo.train` rebuilds them"


@dataclass(frozen=True)
class EditorSpec:
    name: str
    title: str
    load: Callable[..., Editor]  # (weights_dir, device, dtype, offload) -> Editor
    entry: catalog.ModelEntry | None = None  # downloadable models: what they are made of


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}  # --dtype choices


@dataclass(frozen=True)
class LoadOptions:
    device: torch.device | str | None = None  # default: cuda when available
    dtype: torch.dtype | None = None  # default: float16 on GPU, float32 on CPU
    offload: bool = False  # low VRAM: each stage's weights wait on the CPU and move to the GPU while used


def demo_folder(weights_dir: Path, part: str) -> Path:
    """`<weights_dir>/demo/<part>` when present (e.g. a retrained copy), else the one in the repository."""
    local = Path(weights_dir) / "demo" / part
    return local if local.is_dir() else DEMO_DIR / part


DEFAULTS_FILE = "editor_defaults.json"  # a demo folder's own app settings (steps, guidance), from its model card


def folder_defaults(folder: Path) -> EditParams:
    """The settings `folder`'s model was measured best at ({"steps", "text_guidance", "image_guidance"} in
    DEFAULTS_FILE), else the published models' defaults."""
    path = Path(folder) / DEFAULTS_FILE
    if not path.is_file():
        return EditParams()
    try:
        values = json.loads(path.read_text())
        return EditParams(
            steps=values["steps"], text_guidance=values["text_guidance"], image_guidance=values["image_guidance"]
        )
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}; expected steps, text_guidance and image_guidance") from None


def _mgie_paths(weights_dir: Path) -> MGIEPaths:
    llava, mgie, ip2p, clip = (component_dir(weights_dir, c) for c in MODELS["mgie-7b"].components)
    return MGIEPaths(llava=llava, mgie=mgie, ip2p=ip2p, clip=clip)


def _load_mgie(weights_dir: Path, options: LoadOptions) -> Editor:
    editor = load_mgie(_mgie_paths(weights_dir), options.device, options.dtype, offload=options.offload)
    editor.name = "mgie-7b"
    return editor


def _load_mgie_demo(weights_dir: Path, options: LoadOptions) -> Editor:
    folder = demo_folder(weights_dir, "mgie")
    editor = load_mgie(MGIEPaths.from_weights_dir(folder), options.device, options.dtype, offload=options.offload)
    editor.name = "mgie-demo"
    # No trigram ban: the world's expressive texts repeat the instruction's words ("... at the top left turns
    # blue"), which MGIE's ban over prompt + output (docs/mgie.md G8) would forbid; MGIE's own training targets were
    # written under such a ban, these were not.
    editor.decode = DecodeConfig(no_repeat_ngram_size=0)
    editor.defaults = folder_defaults(folder)
    return editor


def _smartedit_loader(name: str) -> Callable[[Path, LoadOptions], Editor]:
    def load(weights_dir: Path, options: LoadOptions) -> Editor:
        folders = [component_dir(weights_dir, c) for c in MODELS[name].components]
        return load_smartedit(SmartEditPaths(*folders), options.device, options.dtype, name, options.offload)

    return load


def _ip2p_loader(name: str, folder: Callable[[Path], Path], hint: str) -> Callable[[Path, LoadOptions], Editor]:
    def load(weights_dir: Path, options: LoadOptions) -> Editor:
        return load_ip2p(folder(Path(weights_dir)), hint, name, options.device, options.dtype, options.offload)

    return load


def _demo_ip2p(weights_dir: Path, options: LoadOptions) -> Editor:
    folder = demo_folder(weights_dir, "ip2p")
    editor = load_ip2p(folder, GET_DEMO, "ip2p-demo", options.device, options.dtype, options.offload)
    editor.defaults = folder_defaults(folder)
    return editor


EDITORS: dict[str, EditorSpec] = {
    spec.name: spec
    for spec in (
        EditorSpec("mgie-7b", "MGIE-7B (Apple, ICLR 2024)", _load_mgie, MODELS["mgie-7b"]),
        EditorSpec(
            "smartedit-13b",
            "SmartEdit-13B (TencentARC, CVPR 2024)",
            _smartedit_loader("smartedit-13b"),
            MODELS["smartedit-13b"],
        ),
        EditorSpec(
            "smartedit-7b",
            "SmartEdit-7B (TencentARC, CVPR 2024)",
            _smartedit_loader("smartedit-7b"),
            MODELS["smartedit-7b"],
        ),
        EditorSpec(
            "magicbrush",
            "MagicBrush (InstructPix2Pix fine-tuned on MagicBrush)",
            _ip2p_loader("magicbrush", lambda w: component_dir(w, catalog.MAGICBRUSH), download_command("magicbrush")),
            MODELS["magicbrush"],
        ),
        EditorSpec(
            "instruct-pix2pix",
            "InstructPix2Pix (Brooks et al., CVPR 2023)",
            _ip2p_loader(
                "instruct-pix2pix", lambda w: component_dir(w, catalog.IP2P_FULL), download_command("instruct-pix2pix")
            ),
            MODELS["instruct-pix2pix"],
        ),
        EditorSpec("mgie-demo", "Offline demo: MGIE architecture trained on the shapes world", _load_mgie_demo),
        EditorSpec(
            "ip2p-demo",
            "Offline demo ablation: InstructPix2Pix-style, terse instruction only",
            _demo_ip2p,
        ),
    )
}
DEMO_EDITORS = ("mgie-demo", "ip2p-demo")


def installed_editors(weights_dir: Path) -> list[str]:
    """Runnable downloaded models whose files are all present, best first (catalog.PREFERENCE)."""
    runnable = {spec.entry.name: name for name, spec in EDITORS.items() if spec.entry is not None}
    return [runnable[n] for n in PREFERENCE if n in runnable and installed(MODELS[n], Path(weights_dir))]


def load_editor(
    name: str,
    weights_dir: str | Path = DEFAULT_WEIGHTS_DIR,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    offload: bool = False,
) -> Editor:
    """Load editor `name`. Missing files of a downloadable model name the command that gets it."""
    if name not in EDITORS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(EDITORS)}")
    spec = EDITORS[name]
    try:
        return spec.load(Path(weights_dir), LoadOptions(device, dtype, offload))
    except MissingWeightsError as err:
        command = download_command(spec.entry.name) if spec.entry is not None else None
        if command is None or command in str(err):
            raise
        raise MissingWeightsError(f"{err}\n  Get it with: {command}") from None
