"""The demo models' learning curve: held-out judge scores of the weights kept during training, against CPU-minutes.

    python -m editor.demo.curve --out runs/demo --steps 1000 2000 4000 [--per-split 50] [--sampler-steps 20]

For each step, the kept weights (`python -m editor.demo.train mgie|ip2p --keep-every N`) are exported to
<out>/curve/<step>/ and scored by `python -m editor.eval demo` (same samples, seed and settings at every point);
the CPU-minutes of a point are the training stage's own elapsed time at that step (its log), plus, for MGIE, the
MLLM stage (a) it is built on. Writes <out>/curve.json and <out>/curve.png (or --plot PATH).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from editor.demo import world
from editor.demo.shipping import export
from editor.eval import main as eval_main

MODELS = {"mgie": "mgie-demo", "ip2p": "ip2p-demo"}


def stage_minutes(log: Path) -> dict[int, float]:
    """step -> elapsed minutes, from a stage's log lines "<step> <seconds>s {...}"."""
    minutes = {}
    for line in log.read_text().splitlines():
        step, seconds = line.split()[:2]
        minutes[int(step)] = float(seconds.rstrip("s")) / 60
    return minutes


def point(out: Path, part: str, step: int, args) -> dict:
    folder = out / "curve" / str(step)
    export(out, folder / "demo", parts=(part,), step=step)
    name = MODELS[part]
    report = folder / "eval"
    eval_main(
        ["demo", "--weights", str(folder), "--models", name, "--per-split", str(args.per_split),
         "--steps", str(args.sampler_steps), "--text-guidance", str(args.text_guidance),
         "--image-guidance", str(args.image_guidance), "--out", str(report), "--device", "cpu"]
    )  # fmt: skip
    summary = json.loads((report / f"{name}.summary.json").read_text())
    minutes = stage_minutes(out / f"{part}.log")[step]
    if part == "mgie":  # and the MLLM stage (a) it is built on, in full
        minutes += torch.load(out / "mllm.ckpt", weights_only=True).get("seconds", 0.0) / 60
    return {"model": name, "step": step, "cpu_minutes": round(minutes, 1), "settings": settings(args), **summary}


def settings(args) -> dict:
    return {
        "per_split": args.per_split, "steps": args.sampler_steps, "text_guidance": args.text_guidance,
        "image_guidance": args.image_guidance,
    }  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, ops, psnr) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in sorted({r["model"] for r in rows}):
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["step"])
        x = [r["cpu_minutes"] for r in mine]
        acc.plot(x, [100 * r["overall"]["edit_acc"] for r in mine], "o-", label=f"{name}: all held-out")
        acc.plot(x, [100 * r["split"]["reasoning"]["edit_acc"] for r in mine], "s--", label=f"{name}: reasoning")
        for op in world.OPS:
            values = [100 * (r["op"].get(op, {}).get("edit_acc") or 0) for r in mine]
            ops.plot(x, values, "o-" if name.startswith("mgie") else "x:", label=f"{name}: {op}")
        psnr.plot(x, [r["overall"]["bg_psnr"] for r in mine], "o-", label=name)
    acc.set(title="edit accuracy (judge)", xlabel="CPU-minutes of training", ylabel="%")
    ops.set(title="edit accuracy per operation", xlabel="CPU-minutes of training", ylabel="%")
    psnr.set(title="background PSNR", xlabel="CPU-minutes of training", ylabel="dB")
    for axis in (acc, ops, psnr):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6 if axis is ops else 8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.demo.curve", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--steps", type=int, nargs="+", required=True)
    parser.add_argument("--parts", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--per-split", type=int, default=50)
    parser.add_argument("--sampler-steps", type=int, default=20)
    parser.add_argument("--text-guidance", type=float, default=7.5)
    parser.add_argument("--image-guidance", type=float, default=1.5)
    parser.add_argument("--plot", type=Path, help="default: <out>/curve.png")
    args = parser.parse_args(argv)
    path = args.out / "curve.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for step in args.steps:
        for part in args.parts:
            if any(r["model"] == MODELS[part] and r["step"] == step and r["settings"] == settings(args) for r in rows):
                continue
            row = point(args.out, part, step, args)
            rows = (json.loads(path.read_text()) if path.exists() else []) + [row]  # another process may have added
            path.write_text(json.dumps(rows, indent=1))
    plot([r for r in rows if r["settings"] == settings(args)], args.plot or args.out / "curve.png")


if __name__ == "__main__":
    main()
