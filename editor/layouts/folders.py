"""The official download folders: each one's name under a weights directory and the files a model needs in it.

Written once here and read by the model specs (editor/pipelines/<model>.py), the download catalog
(editor/weights/catalog.py), the tiny test trees (editor/tiny) and the demo model's export (editor/demo/model.py).
`folder_path` is the one place a folder is found: `$EDITOR_<FOLDER>_DIR` when set, else `<weights_dir>/<name>`.
A `needs` entry is a glob pattern relative to the folder; "a|b" means either.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_WEIGHTS_DIR = Path(os.environ.get("EDITOR_WEIGHTS_DIR") or REPO_WEIGHTS_DIR).expanduser()
DEMO_DIR = REPO_WEIGHTS_DIR / "demo"  # the offline demo models, committed to the repository
DEFAULTS_FILE = "editor_defaults.json"  # a demo folder's own app settings (steps, guidance), from its model card


@dataclass(frozen=True)
class Folder:
    name: str  # as the official download names it
    needs: tuple[str, ...]  # glob patterns (relative to the folder) that must each match a file

    @property
    def env(self) -> str:
        return folder_env(self.name)


def download_command(name: str) -> str:
    """The one command that gets model `name`, as error messages and notices print it."""
    return f"python -m editor.weights download {name}"


def folder_env(name: str) -> str:
    """Environment variable that points folder `name` elsewhere, e.g. EDITOR_LLAVA_7B_V1_DIR."""
    return "EDITOR_" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + "_DIR"


def folder_path(weights_dir: str | Path, name: str, overrides: bool = True) -> Path:
    """`$EDITOR_<NAME>_DIR` when set (and `overrides`), else `<weights_dir>/<name>`."""
    override = os.environ.get(folder_env(name)) if overrides else None
    return Path(override).expanduser() if override else Path(weights_dir) / name


def missing_files(folder: Path, needs: tuple[str, ...]) -> list[str]:
    """The patterns of `needs` that match no file in `folder`."""
    if not folder.is_dir():
        return list(needs)
    return [need for need in needs if not any(any(folder.glob(alt)) for alt in need.split("|"))]


# --- the folders the editors read ------------------------------------------------------------------------------

LLAVA_7B = Folder("LLaVA-7B-v1", ("config.json", "tokenizer.model", "tokenizer_config.json", "*.bin*|*.safetensors*"))
LLAVA_13B = Folder("LLaVA-13B-v1", ("config.json", "tokenizer.model", "*.bin*|*.safetensors*"))
MGIE_7B = Folder("mgie_7b", ("mllm.pt|mllm.safetensors", "unet.pt|unet.safetensors"))
CLIP_L14 = Folder(
    "clip-vit-large-patch14", ("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin")
)
IP2P = "instruct-pix2pix"  # one folder, of which each model needs a different part
IP2P_SHELL = Folder(
    IP2P, ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "vae/*")
)
IP2P_FULL = Folder(IP2P, (*IP2P_SHELL.needs, "unet/diffusion_pytorch_model.*", "text_encoder/*", "tokenizer/*"))
IP2P_TEXT = Folder(IP2P, (*IP2P_SHELL.needs, "text_encoder/*", "tokenizer/*"))  # SmartEdit encodes "" with it
MAGICBRUSH = Folder(
    "magicbrush",
    ("model_index.json", "unet/diffusion_pytorch_model.*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"),
)
SMARTEDIT_STEP = 15000  # the released checkpoints' training step, part of their file names


def smartedit_weights(size: str) -> Folder:
    """SmartEdit-<size>/: LoRA LLM, QFormer (+ projector and lm_head), BIM, UNet (docs/smartedit.md §3.2)."""
    step = SMARTEDIT_STEP
    return Folder(
        f"SmartEdit-{size}",
        (f"LLM-{step}/adapter_model.*", "embeddings_qformer/*", f"modulate-{step}/adapter_model.*",
         f"unet-{step}/adapter_model.*"),
    )  # fmt: skip


def vicuna(size: str) -> Folder:
    """vicuna-<size>-v1-1/: SmartEdit's LLaMA config and tokenizer (its weights are not needed)."""
    return Folder(f"vicuna-{size.lower()}-v1-1", ("config.json", "tokenizer.model"))


SMARTEDIT_7B, VICUNA_7B = smartedit_weights("7B"), vicuna("7B")
SMARTEDIT_13B, VICUNA_13B = smartedit_weights("13B"), vicuna("13B")

# --- each published model's folders, in the order its loader takes them ------------------------------------------
# Its spec's `folders` (editor/pipelines/<model>.py) and what `python -m editor.weights` lists, downloads and verifies
# for it (editor/weights/catalog.py), written once here where the weights CLI can read it without importing torch.

MODEL_FOLDERS: dict[str, tuple[Folder, ...]] = {
    "mgie-7b": (LLAVA_7B, MGIE_7B, IP2P_SHELL, CLIP_L14),  # MGIEPaths' order
    "smartedit-13b": (SMARTEDIT_13B, LLAVA_13B, VICUNA_13B, CLIP_L14, IP2P_TEXT),  # SmartEditPaths' order
    "smartedit-7b": (SMARTEDIT_7B, LLAVA_7B, VICUNA_7B, CLIP_L14, IP2P_TEXT),
    "magicbrush": (MAGICBRUSH,),
    "instruct-pix2pix": (IP2P_FULL,),
}
