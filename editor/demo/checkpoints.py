"""Demo training checkpoints (editor.demo.train): a stage's full checkpoint (weights, optimizer, schedule, step),
the compact resume point (fp16 safetensors of the weights alone) that `--init` starts a new run from, and the
finished stages (VAE, MLLM) that later stages load frozen from a run folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from editor.demo import model as demo
from editor.demo import stages
from editor.layouts.sizes import ModelSizes


def save_checkpoint(path: Path, modules: dict, optimizer, scheduler, step: int, extra: dict) -> None:
    state = {k: m.state_dict() for k, m in modules.items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"modules": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, **extra}, tmp)  # fmt: skip
    os.replace(tmp, path)  # never a half-written checkpoint


OPTIONAL_MODULES = ("precondition", "parse")  # absent from a checkpoint: the identity / a fresh refine parse head


def unet_class_of(modules: dict) -> str | None:
    """The class name of a stage's UNet (a checkpoint records it: the stock and skip UNets share their keys)."""
    return type(modules["unet"]).__name__ if "unet" in modules else None


def load_checkpoint(path: Path, modules: dict, optimizer=None, scheduler=None) -> dict:
    """Fill `modules` (and the optimizer's and scheduler's state) from a stage checkpoint. A checkpoint that records
    its UNet's class loads only into that class: a stock UNet would take a skip UNet's weights without a word."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    recorded, built = ckpt.get("unet_class"), unet_class_of(modules)
    if recorded and built and recorded != built:
        sys.exit(f"{path} holds a {recorded}, these sizes build a {built}: rerun with the --preset it was trained "
                 "with (training.json names the shipped models' presets)")  # fmt: skip
    for key, module in modules.items():
        if key in OPTIONAL_MODULES and key not in ckpt["modules"]:
            module.reset()
            continue
        module.load_state_dict(ckpt["modules"][key])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt


def read_modules(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Module name -> state dict, from a checkpoint (`--keep-every` weights or a stage's .ckpt) or from a compact
    resume point (`save_modules`: safetensors, keys "<module>.<parameter>")."""
    if path.suffix != ".safetensors":
        return torch.load(path, map_location="cpu", weights_only=True)["modules"]
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(path).items():
        module, name = key.split(".", 1)
        modules.setdefault(module, {})[name] = value
    return modules


HALF_MODULES = ("unet", "head", "text", "mllm")  # stored in fp16; the preconditioner's whitening stays fp32


def save_modules(checkpoint: Path, dest: Path) -> None:
    """A compact resume point of `checkpoint`'s weights: fp16 safetensors (no optimizer state), for `--init`, and
    beside it <dest>.json with the step, training seconds and recipe it was saved at."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    flat = {
        f"{module}.{name}": value.half().contiguous() if module in HALF_MODULES else value.contiguous()
        for module, state in ckpt["modules"].items() for name, value in state.items()
    }  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, dest)
    record = {k: ckpt[k] for k in ("step", "seconds", "recipe") if k in ckpt}
    dest.with_suffix(".json").write_text(json.dumps(record, indent=1))


def load_vae(out: Path, sizes: ModelSizes, device, decoder: bool = True):
    """The finished VAE, frozen; with `decoder`, its decoder from the `decoder` stage when there is one (the
    encoder, hence every latent, is the VAE stage's either way). The patch codec has no weights to train."""
    if sizes.latent_codec == "patches":
        return demo.build_vae(sizes).to(device).eval()
    ckpt_path = out / "vae.ckpt"
    if not ckpt_path.exists():
        sys.exit(f"{ckpt_path} not found: train the VAE first (python -m editor.demo.train vae --out {out})")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "scaling_factor" not in ckpt:  # written only by the stage's last step
        sys.exit(
            f"{ckpt_path} is an unfinished VAE (step {ckpt['step']}): rerun python -m editor.demo.train vae --out {out}"
        )
    vae = demo.build_vae(sizes, ckpt["scaling_factor"])
    vae.load_state_dict(ckpt["modules"]["vae"])
    if decoder and (out / "decoder.ckpt").exists():  # the decoder trained on (stage `decoder`); same latents
        vae.load_state_dict(torch.load(out / "decoder.ckpt", map_location="cpu", weights_only=True)["modules"]["vae"])
    return vae.to(device).eval().requires_grad_(False)


def load_mllm(out: Path, sizes: ModelSizes, device) -> tuple[stages.MLLMStage, int]:
    """Stage (a)'s MLLM, frozen, and the step it was saved at."""
    path = out / "mllm.ckpt"
    if not path.exists():
        sys.exit(f"{path} not found: train the MLLM first (python -m editor.demo.train mllm --out {out})")
    stage = stages.MLLMStage(sizes, device, out)
    step = load_checkpoint(path, stage.modules)["step"]
    stage.mllm.eval().requires_grad_(False)
    return stage, step
