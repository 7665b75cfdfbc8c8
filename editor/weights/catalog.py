"""Every checkpoint this app can use: where it comes from, what it is made of, its licence, its expected sizes.

A model (`ModelEntry`) is a list of components; a component is one folder under the weights directory, named as
the official downloads name it, with one or more sources tried in order (the official one first). Two models may
share a folder (MGIE and SmartEdit both read `LLaVA-7B-v1/`); a folder is present for a model when every file that
model needs is there (MGIE needs only the configs, VAE and scheduler of `instruct-pix2pix/`, the baseline needs all).

Sizes are the ones stated by the papers' repositories and Hub pages (mgie.md §3.1, smartedit.md §3.2), in bytes,
checked within `SIZE_TOLERANCE`; exact sizes and SHA-256 come from the Hub at download time and are recorded in
each folder's `.download.json`, which `verify` checks. Revisions are pinned where the commit is known.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_WEIGHTS_DIR = Path(os.environ.get("EDITOR_WEIGHTS_DIR") or REPO_WEIGHTS_DIR).expanduser()
SIZE_TOLERANCE = 0.02  # the sizes below are rounded as the Hub pages print them
MANIFEST = ".download.json"  # per folder: source, revision, and each file's size and SHA-256 as the Hub states them


@dataclass(frozen=True)
class HubSource:
    """Files of a Hugging Face Hub repository. `in_repo`: the repo subfolder that is this component's folder
    ("" when the repository root is the folder)."""

    repo_id: str
    allow: tuple[str, ...] = ("*",)
    revision: str = "main"
    in_repo: str = ""

    def describe(self) -> str:
        rev = "" if self.revision == "main" else f"@{self.revision[:7]}"
        return f"hf://{self.repo_id}{rev}/{self.in_repo}".rstrip("/")


@dataclass(frozen=True)
class ArchiveSource:
    """A .tar.gz at a plain URL; `member` is the folder inside the archive that becomes the component's folder."""

    url: str
    member: str
    size: int | None = None  # approximate, for the disk-space check before the server answers

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class DeltaSource:
    """A weight delta to add to a base model the user already has (LLaVA v1 releases deltas on LLaMA-1)."""

    repo_id: str
    base: str  # what the base must be, in words
    revision: str = "main"


@dataclass(frozen=True)
class Component:
    folder: str
    title: str
    sources: tuple[HubSource | ArchiveSource, ...]
    needs: tuple[str, ...]  # glob patterns (relative to the folder) that must each match a file
    sizes: dict[str, int] = field(default_factory=dict)  # file -> bytes, as published
    delta: DeltaSource | None = None

    @property
    def env(self) -> str:
        """Environment variable that points this component at another folder."""
        return "EDITOR_" + re.sub(r"[^A-Z0-9]+", "_", self.folder.upper()).strip("_") + "_DIR"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    components: tuple[Component, ...]
    licence: str  # shown, and accepted, before anything is downloaded
    editor: str | None  # the name in editor.registry; None while this app cannot run the model yet
    memory: str = ""


def download_command(name: str) -> str:
    """The one command that gets model `name`, as error messages and notices print it."""
    return f"python -m editor.weights download {name}"


def component_dir(weights_dir: Path, component: Component) -> Path:
    """`$EDITOR_<FOLDER>_DIR` when set, else `<weights_dir>/<folder>`."""
    override = os.environ.get(component.env)
    return Path(override).expanduser() if override else Path(weights_dir) / component.folder


def missing_files(folder: Path, component: Component) -> list[str]:
    """The `needs` patterns of `component` that match no file in `folder` ("a|b" means either)."""
    return (
        [need for need in component.needs if not any(any(folder.glob(alt)) for alt in need.split("|"))]
        if folder.is_dir()
        else list(component.needs)
    )


def installed(entry: ModelEntry, weights_dir: Path) -> bool:
    return all(not missing_files(component_dir(weights_dir, c), c) for c in entry.components)


# ---- components -------------------------------------------------------------------------------------------------

MGIE_HUB = "tsujuifu/ml-mgie"
MGIE_HUB_REVISION = "7da3813a321383e01ab7f50a49391603fd8596f0"

