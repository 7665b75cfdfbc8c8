"""Train the offline demo models on the shapes world (editor.demo.world), on CPU or CUDA, resumably.

    python -m editor.demo.train vae   --out runs/demo   # 1. the small VAE (frozen afterwards, as SD's)
    python -m editor.demo.train decoder --out runs/demo # 1b. optional, any time: its decoder alone trains on
    python -m editor.demo.train mllm  --out runs/demo   # 2. (a) the MLLM alone on L_ins (no diffusion)
    python -m editor.demo.train cache --out runs/demo   # 3. VAE latents + the frozen MLLM's [IMG] states, once
    python -m editor.demo.train mgie  --out runs/demo   # 4. (b) MGIE's edit head + UNet on those states: L_edit
    python -m editor.demo.train ip2p  --out runs/demo   # 5. the ablation: terse text -> CLIP text encoder -> UNet
    python -m editor.demo.train distil --out runs/demo --teacher runs/demo/ip2p.ckpt  # 4'. the head onto the
                                                        # ablation's condition, its UNet taken (editor.demo.distil)
    python -m editor.demo.train refine --out runs/demo  # 6. the MLLM again, its [IMG] states held (demo.refine)
    python -m editor.demo.train export --out runs/demo --to weights/demo   # official layouts, fp16 safetensors
    python -m editor.demo.train unpack --to weights/demo --out runs/demo   # resume points from shipped weights
    python -m editor.demo.train compact --out runs/demo --parts mgie --step 5000 --to F.safetensors  # for --init

The stages and their losses: editor.demo.stages; the cache: editor.demo.cache. Each stage checkpoints to
<out>/<stage>.ckpt every --ckpt-every steps and resumes from it when rerun; `--keep-every N` also keeps
<out>/<stage>-<step>.pt (weights only) for the learning curve. The log (<out>/<stage>.log) gives, every 25 steps,
the step, the seconds of training so far (over resumed runs too: the curve's CPU time) and the losses. Batch i is a
fixed function of (seed, i) and its noise comes from a generator seeded by (seed, i), so a resumed run sees exactly
the data and noise of an uninterrupted one.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from editor.demo import cache as cached
from editor.demo import model as demo
from editor.demo import stages
from editor.demo.checkpoints import (
    load_checkpoint,
    load_mllm,
    load_vae,
    read_modules,
    save_checkpoint,
    save_modules,
    unet_class_of,
)
from editor.demo.distil import DistilStage
from editor.demo.refine import RefineStage
from editor.demo.shipping import export, unpack
from editor.layouts.sizes import ModelSizes
from editor.runtime.threads import set_threads

STAGES = ("vae", "decoder", "mllm", "mgie", "ip2p", "refine", "distil")


@dataclass(frozen=True)
class StageConfig:
    steps: int
    batch: int
    lr: float
    warmup: float = 0.03  # fraction of steps, as MGIE's recipe


RECIPES = {  # the CPU recipe; a GPU can afford more steps via --steps / --batch
    "vae": StageConfig(steps=1500, batch=16, lr=2e-3),
    "decoder": StageConfig(steps=2000, batch=16, lr=5e-4),
    "mllm": StageConfig(steps=1600, batch=32, lr=1e-3),
    "mgie": StageConfig(steps=6000, batch=32, lr=1e-3),
    "ip2p": StageConfig(steps=6000, batch=32, lr=1e-3),
    "refine": StageConfig(steps=4000, batch=32, lr=3e-4),
    "distil": StageConfig(steps=3000, batch=128, lr=1e-3),
}
CACHE_SAMPLES = 40960  # the diffusion stages' training set (40 parts of editor.demo.cache.PART)
PRECONDITION_SAMPLES = 8192


def build_cache(
    out: Path, sizes: ModelSizes, device, samples: int, seed: int, parts: tuple[str, ...], shard=(0, 1)
) -> None:
    if "latents" in parts:
        cached.build_latents(out, load_vae(out, sizes, device, decoder=False), samples, seed, device, shard=shard)
    if "states" in parts:
        stage, step = load_mllm(out, sizes, device)
        cached.build_states(out, stage, step, samples, seed, shard=shard)


def make_runner(
    stage: str, out: Path, sizes: ModelSizes, device, samples: int, precondition: bool = True, teacher=None,
    canonical: bool = False,
):  # fmt: skip
    """The stage object and the function that gives batch `step` (samples drawn afresh, or cached latents).
    `precondition`: MGIE's head input is whitened (stages.Preconditioner, fitted on the first cached states);
    `teacher`: the distil stage's ablation checkpoint; `canonical`: the ip2p stage reads world.canonical_terse
    instead of the sample's own words (a teacher for distil, not the ablation: docs/demo-recipe.md)."""
    if stage in ("vae", "decoder") and sizes.latent_codec == "patches":
        sys.exit(f"the {stage} stage trains a learnt VAE; these sizes use the patch codec, which has no weights")
    if stage == "vae":
        runner = stages.VAEStage(sizes, device)
        return runner, lambda seed, step, size, gen: runner.loss(
            stages.batch_samples(seed, step, size), gen, seed, step
        )
    if stage == "decoder":
        runner = stages.DecoderStage(load_vae(out, sizes, device, decoder=False))
        return runner, lambda seed, step, size, gen: runner.loss(
            stages.batch_samples(seed, step, size), gen, seed + 1, step
        )
    if stage == "mllm":
        runner = stages.MLLMStage(sizes, device, out)
        return runner, lambda seed, step, size, gen: runner.loss(stages.batch_samples(seed, step, size), gen)
    if stage == "refine":  # starts from stage (a)'s MLLM; anchored to the states stage (b) trained on
        stage_a = torch.load(out / "mllm.ckpt", map_location="cpu", weights_only=True)
        anchor, _ = cached.load_states(out, samples, stage_a["step"])
        runner = RefineStage(sizes, device, out, anchor, cached.cache_seed(out))
        runner.mllm.load_state_dict(stage_a["modules"]["mllm"])
        return runner, lambda seed, step, size, gen: runner.step_loss(seed, step, size)
    if stage == "distil" and teacher is None:
        sys.exit("the distil stage needs --teacher: a trained ablation checkpoint (e.g. RUN/ip2p.ckpt)")
    if stage != "distil":  # the distil stage reads states only: no latents, no VAE
        scaling = load_vae(out, sizes, "cpu").config.scaling_factor
    if stage in ("distil", "mgie"):
        data = cached.Cache(out, samples, with_states=True, mllm_step=load_checkpoint(out / "mllm.ckpt", {})["step"])
    if stage == "distil":
        runner = DistilStage(sizes, device, out, data, teacher, PRECONDITION_SAMPLES)
        return runner, lambda seed, step, size, gen: runner.loss(data.rows(seed, step, size))
    if stage == "mgie":
        fit_on = data.states[:PRECONDITION_SAMPLES] if precondition else None
        runner = stages.MGIEStage(sizes, device, scaling, data.emb, fit_on)
    else:
        data = cached.Cache(out, samples, with_states=False)
        runner = stages.IP2PStage(sizes, device, scaling, out)
        if canonical:
            data.terse = cached.canonical_instructions(out, data.size)
    if data.source.shape[1] != sizes.latent_channels:
        sys.exit(
            f"the cache under {out} holds {data.source.shape[1]}-channel latents, these sizes ({sizes.latent_codec}) "
            f"{sizes.latent_channels}: rebuild it with the same --preset as the run"
        )
    return runner, lambda seed, step, size, gen: runner.loss(data.batch(seed, step, size, device), gen)


