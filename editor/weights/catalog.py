"""Every checkpoint this app can use: where it comes from, what it is made of, its licence, its expected sizes.

A model (`ModelEntry`) is a list of components; a component is one folder under the weights directory, named as
the official downloads name it, with one or more sources tried in order (the official one first). An editor's
components are the folders its spec loads (editor.layouts.folders.MODEL_FOLDERS, `components_of`), in that order;
this module says only where each folder comes from. Two models may
share a folder (MGIE and SmartEdit both read `LLaVA-7B-v1/`); a folder is present for a model when every file that
model needs is there (MGIE needs only the configs, VAE and scheduler of `instruct-pix2pix/`, the baseline needs all).

Sizes are the ones stated by the papers' repositories and Hub pages (docs/mgie.md §3.1, docs/smartedit.md §3.2), in
bytes, checked within `SIZE_TOLERANCE`; exact sizes and SHA-256 come from the Hub at download time and are recorded in
each folder's `.download.json`, which `verify` checks. Revisions are pinned where the commit is known.

Besides the editors, one entry is not a model the app runs: `eval-metrics`, the backbones editor.eval scores with
(CLIP, DINO, LPIPS; `kind="metrics"`). `list` shows it after the editors, `verify` loads each backbone through its
scorer (editor.eval.metrics, editor.eval.lpips) instead of an editor, and the registry never offers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from editor.layouts import folders as layout
from editor.layouts.folders import (  # noqa: F401 - the weights CLI's names for them
    DEFAULT_WEIGHTS_DIR,
    REPO_WEIGHTS_DIR,
    download_command,
    folder_env,
    folder_path,
)

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
class FileSource:
    """One file at a plain URL, saved as `filename` (relative to the component's folder). torchvision names its
    files after the first hex digits of their SHA-256: `sha256_prefix` is checked after the download."""

    url: str
    filename: str
    sha256_prefix: str | None = None
    size: int | None = None  # approximate, for the disk-space check before the server answers

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class FileSet:
    """A component made of single files from plain URLs, fetched one after the other (each resumable)."""

    files: tuple[FileSource, ...]

    def describe(self) -> str:
        hosts = dict.fromkeys(f.url.split("/")[2] for f in self.files)
        return f"{len(self.files)} file(s) from {', '.join(hosts)}"


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
    sources: tuple[HubSource | ArchiveSource | FileSet, ...]
    needs: tuple[str, ...]  # glob patterns (relative to the folder) that must each match a file
    sizes: dict[str, int] = field(default_factory=dict)  # file -> bytes, as published
    delta: DeltaSource | None = None

    @classmethod
    def of(cls, folder: layout.Folder, title: str, sources: tuple, **more) -> Component:
        """The component that is the editors' folder `folder` (its name and needed files: editor.layouts.folders)."""
        return cls(folder.name, title, sources, folder.needs, **more)

    @property
    def env(self) -> str:
        """Environment variable that points this component at another folder."""
        return folder_env(self.folder)

    @property
    def layout(self) -> layout.Folder:
        """The editors' folder this component is (its name and needed files)."""
        return layout.Folder(self.folder, self.needs)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    components: tuple[Component, ...]
    licence: str  # shown, and accepted, before anything is downloaded
    editor: str | None  # the name in pipelines/registry.py; None while this app cannot run the model, or for metrics
    memory: str = ""
    kind: Literal["editor", "metrics"] = "editor"  # metrics: evaluation backbones, loaded by their scorers


def component_dir(weights_dir: Path, component: Component) -> Path:
    """`$EDITOR_<FOLDER>_DIR` when set, else `<weights_dir>/<folder>` (editor.layouts.folders.folder_path)."""
    return folder_path(weights_dir, component.folder)


def missing_files(folder: Path, component: Component) -> list[str]:
    """The `needs` patterns of `component` that match no file in `folder` ("a|b" means either)."""
    return layout.missing_files(folder, component.needs)


def installed(entry: ModelEntry, weights_dir: Path) -> bool:
    return all(not missing_files(component_dir(weights_dir, c), c) for c in entry.components)


# ---- components -------------------------------------------------------------------------------------------------

MGIE_HUB = "tsujuifu/ml-mgie"
MGIE_HUB_REVISION = "7da3813a321383e01ab7f50a49391603fd8596f0"

LLAVA_7B = Component.of(
    layout.LLAVA_7B,
    title="LLaVA-Lightning-7B v1.1, merged with LLaMA-7B (13.5 GB fp16)",
    sources=(HubSource(MGIE_HUB, ("LLaVA-7B-v1/*",), MGIE_HUB_REVISION, in_repo="LLaVA-7B-v1"),),
    sizes={"pytorch_model-00001-of-00002.bin": 9_980_000_000, "pytorch_model-00002-of-00002.bin": 3_510_000_000},
    delta=DeltaSource("liuhaotian/LLaVA-Lightning-7B-delta-v1-1", "the original LLaMA-7B in Hugging Face format"),
)
LLAVA_13B = Component.of(
    layout.LLAVA_13B,
    title="LLaVA-13B v1.1, merged with LLaMA-13B (no ready-merged copy is published: apply the delta)",
    sources=(),
    delta=DeltaSource("liuhaotian/LLaVA-13b-delta-v1-1", "the original LLaMA-13B in Hugging Face format"),
)
MGIE_7B = Component.of(
    layout.MGIE_7B,
    title="MGIE-7B trained weights: mllm.pt (embeddings, lm_head, edit head) and unet.pt",
    sources=(
        ArchiveSource(
            "https://docs-assets.developer.apple.com/ml-research/models/mgie/mgie_7b.tar.gz", "mgie_7b", 2_130_000_000
        ),
        HubSource(MGIE_HUB, ("mgie_7b/*",), MGIE_HUB_REVISION, in_repo="mgie_7b"),
    ),
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
IP2P_SHELL = Component.of(
    layout.IP2P_SHELL,
    title="InstructPix2Pix pipeline shell: VAE, scheduler and UNet config (MGIE brings its own UNet)",
    sources=(HubSource(IP2P_ID, IP2P_SHELL_FILES, IP2P_REVISION),),
)
IP2P_FULL = Component.of(
    layout.IP2P_FULL,
    title="InstructPix2Pix (Brooks et al. 2023), the whole diffusers pipeline",
    sources=(HubSource(IP2P_ID, IP2P_FULL_FILES, IP2P_REVISION),),
    sizes={"unet/diffusion_pytorch_model.safetensors": 3_440_000_000},
)
IP2P_TEXT = Component.of(  # SmartEdit encodes the empty prompt with IP2P's text encoder
    layout.IP2P_TEXT,
    title="InstructPix2Pix VAE, scheduler, text encoder and tokenizer",
    sources=(HubSource(IP2P_ID, (*IP2P_SHELL_FILES, "text_encoder/*", "tokenizer/*"), IP2P_REVISION),),
)
# the tokenizer (a few MB) too: the evaluation's CLIP-T and Reason-Edit's foreground score encode text
CLIP_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "tokenizer*.json", "vocab.json",
              "merges.txt", "special_tokens_map.json")  # fmt: skip
CLIP_L14 = Component.of(
    layout.CLIP_L14,
    title="OpenAI CLIP ViT-L/14 (the vision tower and its preprocessing)",
    sources=(HubSource("openai/clip-vit-large-patch14", CLIP_FILES),),
    sizes={"model.safetensors": 1_710_000_000},
)
CLIP_B32 = Component(  # MagicBrush's CLIP-I / CLIP-T
    folder="clip-vit-base-patch32",
    title="OpenAI CLIP ViT-B/32 (image and text towers, preprocessing, tokenizer)",
    sources=(HubSource("openai/clip-vit-base-patch32", CLIP_FILES),),
    needs=CLIP_L14.needs,
    sizes={"model.safetensors": 605_000_000},
)
DINO_VITS16 = Component(
    folder="dino-vits16",
    title="DINO ViT-S/16 (Caron et al. 2021), transformers port",
    # whichever weight format the repository has (both, 87 MB each, when it has both)
    sources=(
        HubSource(
            "facebook/dino-vits16",
            ("config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin"),
        ),
    ),
    needs=("config.json", "model.safetensors|pytorch_model.bin"),
)
TORCHVISION = "https://download.pytorch.org/models"
LPIPS_LINS = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1"
LPIPS_FILES = (  # sizes: the backbones' parameters × 4 bytes; the lin files' as in the lpips 0.1.4 wheel
    FileSource(f"{TORCHVISION}/alexnet-owt-7be5be79.pth", "alexnet-owt-7be5be79.pth", "7be5be79", 244_400_000),
    FileSource(f"{TORCHVISION}/squeezenet1_1-b8a52dc0.pth", "squeezenet1_1-b8a52dc0.pth", "b8a52dc0", 4_970_000),
    FileSource(f"{TORCHVISION}/vgg16-397923af.pth", "vgg16-397923af.pth", "397923af", 553_400_000),
    FileSource(f"{LPIPS_LINS}/alex.pth", "v0.1/alex.pth", size=6_009),
    FileSource(f"{LPIPS_LINS}/squeeze.pth", "v0.1/squeeze.pth", size=10_811),
    FileSource(f"{LPIPS_LINS}/vgg.pth", "v0.1/vgg.pth", size=7_289),
)
LPIPS = Component(
    folder="lpips",
    title="LPIPS v0.1: torchvision's AlexNet, SqueezeNet 1.1 and VGG16 + the lpips package's lin heads",
    sources=(FileSet(LPIPS_FILES),),
    # editor.eval.lpips reads a `.safetensors` twin instead when there is one (what `convert` writes)
    needs=tuple(f"{f.filename}|{f.filename.removesuffix('.pth')}.safetensors" for f in LPIPS_FILES),
    sizes={f.filename: f.size for f in LPIPS_FILES if f.size},
)
MAGICBRUSH = Component.of(
    layout.MAGICBRUSH,
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
)


def _smartedit_parts(size: str) -> tuple[Component, Component]:
    """SmartEdit-<size>'s own folders: its trained weights and Vicuna's config and tokenizer."""
    return (
        Component.of(
            layout.smartedit_weights(size),
            title=f"SmartEdit-{size} trained weights (LoRA LLM, QFormer, BIM, UNet)",
            sources=(HubSource(f"TencentARC/SmartEdit-{size}"),),
        ),
        Component.of(
            layout.vicuna(size),
            title=f"Vicuna-{size} v1.1 config and tokenizer (weights not needed)",
            sources=(HubSource(f"lmsys/vicuna-{size.lower()}-v1.1", ("*.json", "tokenizer.model")),),
        ),
    )


# Where each folder an editor reads comes from, once per folder.
COMPONENTS: dict[layout.Folder, Component] = {
    component.layout: component
    for component in (
        LLAVA_7B, LLAVA_13B, MGIE_7B, IP2P_SHELL, IP2P_FULL, IP2P_TEXT, CLIP_L14, MAGICBRUSH,
        *_smartedit_parts("7B"), *_smartedit_parts("13B"),
    )
}  # fmt: skip


def components_of(name: str) -> tuple[Component, ...]:
    """Editor `name`'s components: the folders its spec loads (editor.layouts.folders.MODEL_FOLDERS), in order."""
    return tuple(COMPONENTS[folder] for folder in layout.MODEL_FOLDERS[name])


def _smartedit(size: str, memory: str) -> ModelEntry:
    """SmartEdit-7B and -13B differ only in these: the size (which picks the LLaVA they build on) and their memory."""
    name = f"smartedit-{size.lower()}"
    title = f"SmartEdit-{size} (TencentARC, CVPR 2024)"
    return ModelEntry(name, title, components_of(name), SMARTEDIT_LICENCE, name, memory)


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
            components=components_of("mgie-7b"),
            licence=(
                "MGIE weights: Apple's weight differentials are licensed CC-BY-NC (non-commercial; see apple/ml-mgie "
                "LICENSE). LLaVA-7B-v1 contains Meta's LLaMA-1 weights under LLaMA-1's non-commercial research "
                "terms. InstructPix2Pix (MIT) and CLIP (MIT) are also fetched."
            ),
            editor="mgie-7b",
            memory="about 16 GB in fp16 (LLaMA-7B 13.5 GB + UNet 1.7 GB + CLIP 0.6 GB); --offload for smaller GPUs",
        ),
        _smartedit("7B", "15.1 GiB of fp16 weights (computed; LLM stage 13.3), fits 24 GB; the reference wants 40 GB"),
        _smartedit("13B", "26.8 GiB of fp16 weights (computed; LLM stage 25.0): above 24 GB even with --offload"),
        ModelEntry(
            name="instruct-pix2pix",
            title="InstructPix2Pix (Brooks et al., CVPR 2023), baseline",
            components=components_of("instruct-pix2pix"),
            licence="timbrooks/instruct-pix2pix is tagged MIT on its Hub page; it derives from Stable Diffusion 1.5.",
            editor="instruct-pix2pix",
            memory="about 3 GB in fp16",
        ),
        ModelEntry(
            name="magicbrush",
            title="MagicBrush (Zhang et al., NeurIPS 2023): InstructPix2Pix fine-tuned on MagicBrush, baseline",
            components=components_of("magicbrush"),
            licence="vinesmsuic/magicbrush-jul7 is tagged creativeml-openrail-m (Stable Diffusion's licence).",
            editor="magicbrush",
            memory="about 3 GB in fp16",
        ),
        ModelEntry(
            name="eval-metrics",
            title="Evaluation backbones: CLIP ViT-B/32 (MagicBrush), CLIP ViT-L/14 (Reason-Edit), DINO ViT-S/16, LPIPS",
            components=(CLIP_B32, CLIP_L14, DINO_VITS16, LPIPS),
            licence=(
                "OpenAI CLIP (ViT-B/32, ViT-L/14): MIT. facebook/dino-vits16: Apache-2.0. LPIPS lin weights "
                "(richzhang/PerceptualSimilarity): BSD-2-Clause. torchvision's AlexNet, SqueezeNet and VGG16 "
                "ImageNet weights: BSD-3-Clause (torchvision's licence)."
            ),
            editor=None,
            memory="3.2 GB of files (CLIP-L 1.7, CLIP-B 0.6, VGG16 0.55, AlexNet 0.24, DINO 0.09); float32, CPU or GPU",
            kind="metrics",
        ),
    )
}
PREFERENCE = ("mgie-7b", "smartedit-13b", "smartedit-7b", "magicbrush", "instruct-pix2pix")  # best first
LISTED = (*PREFERENCE, *(name for name in MODELS if name not in PREFERENCE))  # `list` / `verify` order
