"""`python -m editor.eval demo` is the harness on the demo world's first turns: the same images and per-sample scores
as `python -m editor.eval --data demo:N` gives for turn 1, means taken over those scores, and the judge's numbers
that the demo check reported before it became an alias (editor.demo.judge.score on each output)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from editor.demo import judge, world
from editor.eval import cli as eval_cli
from editor.eval.data import DEMO_SEED, DEMO_SPLITS

PER_SPLIT = 2
MODEL = "ip2p-demo"  # the shipped ablation (weights/demo/ip2p): small enough for CPU at 2 steps


def _records(out: Path) -> tuple[dict[str, dict], Path]:
    (folder,) = (out / "demo" / MODEL).iterdir()  # one setting
    records = {p.stem: json.loads(p.read_text()) for p in (folder / "samples").glob("*.json")}
    return records, folder / "images"


def _means(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alias")
    common = ["--steps", "2", "--text-guidance", "7.5", "--image-guidance", "1.5", "--device", "cpu",
              "--weights", str(tmp / "none")]  # fmt: skip
    assert eval_cli.main(["demo", "--models", MODEL, "--per-split", str(PER_SPLIT), "--out", str(tmp / "alias"),
                          *common]) == 0  # fmt: skip
    assert eval_cli.main(["--model", MODEL, "--data", f"demo:{PER_SPLIT}", "--no-progress", "--out",
                          str(tmp / "harness"), *common]) == 0  # fmt: skip
    return tmp / "alias", tmp / "harness"


def test_the_alias_edits_and_scores_the_first_turns_exactly_as_the_harness(runs):
    alias_out, harness_out = runs
    alias, alias_images = _records(alias_out)
    harness, harness_images = _records(harness_out)
    assert sorted(alias) == sorted(harness) and len(alias) == PER_SPLIT * len(DEMO_SPLITS)
    for sample_id, record in alias.items():
        (turn,) = record["turns"]
        first = harness[sample_id]["turns"][0]
        assert len(harness[sample_id]["turns"]) == 3  # the harness's sessions go on; turn 1 is the alias's sample
        assert {k: v for k, v in turn.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
        with (
            Image.open(alias_images / f"{sample_id}_t1.png") as a,
            Image.open(harness_images / f"{sample_id}_t1.png") as b,
        ):
            assert a.tobytes() == b.tobytes()


def test_the_alias_rows_and_summary_are_the_harness_scores(runs):
    alias_out, harness_out = runs
    harness, _ = _records(harness_out)
    rows = [json.loads(line) for line in (alias_out / f"{MODEL}.jsonl").read_text().splitlines()]
    ids = [f"{split}-{i:04d}" for split in DEMO_SPLITS for i in range(PER_SPLIT)]
    assert [r["split"] for r in rows] == [i.split("-")[0] for i in ids]
    firsts = [harness[i]["turns"][0]["scores"] for i in ids]
    for row, scores in zip(rows, firsts, strict=True):
        assert row["correct"] == (scores["edit_acc"] == 1.0) and row["l1"] == scores["l1"]
        assert row["background_psnr"] == scores.get("judge_bg_psnr")
        assert row["background_ssim"] == scores.get("judge_bg_ssim")
        assert row["expressive_correct"] is None  # the ablation writes no expressive text
    summary = json.loads((alias_out / f"{MODEL}.summary.json").read_text())
    columns = {"edit_acc": "edit_acc", "bg_psnr": "judge_bg_psnr", "bg_ssim": "judge_bg_ssim", "l1": "l1"}
    for column, key in columns.items():
        assert summary["overall"][column] == pytest.approx(_means(s.get(key) for s in firsts), rel=1e-12)
        for split in DEMO_SPLITS:
            mine = [s for i, s in zip(ids, firsts, strict=True) if i.startswith(split)]
            assert summary["split"][split][column] == pytest.approx(_means(s.get(key) for s in mine), rel=1e-12)
    assert summary["overall"]["n"] == len(ids) and set(summary["op"]) == {r["op"] for r in rows}
    report = (alias_out / "report.md").read_text()
    assert f"### {MODEL} (2 steps, αX 7.5, αV 1.5)" in report and f"| all held-out | {len(ids)} |" in report


def test_the_alias_reports_the_judges_numbers_of_each_output(runs):
    """What the demo check computed before it was an alias: judge.score(output, world sample) per sample."""
    alias_out, _ = runs
    _, images = _records(alias_out)
    rows = [json.loads(line) for line in (alias_out / f"{MODEL}.jsonl").read_text().splitlines()]
    samples = [s for split in DEMO_SPLITS for s in world.dataset(split, PER_SPLIT, DEMO_SEED)]
    for row, sample, split_index in zip(rows, samples, [i for _ in DEMO_SPLITS for i in range(PER_SPLIT)], strict=True):
        assert (row["terse"], row["op"]) == (sample.terse, sample.op)
        with Image.open(images / f"{row['split']}-{split_index:04d}_t1.png") as image:
            score = judge.score(image.convert("RGB"), sample)
        assert row["correct"] == score.correct and row["l1"] == pytest.approx(score.l1, abs=1e-12)
        assert (row["background_psnr"], row["background_ssim"]) == (score.background_psnr, score.background_ssim)
