"""The fine-tuned model written in MGIE's official layout, so `load_mgie` (and `python app.py --weights-dir OUT`)
opens it with no other step:

    OUT/mgie_7b/mllm.safetensors     model.embed_tokens.weight, lm_head.weight, edit_head.*, emb (= [IMG] rows)
    OUT/mgie_7b/unet.safetensors     the UNet, LoRA merged
    OUT/mgie_7b/adapters/*.safetensors   the LoRA tensors themselves (peft key names), when adapters trained
    OUT/LLaVA-7B-v1/                 links to the base folder's files; with --lora-llm its weights are a new
                                     model.safetensors (LoRA merged) and only the other files are linked
    OUT/instruct-pix2pix, OUT/clip-vit-large-patch14   links to the base folders (nothing there trains)

The links point at the base weights (absolute paths): keep those folders, or copy them in with `cp -rL`.
The demo model (`--model mgie-demo`) gets the same four folders one level down, in OUT/demo/mgie, where its
registry spec looks under `--weights-dir OUT` (editor.pipelines.spec.demo_root), with the base's own app settings
(editor_defaults.json) copied beside them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from editor.finetune.model import N_IMG, FinetuneModel, adapter_state, merged_state
from editor.layouts.folders import CLIP_L14, DEFAULTS_FILE, IP2P_SHELL, LLAVA_7B, MGIE_7B
from editor.pipelines.mgie import DEMO_PART, MGIEPaths
from editor.pipelines.spec import demo_root

WEIGHT_NAMES = ("pytorch_model", "model")  # shard stems of a transformers folder (never linked when rewritten)


def _save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(cast, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() or link.is_file():
            link.unlink()
        else:
            raise FileExistsError(f"{link} exists and is not a link; remove it or choose another --out")
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def mllm_state(model: FinetuneModel) -> dict[str, torch.Tensor]:
    llm = model.mllm.llm
    embed = llm.get_input_embeddings().weight.detach()
    state = {"model.embed_tokens.weight": embed, "lm_head.weight": llm.lm_head.weight.detach()}
    state |= {f"edit_head.{k}": v.detach() for k, v in model.head.state_dict().items()}
    state["emb"] = model.img_embeddings().detach().reshape(N_IMG, -1).clone()
    return state


def llava_state(model: FinetuneModel) -> dict[str, torch.Tensor]:
    """The LLaVA shards' keys (HF LLaMA names + model.mm_projector.*), LoRA merged; the embeddings and LM head are
    left out (the loader takes them from mllm.safetensors)."""
    skip = ("model.embed_tokens.weight", "lm_head.weight")
    state = {k: v for k, v in merged_state(model.mllm.llm).items() if k not in skip}
    state |= {f"model.mm_projector.{k}": v.detach() for k, v in model.mllm.projector.state_dict().items()}
    return state


def layout_root(model: str, out: Path) -> Path:
    """Where the four folders of base model `model` go, so that its registry spec opens them with `--weights-dir
    out`: `out` itself for mgie-7b, out/demo/mgie for the demo model."""
    return demo_root(out, DEMO_PART) if model == "mgie-demo" else Path(out)


def write_official_layout(
    model: FinetuneModel, adapters: dict, base: MGIEPaths, out: Path, dtype: torch.dtype
) -> MGIEPaths:
    """The four folders under `out` (`layout_root`'s answer), plus the base's editor_defaults.json when it has
    one (the demo's app settings, which its loader reads beside the folders)."""
    out = Path(out)
    mgie = out / MGIE_7B.name
    _save(mllm_state(model), mgie / "mllm.safetensors", dtype)
    _save(merged_state(model.unet), mgie / "unet.safetensors", dtype)
    for name in adapters:
        module = model.unet if name == "unet" else model.mllm.llm
        _save(adapter_state(module), mgie / "adapters" / f"{name}_lora.safetensors", torch.float32)
    llava = out / LLAVA_7B.name
    if "llm" in adapters:
        if llava.is_symlink():
            llava.unlink()
        llava.mkdir(parents=True, exist_ok=True)
        for file in base.llava.iterdir():
            if not file.name.startswith(WEIGHT_NAMES):
                _link(file, llava / file.name)
        _save(llava_state(model), llava / "model.safetensors", dtype)
    else:
        _link(base.llava, llava)
    _link(base.ip2p, out / IP2P_SHELL.name)
    _link(base.clip, out / CLIP_L14.name)
    defaults = base.llava.parent / DEFAULTS_FILE
    if defaults.is_file():
        shutil.copyfile(defaults, out / DEFAULTS_FILE)
    return MGIEPaths.from_weights_dir(out)
