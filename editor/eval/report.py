"""Reports of evaluation runs (editor.eval.run): Markdown tables in the layout of the papers' tables, CSV, PNG plots.

For a dataset and the runs on it (models × settings), `write_report` writes into one folder:
    report.md     one table per setting group: a row per model and slice (turn, final turn, all turns, category,
                  pooled categories), the dataset's paper columns (editor.eval.data `EvalDataset.columns`) as means
    summary.csv   the same means, every metric, one row per (model, setting, slice)
    samples.csv   every scored turn of every sample: model, setting, sample, category, turn, each metric
    tradeoff.png  with several αV values: the αV trade-off curve, edit (x) against consistency with the input (y),
                  one line per model, each point labelled with its αV, axes oriented so right and up are better
                  (the MGIE paper's Figure 3 plots this trade-off; which metrics its axes use is not verified here,
                  so the plot names them: `EDIT_AXIS`, `CONSISTENCY_AXIS`, the first one measured)
    drift.png     with multi-turn runs: the mean of each target metric per turn, one line per model and setting
Slices: "all turns" pools every scored turn; "final turn" takes each session's last turn (MagicBrush's two
settings); "turn k" each turn index, for multi-turn runs; each category and each pooled group (Reason-Edit's
"understanding" = categories 1-5 pooled, as its script does; a group that holds every row or one category only is
not repeated).
Means skip infinite values (a PSNR of identical images) and say so in `n_inf`; a slice with only infinite values
shows inf.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editor.eval.data import EvalDataset
from editor.eval.run import RunConfig


@dataclass(frozen=True)
class Metric:
    label: str
    higher_is_better: bool
    percent: bool = False

    @property
    def heading(self) -> str:
        """The label with its direction, as table columns show it: "L1 ↓"."""
        return f"{self.label} {'↑' if self.higher_is_better else '↓'}"


METRICS: dict[str, Metric] = {
    "l1": Metric("L1", False), "l2": Metric("L2", False), "psnr": Metric("PSNR", True), "ssim": Metric("SSIM", True),
    "lpips": Metric("LPIPS", False), "clip_i": Metric("CLIP-I (CVS)", True), "dino": Metric("DINO", True),
    "clip_t": Metric("CLIP-T (CTS)", True), "bg_psnr": Metric("bg PSNR", True), "bg_ssim": Metric("bg SSIM", True),
    "bg_lpips": Metric("bg LPIPS", False), "bg_mse": Metric("bg MSE", False), "fg_clip": Metric("CLIP score", True),
    "edit_acc": Metric("edit acc %", True, True), "expressive_acc": Metric("expressive acc %", True, True),
    "in_l1": Metric("input L1", False), "in_ssim": Metric("input SSIM", True),
    "in_clip_i": Metric("input CLIP-I", True), "in_dino": Metric("input DINO", True),
    "judge_bg_psnr": Metric("judge bg PSNR", True), "judge_bg_ssim": Metric("judge bg SSIM", True),
}  # fmt: skip
EDIT_AXIS = ("clip_t", "clip_i", "dino", "fg_clip", "l1", "edit_acc")  # first one measured: the trade-off's x
CONSISTENCY_AXIS = ("in_dino", "in_clip_i", "in_ssim")  # and y
DRIFT = ("l1", "clip_i", "dino", "clip_t", "edit_acc")


def curve_key(config: RunConfig) -> str:
    """Everything of a run's setting but αV: runs sharing it form one table and one trade-off curve."""
    p = config.params
    size = f"{p.resolution.size} px" + (" centre-cropped" if p.resolution.mode == "center_crop" else "")
    mode = "multi-turn" if config.turns else "single-turn"
    return f"{mode}, αX {p.text_guidance:g}, {p.steps} steps, seed {p.seed}, {size}, {config.dtype}"


