"""`python -m editor.weights list | download NAME | verify [NAME ...] | convert NAME` (`--weights-dir DIR`).

    list                      every model, whether it is installed, what each component folder still lacks
    download NAME [--yes]     show the licence, then fetch what is missing (resumes; --llama-base DIR applies the
                              LLaVA delta to your own LLaMA instead of downloading merged weights)
    verify [NAME ...] [--hash] [--no-load]
                              files present, sizes as published and as recorded, SHA-256 (--hash), and a load
                              through the app's loader (CPU, float16, memory-mapped); for `eval-metrics`, each
                              backbone through the scorer editor.eval uses (ClipScorer, DinoScorer, LPIPS' 3 nets)
    convert NAME [--remove-originals]
                              pickles -> safetensors, checked tensor by tensor (originals kept unless asked)

Component folders can be moved anywhere: set EDITOR_<FOLDER>_DIR (e.g. EDITOR_LLAVA_7B_V1_DIR); `list` prints each
variable. EDITOR_WEIGHTS_DIR changes the default weights folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from editor.weights import catalog
from editor.weights.catalog import DEFAULT_WEIGHTS_DIR, LISTED, MODELS, component_dir, installed, missing_files
from editor.weights.download import DownloadError, download_model

if TYPE_CHECKING:
    from editor.weights.verify import Problem


def cmd_list(weights_dir: Path) -> int:
    print(f"weights folder: {weights_dir}\n")
    for name in LISTED:
        entry = MODELS[name]
        state = "installed" if installed(entry, weights_dir) else "not installed"
        if entry.editor:
            runs = ""
        elif entry.kind == "metrics":
            runs = " (backbones for python -m editor.eval, not an editor)"
        else:
            runs = " (download and verify only: the app cannot run it yet)"
        print(f"{name:18} {state:14} {entry.title}{runs}")
        for component in entry.components:
            folder = component_dir(weights_dir, component)
            missing = missing_files(folder, component)
            status = "ok" if not missing else "missing " + ", ".join(m.replace("|", " or ") for m in missing)
            print(f"    {str(folder):48} {status}   [{component.env}]")
        if entry.memory:
            print(f"    memory: {entry.memory}")
    print(f"\nget one: {catalog.download_command('NAME')}")
    return 0


def cmd_download(args) -> int:
    entry = MODELS[args.name]
    interactive = sys.stdin.isatty()
    folders = download_model(
        entry,
        args.weights_dir,
        accept_licence=args.yes,
        llama_base=args.llama_base,
        confirm=(lambda q: input(q).strip().lower() in ("y", "yes")) if interactive else None,
    )
    print(f"done: {', '.join(map(str, dict.fromkeys(folders)))}")
    print(f"check it: python -m editor.weights verify {entry.name}")
    return 0


def check_backbone_loads(entry: catalog.ModelEntry, weights_dir: Path) -> list[Problem]:
    """The load check of a `metrics` entry: each component through the scorer editor.eval builds from it (CPU,
    float16), LPIPS with each of its nets; returns verify's Problems."""
    import torch

    from editor.eval.lpips import NETS, load_lpips
    from editor.eval.metrics import ClipScorer, DinoScorer
    from editor.weights.verify import Problem

    loaders = {
        catalog.CLIP_B32.folder: ClipScorer,
        catalog.CLIP_L14.folder: ClipScorer,
        catalog.DINO_VITS16.folder: DinoScorer,
        catalog.LPIPS.folder: lambda folder, device, dtype: [load_lpips(folder, n, device, dtype) for n in NETS],
    }
    problems = []
    for component in entry.components:
        folder = component_dir(weights_dir, component)
        if component.folder not in loaders:
            problems.append(Problem(str(folder), "no loader known for this backbone: not load-checked", fatal=False))
            continue
        try:
            loaders[component.folder](folder, "cpu", torch.float16)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            problems.append(Problem(str(folder), f"does not load: {err}"))
    return problems


def cmd_verify(args) -> int:
    from diffusers.utils import logging as diffusers_logging

    from editor.pipelines.registry import load_editor

    diffusers_logging.set_verbosity_error()  # the load check (fp16 on the CPU) is warned as if it would run
    from editor.weights.verify import check_files, check_loads

    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    names = args.names or [n for n in LISTED if installed(MODELS[n], args.weights_dir)]
    if not names:
        print("no model is installed; see python -m editor.weights list")
        return 1
    failed = False
    for name in names:
        entry = MODELS[name]
        problems = check_files(entry, args.weights_dir, hashes=args.hash)
        if not any(p.fatal for p in problems) and not args.no_load:
            if entry.kind == "metrics":
                problems += check_backbone_loads(entry, args.weights_dir)
            else:
                problems += check_loads(entry, args.weights_dir, load_editor)
        blocking = [p for p in problems if p.fatal]
        failed |= bool(blocking)
        print(f"{name}: {'FAILED' if blocking else 'ok'}")
        for problem in problems:
            print(f"    {problem}")
    return 1 if failed else 0


def cmd_convert(args) -> int:
    from editor.weights.convert import convert_folder

    entry = MODELS[args.name]
    converted = 0
    for folder in dict.fromkeys(component_dir(args.weights_dir, c) for c in entry.components):
        if not folder.is_dir():
            print(f"{folder}: not downloaded, skipped")
            continue
        for conversion in convert_folder(folder, catalog.download_command(entry.name), args.remove_originals):
            converted += 1
            names = ", ".join(p.name for p in conversion.written)
            print(f"{folder}: {', '.join(p.name for p in conversion.sources)} -> {names} (checked equal)")
    print(f"{converted} file group(s) converted" if converted else "nothing to convert: no pickles left")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights-dir", type=Path, default=None, help="default: weights/ or $EDITOR_WEIGHTS_DIR")
    parser = argparse.ArgumentParser(
        prog="python -m editor.weights", description=__doc__.split("\n")[0], parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="models and what is installed")
    dl = sub.add_parser("download", parents=[common], help="fetch a model's missing components")
    dl.add_argument("name", choices=list(MODELS))
    dl.add_argument("--yes", action="store_true", help="accept the licence terms without asking")
    dl.add_argument("--llama-base", type=Path, help="original LLaMA folder (HF format): apply the LLaVA delta to it")
    ver = sub.add_parser("verify", parents=[common], help="check files, sizes, hashes and loading")
    ver.add_argument("names", nargs="*", metavar="NAME", help=f"default: every installed one ({', '.join(MODELS)})")
    ver.add_argument("--hash", action="store_true", help="also compare SHA-256 with the Hub's (reads every byte)")
    ver.add_argument("--no-load", action="store_true", help="skip loading through the app's loader")
    conv = sub.add_parser("convert", parents=[common], help="pickles -> safetensors")
    conv.add_argument("name", choices=list(MODELS))
    conv.add_argument("--remove-originals", action="store_true", help="delete the pickles once the copies check out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.weights_dir = args.weights_dir or DEFAULT_WEIGHTS_DIR
    try:
        if args.command == "list":
            return cmd_list(args.weights_dir)
        return {"download": cmd_download, "verify": cmd_verify, "convert": cmd_convert}[args.command](args)
    except (DownloadError, OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
