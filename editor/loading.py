"""Reading checkpoints as downloaded, strictly, with errors that say which file, which key, and how to fix it.

Modules never touch the disk (editor/models); this module turns folders into state dicts and loads them into
modules built on the meta device (accelerate's `init_empty_weights`), so nothing is allocated twice.
All pickles are read with `weights_only=True`; `.bin` files are memory-mapped when their format allows it.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig

from editor.models.patches import CLASS_NAME as PATCH_CODEC
from editor.models.patches import PatchAutoencoder
from editor.models.source_skip import CLASS_NAME as SOURCE_SKIP
from editor.models.source_skip import SourceSkipUNet


class MissingWeightsError(FileNotFoundError):
    """A required file or folder is absent; the message says what to download and where to put it."""


class CheckpointError(ValueError):
    """A file exists but does not hold what the architecture expects (missing/unexpected key, wrong shape)."""


def require(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise MissingWeightsError(f"{what} not found: {path}\n  How to get it: {hint}")
    return path


def read_json(path: Path, hint: str) -> dict:
    require(path, "config file", hint)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the download may be incomplete. {hint}") from None


def read_state_dict(path: Path, hint: str) -> dict[str, torch.Tensor]:
    """One checkpoint file (.safetensors, or a .bin/.pt pickle loaded with weights_only=True) -> flat dict."""
    require(path, "checkpoint file", hint)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (pre-zip) pickles cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(
            f"could not read {path} as a tensor checkpoint ({type(err).__name__}: {str(err)[:300]}); "
            f"the file may be truncated or not a plain state dict. {hint}"
        ) from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors. {hint}")
    return dict(sd)


WEIGHT_FILES = (  # (shard index, single file) of a transformers-style folder, safetensors preferred
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


def weight_files(folder: Path, hint: str) -> list[Path]:
    """The weight files of a transformers-style folder (the shards its index lists, else its single file),
    safetensors preferred; [] when there are none."""
    for index, single in WEIGHT_FILES:
        if (folder / index).exists():
            return [folder / f for f in sorted(set(read_json(folder / index, hint).get("weight_map", {}).values()))]
        if (folder / single).exists():
            return [folder / single]
    return []


def read_model_folder(folder: Path, hint: str) -> Iterable[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield (file, state dict) for each shard of a transformers-style weights folder (`weight_files`)."""
    files = weight_files(folder, hint)
    if not files:
        raise MissingWeightsError(
            f"no weights in {folder} (looked for model.safetensors[.index.json] and pytorch_model.bin[.index.json])"
            f"\n  How to get them: {hint}"
        )
    for path in files:
        yield path, read_state_dict(require(path, f"shard listed in the index of {folder}", hint), hint)


_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}  # safetensors' dtype names  # fmt: skip


@dataclass(frozen=True)
class TensorRef:
    """A tensor not read yet: its shape and size, and how to read it."""

    shape: tuple[int, ...]
    nbytes: int
    load: Callable[[], torch.Tensor]


def _ref(tensor: torch.Tensor) -> TensorRef:
    return TensorRef(tuple(tensor.shape), tensor.numel() * tensor.element_size(), lambda: tensor)


def open_tensors(files: Iterable[Path], hint: str) -> dict[str, TensorRef]:
    """Lazy view of every tensor in `files` (pickles memory-mapped, safetensors opened by header)."""
    refs: dict[str, TensorRef] = {}
    for path in files:
        if path.suffix == ".safetensors":
            handle = safe_open(path, framework="pt")
            for key in handle.keys():
                view = handle.get_slice(key)
                shape = tuple(view.get_shape())
                nbytes = _DTYPES[view.get_dtype()].itemsize * math.prod(shape)
                refs[key] = TensorRef(shape, nbytes, lambda h=handle, k=key: h.get_tensor(k))
        else:
            refs.update({k: _ref(v) for k, v in read_state_dict(path, hint).items()})
    return refs


def _keys_preview(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_keys(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Tensor], source: str, hint: str) -> None:
    """Strict comparison: every expected key present with its shape, nothing unexpected."""
    missing = expected.keys() - found.keys()
    unexpected = found.keys() - expected.keys()
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} expected key(s): {_keys_preview(missing)}. {hint}")
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} key(s) the architecture does not use: {_keys_preview(unexpected)}. "
            f"Is this the right checkpoint? {hint}"
        )
    for key, shape in expected.items():
        if tuple(found[key].shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(found[key].shape)}, expected {tuple(shape)}. "
                f"The file does not match the configuration it was loaded with. {hint}"
            )


def expected_shapes(module: nn.Module, prefix: str = "") -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items() if k.startswith(prefix)}


def build_empty(factory, *args, **kwargs):
    """Build a module with parameters on the meta device (buffers real), to be filled by `assign_state`."""
    with init_empty_weights(include_buffers=False):
        return factory(*args, **kwargs)


