"""A model chosen by environment variables, downloaded and loaded once the page is up: how a Hugging Face Space built
from this repository serves the real model (README, "Deploy to Hugging Face Spaces").

`prepare_startup(env, ...)` reads the variables and the hardware. Where the model cannot run (no GPU, too small a
GPU) or its licence was not accepted, nothing is downloaded: the offline demo models open with the reason. Otherwise
the UI gets a `PendingEditor` under the model's name and a banner that follows the start-up; `run()` downloads what
is missing with the existing downloader (progress measured on disk against the sizes the Hub states), then loads the
model once. Until then each model call is refused with how far the start-up is; if anything fails, the banner shows
the reason and the pending editor serves the offline demo model instead, labelled so. Models asked for with
`--also` get stand-ins too and are loaded after it, from the weights folder (not downloaded); one that fails is
named in the banner with its reason and refuses its calls with it, and the others carry on.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from huggingface_hub import HfApi

from editor.core import Editor
from editor.params import EditParams
from editor.pipelines.registry import DEFAULT_WEIGHTS_DIR, DEMO_EDITORS, EDITORS, load_editor
from editor.ui.guard import public_message
from editor.weights.catalog import MODELS, Component, HubSource, ModelEntry, component_dir, installed, missing_files
from editor.weights.download import TIMEOUT_S, DownloadError, download_model, explained

MODEL_ENV = "EDITOR_MODEL"  # the model to serve (default mgie-7b on a Space); "demo": the offline demo models
ACCEPT_ENV = "EDITOR_ACCEPT_LICENCE"  # model names whose licence the deployer accepts, comma-separated
DEVICE_ENV = "EDITOR_DEVICE"  # cuda (default where there is one) or cpu (runs a big model on the CPU anyway)
OFFLOAD_ENV = "EDITOR_OFFLOAD"  # 1: --offload (low VRAM)
SPACE_DEFAULT = "mgie-7b"  # what a Space serves when EDITOR_MODEL is not set
DATA_ROOT = Path("/data")  # a Space's persistent storage, when it has some
FALLBACK = DEMO_EDITORS[0]  # the offline demo MGIE
POLL_S = 0.5
# GPU memory (GB): the fp16 weights resident, and the larger stage with EDITOR_OFFLOAD=1 (README "Checkpoints")
GPU_GB: dict[str, tuple[float, float]] = {
    "mgie-7b": (16.0, 14.0),
    "smartedit-7b": (16.2, 14.3),
    "smartedit-13b": (28.8, 26.8),
    "instruct-pix2pix": (3.0, 3.0),
    "magicbrush": (3.0, 3.0),
}
log = logging.getLogger("editor")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Hardware:
    kind: Literal["zero-gpu", "gpu", "cpu"]
    gpu_gb: float | None = None

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Hardware:
        if _truthy(env.get("SPACES_ZERO_GPU")):
            # ZeroGPU: no GPU is attached to this process; `spaces` emulates CUDA here (torch.cuda.is_available() is
            # then True and `.to("cuda")` is recorded, not run) and must be imported before anything touches CUDA.
            import spaces  # noqa: F401

            return cls("zero-gpu", 70.0)  # a slice of an H200 (the `spaces` package's default device)
        if torch.cuda.is_available():
            return cls("gpu", torch.cuda.get_device_properties(0).total_memory / 1e9)
        return cls("cpu")


@dataclass(frozen=True)
class StartupConfig:
    model: str  # a downloadable editor
    weights_dir: Path
    accepted: bool  # EDITOR_ACCEPT_LICENCE names the model
    device: str | None = None
    dtype: torch.dtype | None = None
    offload: bool = False


def weights_folder(env: Mapping[str, str], weights_dir: Path, data_root: Path = DATA_ROOT) -> Path:
    """`weights_dir` when chosen (--weights-dir, EDITOR_WEIGHTS_DIR), else `<data_root>/weights` on persistent
    storage when it is there and writable, else the default weights folder."""
    if Path(weights_dir) != DEFAULT_WEIGHTS_DIR or env.get("EDITOR_WEIGHTS_DIR"):
        return Path(weights_dir)
    if data_root.is_dir() and os.access(data_root, os.W_OK):
        return data_root / "weights"
    return Path(weights_dir)


def read_config(
    env: Mapping[str, str], weights_dir: Path = DEFAULT_WEIGHTS_DIR, device=None, dtype=None, offload=False,
    data_root: Path = DATA_ROOT,
) -> StartupConfig | None:  # fmt: skip
    """The start-up the variables ask for; None when neither EDITOR_MODEL nor SPACE_ID is set, or EDITOR_MODEL=demo."""
    name = env.get(MODEL_ENV, "").strip() or (SPACE_DEFAULT if env.get("SPACE_ID") else "")
    if name in ("", "demo"):
        return None
    choices = [n for n, spec in EDITORS.items() if spec.downloadable]
    if name not in choices:
        raise ValueError(f"{MODEL_ENV}={name!r} is not a downloadable model; choose one of {', '.join(choices)}, demo")
    accepted = name in {n.strip() for n in env.get(ACCEPT_ENV, "").split(",")}
    device = env.get(DEVICE_ENV) or device
    offload = offload or _truthy(env.get(OFFLOAD_ENV))
    return StartupConfig(name, weights_folder(env, weights_dir, data_root), accepted, device, dtype, offload)


def hardware_advice(need: float) -> str:
    fits = [n for n, gb in (("A10G or L4", 24), ("L40S", 48), ("A100", 80)) if gb >= need + 2]
    return f"{' / '.join(fits)} GPU hardware, or ZeroGPU"


def refusal(config: StartupConfig, hardware: Hardware) -> str | None:
    """Why the model will not be downloaded here (Markdown), or None."""
    entry = MODELS[config.model]
    need, with_offload = GPU_GB[config.model]
    need = with_offload if config.offload and hardware.kind == "gpu" else need
    if config.device == "cpu":
        pass  # asked for explicitly: slow, but the user's choice
    elif hardware.kind == "cpu":
        return (
            f"**{entry.title}** needs a GPU with about {need:.0f} GB of memory ({hardware_advice(need)}); this machine "
            f"has none, so nothing was downloaded. Choose GPU hardware in the Space's settings, or set "
            f"`{DEVICE_ENV}=cpu` to run it on the CPU anyway (minutes per edit)."
        )
    elif hardware.kind == "gpu" and hardware.gpu_gb is not None and hardware.gpu_gb < need:
        hint = "" if config.offload else f" (`{OFFLOAD_ENV}=1` brings it to about {with_offload:.0f} GB)"
        return (
            f"**{entry.title}** needs about {need:.0f} GB of GPU memory{hint}; this GPU has {hardware.gpu_gb:.1f} GB, "
            f"so nothing was downloaded. Choose larger hardware: {hardware_advice(need)}."
        )
    missing = [c for c in entry.components if missing_files(component_dir(config.weights_dir, c), c)]
    if unobtainable := [c.folder for c in missing if not c.sources]:
        return (
            f"**{entry.title}** cannot be downloaded at start-up: {', '.join(unobtainable)} has no ready-made copy "
            '(it is built from your own LLaMA with `--llama-base`, README "Checkpoints"), so nothing was downloaded.'
        )
    if missing and not config.accepted:
        return licence_refusal(entry)
    return None


def licence_refusal(entry: ModelEntry) -> str:
    return (
        f"**{entry.title}** was not downloaded: its licence must be accepted first. {entry.licence} To accept it, "
        f"set the variable `{ACCEPT_ENV}={entry.name}` (on a Space: Settings → Variables and secrets) and restart."
    )


def size_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Status:
    phase: Literal["starting", "downloading", "loading", "ready", "fallback", "failed"]
    done: int = 0  # bytes downloaded so far
    total: int = 0  # bytes to download
    reason: str = ""  # why the model is not served (fallback, failed)

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    def progress(self) -> str:
        return f"{self.percent} %, {size_text(self.done)} of {size_text(self.total)}"


class NotReadyError(ValueError):
    """A model call arrived before the model is loaded; the message says how far the start-up is."""


class ModelStartup:
    """Downloads (when needed) and loads `config.model` once; `status` says where it is, for the banner."""

    def __init__(
        self, config: StartupConfig, hardware: Hardware, load: Callable[..., Editor] = load_editor,
        also: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.config, self.hardware, self._load = config, hardware, load
        self.entry = MODELS[config.model]
        self.status = Status("starting")
        self.editor: Editor | None = None  # the model, or the demo model after a failure
        self.pending = PendingEditor(config.model, lambda: self.editor, self.waiting_message)
        self.also = tuple(dict.fromkeys(n for n in also if n != config.model))  # --also: loaded after the model
        self.extras: dict[str, Editor] = {}
        self.extra_errors: dict[str, str] = {}  # why an --also model did not load
        extras = {n: PendingEditor(n, partial(self.extras.get, n), partial(self.extra_waiting, n)) for n in self.also}
        self.editors: dict[str, Editor] = {config.model: self.pending, **extras}

    def run(self) -> None:
        """Download, then load; on any failure, load the demo model and keep the reason; then the --also models.
        Never raises: the app keeps serving whatever happens here."""
        self._run_model()
        load_extras(self.also, self._load_model, self.extras, self.extra_errors)

    def _run_model(self) -> None:
        try:
            if not installed(self.entry, self.config.weights_dir):
                if not self.config.accepted:
                    raise DownloadError(licence_refusal(self.entry).replace("**", ""))
                self._download()
            self.status = Status("loading")
            self.editor = self._load_model(self.config.model)
            self.status = Status("ready")
            log.info("%s is loaded", self.config.model)
        except Exception as err:  # noqa: BLE001 - any failure: say why and serve the demo model instead
            reason = public_message(str(err)).replace("\n", " ")
            log.warning("%s could not be started: %s", self.config.model, reason)
            try:
                self.editor = self._load_model(FALLBACK, demo=True)
                self.status = Status("fallback", reason=reason)
            except Exception as demo_err:  # noqa: BLE001
                self.status = Status("failed", reason=f"{reason}; the demo model did not load either: {demo_err}")

    def _load_model(self, name: str, demo: bool = False) -> Editor:
        c = self.config
        # ZeroGPU moves every weight to the GPU at each call itself: diffusers' CPU offload has no place there
        offload = c.offload and not demo and self.hardware.kind != "zero-gpu"
        return self._load(name, c.weights_dir, c.device, c.dtype, offload)

    def _download(self) -> None:
        components = [c for c in self.entry.components if missing_files(component_dir(self.config.weights_dir, c), c)]
        total = sum(planned_bytes(c, self.config.weights_dir) for c in components)
        roots = {self.config.weights_dir, *(component_dir(self.config.weights_dir, c) for c in components)}
        base = disk_bytes(roots)
        self.status = Status("downloading", 0, total)
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(POLL_S):
                done = max(self.status.done, min(total, disk_bytes(roots) - base))  # never backwards
                self.status = Status("downloading", done, total)

        watcher = threading.Thread(target=watch, name="download-progress", daemon=True)
        watcher.start()
        try:
            download_model(self.entry, self.config.weights_dir, accept_licence=True, say=log.info)
        finally:
            stop.set()
            watcher.join()

    def extra_waiting(self, name: str) -> str:
        if (reason := self.extra_errors.get(name)) is not None:
            return f"{EDITORS[name].title} could not be loaded: {reason}"
        return f"{EDITORS[name].title} is loaded once {self.entry.title} has started: try again later"

    def waiting_message(self) -> str:
        s, title = self.status, self.entry.title
        if s.phase == "downloading":
            return f"{title} is still downloading ({s.progress()}): edits start once it is loaded; try again later"
        if s.phase == "loading":
            return f"{title} is downloaded and loading into memory: try again in a minute"
        if s.phase == "failed":
            return f"{title} could not be started and no model is available: {s.reason}"
        return f"{title} is starting: try again in a moment"

    def banner(self) -> tuple[str, bool]:
        """(Markdown for the page's banner, whether it is final): the model's start-up, then the --also models."""
        text, settled = self._model_banner()
        if not settled or not self.also:
            return text, settled
        done = all(n in self.extras or n in self.extra_errors for n in self.also)
        return f"{text} {extras_text(self.also, self.extras, self.extra_errors)}", done

    def _model_banner(self) -> tuple[str, bool]:
        s, title = self.status, f"**{self.entry.title}**"
        if s.phase == "ready":
            return f"{title} is loaded and ready.", True
        if s.phase == "fallback":
            return (
                f"{title} could not be started: {s.reason}. Edits use the **offline demo model** (`{FALLBACK}`, MGIE's "
                "architecture trained by this project on a world of coloured shapes, 64 px) instead.",
                True,
            )
        if s.phase == "failed":
            return f"{title} could not be started: {s.reason}", True
        if s.phase == "downloading":
            return f"{title} is downloading: {s.progress()}. Edits start once it is loaded.", False
        if s.phase == "loading":
            return f"{title} is downloaded; loading it…", False
        return f"{title} is starting…", False


class PendingEditor:
    """Stands in the UI for the model being prepared: refuses model calls with `NotReadyError` (how far the start-up
    is) until it is loaded, then delegates every call to it (or to the demo model after a failure)."""

    def __init__(self, name: str, editor: Callable[[], Editor | None], waiting: Callable[[], str]) -> None:
        self.name, self._editor, self._waiting = name, editor, waiting

    def _ready(self) -> Editor:
        if (editor := self._editor()) is None:
            raise NotReadyError(self._waiting())
        return editor

    @property
    def defaults(self) -> EditParams:
        return EditParams() if (editor := self._editor()) is None else editor.defaults

    @property
    def native_size(self) -> int | None:
        return None if (editor := self._editor()) is None else editor.native_size

    def think(self, image, instruction: str):
        return self._ready().think(image, instruction)

    def guidance_from_text(self, image, instruction: str, expressive_text: str):
        return self._ready().guidance_from_text(image, instruction, expressive_text)

    def render(self, image, guidance, params=None, on_step=None):
        return self._ready().render(image, guidance, params, on_step)

    def __getattr__(self, attr: str):
        """The served model's CLIP image tower, when it has one (editor.core.EmbedsImages: the explorer's CLIP-I)."""
        editor = self.__dict__["_editor"]()
        if attr == "image_embedding" and editor is not None and hasattr(editor, attr):
            return getattr(editor, attr)
        raise AttributeError(attr)


def planned_bytes(component: Component, weights_dir: Path) -> int:
    """What fetching `component` will write: the Hub's sizes for its Hub source (asked now, so an unreachable or
    gated repository fails here, fast), else the published sizes."""
    hub = next((s for s in component.sources if isinstance(s, HubSource)), None)
    if hub is None:
        return sum(component.sizes.values())
    what = f"{hub.repo_id}@{hub.revision}" if hub.revision != "main" else hub.repo_id
    with explained(what, component_dir(weights_dir, component)):
        info = HfApi().model_info(hub.repo_id, revision=hub.revision, files_metadata=True, timeout=TIMEOUT_S)
    wanted = [s for s in info.siblings or () if any(fnmatch.fnmatch(s.rfilename, p) for p in hub.allow)]
    return sum(s.size or 0 for s in wanted)


def disk_bytes(roots: set[Path]) -> int:
    files = {p for root in roots if root.is_dir() for p in root.rglob("*")}
    return sum(p.stat().st_size for p in files if p.is_file())


def load_extras(names: Iterable[str], load: Callable[[str], Editor], into: dict, errors: dict[str, str]) -> None:
    """Loads each of `names` (--also) into `into`; a failure's reason goes to `errors` and the next one is tried."""
    for name in names:
        try:
            into[name] = load(name)
        except Exception as err:  # noqa: BLE001 - named in the banner; the app serves the others
            errors[name] = public_message(str(err)).replace("\n", " ").rstrip(".")
            log.warning("%s (--also) could not be loaded: %s", name, errors[name])