LLAVA_7B = Component(
    folder="LLaVA-7B-v1",
    title="LLaVA-Lightning-7B v1.1, merged with LLaMA-7B (13.5 GB fp16)",
    sources=(HubSource(MGIE_HUB, ("LLaVA-7B-v1/*",), MGIE_HUB_REVISION, in_repo="LLaVA-7B-v1"),),
    needs=("config.json", "tokenizer.model", "tokenizer_config.json", "*.bin*|*.safetensors*"),
    sizes={"pytorch_model-00001-of-00002.bin": 9_980_000_000, "pytorch_model-00002-of-00002.bin": 3_510_000_000},
    delta=DeltaSource("liuhaotian/LLaVA-Lightning-7B-delta-v1-1", "the original LLaMA-7B in Hugging Face format"),
)
LLAVA_13B = Component(
    folder="LLaVA-13B-v1",
    title="LLaVA-13B v1.1, merged with LLaMA-13B (no ready-merged copy is published: apply the delta)",
    sources=(),
    needs=("config.json", "tokenizer.model", "*.bin*|*.safetensors*"),
    delta=DeltaSource("liuhaotian/LLaVA-13b-delta-v1-1", "the original LLaMA-13B in Hugging Face format"),
)
MGIE_7B = Component(
    folder="mgie_7b",
    title="MGIE-7B trained weights: mllm.pt (embeddings, lm_head, edit head) and unet.pt",
    sources=(
        ArchiveSource(
            "https://docs-assets.developer.apple.com/ml-research/models/mgie/mgie_7b.tar.gz", "mgie_7b", 2_130_000_000
        ),
        HubSource(MGIE_HUB, ("mgie_7b/*",), MGIE_HUB_REVISION, in_repo="mgie_7b"),
    ),
    needs=("mllm.pt|mllm.safetensors", "unet.pt|unet.safetensors"),
    sizes={"mllm.pt": 588_000_000, "unet.pt": 1_720_000_000},
)
IP2P_ID, IP2P_REVISION = "timbrooks/instruct-pix2pix", "ff0267aaa181efb912fefb5bf015920cb8df17d5"
IP2P_SHELL_FILES = ("model_index.json", "scheduler/*", "unet/config.json", "vae/config.json", "vae/*.safetensors")
IP2P_FULL_FILES = (
    *IP2P_SHELL_FILES,
    "unet/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*",
)
IP2P_SHELL = Component(
    folder="instruct-pix2pix",
    title="InstructPix2Pix pipeline shell: VAE, scheduler and UNet config (MGIE brings its own UNet)",
    sources=(HubSource(IP2P_ID, IP2P_SHELL_FILES, IP2P_REVISION),),
    needs=("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "vae/*"),
)
IP2P_FULL = Component(
    folder="instruct-pix2pix",
    title="InstructPix2Pix (Brooks et al. 2023), the whole diffusers pipeline",
    sources=(HubSource(IP2P_ID, IP2P_FULL_FILES, IP2P_REVISION),),
    needs=(*IP2P_SHELL.needs, "unet/diffusion_pytorch_model.*", "text_encoder/*", "tokenizer/*"),
    sizes={"unet/diffusion_pytorch_model.safetensors": 3_440_000_000},
)
IP2P_TEXT = Component(  # SmartEdit encodes the empty prompt with IP2P's text encoder
    folder="instruct-pix2pix",
    title="InstructPix2Pix VAE, scheduler, text encoder and tokenizer",
    sources=(HubSource(IP2P_ID, (*IP2P_SHELL_FILES, "text_encoder/*", "tokenizer/*"), IP2P_REVISION),),
    needs=(*IP2P_SHELL.needs, "text_encoder/*", "tokenizer/*"),
)
# the tokenizer (a few MB) too: the evaluation's CLIP-T and Reason-Edit's foreground score encode text
CLIP_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "tokenizer*.json", "vocab.json",
              "merges.txt", "special_tokens_map.json")  # fmt: skip
CLIP_L14 = Component(
    folder="clip-vit-large-patch14",
    title="OpenAI CLIP ViT-L/14 (the vision tower and its preprocessing)",
    sources=(HubSource("openai/clip-vit-large-patch14", CLIP_FILES),),
    needs=("config.json", "preprocessor_config.json", "model.safetensors|pytorch_model.bin"),
    sizes={"model.safetensors": 1_710_000_000},
)
MAGICBRUSH = Component(
    folder="magicbrush",
    title="InstructPix2Pix fine-tuned on MagicBrush (diffusers port of MagicBrush-epoch-52-step-4999.ckpt)",
    sources=(
        HubSource(
            "vinesmsuic/magicbrush-jul7",
            (
                "*.json",
                "*.txt",
                "*/*.json",
                "*/*.txt",
                "unet/*",
                "vae/*",
                "text_encoder/*",
                "tokenizer/*",
                "scheduler/*",
            ),
        ),
    ),
    needs=(
        "model_index.json",
        "unet/diffusion_pytorch_model.*",
        "vae/*",
        "text_encoder/*",
        "tokenizer/*",
        "scheduler/*",
    ),
)