def assign_state(module: nn.Module, state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Load a complete, already checked state dict, taking ownership of the tensors (no second copy)."""
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(cast, strict=True, assign=True)


# --- components shared by the MLLM-guided editors ------------------------------------------------------------


def llama_config_from_llava(cfg: Mapping, vocab_size: int) -> LlamaConfig:
    """LLaVA v1's `config.json` says `model_type: llava` (a name current transformers uses for LLaVA-1.5), so the
    LLaMA sizes are read from it by hand instead of through AutoConfig (docs/mgie.md G6, §2.12)."""
    heads = cfg["num_attention_heads"]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads", heads),
        hidden_act=cfg.get("hidden_act", "silu"),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        tie_word_embeddings=False,
    )


def clip_vision_config(clip_dir: Path, hint: str) -> CLIPVisionConfig:
    cfg = read_json(clip_dir / "config.json", hint)
    vision = cfg.get("vision_config", cfg) if cfg.get("model_type") == "clip" else cfg
    if "hidden_size" not in vision or "image_size" not in vision:
        raise CheckpointError(f"{clip_dir / 'config.json'} has no CLIP vision configuration. {hint}")
    keep = {
        k: v for k, v in vision.items() if not k.startswith("_") and k not in ("model_type", "transformers_version")
    }
    return CLIPVisionConfig(**keep)


def read_clip_vision_state(clip_dir: Path, hint: str, module_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """The `vision_model.*` tensors of a CLIPModel folder (text tower and projections are not needed), named as
    `module_keys` (the keys of the `CLIPVisionModel` to fill; transformers 5 dropped their `vision_model.` prefix)."""
    keep_prefix = any(k.startswith("vision_model.") for k in module_keys)
    state: dict[str, torch.Tensor] = {}
    for _, shard in read_model_folder(clip_dir, hint):
        for key, tensor in shard.items():
            if key.startswith("vision_model.") and not key.endswith("position_ids"):
                state[key if keep_prefix else key.removeprefix("vision_model.")] = tensor
    return state


def read_llava_v1_state(llava_dir: Path, hint: str) -> dict[str, torch.Tensor]:
    """LLaVA v1 shards -> keys of `LlavaV1` (llm.*, projector.*). Rotary `inv_freq` buffers written by old
    transformers are dropped (recomputed); no vision-tower keys exist in these shards (docs/mgie.md §3.2)."""
    state: dict[str, torch.Tensor] = {}
    for _, shard in read_model_folder(llava_dir, hint):
        for key, tensor in shard.items():
            if key.endswith("rotary_emb.inv_freq"):
                continue
            if key.startswith("model.mm_projector."):
                state["projector." + key.removeprefix("model.mm_projector.")] = tensor
            else:
                state["llm." + key] = tensor
    return state


def load_ip2p_shell(ip2p_dir: Path, unet_state: Mapping[str, torch.Tensor], unet_source: str, dtype, hint: str):
    """VAE + scheduler of a diffusers InstructPix2Pix folder and its UNet *architecture*, filled from `unet_state`
    (e.g. MGIE's unet.pt). The folder's own UNet and text-encoder weights are never read."""
    require(ip2p_dir, "InstructPix2Pix diffusers folder", hint)
    config = read_json(ip2p_dir / "unet" / "config.json", hint)
    cls = unet_class(config)
    try:
        unet = build_empty(cls.from_config, config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{ip2p_dir / 'unet' / 'config.json'} does not describe a UNet ({err}). {hint}") from None
    check_keys(expected_shapes(unet), unet_state, unet_source, hint)
    assign_state(unet, unet_state, dtype)
    return unet.eval(), load_vae(ip2p_dir / "vae", dtype, hint), load_scheduler(ip2p_dir / "scheduler", hint)


def unet_class(config: Mapping) -> type[UNet2DConditionModel]:
    """The UNet class a `unet/config.json` names: diffusers' (every published checkpoint), or the demo model's
    subclass that adds its image input to its output (editor/models/source_skip.py)."""
    return SourceSkipUNet if config.get("_class_name") == SOURCE_SKIP else UNet2DConditionModel


def load_unet(unet_dir: Path, dtype, hint: str) -> UNet2DConditionModel:
    """A diffusers `unet/` folder with its weights, as the class its config names (`unet_class`)."""
    cls = unet_class(read_json(unet_dir / "config.json", hint))
    try:
        return cls.from_pretrained(unet_dir, dtype=dtype).eval()
    except (OSError, ValueError, TypeError) as err:
        raise MissingWeightsError(f"could not load the UNet from {unet_dir} ({err}). {hint}") from None


def load_vae(vae_dir: Path, dtype, hint: str) -> AutoencoderKL | PatchAutoencoder:
    """The latent codec of a diffusers `vae/` folder: an AutoencoderKL (every published checkpoint), or the demo
    model's weightless patch codec when its config names that class (editor/models/patches.py)."""
    config = read_json(vae_dir / "config.json", hint)
    try:
        if config.get("_class_name") == PATCH_CODEC:
            return PatchAutoencoder.from_config(config).to(dtype).eval()
        return AutoencoderKL.from_pretrained(vae_dir, dtype=dtype).eval()
    except (OSError, ValueError, TypeError) as err:
        raise MissingWeightsError(f"could not load the VAE from {vae_dir} ({err}). {hint}") from None


def load_scheduler(folder: Path, hint: str) -> SchedulerMixin:
    """The scheduler class the folder's config names (Euler ancestral in MGIE's instruct-pix2pix folder, which its
    demo also sets; Euler ancestral when the config names none), so a folder trained for another sampler or
    prediction type (e.g. x0, which Euler ancestral cannot step) runs as it was trained."""
    config = read_json(folder / "scheduler_config.json", hint)
    name = config.get("_class_name", "EulerAncestralDiscreteScheduler")
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise CheckpointError(f"{folder / 'scheduler_config.json'} names {name!r}, not a diffusers scheduler. {hint}")
    return cls.from_pretrained(folder)
