"""The editors this app can run, by name (used as argparse `choices`), and how to load each from a weights folder.

`mgie-7b`, `smartedit-7b`, `smartedit-13b`, `instruct-pix2pix` and `magicbrush` are the published models
(`python -m editor.weights download NAME` gets them; editor.weights.catalog says where each folder comes from).
`mgie-demo` and `ip2p-demo` are the offline demo models this project trains on the shapes world (editor.demo,
editor.demo.train): MGIE's architecture and its InstructPix2Pix-style ablation, shipped under weights/demo/.
Each model's spec (folders, hint, loader) lives in its own module, editor/pipelines/<model>.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from editor.core import Editor
from editor.layouts.folders import DEFAULT_WEIGHTS_DIR, missing_files
from editor.loading import MissingWeightsError
from editor.pipelines import ip2p, mgie, smartedit
from editor.pipelines.spec import LoadOptions, ModelSpec
from editor.weights.catalog import PREFERENCE

DEMO_EDITORS = ("mgie-demo", "ip2p-demo")  # when none of PREFERENCE is installed

_SPECS = {spec.name: spec for spec in (*mgie.SPECS, *smartedit.SPECS, *ip2p.SPECS)}
EDITORS: dict[str, ModelSpec] = {name: _SPECS[name] for name in (*PREFERENCE, *DEMO_EDITORS)}  # best first

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}  # --dtype choices


def installed(spec: ModelSpec, weights_dir: str | Path) -> bool:
    """Every file the spec's folders need is present."""
    return all(not missing_files(path, f.needs) for path, f in zip(spec.paths(weights_dir), spec.folders, strict=True))


def installed_editors(weights_dir: str | Path) -> list[str]:
    """Runnable downloaded models whose files are all present, best first (PREFERENCE)."""
    return [name for name in PREFERENCE if installed(EDITORS[name], weights_dir)]


def default_editors(weights_dir: str | Path) -> tuple[str, ...]:
    """What opens without --model: the best installed model, else the offline demo models (the first is the one
    to use where only one is loaded)."""
    found = installed_editors(weights_dir)
    return (found[0],) if found else DEMO_EDITORS


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
        return spec.build(weights_dir, LoadOptions(device, dtype, offload))
    except MissingWeightsError as err:
        if not spec.downloadable or spec.hint in str(err):
            raise
        raise MissingWeightsError(f"{err}\n  Get it with: {spec.hint}") from None


def add_load_arguments(parser: argparse.ArgumentParser, weights_dir: bool = True) -> None:
    """--weights-dir, --device, --dtype, --offload, declared alike by every command that loads an editor."""
    if weights_dir:
        parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: float16 on GPU, float32 on CPU")
    parser.add_argument("--offload", action="store_true", help="low VRAM: weights wait on the CPU between stages")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The LoadOptions of arguments declared by `add_load_arguments`."""
    return LoadOptions(args.device, DTYPES.get(args.dtype), args.offload)