def train(
    stage: str,
    out: Path,
    recipe: StageConfig,
    seed: int = 0,
    device: str = "cpu",
    ckpt_every: int = 100,
    sizes: ModelSizes = demo.SIZES,
    until: int | None = None,
    samples: int = CACHE_SAMPLES,
    keep_every: int | None = None,
    precondition: bool = True,
    init: Path | None = None,
    max_minutes: float | None = None,
    high_noise_share: float = 0.0,
    teacher: Path | None = None,
    canonical: bool = False,
) -> None:
    """Run (or resume) one stage up to `recipe.steps` (or stop after step `until`, or after `max_minutes` of this
    run, to resume later), checkpointing to <out>/<stage>.ckpt. `init`: a new run (step 0) starts from the weights
    in that checkpoint for the modules it holds (e.g. a UNet trained elsewhere); the others start fresh."""
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    runner, step_loss = make_runner(stage, out, sizes, device, samples, precondition, teacher, canonical)
    unet_class = unet_class_of(runner.modules)
    if high_noise_share:
        if not isinstance(runner, stages.DiffusionStage):
            sys.exit(f"--high-noise-share draws diffusion timesteps (mgie, ip2p stages); the {stage} stage has none")
        runner.high_noise_share = high_noise_share
    params = [p for m in runner.modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(recipe.warmup * recipe.steps), recipe.steps)
    path = out / f"{stage}.ckpt"
    start, spent = 0, 0.0  # spent: seconds of training up to `start`, over every earlier run of the stage
    if path.exists():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        start, spent = ckpt["step"], ckpt.get("seconds", 0.0)
        if "optimizer" in ckpt:
            load_checkpoint(path, runner.modules, optimizer, schedule)
        else:  # a compact resume point (`unpack`): weights only; fresh AdamW moments, the schedule at `start`
            load_checkpoint(path, runner.modules)
            for group in optimizer.param_groups:
                group["initial_lr"] = recipe.lr
            warmup = math.ceil(recipe.warmup * recipe.steps)
            schedule = get_cosine_schedule_with_warmup(optimizer, warmup, recipe.steps, last_epoch=start - 1)
        print(f"resuming {stage} from step {start} ({path})")
    elif init is not None:
        given = read_modules(init)
        for key, module in runner.modules.items():
            if key in given:
                module.load_state_dict({k: v.float() for k, v in given[key].items()})
            elif key == "precondition" and "head" in given:  # the given head was trained without one
                module.reset()
        print(f"{stage} starts from {init} for {sorted(given.keys() & runner.modules.keys())}")
    for module in runner.modules.values():
        module.train()
    log = (out / f"{stage}.log").open("a")
    stop = min(recipe.steps, until or recipe.steps)
    bar = tqdm(range(start, stop), initial=start, total=recipe.steps, desc=stage, file=sys.stdout)
    began = time.perf_counter() - spent
    deadline = time.perf_counter() + 60 * max_minutes if max_minutes is not None else math.inf
    for step in bar:
        gen = torch.Generator(device).manual_seed(seed * 1_000_003 + step)
        losses = step_loss(seed, step, recipe.batch, gen)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        values = {k: round(v.item(), 4) for k, v in losses.items()}
        bar.set_postfix(values)
        if (step + 1) % 25 == 0:
            log.write(f"{step + 1} {time.perf_counter() - began:.0f}s {values}\n")
            log.flush()
        out_of_time = time.perf_counter() > deadline
        if (step + 1) % ckpt_every == 0 or step + 1 in (stop, recipe.steps) or out_of_time:
            extra = runner.extra(seed) if stage == "vae" and step + 1 == recipe.steps else {}
            extra |= {"recipe": asdict(recipe), "seconds": time.perf_counter() - began, "unet_class": unet_class}
            save_checkpoint(path, runner.modules, optimizer, schedule, step + 1, extra)
        if keep_every and (step + 1) % keep_every == 0:
            weights = {k: m.state_dict() for k, m in runner.modules.items()}
            seconds = time.perf_counter() - began
            kept = {"modules": weights, "step": step + 1, "seconds": seconds, "recipe": asdict(recipe),
                    "unet_class": unet_class}  # fmt: skip
            torch.save(kept, out / f"{stage}-{step + 1:06d}.pt")
        if out_of_time:
            print(f"{stage}: {max_minutes} minutes spent, stopped after step {step + 1} (rerun to resume)")
            break
    log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.demo.train", description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=(*STAGES, "cache", "export", "unpack", "compact"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (checkpoints, logs)")
    parser.add_argument(
        "--preset", choices=("demo", "demo-patches", "demo-skip"), default="demo",
        help="sizes and latent codec (editor/layouts/sizes.py); every command of a run folder takes the same one",
    )  # fmt: skip
    parser.add_argument("--to", type=Path, default=Path("weights/demo"), help="export: destination; unpack: source")
    parser.add_argument("--parts", nargs="+", choices=("mgie", "ip2p"), default=["mgie", "ip2p"], help="export: which")
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument("--batch", type=int, help="override the recipe's batch size")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: free cores, editor/runtime/threads.py)"
    )
    parser.add_argument("--ckpt-every", type=int, default=100)
    parser.add_argument("--until", type=int, help="stop after this step (rerun later to resume)")
    parser.add_argument("--samples", type=int, default=CACHE_SAMPLES, help="cache: training samples encoded")
    parser.add_argument("--cache-parts", nargs="+", choices=("latents", "states"), default=["latents", "states"])
    parser.add_argument("--shard", default="0/1", help="cache: K/N builds every N-th part from K (N processes)")
    parser.add_argument("--keep-every", type=int, help="also keep <stage>-<step>.pt weights every N steps")
    parser.add_argument("--step", type=int, help="export: the weights kept at this step instead of the latest")
    parser.add_argument("--mgie-stage", choices=("mgie", "distil"), default="mgie", help="export: MGIE's weights from")
    parser.add_argument("--teacher", type=Path, help="distil: the ablation checkpoint whose condition the head learns")
    parser.add_argument("--canonical", action="store_true",
                        help="ip2p: train on world.canonical_terse, as a teacher for the distil stage")  # fmt: skip
    parser.add_argument("--no-precondition", dest="precondition", action="store_false",
                        help="mgie: feed the edit head the raw states (recipe v2; its head collapses)")  # fmt: skip
    parser.add_argument("--init", type=Path, help="a new run starts from this checkpoint's weights (modules it holds)")
    parser.add_argument(
        "--high-noise-share", type=float, default=0.0,
        help="mgie, ip2p: this share of the timesteps drawn from the top fifth (default: uniform)",
    )  # fmt: skip
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes of this run (resumable)")
    parser.add_argument(
        "--unet-channels",
        type=int,
        nargs="+",
        metavar="C",
        help="mgie, ip2p, export: the UNet's block channels instead of the demo preset's (32 64 64)",
    )
    parser.add_argument("--unet-heads", type=int, help="with --unet-channels: attention heads per block (preset: 2)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.high_noise_share <= 1.0:  # also refuses NaN
        parser.error(f"--high-noise-share must be between 0 and 1, not {args.high_noise_share}")
    if args.canonical and args.stage != "ip2p":
        parser.error(f"--canonical changes the ip2p stage's instructions; the {args.stage} stage reads none")
    set_threads(args.threads)
    sizes = demo.unet_sizes(args.unet_channels, args.unet_heads, ModelSizes.from_name(args.preset))
    if args.stage == "export":
        export(args.out, args.to, sizes, parts=tuple(args.parts), step=args.step, mgie_stage=args.mgie_stage)
        return
    if args.stage == "compact":  # a compact resume point of one stage, for --init: --parts mgie --step N --to F
        stage = args.parts[0]
        save_modules(args.out / (f"{stage}-{args.step:06d}.pt" if args.step else f"{stage}.ckpt"), args.to)
        return
    if args.stage == "unpack":
        unpack(args.to, args.out, sizes)
        return
    if args.stage == "cache":
        shard = tuple(int(v) for v in args.shard.split("/"))
        build_cache(args.out, sizes, args.device, args.samples, args.seed, tuple(args.cache_parts), shard)
        return
    base = RECIPES[args.stage]
    recipe = StageConfig(args.steps or base.steps, args.batch or base.batch, args.lr or base.lr, base.warmup)
    train(
        args.stage, args.out, recipe, args.seed, args.device, args.ckpt_every, sizes, until=args.until,
        samples=args.samples, keep_every=args.keep_every, precondition=args.precondition, init=args.init,
        max_minutes=args.max_minutes, high_noise_share=args.high_noise_share, teacher=args.teacher,
        canonical=args.canonical,
    )  # fmt: skip


if __name__ == "__main__":
    main()