def _smartedit(size: str, llava: Component, memory: str) -> ModelEntry:
    """SmartEdit-7B and -13B differ only in these: the size, the LLaVA they build on, and their memory."""
    components = (
        Component(
            folder=f"SmartEdit-{size}",
            title=f"SmartEdit-{size} trained weights (LoRA LLM, QFormer, BIM, UNet)",
            sources=(HubSource(f"TencentARC/SmartEdit-{size}"),),
            needs=(
                "LLM-15000/adapter_model.*",
                "embeddings_qformer/*",
                "modulate-15000/adapter_model.*",
                "unet-15000/adapter_model.*",
            ),
        ),
        llava,
        Component(
            folder=f"vicuna-{size.lower()}-v1-1",
            title=f"Vicuna-{size} v1.1 config and tokenizer (weights not needed)",
            sources=(HubSource(f"lmsys/vicuna-{size.lower()}-v1.1", ("*.json", "tokenizer.model")),),
            needs=("config.json", "tokenizer.model"),
        ),
        CLIP_L14,
        IP2P_TEXT,
    )
    name = f"smartedit-{size.lower()}"
    return ModelEntry(name, f"SmartEdit-{size} (TencentARC, CVPR 2024)", components, SMARTEDIT_LICENCE, name, memory)


SMARTEDIT_LICENCE = (
    "SmartEdit weights: the 7B card says apache-2.0 (13B card not reviewed). They build on LLaVA-1.1, whose merged "
    "weights contain Meta's LLaMA-1 weights under LLaMA-1's non-commercial research terms."
)
MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            name="mgie-7b",
            title="MGIE-7B (Apple, ICLR 2024), trained on IPr2Pr + MagicBrush",
            components=(LLAVA_7B, MGIE_7B, IP2P_SHELL, CLIP_L14),
            licence=(
                "MGIE weights: Apple's weight differentials are licensed CC-BY-NC (non-commercial; see apple/ml-mgie "
                "LICENSE). LLaVA-7B-v1 contains Meta's LLaMA-1 weights under LLaMA-1's non-commercial research "
                "terms. InstructPix2Pix (MIT) and CLIP (MIT) are also fetched."
            ),
            editor="mgie-7b",
            memory="about 16 GB in fp16 (LLaMA-7B 13.5 GB + UNet 1.7 GB + CLIP 0.6 GB); --offload for smaller GPUs",
        ),
        _smartedit(
            "7B", LLAVA_7B, "15.1 GiB of fp16 weights (computed; LLM stage 13.3), fits 24 GB; the reference wants 40 GB"
        ),
        _smartedit(
            "13B", LLAVA_13B, "26.8 GiB of fp16 weights (computed; LLM stage 25.0): above 24 GB even with --offload"
        ),
        ModelEntry(
            name="instruct-pix2pix",
            title="InstructPix2Pix (Brooks et al., CVPR 2023), baseline",
            components=(IP2P_FULL,),
            licence="timbrooks/instruct-pix2pix is tagged MIT on its Hub page; it derives from Stable Diffusion 1.5.",
            editor="instruct-pix2pix",
            memory="about 3 GB in fp16",
        ),
        ModelEntry(
            name="magicbrush",
            title="MagicBrush (Zhang et al., NeurIPS 2023): InstructPix2Pix fine-tuned on MagicBrush, baseline",
            components=(MAGICBRUSH,),
            licence="vinesmsuic/magicbrush-jul7 is tagged creativeml-openrail-m (Stable Diffusion's licence).",
            editor="magicbrush",
            memory="about 3 GB in fp16",
        ),
    )
}
PREFERENCE = ("mgie-7b", "smartedit-13b", "smartedit-7b", "magicbrush", "instruct-pix2pix")  # best first
