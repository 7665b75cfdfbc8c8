"""Evaluate editors on the papers' benchmarks, or the demo models on held-out shapes scenes.

    python -m editor.eval --model NAME [NAME ...] --data PATH|demo[:N] [--dataset KIND] [--turns]
                          [--sweep-image-guidance 1.0:2.2:0.2] [--limit N] [--out runs/eval]
    accelerate launch --multi_gpu --num_processes 8 -m editor.eval --model ... --data ...   (sharded, merged)
    python -m editor.eval table [--out runs/eval]      (one table across the benchmarks scored under --out)
    python -m editor.eval demo [--weights weights] [--per-split 125] [--steps 100] [--models mgie-demo ip2p-demo]

The first form scores any installed model on a dataset folder (MagicBrush test, Reason-Edit, EVR / GIER / MA5k /
any pairs in `edits.jsonl`: layouts in editor.eval.data) or the built-in demo world, with the metrics of
editor.eval.metrics and editor.eval.lpips; it caches every sample (an interrupted run resumes), keeps every output image
and writes report.md, CSV and plots (editor.eval.run, editor.eval.report) to <out>/<dataset>/report/, covering
every finished run on that dataset's samples under <out> (earlier commands' too, so one report compares them).

`demo` is the training-time check of the demo models, an alias of the first form on the demo world's first turns:
for each held-out split (unseen scenes, unseen shape/colour combinations, unseen paraphrases, reasoning) it takes
--per-split samples (`editor.eval.data.demo_first_turns`), and the harness (editor.eval.run) edits them through the
same API as the app and scores each output against the generator's rendering of the requested result
(editor.demo.judge). It prints Markdown tables per model, split and operation with the judge's numbers (also written
to <out>/report.md); every sample's numbers go to <out>/<model>.jsonl, the means to <out>/<model>.summary.json, and
the harness's records and images to <out>/demo/<model>/<setting>/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from editor.demo import world
from editor.eval.data import DEMO_SEED, DEMO_SPLITS, KINDS, EvalDataset, demo_first_turns, load_dataset
from editor.eval.metrics import ClipScorer, DinoScorer
from editor.eval.report import mean, paper_table, write_report
from editor.eval.run import (
    RunConfig,
    Scorers,
    data_id,
    finished_runs,
    pending,
    prepare_folder,
    read_records,
    rescore,
    run,
    weights_id,
)
from editor.params import (
    DEFAULT_IMAGE_GUIDANCE,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    DEFAULT_TEXT_GUIDANCE,
    EditParams,
    Resolution,
)
from editor.pipelines.registry import (
    DEFAULT_WEIGHTS_DIR,
    DTYPES,
    EDITORS,
    add_load_arguments,
    load_editor,
    load_options,
)
from editor.runtime.threads import set_threads
from editor.weights.catalog import DINO_VITS16, LPIPS, MODELS, component_dir

HELD_OUT, EVAL_SEED = DEMO_SPLITS, DEMO_SEED  # training draws from seed 0's stream; evaluation from seed 1's


DEMO_TABLE = {  # the demo check's columns -> the harness's score keys
    "edit_acc": "edit_acc", "bg_psnr": "judge_bg_psnr", "bg_ssim": "judge_bg_ssim", "l1": "l1",
    "expressive_acc": "expressive_acc",
}  # fmt: skip


def demo_rows(model: str, dataset: EvalDataset, records: list[dict]) -> list[dict]:
    """The demo check's per-sample rows (<out>/<model>.jsonl), read from the harness's records of the first turns."""
    rows = []
    for index, (sample, record) in enumerate(zip(dataset.samples, records, strict=True)):
        reference, (turn,) = sample.turns[0].reference, record["turns"]
        scores, expressive = turn["scores"], turn["scores"].get("expressive_acc")
        rows.append(
            {
                "model": model, "index": index, "split": sample.category, "op": reference.op,
                "reasoning": reference.reasoning, "terse": reference.terse, "expressive_ref": reference.expressive,
                "expressive": turn["expressive"], "expressive_correct": None if expressive is None else expressive == 1,
                "seconds": turn["seconds"], "correct": scores["edit_acc"] == 1, "l1": scores["l1"],
                "background_psnr": scores.get("judge_bg_psnr"), "background_ssim": scores.get("judge_bg_ssim"),
                "scores": scores,
            }
        )  # fmt: skip
    return rows


def summarise(rows: list[dict], key) -> dict:
    """Per group (`key(row)`): n and the harness's means (editor.eval.report.mean) of the demo check's columns."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row["scores"])
    return {
        name: {"n": len(group)} | {column: mean(group, score)[0] for column, score in DEMO_TABLE.items()}
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


def given_or_own(args, own: EditParams, **fixed) -> EditParams:
    """A model's own settings `own` (what the app starts from for it) with the steps, αX and αV the command gave
    instead, and `fixed` (seed, resolution) set."""
    given = {k: getattr(args, k) for k in ("steps", "text_guidance", "image_guidance") if getattr(args, k) is not None}
    return replace(own, **given, **fixed)


def run_demo(args) -> None:
    """`python -m editor.eval demo`: the harness (editor.eval.run) on the demo sessions' first turns, each model at
    its own settings unless given; the judge's numbers per split and operation. Every call edits afresh (the
    weights may have been retrained since): the run folders under <out>/demo/ are replaced."""
    dataset = demo_first_turns(args.per_split)
    options = load_options(args)
    dtype = str(options.resolve().dtype).removeprefix("torch.")  # the run records it
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for name in args.models:
        editor = load_editor(name, args.weights, options.device, options.dtype, options.offload)
        params = given_or_own(args, editor.defaults, seed=DEFAULT_SEED, resolution=Resolution(size=world.SIZE))
        config = RunConfig(name, dataset.name, params, False, dtype, data_id(dataset), weights_id(args.weights))
        shutil.rmtree(config.folder(args.out), ignore_errors=True)
        prepare_folder(config, args.out)
        run(editor, dataset, config, args.out, Scorers())
        del editor
        rows = demo_rows(name, dataset, read_records(dataset, config.folder(args.out)))
        with (args.out / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps({k: v for k, v in r.items() if k != "scores"}) + "\n" for r in rows)
        summary = {
            "overall": summarise(rows, lambda r: "all held-out")["all held-out"],
            "split": summarise(rows, lambda r: r["split"]),
            "op": summarise(rows, lambda r: r["op"]),
        }
        (args.out / f"{name}.summary.json").write_text(json.dumps(summary, indent=2))
        expressive = any(r["expressive_correct"] is not None for r in rows)  # an MLLM wrote expressive texts
        used = f"{params.steps} steps, αX {params.text_guidance}, αV {params.image_guidance}"
        report.append(f"### {name} ({used})\n")
        report.append(markdown({"all held-out": summary["overall"]} | summary["split"], "split", expressive))
        report.append("\n" + markdown(summary["op"], "operation", expressive) + "\n")
    settings = f"{len(dataset.samples)} held-out samples, seed {DEFAULT_SEED}"
    text = f"## Demo evaluation ({settings})\n\n" + "\n".join(report)
    (args.out / "report.md").write_text(text)
    print(text)


def parse_sweep(spec: str) -> list[float]:
    """ "1.0:2.2:0.2" -> [1.0, 1.2, ..., 2.2] (both ends included)."""
    try:
        start, stop, step = (float(part) for part in spec.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP:STEP, e.g. 1.0:2.2:0.2, got {spec!r}") from None
    if step <= 0 or stop < start:
        raise argparse.ArgumentTypeError(f"need STEP > 0 and STOP >= START, got {spec!r}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 6) for i in range(count)]


def load_scorers(args, dataset: EvalDataset, device: str) -> Scorers:
    """The feature backbones from --clip / --dino / --lpips, else from the weights folder; a folder named on the
    command line must exist, a default one that is absent only leaves its scores out (listed in the report)."""
    from editor.eval.lpips import LpipsScorer

    scorers = Scorers()
    get = "`python -m editor.weights download eval-metrics`"
    net = "squeeze" if dataset.name == "reason-edit" else "alex"  # Reason-Edit's net_type; lpips' default
    clip = next(c for c in MODELS["eval-metrics"].components if c.folder == dataset.clip)
    wanted = {  # default folders honour the catalog's EDITOR_<FOLDER>_DIR overrides
        "clip": (args.clip, component_dir(args.weights, clip), lambda f: ClipScorer(f, device=device)),
        "dino": (args.dino, component_dir(args.weights, DINO_VITS16), lambda f: DinoScorer(f, device=device)),
        "lpips": (args.lpips, component_dir(args.weights, LPIPS), lambda f: LpipsScorer(f, net=net, device=device)),
    }
    for name, (given, default, build) in wanted.items():
        folder = given or default
        if given is None and not default.is_dir():
            scorers.missing[name] = f"no {default}; get it with {get} or pass --{name} DIR"
            continue
        setattr(scorers, name, build(folder))
    return scorers


def evaluate_models(args) -> str | None:
    """The harness: every model × αV on this process's share of the dataset, then (main process) the report."""
    from accelerate import PartialState

    # ranks that finish early wait at the last barrier while others edit: a day, not torch's 10 minutes (torchrun
    # stops every rank when one fails, so a crash does not leave the others waiting)
    state = PartialState(cpu=args.device == "cpu", timeout=timedelta(hours=24))
    device = str(state.device) if args.device in (None, "cuda") else args.device  # "cuda": this rank's GPU
    dtype = args.dtype or ("float16" if device.startswith("cuda") else "float32")  # load_editor's defaults
    dataset = load_dataset(args.data, args.dataset, args.limit)
    size = world.SIZE if dataset.name == "demo" else args.size
    configs = []
    data, weights = data_id(dataset), weights_id(args.weights)
    for model in args.model:  # read without loading the model: every rank names the same runs
        own = EDITORS[model].defaults(args.weights)
        base = given_or_own(args, own, seed=args.seed, resolution=Resolution(size=size))
        for guidance in args.sweep_image_guidance or [base.image_guidance]:
            params = replace(base, image_guidance=guidance)
            configs.append(RunConfig(model, dataset.name, params, args.turns, dtype, data, weights))
    for config in configs:  # every rank checks (and the first writes) run.json: a mismatch stops them all alike
        prepare_folder(config, args.out)
    scorers = load_scorers(args, dataset, device)
    rank, world_size = state.process_index, state.num_processes
    for model in args.model:
        editor = None  # loaded only if some sample of this process is not cached yet
        for config in (c for c in configs if c.model == model):
            if editor is None and pending(dataset, config, args.out, rank, world_size):
                editor = load_editor(model, args.weights, device, DTYPES[dtype], args.offload)
            run(editor, dataset, config, args.out, scorers, rank, world_size, args.progress)
        del editor
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    finished = finished_runs(dataset, args.out)
    for config in configs:  # this command's runs must all be complete (read_records says what is missing)
        if config not in finished:
            read_records(dataset, config.folder(args.out))
    for config in finished:  # earlier commands' runs, scored by the same backbones
        if config not in configs:
            rescore(dataset.samples, config, args.out, scorers)
    runs = [(config, read_records(dataset, config.folder(args.out))) for config in finished]
    return write_report(args.out / dataset.name / "report", dataset, runs, scorers.missing)


def harness_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m editor.eval", description="score editors on a benchmark (python -m editor.eval demo: the "
        "demo models' check)", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--model", nargs="+", required=True, choices=list(EDITORS), metavar="NAME",
                        help=f"one or more of {', '.join(EDITORS)}")  # fmt: skip
    parser.add_argument("--data", required=True, help="dataset folder, or demo[:N] (N sessions per held-out split)")
    parser.add_argument("--dataset", choices=KINDS, help="the folder's benchmark (default: detected)")
    parser.add_argument("--turns", action="store_true", help="multi-turn: each turn edits the previous output")
    parser.add_argument("--sweep-image-guidance", type=parse_sweep, metavar="START:STOP:STEP",
                        help="one run per αV value, e.g. 1.0:2.2:0.2 (the trade-off plot)")  # fmt: skip
    own = f"default: the model's own (the published models' {DEFAULT_STEPS} steps, αX {DEFAULT_TEXT_GUIDANCE}, αV " \
          f"{DEFAULT_IMAGE_GUIDANCE}; a demo folder's editor_defaults.json)"  # fmt: skip
    parser.add_argument("--image-guidance", type=float, help=f"αV without a sweep; {own}")
    parser.add_argument("--text-guidance", type=float, help=f"αX; {own}")
    parser.add_argument("--steps", type=int, help=own)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the same seed for every sample")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="longer side edited at (demo: the world's)")
    parser.add_argument("--limit", type=int, help="only the first N samples (sorted by id)")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"))
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR)
    for name in ("clip", "dino", "lpips"):
        parser.add_argument(f"--{name}", type=Path, metavar="DIR", help=f"{name} folder (default: under --weights)")
    add_load_arguments(parser, weights_dir=False)  # --device: default this process's accelerate device (cuda:N)
    parser.add_argument("--threads", type=int, help="torch CPU threads per process (default: the free cores)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "table":
        parser = argparse.ArgumentParser(prog="python -m editor.eval table", description=paper_table.__doc__)
        parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="the --out of the runs")
        try:
            print(paper_table(parser.parse_args(argv[1:]).out), end="")
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if not argv or argv[0] != "demo":
        args = harness_parser().parse_args(argv)
        set_threads(args.threads)
        try:
            report = evaluate_models(args)
        except (ValueError, OSError) as err:  # bad data, missing weights (MissingWeightsError is an OSError)
            print(f"error: {err}", file=sys.stderr)
            return 2
        if report is not None:
            print(report)
        return 0
    parser = argparse.ArgumentParser(prog="python -m editor.eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="score the offline demo models on held-out shapes scenes")
    demo.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="weights folder holding demo/")
    demo.add_argument("--models", nargs="+", default=["mgie-demo", "ip2p-demo"])
    demo.add_argument("--per-split", type=int, default=125, help=f"samples per split ({', '.join(HELD_OUT)})")
    demo.add_argument("--steps", type=int, help="default: each model's own (what the app starts from for it)")
    demo.add_argument("--text-guidance", type=float, help="default: each model's own")
    demo.add_argument("--image-guidance", type=float, help="default: each model's own")
    add_load_arguments(demo, weights_dir=False)
    demo.add_argument("--out", type=Path, default=Path("runs/eval-demo"))
    demo.add_argument("--threads", type=int, help="torch CPU threads (default: free cores, editor/runtime/threads.py)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    run_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