def extras_text(names: Iterable[str], loaded: Mapping[str, Editor], errors: Mapping[str, str]) -> str:
    """What became of the --also models, for the banner (Markdown)."""
    said = []
    for name in names:
        title = f"**{EDITORS[name].title}**"
        if name in errors:
            said.append(f"{title} (`--also`) could not be loaded: {errors[name]}.")
        else:
            said.append(f"{title} is loaded too." if name in loaded else f"{title} is loading…")
    return " ".join(said)


@dataclass
class Startup:
    """What app.py serves: the editors, the banner (text, or a live status), and the work to run after launch."""

    editors: dict[str, Editor]
    notice: str | Callable[[], tuple[str, bool]] | None
    run: Callable[[], None] | None = None


def prepare_startup(
    env: Mapping[str, str], weights_dir: Path = DEFAULT_WEIGHTS_DIR, device=None, dtype=None, offload=False,
    data_root: Path = DATA_ROOT, load: Callable[..., Editor] = load_editor, also: Sequence[str] = (),
) -> Startup | None:  # fmt: skip
    """None when the variables ask for no start-up download (app.py then chooses as usual). `also` (--also): more
    models, loaded after the one served."""
    config = read_config(env, weights_dir, device, dtype, offload, data_root)
    if config is None:
        return None
    hardware = Hardware.detect(env)
    reason = refusal(config, hardware)
    if reason is not None:
        place = config.weights_dir, config.device, config.dtype
        demo = {name: load(name, *place) for name in DEMO_EDITORS}
        errors: dict[str, str] = {}  # the --also models, loaded now
        extras = [n for n in dict.fromkeys(also) if n not in demo]
        load_extras(extras, lambda name: load(name, *place, config.offload), demo, errors)
        notice = f"{reason} Meanwhile this is the **offline demo model** (shapes world, 64 px)."
        return Startup(demo, f"{notice} {extras_text(extras, demo, errors)}".strip())
    startup = ModelStartup(config, hardware, load, also)
    return Startup(startup.editors, startup.banner, startup.run)
