"""Checking an installed model: every needed file present, sizes as recorded at download time (and as published),
SHA-256 against the Hub's record (`--hash`), and finally that the files load through the app's own loader.

The load check runs on the CPU in float16, so memory-mapped pickles stay on disk: it proves every key and shape
without needing the GPU the model will run on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from editor.weights.catalog import MANIFEST, SIZE_TOLERANCE, ModelEntry, component_dir, missing_files
from editor.weights.download import sha256_file


@dataclass(frozen=True)
class Problem:
    where: str
    what: str
    fatal: bool = True  # False: worth a look, but the model may still be fine (e.g. a size unlike the published one)

    def __str__(self) -> str:
        return f"{self.where}: {'' if self.fatal else '(warning) '}{self.what}"


def check_files(entry: ModelEntry, weights_dir: Path, hashes: bool = False) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[Path] = set()
    for component in entry.components:
        folder = component_dir(weights_dir, component)
        for need in missing_files(folder, component):
            problems.append(Problem(str(folder), f"missing {need.replace('|', ' or ')}"))
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        for name, expected in component.sizes.items():
            path = folder / name
            if path.is_file() and abs(path.stat().st_size - expected) > SIZE_TOLERANCE * expected:
                problems.append(
                    Problem(
                        str(path),
                        f"{path.stat().st_size:,} bytes, published size about {expected:,}: truncated "
                        "or a different file?",
                        fatal=False,
                    )
                )
        problems += _check_manifest(folder, hashes)
    return problems


def _check_manifest(folder: Path, hashes: bool) -> list[Problem]:
    path = folder / MANIFEST
    if not path.exists():
        return []  # placed by hand: only the published sizes and the load check apply
    problems = []
    for name, record in json.loads(path.read_text()).get("files", {}).items():
        if record.get("archive"):
            continue
        file = folder / name
        if not file.is_file():
            problems.append(Problem(str(file), "listed in the download record but missing; rerun the download"))
        elif record.get("size") is not None and file.stat().st_size != record["size"]:
            problems.append(
                Problem(
                    str(file), f"{file.stat().st_size:,} bytes, the Hub says {record['size']:,}; rerun the download"
                )
            )
        elif hashes and record.get("sha256") and sha256_file(file) != record["sha256"]:
            problems.append(Problem(str(file), "SHA-256 differs from the Hub's; delete it and download again"))
    return problems


def check_loads(entry: ModelEntry, weights_dir: Path, load: Callable) -> list[Problem]:
    """Run the app's loader (`load(name, weights_dir, device, dtype)`) and report its error, if any."""
    if entry.editor is None:
        return [
            Problem(entry.name, "files checked; this app cannot run this model yet, so loading is not checked", False)
        ]
    try:
        editor = load(entry.editor, weights_dir, "cpu", torch.float16)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        return [Problem(entry.name, f"does not load: {err}")]
    del editor
    return []
