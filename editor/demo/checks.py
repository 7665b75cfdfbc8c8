"""Measurements behind the demo recipe (docs/demo-recipe.md), run on a training folder:

    python -m editor.demo.checks vae   --out runs/demo   # the VAE's ceiling: each target's round trip, judged
    python -m editor.demo.checks probe --out runs/demo   # what the frozen MLLM's [IMG] states hold (linear probes)
    python -m editor.demo.checks condition --weights W   # does the UNet use its condition (teacher-forced x0 error)
    python -m editor.demo.checks perfect --weights W     # MGIE's head + UNet judged on the ground-truth expressive text
    python -m editor.demo.checks place --weights W       # add / move: where the output draws, against the true edit
    python -m editor.demo.checks fit --out runs/demo     # MGIE's L_edit on training samples vs unseen ones

`vae`: every held-out target is encoded and decoded by the VAE and judged as if it were a model's output; no
model trained on these latents can score above it. Three sets: the world's four held-out splits (the samples of
`python -m editor.eval demo`), the same edits on other backgrounds (editor.demo.variety.restyle: plain, light), and
user-style drawings made outside the world's generator (editor.demo.variety.user_edit, drawn at 256 px and
reduced to 64 px as the app does).

`probe`: linear classifiers from the 8 cached states (flattened) to the edit's facts (operation, the object's
colour, shape and place, the new colour or place), trained on cached training samples, scored on held-out ones.

`condition`: for an exported editor, how much its condition differs between samples (spread across samples over
mean size), and the UNet's one-step estimate of the goal latent from a noised goal at a few timesteps, with the
sample's condition and with the null one, inside the edited region and outside it (mean squared error in scaled
latent units). A UNet that ignores its condition scores the same in both columns; "copy" is the error of
answering with the source latent.

`fit`: MGIE's L_edit (the training loss, the same noise, timesteps and dropout for both) on the first 1024 cached
training samples and on 1024 samples of the same stream that the cache stops before (encoded into <out>/unseen).
Equal values with the loss still falling over steps mean the UNet underfits: more steps help, more data would not.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from editor.demo import judge, variety, world
from editor.demo import model as demo
from editor.demo.stages import arrays_to_tensor, pixels_differ, region_weights, to_tensor
from editor.eval.data import DEMO_SEED, DEMO_SPLITS


def held_out(per_split: int) -> list[world.Sample]:
    return [s for split in DEMO_SPLITS for s in world.dataset(split, per_split, DEMO_SEED)]


def pictures(x: torch.Tensor) -> list[Image.Image]:
    """N x 3 x H x W decoded pixels in [-1, 1] as RGB pictures, rounded to 8 bits."""
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


@torch.no_grad()
def round_trip(vae, images: torch.Tensor, batch: int = 64) -> list[Image.Image]:
    out = []
    for i in range(0, len(images), batch):
        out += pictures(vae.decode(vae.encode(images[i : i + batch]).latent_dist.mode()).sample)
    return out


def rate(scores: list[judge.Score]) -> str:
    """Edit accuracy over `scores` and the mean background PSNR of those that have a background."""
    correct = sum(s.correct for s in scores)
    psnrs = [s.background_psnr for s in scores if s.background_psnr is not None]
    return f"{100 * correct / len(scores):.1f} % of {len(scores)} (bg PSNR {sum(psnrs) / max(1, len(psnrs)):.2f} dB)"


def rates_by_op(rows: list[tuple[str, judge.Score]]) -> dict[str, str]:
    """`rate` per operation and over all (`rows`: each edit's operation and score), keys sorted ("all" among them)."""
    groups: dict[str, list[judge.Score]] = {}
    for op, score in rows:
        groups.setdefault(op, []).append(score)
        groups.setdefault("all", []).append(score)
    return {name: rate(group) for name, group in sorted(groups.items())}


def vae_ceiling(vae, per_split: int = 125, drawn: int = 200) -> dict[str, str]:
    samples = held_out(per_split)
    rng = random.Random("vae-ceiling")
    restyled = [variety.restyle(s, rng) for s in samples]
    results = {}
    for name, group in (("world held-out", samples), ("other backgrounds", restyled)):
        outputs = round_trip(vae, to_tensor([s.target for s in group], "cpu"))
        scores = [judge.score(o, s) for o, s in zip(outputs, group, strict=True)]
        results[name] = rate(scores)
        for op in world.OPS:
            mine = [score for score, s in zip(scores, group, strict=True) if s.op == op]
            results[f"{name}: {op}"] = rate(mine) if mine else "-"
    edits = [variety.user_edit(random.Random(f"drawn/{i}")) for i in range(drawn)]
    sources = [e.source.resize((world.SIZE,) * 2, Image.Resampling.BOX) for e in edits]
    targets = [e.target.resize((world.SIZE,) * 2, Image.Resampling.BOX) for e in edits]
    outputs = round_trip(vae, arrays_to_tensor([np.asarray(t, dtype=np.float32) for t in targets], "cpu"))
    scores = [judge.score_images(o, s, t, tone=False) for o, s, t in zip(outputs, sources, targets, strict=True)]
    results["drawn outside the world"] = rate(scores)
    results.update(shapes_kept(vae, [s.source for s in samples]))
    return results


KEPT_PSNR = 15.0  # dB inside a shape: below it the round trip has lost the shape (it blends into the background)


def shapes_kept(vae, scenes: list[world.Scene]) -> dict[str, str]:
    """Per colour: the share of the scenes' shapes whose round trip keeps them (PSNR inside the shape's own pixels,
    those that differ from the scene without it, at least KEPT_PSNR), and their mean in-shape PSNR."""
    outputs = round_trip(vae, to_tensor(scenes, "cpu"))
    psnrs: dict[str, list[float]] = {}
    for scene, output in zip(scenes, outputs, strict=True):
        pixels = world.render_array(scene).astype(np.float32)
        decoded = np.asarray(output.convert("RGB"), dtype=np.float32)
        for i, shape in enumerate(scene.shapes):
            mask = pixels_differ(pixels, dataclasses.replace(scene, shapes=scene.shapes[:i] + scene.shapes[i + 1 :]))
            if mask.sum() >= 4:  # a shape mostly hidden under another tells nothing
                error = float((((decoded[mask] - pixels[mask]) / 255) ** 2).mean())
                psnrs.setdefault(shape.colour, []).append(10 * np.log10(1 / max(error, 1e-10)))
    return {
        f"shapes kept: {colour}": f"{100 * np.mean(np.array(v) >= KEPT_PSNR):.0f} % of {len(v)} "
        f"(in-shape PSNR {np.mean(v):.1f} dB)"
        for colour, v in sorted(psnrs.items())
    }


def drawn_edits(editor, count: int, params) -> dict[str, str]:
    """The editor on `count` user-style drawings (variety.user_edit, 256 px, edited at the model's 64 px), judged
    against the drawn target reduced to 64 px; per operation and overall."""
    rows = []
    for i in range(count):
        edit = variety.user_edit(random.Random(f"drawn-eval/{i}"))
        result = editor.render(edit.source, editor.think(edit.source, edit.terse), params)
        size = result.image.size
        source, target = (im.resize(size, Image.Resampling.BOX) for im in (edit.source, edit.target))
        rows.append((edit.op, judge.score_images(result.image, source, target, tone=False)))
    return rates_by_op(rows)


def perfect_mllm_edits(editor, samples: list[world.Sample], params) -> dict[str, str]:
    """MGIE's edit head and UNet alone: each sample edited from the states after its ground-truth expressive text
    (`guidance_from_text`, what stage b trains on), as if the MLLM wrote it; judged per operation and overall."""
    rows = []
    for s in samples:
        image = world.render(s.source)
        result = editor.render(image, editor.guidance_from_text(image, s.terse, s.expressive), params)
        rows.append((s.op, judge.score(result.image, s)))
    return rates_by_op(rows)


@torch.no_grad()
def condition_use(
    editor, samples: list[world.Sample], expressive: bool, timesteps: tuple[int, ...] = (200, 600, 999)
) -> list[str]:
    """Table rows (see the module docstring). `expressive`: condition on the ground-truth expressive text (MGIE's
    stage b), else on the terse instruction (the ablation)."""
    pipe = editor.pipe
    vae, unet, config = pipe.vae, pipe.unet, pipe.scheduler.config
    conds = []
    for s in samples:
        image = world.render(s.source)
        if expressive:
            guidance = editor.guidance_from_text(image, s.terse, s.expressive)
        else:
            guidance = editor.think(image, s.terse)
        conds.append(guidance.prompt_embeds.float())
    cond = torch.cat(conds)
    null = guidance.negative_prompt_embeds.float().expand_as(cond)
    source = vae.encode(to_tensor([s.source for s in samples], "cpu")).latent_dist.mode()
    goal_latent = vae.encode(to_tensor([s.target for s in samples], "cpu")).latent_dist.mode()
    edited = (region_weights(source, goal_latent) > 1).float()
    goal = goal_latent * vae.config.scaling_factor
    copy = ((source * vae.config.scaling_factor - goal) ** 2 * edited).sum() / edited.sum()
    alphas = DDPMScheduler.from_config(config).alphas_cumprod
    kind = config.prediction_type
    spread = (cond.std(0).mean() / cond.abs().mean()).item()
    rows = [f"condition spread across samples / mean size: {spread:.3f}", "| t | cond: edit | cond: outside | "
            "null: edit | null: outside | copy: edit |", "|---|---|---|---|---|---|"]  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    for t in timesteps:
        a, s = alphas[t].sqrt(), (1 - alphas[t]).sqrt()
        noise = torch.randn(goal.shape, generator=generator)
        noisy = a * goal + s * noise
        cells = []
        for c in (cond, null):
            out = unet(torch.cat([noisy, source], 1), torch.full((len(samples),), t), c).sample
            x0 = out if kind == "sample" else a * noisy - s * out if kind == "v_prediction" else (noisy - s * out) / a
            error = (x0 - goal) ** 2
            cells += [(error * edited).sum() / edited.sum(), (error * (1 - edited)).sum() / (1 - edited).sum()]
        rows.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in [*cells, copy]) + " |")
    return rows


