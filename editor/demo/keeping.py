"""Where the demo MGIE loses the scene it should keep (docs/demo-recipe.md, "Where the scene is lost"):

    python -m editor.demo.keeping start --weights W --starts 999 800 600   # sample from the noised source
    python -m editor.demo.keeping locality --weights W                     # how local the VAE's latents are

`start`: the edit sampled as usual but from the source latent noised to `t_start` (SDEdit's start) instead of pure
noise at t = 999, deterministic Euler over `t_start .. 0`, InstructPix2Pix's three-branch guidance, judged on the
held-out samples. A low `t_start` keeps the scene by construction; an edit still made from there is decided below
`t_start`. 999 is the usual start (up to the sampler).

`locality`: for the held-out edits, how many of the 16 x 16 latent positions the edit changes (beyond
`stages.REGION_THRESHOLD`, unscaled units) although it changes a few pixels, the share of the change's energy in
the 16 positions that change most, and the judge on two decoded latents: the target's own, and the target's inside
the edit (its pixel region, dilated by one latent position) with the source's outside. The gap between the two is
what a UNet that copied the source outside the edit exactly would still lose to the VAE's global mixing (measured:
not its mid-block attention; the encoder's receptive field and GroupNorm's per-image statistics remain).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import EulerDiscreteScheduler

from editor.demo import judge, world
from editor.demo.checks import DEMO_SEED, held_out, pictures, rates_by_op
from editor.demo.stages import REGION_THRESHOLD, to_tensor

TOP_POSITIONS = 16


def latent_mask(region: np.ndarray, factor: int) -> torch.Tensor:
    """A pixel region (H x W bool) as a 1 x 1 x H/f x W/f mask: a latent position is in when any of its pixels is,
    then grown by one position (3 x 3)."""
    mask = torch.from_numpy(region.astype(np.float32))[None, None]
    return F.max_pool2d(F.max_pool2d(mask, factor), 3, stride=1, padding=1)


def start_timesteps(t_start: int, steps: int) -> list[int]:
    """`steps` timesteps from `t_start` down to 0, evenly spaced, descending, no repeats."""
    return sorted({int(round(t)) for t in np.linspace(t_start, 0, steps)}, reverse=True)


@torch.no_grad()
def start_sweep(editor, samples: list[world.Sample], starts: list[int], steps: int, text: float, image: float):
    """Per `t_start`: each sample's operation and judge score."""
    pipe = editor.pipe
    vae, unet, sf = pipe.vae, pipe.unet, pipe.vae.config.scaling_factor
    prepared = []
    for s in samples:
        source = world.render(s.source)
        guidance = editor.think(source, s.terse)
        latent = vae.encode(to_tensor([s.source], "cpu")).latent_dist.mode()
        prepared.append((s, latent, guidance.prompt_embeds.float(), guidance.negative_prompt_embeds.float()))
    rows = {}
    for t_start in starts:
        scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        generator = torch.Generator().manual_seed(DEMO_SEED)
        scored = []
        for s, latent, cond, null in prepared:
            scheduler.set_timesteps(timesteps=start_timesteps(t_start, steps))  # also rewinds its step index
            x = latent * sf + scheduler.sigmas[0] * torch.randn(latent.shape, generator=generator)  # sigma space
            embeds = torch.cat([cond, null, null])
            image_latents = torch.cat([latent, latent, torch.zeros_like(latent)])
            for t in scheduler.timesteps:
                inp = scheduler.scale_model_input(x, t).expand(3, -1, -1, -1)
                full, image_only, none = unet(torch.cat([inp, image_latents], 1), t, embeds).sample.chunk(3)
                out = none + text * (full - image_only) + image * (image_only - none)  # the IP2P pipeline's order
                x = scheduler.step(out, t, x).prev_sample
            picture = pictures(vae.decode(x / sf).sample)[0]
            scored.append((s.op, judge.score(picture, s)))
        rows[t_start] = scored
    return rows


@torch.no_grad()
def locality(vae, samples: list[world.Sample]) -> dict[str, str]:
    sf = vae.config.scaling_factor
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    changed, top_share, own, composite = [], [], [], []
    for s in samples:
        if s.op == "tone":  # changes every pixel
            continue
        source, target = vae.encode(to_tensor([s.source, s.target], "cpu")).latent_dist.mode().chunk(2)
        delta = (target - source).abs().amax(dim=1)
        changed.append(float((delta > REGION_THRESHOLD).float().mean()))
        energy = ((target - source) * sf).pow(2).sum(dim=1).flatten().sort(descending=True).values
        top_share.append(float(energy[:TOP_POSITIONS].sum() / energy.sum().clamp_min(1e-12)))
        pixels = [judge.as_float(world.render(scene)) for scene in (s.source, s.target)]
        mask = latent_mask(judge.changed_region(*pixels, tone=False), factor)
        own.append((s.op, judge.score(pictures(vae.decode(target).sample)[0], s)))
        mixed = target * mask + source * (1 - mask)
        composite.append((s.op, judge.score(pictures(vae.decode(mixed).sample)[0], s)))
    results = {
        "latent positions changed by the edit": f"{100 * np.mean(changed):.1f} %",
        f"change energy in the top {TOP_POSITIONS} of the positions": f"{100 * np.median(top_share):.1f} % (median)",
    }
    for name, rows in (("the target's own latents", own), ("the target's inside, the source's outside", composite)):
        results |= {f"judge, {name}: {group}": value for group, value in rates_by_op(rows).items()}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.demo.keeping", description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=("start", "locality"))
    parser.add_argument("--weights", type=Path, help="a folder holding demo/ (default: the shipped weights)")
    parser.add_argument("--per-split", type=int, default=25)
    parser.add_argument("--starts", type=int, nargs="+", default=[999, 800, 600])
    parser.add_argument("--sampler-steps", type=int, default=20)
    parser.add_argument("--text-guidance", type=float, default=3.0)
    parser.add_argument("--image-guidance", type=float, default=2.0)
    args = parser.parse_args(argv)
    from editor.pipelines.registry import DEFAULT_WEIGHTS_DIR, load_editor

    if args.weights and not (args.weights / "demo").is_dir():  # the registry would fall back to the shipped ones
        parser.error(f"{args.weights} holds no demo/ folder (give the folder above demo/)")
    editor = load_editor("mgie-demo", args.weights or DEFAULT_WEIGHTS_DIR, device="cpu", dtype=torch.float32)
    samples = held_out(args.per_split)
    if args.check == "locality":
        for name, value in locality(editor.pipe.vae, samples).items():
            print(f"| {name} | {value} |")
        return
    rows = start_sweep(editor, samples, args.starts, args.sampler_steps, args.text_guidance, args.image_guidance)
    print("| t_start | edits | judge |")
    for t_start, row in rows.items():
        for group, value in rates_by_op(row).items():
            print(f"| {t_start} | {group} | {value} |")


if __name__ == "__main__":
    main()