def rows_of(config: RunConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per scored turn."""
    return [
        {"model": config.model, "setting": config.setting, "image_guidance": config.params.image_guidance,
         "multi_turn": config.turns, "sample": record["id"], "category": record["category"], "turn": turn["turn"],
         "final": turn["turn"] == len(record["turns"]), "seconds": turn["seconds"], **turn["scores"]}
        for record in records
        for turn in record["turns"]
    ]  # fmt: skip


def mean(rows: list[dict[str, Any]], key: str) -> tuple[float | None, int]:
    """The mean of `key` over the rows that have it, finite values only, and how many infinite values it skipped."""
    values = [row[key] for row in rows if row.get(key) is not None]
    finite = [v for v in values if math.isfinite(v)]
    if not finite and values:  # every value infinite (identical images throughout): the mean is that infinity
        return values[0], len(values)
    return (sum(finite) / len(finite) if finite else None), len(values) - len(finite)


def slices(rows: list[dict[str, Any]], dataset: EvalDataset) -> dict[str, list[dict[str, Any]]]:
    """Slice name -> its rows (see the module docstring), in table order."""
    out: dict[str, list] = {"all turns": rows}
    if any(row["turn"] > 1 for row in rows):
        out["final turn"] = [row for row in rows if row["final"]]
        if rows and rows[0]["multi_turn"]:
            for k in sorted({row["turn"] for row in rows}):
                out[f"turn {k}"] = [row for row in rows if row["turn"] == k]
    categories = sorted({row["category"] for row in rows if row["category"]})
    for name, members in dataset.groups.items():
        pooled = [row for row in rows if row["category"] in members]
        present = {row["category"] for row in pooled}
        if 0 < len(pooled) < len(rows) and len(present) > 1:  # else it repeats "all turns" or one category
            out[name] = pooled
    if len(categories) > 1:
        for category in categories:
            out[category] = [row for row in rows if row["category"] == category]
    return out


def summarise(rows: list[dict[str, Any]], dataset: EvalDataset) -> list[dict[str, Any]]:
    """Means of every metric per slice of one run's rows."""
    keys = [key for key in METRICS if any(key in row for row in rows)]
    summary = []
    for name, group in slices(rows, dataset).items():
        entry: dict[str, Any] = {"slice": name, "n": len(group), "seconds": mean(group, "seconds")[0]}
        infinite = 0
        for key in keys:
            entry[key], n_inf = mean(group, key)
            infinite += n_inf
        entry["n_inf"] = infinite
        summary.append(entry)
    return summary


def _cell(value: float | None, metric: Metric) -> str:
    if value is None:
        return "–"
    if metric.percent:
        return f"{100 * value:.1f}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def markdown_table(dataset: EvalDataset, runs: list[tuple[RunConfig, list[dict]]]) -> str:
    """The paper-layout table: model, setting, slice, n, then the dataset's columns."""
    columns = list(dataset.columns)
    head = ["model", "αV", "slice", "n"] + [METRICS[c].heading for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config, summary in runs:
        for entry in summary:
            cells = [config.model, f"{config.params.image_guidance:g}", entry["slice"], str(entry["n"])]
            cells += [_cell(entry.get(c), METRICS[c]) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def _first_measured(keys: tuple[str, ...], summaries: list[dict[str, Any]]) -> str | None:
    return next((k for k in keys if any(s.get(k) is not None for s in summaries)), None)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported when a plot is drawn, not at start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(path: Path, runs: list[tuple[RunConfig, dict[str, Any]]]) -> tuple[str, str] | None:
    """The αV trade-off curve from each run's "all turns" summary; None (no file) with fewer than 2 αV values."""
    if len({config.params.image_guidance for config, _ in runs}) < 2:  # (lines of < 2 points are skipped below)
        return None
    x_key = _first_measured(EDIT_AXIS, [s for _, s in runs])
    y_key = _first_measured(CONSISTENCY_AXIS, [s for _, s in runs])
    if x_key is None or y_key is None:
        return None
    plt = _pyplot()

    lines: dict[tuple[str, str], list] = defaultdict(list)
    for config, summary in runs:
        lines[(config.model, curve_key(config))].append(
            (config.params.image_guidance, summary.get(x_key), summary.get(y_key))
        )
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=150)
    x_scale, y_scale = (100 if METRICS[key].percent else 1 for key in (x_key, y_key))
    for (model, key), points in sorted(lines.items()):
        points = sorted(p for p in points if p[1] is not None and p[2] is not None)  # in αV order
        if len(points) < 2:  # a run without a sweep is no curve
            continue
        label = f"{model} ({key})"
        ax.plot([x_scale * p[1] for p in points], [y_scale * p[2] for p in points], marker="o", label=label)
        for alpha, x, y in points:
            ax.annotate(f"{alpha:g}", (x_scale * x, y_scale * y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if not METRICS[x_key].higher_is_better:
        ax.invert_xaxis()  # right is a stronger edit on every plot
    if not METRICS[y_key].higher_is_better:
        ax.invert_yaxis()
    ax.set_xlabel(f"edit: {METRICS[x_key].label} (right = better)")
    ax.set_ylabel(f"input consistency: {METRICS[y_key].label} (up = better)")
    ax.set_title("αV trade-off (points labelled with αV)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return x_key, y_key


def plot_drift(path: Path, runs: list[tuple[RunConfig, list[dict[str, Any]]]]) -> list[str]:
    """Per-turn means of the target metrics for multi-turn runs; returns the metrics plotted (none: no file)."""
    multi = [(config, summary) for config, summary in runs if config.turns]
    per_turn = {(c.model, c.setting): [e for e in summary if e["slice"].startswith("turn ")] for c, summary in multi}
    keys = [k for k in DRIFT if any(e.get(k) is not None for entries in per_turn.values() for e in entries)]
    if not keys or not any(len(entries) > 1 for entries in per_turn.values()):
        return []
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), dpi=150, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for (model, setting), entries in sorted(per_turn.items()):
            turns = [int(e["slice"].split()[1]) for e in entries if e.get(key) is not None]
            values = [(100 if METRICS[key].percent else 1) * e[key] for e in entries if e.get(key) is not None]
            ax.plot(turns, values, marker="o", label=f"{model} {setting.split('_')[2]}")
        ax.set_xlabel("turn")
        ax.set_title(METRICS[key].heading)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("multi-turn drift: each turn against its ground truth")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return keys


def write_report(
    folder: Path, dataset: EvalDataset, runs: list[tuple[RunConfig, list[dict]]], missing: dict[str, str]
) -> str:
    """Write report.md, summary.csv, samples.csv and the plots for `runs` (config, records); returns the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    all_rows, summaries = [], []
    for config, records in runs:
        rows = rows_of(config, records)
        all_rows += rows
        summaries.append((config, summarise(rows, dataset)))
    _write_csv(folder / "samples.csv", all_rows)
    _write_csv(
        folder / "summary.csv",
        [{"model": c.model, "setting": c.setting, **entry} for c, summary in summaries for entry in summary],
    )
    text = [f"## {dataset.name}: {len(dataset.samples)} samples\n"]
    groups: dict[str, list] = defaultdict(list)
    for config, summary in summaries:
        groups[curve_key(config)].append((config, summary))
    for key, group in groups.items():
        text.append(f"### {key}\n")
        text.append(markdown_table(dataset, group) + "\n")
    overall = [(config, summary[0]) for config, summary in summaries]
    if axes := plot_tradeoff(folder / "tradeoff.png", overall):
        text.append(f"![αV trade-off](tradeoff.png)  x: {METRICS[axes[0]].label}, y: {METRICS[axes[1]].label}\n")
    if drift := plot_drift(folder / "drift.png", summaries):
        text.append(f"![multi-turn drift](drift.png)  {', '.join(METRICS[k].label for k in drift)} per turn\n")
    if infinite := sum(entry["n_inf"] for _, summary in summaries for entry in summary[:1]):
        text.append(f"{infinite} infinite value(s) (identical images) left out of the means.\n")
    for backbone, why in missing.items():
        text.append(f"- not computed: the {backbone} scores ({why})")
    markdown = "\n".join(text).rstrip() + "\n"
    (folder / "report.md").write_text(markdown)
    return markdown


PAPER_SLICES = {  # the slices each benchmark's paper reports; "all turns" for the rest
    "magicbrush": ("final turn", "all turns"),  # MagicBrush's two settings (docs/smartedit.md §5.2)
    "reason-edit": ("understanding", "reasoning"),  # SmartEdit's Reason-Edit table
}


def paper_table(out: Path) -> str:
    """One table across datasets, as the papers lay them out (MGIE's Table 1: a column group per benchmark, a row per
    model): each dataset's paper columns for the slices its paper reports (`PAPER_SLICES`; "reasoning" is the
    6-Reasoning category when it is the only one), from every `<out>/<dataset>/report/summary.csv`, one row per model
    and setting (single-/multi-turn, αX, αV, steps, seed, size, dtype)."""
    from editor.eval.data import COLUMNS

    tables: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(Path(out).glob("*/report/summary.csv")):
        name = path.parts[-3]
        with path.open() as f:
            entries = list(csv.DictReader(f))
        for wanted in PAPER_SLICES.get(name, ("all turns",)):
            aliases = (wanted, "6-Reasoning") if wanted == "reasoning" else (wanted,)
            if chosen := [row for row in entries if row["slice"] in aliases]:
                tables[(name, wanted)] = chosen
    if not tables:
        raise FileNotFoundError(f"no <dataset>/report/summary.csv under {out}: run `python -m editor.eval` first")
    rows = sorted({(row["model"], row["setting"]) for entries in tables.values() for row in entries})
    head = ["model", "setting"] + [
        f"{name}{f' ({part})' if name in PAPER_SLICES else ''} {METRICS[c].heading}"
        for name, part in tables
        for c in COLUMNS.get(name, ())
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, setting in rows:
        cells = [model, setting]
        for (name, _), entries in tables.items():
            entry = next((e for e in entries if (e["model"], e["setting"]) == (model, setting)), {})
            for c in COLUMNS.get(name, ()):
                value = entry.get(c)
                cells.append(_cell(float(value) if value else None, METRICS[c]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
