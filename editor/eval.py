"""Evaluate editors. `python -m editor.eval demo` scores the offline demo models on held-out shapes scenes.

    python -m editor.eval demo [--weights weights] [--per-split 125] [--steps 100] [--models mgie-demo ip2p-demo]

For each held-out split (unseen scenes, unseen shape/colour combinations, unseen paraphrases, reasoning) it draws
--per-split samples, runs think + render through the same API as the app, and scores each output against the
generator's rendering of the requested result (editor.demo.judge). Prints Markdown tables per model, split and
operation (also written to <out>/report.md); every sample's numbers go to <out>/<model>.jsonl and the means to
<out>/<model>.summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from editor.demo import judge, world
from editor.params import (
    DEFAULT_IMAGE_GUIDANCE,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    DEFAULT_TEXT_GUIDANCE,
    EditParams,
    Resolution,
)
from editor.registry import DEFAULT_WEIGHTS_DIR, load_editor

HELD_OUT = ("test", "combo", "paraphrase", "reasoning")
EVAL_SEED = 1  # training draws from seed 0's stream; evaluation from another


def evaluate(editor, samples: list[world.Sample], params: EditParams, label: str) -> list[dict]:
    rows = []
    for index, sample in enumerate(tqdm(samples, desc=label, file=sys.stdout)):
        source = world.render(sample.source)
        start = time.perf_counter()
        guidance = editor.think(source, sample.terse)
        result = editor.render(source, guidance, params)
        score = judge.score(result.image, sample)
        rows.append(
            {
                "model": label, "index": index, "split": sample.split, "op": sample.op,
                "reasoning": sample.reasoning, "terse": sample.terse, "expressive_ref": sample.expressive,
                "expressive": guidance.expressive,
                "expressive_correct": judge.expressive_correct(guidance.expressive, sample),
                "seconds": time.perf_counter() - start, **asdict(score),
            }
        )  # fmt: skip
    return rows


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict], key) -> dict:
    groups: dict = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return {
        name: {
            "n": len(group),
            "edit_acc": _mean([float(r["correct"]) for r in group]),
            "bg_psnr": _mean([r["background_psnr"] for r in group]),
            "bg_ssim": _mean([r["background_ssim"] for r in group]),
            "l1": _mean([r["l1"] for r in group]),
            "expressive_acc": _mean([float(r["expressive_correct"]) for r in group]),
        }
        for name, group in sorted(groups.items())
    }


def markdown(summary: dict, title: str, expressive: bool) -> str:
    def fmt(v, pct=False):
        return "–" if v is None else f"{100 * v:.1f}" if pct else f"{v:.3f}" if v < 1 else f"{v:.2f}"

    head = (
        "| " + title + " | n | edit acc % | bg PSNR dB | bg SSIM | L1 |" + (" expressive acc % |" if expressive else "")
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in summary.items():
        cells = [name, str(s["n"]), fmt(s["edit_acc"], True), fmt(s["bg_psnr"]), fmt(s["bg_ssim"]), fmt(s["l1"])]
        if expressive:
            cells.append(fmt(s["expressive_acc"], True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(args) -> None:
    params = EditParams(
        steps=args.steps, text_guidance=args.text_guidance, image_guidance=args.image_guidance,
        seed=DEFAULT_SEED, resolution=Resolution(size=world.SIZE),
    )  # fmt: skip
    samples = [s for split in HELD_OUT for s in world.dataset(split, args.per_split, EVAL_SEED)]
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for name in args.models:
        editor = load_editor(name, args.weights, device=args.device)
        rows = evaluate(editor, samples, params, name)
        with (args.out / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        is_mgie = name.startswith("mgie")
        summary = {
            "overall": summarise(rows, lambda r: "all held-out")["all held-out"],
            "split": summarise(rows, lambda r: r["split"]),
            "op": summarise(rows, lambda r: r["op"]),
        }
        (args.out / f"{name}.summary.json").write_text(json.dumps(summary, indent=2))
        report.append(f"### {name}\n")
        report.append(markdown({"all held-out": summary["overall"]} | summary["split"], "split", is_mgie))
        report.append("\n" + markdown(summary["op"], "operation", is_mgie) + "\n")
    settings = (
        f"{len(samples)} held-out samples, {args.steps} steps, αX {args.text_guidance}, αV {args.image_guidance}, "
        f"seed {DEFAULT_SEED}"
    )
    text = f"## Demo evaluation ({settings})\n\n" + "\n".join(report)
    (args.out / "report.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor.eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="score the offline demo models on held-out shapes scenes")
    demo.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="weights folder holding demo/")
    demo.add_argument("--models", nargs="+", default=["mgie-demo", "ip2p-demo"])
    demo.add_argument("--per-split", type=int, default=125, help=f"samples per split ({', '.join(HELD_OUT)})")
    demo.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="the app's default, as the guidance scales")
    demo.add_argument("--text-guidance", type=float, default=DEFAULT_TEXT_GUIDANCE)
    demo.add_argument("--image-guidance", type=float, default=DEFAULT_IMAGE_GUIDANCE)
    demo.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    demo.add_argument("--out", type=Path, default=Path("runs/eval-demo"))
    demo.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_demo(args)


if __name__ == "__main__":
    main()
