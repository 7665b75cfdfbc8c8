"""Between a run folder and the shipped weights (editor.demo.train's `export` and `unpack`): the trained stages
written in their official layouts (fp16 safetensors, MGIE's four folders, the ablation's diffusers folders) with a
record of each stage's step, time and recipe, and back again as resume points."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from editor.demo import model as demo
from editor.demo import stages
from editor.demo.checkpoints import load_checkpoint, load_vae, unet_class_of
from editor.layouts.sizes import ModelSizes

TRAINING_FILE = "training.json"  # beside the shipped weights: each stage's step, seconds and recipe
PRECONDITION_FILE = "precondition.safetensors"  # beside them too: MGIE's head preconditioner, for `unpack`


def export(
    out: Path,
    to: Path,
    sizes: ModelSizes = demo.SIZES,
    parts: tuple[str, ...] = ("mgie", "ip2p"),
    step: int | None = None,
    mgie_stage: str = "mgie",
) -> None:
    """Write the trained models in their official layouts: <to>/mgie (MGIE's four folders), <to>/ip2p (diffusers).
    `step`: the weights kept at that step (`--keep-every`) instead of the latest checkpoint; `mgie_stage`: "distil"
    exports the distilled head with its teacher's UNet (editor.demo.distil) instead of stage b's weights."""
    vae = load_vae(out, sizes, "cpu")

    def weights(stage: str) -> Path:
        stage = mgie_stage if stage == "mgie" else stage
        return out / (f"{stage}-{step:06d}.pt" if step else f"{stage}.ckpt")

    if "mgie" in parts:
        mllm, head, unet = demo.build_mllm(sizes), demo.build_head(sizes), demo.build_unet(sizes)
        load_checkpoint(out / ("refine.ckpt" if (out / "refine.ckpt").exists() else "mllm.ckpt"), {"mllm": mllm})
        precondition = stages.Preconditioner(sizes.llm_hidden)
        load_checkpoint(weights("mgie"), {"head": head, "unet": unet, "precondition": precondition})
        to.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in precondition.state_dict().items()}, to / PRECONDITION_FILE)
        precondition.fold_into(head)  # the shipped head is MGIE's own (stages.Preconditioner)
        demo.export_mgie(to / "mgie", sizes, mllm, head, unet, vae)
    if "ip2p" in parts:
        text, unet = demo.build_text_encoder(sizes), demo.build_unet(sizes)
        load_checkpoint(weights("ip2p"), {"text": text, "unet": unet})
        demo.export_ip2p(to / "ip2p", sizes, unet, vae, text)
    optional = tuple(stage for stage in ("vae", "decoder", "refine") if (out / f"{stage}.ckpt").exists())
    done = ("mllm", *optional, *parts)
    (to / TRAINING_FILE).write_text(json.dumps(training_record(out, done, step, mgie_stage), indent=1))
    print(f"wrote {', '.join(str(to / part) for part in parts)}")


def training_record(out: Path, stages_done: tuple[str, ...], step: int | None = None, mgie_stage="mgie") -> dict:
    record = {}
    for stage in stages_done:
        kept = step and stage in ("mgie", "ip2p")
        name = mgie_stage if stage == "mgie" else stage
        ckpt = torch.load(out / (f"{name}-{step:06d}.pt" if kept else f"{name}.ckpt"), "cpu", weights_only=True)
        record[stage] = {"step": ckpt["step"], "seconds": round(ckpt.get("seconds", 0.0)), "recipe": ckpt["recipe"]}
        record[stage] |= {"stage": name} if name != stage else {}
    return record


def unpack(weights: Path, out: Path, sizes: ModelSizes = demo.SIZES) -> None:
    """Compact resume points from shipped weights (fp16 safetensors, no optimizer state): <weights>/mgie and
    <weights>/ip2p become <out>/{vae,mllm,mgie,ip2p}.ckpt (and refine.ckpt, the same MLLM, when it was refined) at
    the steps in <weights>/training.json, so that training goes on from what is committed (fresh AdamW moments; the
    schedule at that step). MGIE's head comes back in the preconditioned coordinates it trained in
    (<weights>/precondition.safetensors; the identity when absent)."""
    from editor.pipelines.ip2p import load_ip2p
    from editor.pipelines.mgie import MGIEPaths, load_mgie
    from editor.pipelines.spec import LoadOptions

    record = json.loads((weights / TRAINING_FILE).read_text())
    mgie = load_mgie(MGIEPaths.from_weights_dir(weights / "mgie"), options=LoadOptions("cpu", torch.float32))
    ip2p = load_ip2p([weights / "ip2p"], name="ip2p-demo", options=LoadOptions("cpu", torch.float32), hint="")
    precondition = stages.Preconditioner(sizes.llm_hidden)
    if (weights / PRECONDITION_FILE).exists():  # the exported head has it folded in: back to training coordinates
        precondition.load_state_dict(load_file(weights / PRECONDITION_FILE))
        precondition.unfold_from(mgie.head)
    modules = {
        **({"vae": {"vae": mgie.pipe.vae}} if "vae" in record else {}),  # the patch codec has no VAE stage
        "mllm": {"mllm": mgie.mllm},
        "mgie": {"head": mgie.head, "unet": mgie.pipe.unet, "precondition": precondition},
        "ip2p": {"text": ip2p.pipe.text_encoder, "unet": ip2p.pipe.unet},
        **({"refine": {"mllm": mgie.mllm}} if "refine" in record else {}),  # its parse head is not shipped
    }
    out.mkdir(parents=True, exist_ok=True)
    for stage, parts in modules.items():
        extra = {"scaling_factor": mgie.pipe.vae.config.scaling_factor} if stage == "vae" else {}
        extra |= {"unet_class": unet_class_of(parts)}
        state = {name: module.state_dict() for name, module in parts.items()}
        done = record[stage]
        torch.save({"modules": state, "step": done["step"], "seconds": done["seconds"], "recipe": done["recipe"],
                    **extra}, out / f"{stage}.ckpt")  # fmt: skip
    print(f"resume points for {', '.join(modules)} written to {out}")