def edit_facts(sample: world.Sample) -> dict[str, str]:
    """What an edit's condition must carry, read off its expressive text: the operation, the object, the result."""
    words = judge.facts(sample.expressive)
    colours = [w for w in words if w in world.COLOURS]
    kinds = [w for w in words if w in world.KINDS]
    text = sample.expressive
    place = next((p for p in sorted(world.CELL_NAMES.values(), key=len, reverse=True) if f"at the {p}" in text), "-")
    return {
        "operation": sample.op,
        "object colour": colours[0] if colours and sample.op != "add" else "-",
        "object shape": kinds[0] if kinds else "-",
        "object place": place,
        "result": words[-1] if words else "-",
    }


def probe(states_train, facts_train, states_test, facts_test, steps: int = 600) -> dict[str, tuple[float, float]]:
    """Per fact: (held-out accuracy of a linear softmax probe on the flattened states, majority-class rate)."""
    x_train, x_test = states_train.flatten(1).float(), states_test.flatten(1).float()
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    results = {}
    for key in facts_train[0]:
        names = sorted({f[key] for f in facts_train} | {f[key] for f in facts_test})
        y_train = torch.tensor([names.index(f[key]) for f in facts_train])
        y_test = torch.tensor([names.index(f[key]) for f in facts_test])
        linear = torch.nn.Linear(x_train.shape[1], len(names))
        optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-4)
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            rows = torch.randint(len(y_train), (512,), generator=generator)
            loss = torch.nn.functional.cross_entropy(linear(x_train[rows]), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (linear(x_test).argmax(1) == y_test).float().mean().item()
        majority = max(y_test.bincount().tolist()) / len(y_test)
        results[key] = (accuracy, majority)
    return results


@torch.no_grad()
def mean_edit_loss(stage, latents: dict, states: dict, batch: int = 128, seed: int = 1000) -> float:
    """`stage`'s L_edit over one cache part (editor.demo.cache's latents and states files), batch by batch, the
    noise of batch i drawn from seed + i: two parts scored alike see the same noise."""
    from editor.demo.cache import Batch

    losses = []
    for i, start in enumerate(range(0, len(latents["terse"]), batch)):
        rows = slice(start, start + batch)
        data = Batch(latents["source"][rows], latents["target_mean"][rows], latents["target_std"][rows],
                     latents["terse"][rows], states["states"][rows])  # fmt: skip
        losses.append(stage.loss(data, torch.Generator().manual_seed(seed + i))["edit"].item())
    return sum(losses) / len(losses)


def fit_gap(out: Path, weights: Path, seed: int = 0) -> dict[str, float]:
    """MGIE's L_edit with `weights` (a checkpoint of the mgie stage) on the first training part and on the part
    right after the cache, which the stage never saw (built here once, with the training folder's VAE and MLLM)."""
    from editor.demo import cache as cached
    from editor.demo.checkpoints import load_checkpoint, load_mllm, load_vae
    from editor.demo.stages import MGIEStage
    from editor.demo.train import CACHE_SAMPLES

    unseen = cached.part_count(CACHE_SAMPLES)
    samples, shard = (unseen + 1) * cached.PART, (unseen, unseen + 1)
    vae = load_vae(out, demo.SIZES, "cpu", decoder=False)
    mllm, mllm_step = load_mllm(out, demo.SIZES, "cpu")
    cached.build_latents(out / "unseen", vae, samples, seed, "cpu", shard=shard)
    cached.build_states(out / "unseen", mllm, mllm_step, samples, seed, shard=shard)

    def part(folder: Path, index: int) -> tuple[dict, dict]:
        return tuple(torch.load(folder / f"{kind}-{index:05d}.pt", weights_only=True) for kind in ("latents", "states"))

    seen, fresh = part(out / "cache", 0), part(out / "unseen" / "cache", unseen)
    stage = MGIEStage(demo.SIZES, "cpu", vae.config.scaling_factor, seen[1]["emb"].float())
    load_checkpoint(weights, stage.modules)
    for module in stage.modules.values():
        module.eval()
    return {"training samples": mean_edit_loss(stage, *seen), "unseen samples": mean_edit_loss(stage, *fresh)}


PLACE_CHANGE = 0.1  # a pixel counts as changed where a channel moves by more than this (of 1)


def placement(editor, samples: list[world.Sample], params, canonical: bool = False) -> dict[str, str]:
    """Where the edits that draw a shape (add, move) change the scene: per operation, the area the output changes
    against the source over the area the true edit changes, and the overlap (IoU) of the two regions (medians); for
    add, also per place named ("add at the top left": does the shape land where the words say).
    `canonical`: from world.canonical_terse instead of the sample's own words."""
    rows: dict[str, list[tuple[float, float]]] = {"add": [], "move": []}
    for s in (s for s in samples if s.op in ("add", "move")):
        image = world.render(s.source)
        words = world.canonical_terse(s) if canonical else s.terse
        out = judge.as_float(editor.render(image, editor.think(image, words), params).image)
        source, target = judge.as_float(image), judge.as_float(world.render(s.target))
        true, made = (np.abs(x - source).max(axis=2) > PLACE_CHANGE for x in (target, out))
        row = (made.sum() / max(true.sum(), 1), (true & made).sum() / max((true | made).sum(), 1))
        rows[s.op].append(row)
        if s.op == "add":
            (added,) = set(s.target.shapes) - set(s.source.shapes)
            rows.setdefault(f"add at the {world.CELL_NAMES[added.cell]}", []).append(row)
    medians = {op: np.median(np.array(r), axis=0) for op, r in rows.items() if r}
    return {op: f"n {len(rows[op])}, changed / true area {m[0]:.2f}, IoU {m[1]:.2f}" for op, m in medians.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.demo.checks", description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=("vae", "probe", "drawn", "condition", "perfect", "fit", "place"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="vae, probe, fit: the training folder")
    parser.add_argument("--step", type=int, help="fit: the MGIE weights kept at this step (default: mgie.ckpt)")
    parser.add_argument("--per-split", type=int, default=125)
    parser.add_argument("--samples", type=int, default=8192, help="probe: cached training states used")
    parser.add_argument("--seed", type=int, default=0, help="probe, fit: the training stream's seed")
    parser.add_argument("--weights", type=Path, help="drawn, condition, perfect, place: a folder holding demo/")
    parser.add_argument("--models", nargs="+", default=["mgie-demo", "ip2p-demo"], help="drawn, condition: editors")
    parser.add_argument("--count", type=int, default=200, help="drawn: how many drawings")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[200, 600, 999], help="condition: noise levels")
    parser.add_argument("--sampler-steps", type=int, default=20)
    parser.add_argument("--text-guidance", type=float, default=7.5)
    parser.add_argument("--image-guidance", type=float, default=1.5)
    parser.add_argument("--canonical", action="store_true", help="place: edit from world.canonical_terse")
    args = parser.parse_args(argv)
    if args.check in ("drawn", "condition", "perfect", "place"):
        from editor.params import EditParams, Resolution
        from editor.pipelines.registry import DEFAULT_WEIGHTS_DIR, load_editor

        params = EditParams(
            args.sampler_steps, args.text_guidance, args.image_guidance, resolution=Resolution(size=world.SIZE)
        )
        if args.weights and not (args.weights / "demo").is_dir():  # the registry would fall back to the shipped ones
            parser.error(f"{args.weights} holds no demo/ folder (give the folder above demo/, e.g. runs/demo/curve/N)")
        for name in args.models:
            editor = load_editor(name, args.weights or DEFAULT_WEIGHTS_DIR, device="cpu", dtype=torch.float32)
            if args.check == "perfect":
                if name != "mgie-demo":  # the ablation has no MLLM to stand in for
                    continue
                for group, value in perfect_mllm_edits(editor, held_out(args.per_split), params).items():
                    print(f"| {name} | {group} | {value} |")
                continue
            if args.check == "place":
                for op, value in placement(editor, held_out(args.per_split), params, args.canonical).items():
                    print(f"| {name} | {op} | {value} |")
                continue
            if args.check == "condition":
                samples = world.dataset("test", args.per_split, DEMO_SEED)
                rows = condition_use(editor, samples, name == "mgie-demo", tuple(args.timesteps))
                print(f"{name}:", *rows, sep="\n")
                continue
            for group, value in drawn_edits(editor, args.count, params).items():
                print(f"| {name} | {group} | {value} |")
        return
    from editor.demo.checkpoints import load_mllm, load_vae

    if args.check == "fit":
        weights = args.out / (f"mgie-{args.step:06d}.pt" if args.step else "mgie.ckpt")
        for name, value in fit_gap(args.out, weights, args.seed).items():
            print(f"| L_edit on {name} | {value:.4f} |   ({weights})")
        return
    if args.check == "vae":
        vae = load_vae(args.out, demo.SIZES, "cpu")
        for name, value in vae_ceiling(vae, args.per_split).items():
            print(f"| {name} | {value} |")
        return
    from editor.demo.cache import load_states
    from editor.demo.stages import train_sample

    stage, step = load_mllm(args.out, demo.SIZES, "cpu")
    states_train, _ = load_states(args.out, args.samples, step)
    facts_train = [edit_facts(train_sample(args.seed, i)) for i in range(args.samples)]
    samples = held_out(args.per_split)
    with torch.no_grad():
        states_test = torch.cat([stage.forward(samples[i : i + 64])[1] for i in range(0, len(samples), 64)])
    results = probe(states_train, facts_train, states_test, [edit_facts(s) for s in samples])
    print(f"| fact | probe accuracy % | majority class % |   (MLLM step {step}, {args.samples} training states)")
    for key, (accuracy, majority) in results.items():
        print(f"| {key} | {100 * accuracy:.1f} | {100 * majority:.1f} |")


if __name__ == "__main__":
    main()
