"""What every editor module shares: its spec (`ModelSpec`), how a load is placed (`LoadOptions`), and how a stage's
weights move to the GPU under `--offload` (`staged`).

Each `pipelines/<model>.py` exports its specs: the folders it reads (editor/layouts/folders.py: names and needed
files), how to get them, and a loader with the one signature `load(paths, *, name, options)`, where `paths` are the
spec's folders resolved in order. The registry, the CLIs and the tiny/demo builders read the folders from there; a
published model's folders are its MODEL_FOLDERS entry (`ModelSpec.published`), which `python -m editor.weights`
lists, downloads and verifies without importing the loaders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from editor.core import Editor
from editor.layouts.folders import DEFAULTS_FILE, DEMO_DIR, MODEL_FOLDERS, Folder, download_command, folder_path
from editor.loading import CheckpointError
from editor.params import EditParams
from editor.pipelines.diffusion import offload_target

GET_DEMO = "the demo weights ship with the repository under weights/demo/; `python -m editor.demo.train` rebuilds them"


@dataclass(frozen=True)
class Placement:
    """Where a load puts things, resolved once from `LoadOptions`."""

    load_on: torch.device  # where the weights live after loading (the CPU under offload)
    run_on: torch.device  # where the stages run
    dtype: torch.dtype
    offload: bool


@dataclass(frozen=True)
class LoadOptions:
    device: torch.device | str | None = None  # default: cuda when available
    dtype: torch.dtype | None = None  # default: float16 on GPU, float32 on CPU
    offload: bool = False  # low VRAM: each stage's weights wait on the CPU and move to the GPU while used

    def resolve(self) -> Placement:
        """The device and dtype defaults, once; `offload` without a GPU is refused here, before anything loads."""
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = self.dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        if self.offload:
            return Placement(torch.device("cpu"), offload_target(device), dtype, True)
        return Placement(device, device, dtype, False)


Loader = Callable[..., Editor]  # load(paths: tuple[Path, ...], *, name: str, options: LoadOptions) -> Editor


@dataclass(frozen=True)
class ModelSpec:
    """One editor: its name (argparse choice), title, folders, how to get them, and its loader.

    `root`: for the demo models, the folder their own copies of the layout sit in (see `paths`)."""

    name: str
    title: str
    folders: tuple[Folder, ...]
    hint: str  # how to get the folders, shown when one is missing
    load: Loader
    root: Callable[[Path], Path] | None = None
    downloadable: bool = True  # `python -m editor.weights download <name>` gets it

    @classmethod
    def published(cls, name: str, title: str, load: Loader) -> ModelSpec:
        """A downloadable model: the folders of its official layout (MODEL_FOLDERS, which the weights CLI also
        lists, downloads and verifies) and, as its hint, the command that gets them."""
        return cls(name, title, MODEL_FOLDERS[name], download_command(name), load)

    def paths(self, weights_dir: str | Path) -> tuple[Path, ...]:
        """The folders under `weights_dir`, each moved by its `EDITOR_<FOLDER>_DIR` when set. A demo model's
        folders are its own trained copies under `root(weights_dir)`, which those variables (meant for the
        downloads) do not move."""
        if self.root is not None:
            root = self.root(Path(weights_dir))
            return tuple(folder_path(root, f.name, overrides=False) for f in self.folders)
        return tuple(folder_path(weights_dir, f.name) for f in self.folders)

    def defaults(self, weights_dir: str | Path) -> EditParams:
        """The settings the loaded editor starts from (its `defaults`), read without loading it: a demo model's own
        (DEFAULTS_FILE beside its folders, as MGIE's, or in its one folder, as a diffusers pipeline's), else the
        published models' defaults."""
        if self.root is None:
            return EditParams()
        for folder in (self.root(Path(weights_dir)), *self.paths(weights_dir)):
            if (folder / DEFAULTS_FILE).is_file():
                return folder_defaults(folder)
        return EditParams()

    def build(self, weights_dir: str | Path, options: LoadOptions = LoadOptions()) -> Editor:  # noqa: B008 - frozen
        return self.load(self.paths(weights_dir), name=self.name, options=options)


@contextmanager
def staged(modules: Sequence[nn.Module], target: torch.device | None) -> Iterator[torch.device]:
    """Run a stage with `modules` on `target` (offload: they wait on the CPU between stages), yielding the device
    the stage runs on; without a target they stay where they are."""
    home = next(modules[0].parameters()).device
    if target is None:
        yield home
        return
    for module in modules:
        module.to(target)
    try:
        yield target
    finally:
        for module in modules:
            module.to(home)
        if target.type == "cuda":
            torch.cuda.empty_cache()


def demo_root(weights_dir: str | Path, part: str) -> Path:
    """`<weights_dir>/demo/<part>`: where a demo model's own copy under a weights folder sits (a retrained or
    fine-tuned one is written there), whether or not it exists yet."""
    return Path(weights_dir) / DEMO_DIR.name / part


def demo_folder(weights_dir: Path, part: str) -> Path:
    """`demo_root(weights_dir, part)` when present (e.g. a retrained copy), else the one in the repository."""
    local = demo_root(weights_dir, part)
    return local if local.is_dir() else DEMO_DIR / part


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
