"""The evaluation harness (editor.eval.run, editor.eval.report, `python -m editor.eval`): scoring against an oracle
and an identity editor on the demo world, single- and multi-turn chaining, the per-sample cache and resume, the αV
sweep, reports and plots, sharding (by hand and under `accelerate launch` with two CPU processes)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image

from editor import metrics
from editor.core import EditResult, Guidance
from editor.demo import world
from editor.eval import cli as eval_cli
from editor.eval.data import EvalDataset, load_dataset, open_image
from editor.eval.metrics import ClipScorer
from editor.eval.report import paper_table, write_report
from editor.eval.run import RunConfig, Scorers, prepare_folder, read_records, run
from editor.params import EditParams, Resolution
from editor.pipelines.registry import load_editor
from editor.tiny.backbones import build_tiny_clip, build_tiny_dino

ROOT = Path(__file__).resolve().parents[1]
PARAMS = EditParams(steps=2, resolution=Resolution(size=world.SIZE))


@dataclass
class ScriptedEditor:
    """An editor without a model: `answer(image, instruction)` is its output. Records every image it was given."""

    answer: object
    expressive: str = "generated"
    given: list[tuple[str, bytes]] = field(default_factory=list)

    def think(self, image: Image.Image, instruction: str) -> Guidance:
        zeros = torch.zeros(1, 77, 8)
        text = f"imagine {instruction}"
        return Guidance("scripted", instruction, text, text, zeros, zeros, self.expressive)

    def render(self, image: Image.Image, guidance: Guidance, params: EditParams) -> EditResult:
        self.given.append((guidance.instruction, image.tobytes()))
        return EditResult(self.answer(image, guidance.instruction), image, guidance, params)


def oracle(dataset: EvalDataset):
    """The perfect editor: looks the goal up by (input pixels, instruction)."""
    goals = {
        (open_image(turn.source).tobytes(), turn.instruction): open_image(turn.target)
        for sample in dataset.samples
        for turn in sample.turns
    }
    return lambda image, instruction: goals[(image.tobytes(), instruction)]


@pytest.fixture(scope="module")
def demo() -> EvalDataset:
    return load_dataset("demo:2")  # 2 sessions per held-out split, 3 turns each


def _records(tmp_path, editor, dataset, turns=False, scorers=None, params=PARAMS):
    config = RunConfig("scripted", dataset.name, params, turns)
    prepare_folder(config, tmp_path)
    run(editor, dataset, config, tmp_path, scorers or Scorers(), progress=False)
    return config, read_records(dataset, config.folder(tmp_path))


def test_oracle_scores_perfectly_and_identity_does_not(tmp_path, demo):
    _, records = _records(tmp_path / "oracle", ScriptedEditor(oracle(demo)), demo)
    turns = [turn["scores"] for record in records for turn in record["turns"]]
    assert len(turns) == 3 * len(demo.samples) == 24
    assert all(s["edit_acc"] == 1.0 and s["l1"] == 0 and s["psnr"] == math.inf for s in turns)
    # the background matches up to Reason-Edit's bicubic resize to 256 (a few pixels at the mask's edge)
    assert all(s["bg_psnr"] > 75 and s["in_l1"] > 0 for s in turns)

    _, records = _records(tmp_path / "identity", ScriptedEditor(lambda image, _: image), demo)
    turns = [turn["scores"] for record in records for turn in record["turns"]]
    assert all(s["edit_acc"] == 0.0 and s["in_l1"] == 0 and s["l1"] > 0 for s in turns)
    assert all(s["expressive_acc"] == 0.0 for s in turns)  # "imagine <terse>" never states the expressive facts


def test_expressive_accuracy_only_for_generated_text(tmp_path, demo):
    _, records = _records(tmp_path, ScriptedEditor(lambda image, _: image, expressive="instruction"), demo)
    assert not any("expressive_acc" in turn["scores"] for record in records for turn in record["turns"])


def test_multi_turn_feeds_the_output_forward(tmp_path, demo):
    def darker(image, _):
        return image.point(lambda v: v // 2)

    single = ScriptedEditor(darker)
    _records(tmp_path / "single", single, demo)
    sources = [(t.instruction, open_image(t.source).tobytes()) for s in demo.samples for t in s.turns]
    assert single.given == sources  # every turn from the dataset's own input

    multi = ScriptedEditor(darker)
    _, records = _records(tmp_path / "multi", multi, demo, turns=True)
    first = demo.samples[0]
    expected = open_image(first.turns[0].source)
    for k, turn in enumerate(first.turns):
        assert multi.given[k] == (turn.instruction, expected.tobytes())
        expected = darker(expected, None)
    saved = Image.open(tmp_path / "multi/demo/scripted" / RunConfig("scripted", "demo", PARAMS, True).setting /
                       "images" / f"{first.id}_t2.png")  # fmt: skip
    assert saved.tobytes() == darker(darker(open_image(first.turns[0].source), 0), 0).tobytes()
    # turn 2 is scored against its own ground truth, and its input consistency against what it was given
    second = records[0]["turns"][1]["scores"]
    halved = darker(open_image(first.turns[0].source), 0)
    assert second["in_l1"] == pytest.approx(metrics.l1(darker(halved, 0), halved))
    assert second["l1"] == pytest.approx(metrics.l1(darker(halved, 0), open_image(first.turns[1].target)))


def test_resume_redoes_only_missing_samples(tmp_path, demo):
    editor = ScriptedEditor(lambda image, _: image)
    config, first = _records(tmp_path, editor, demo)
    assert len(editor.given) == 24
    again = ScriptedEditor(lambda image, _: image)
    assert run(again, demo, config, tmp_path, Scorers(), progress=False) == 0 and again.given == []
    (config.folder(tmp_path) / "samples" / f"{demo.samples[3].id}.json").unlink()
    assert run(again, demo, config, tmp_path, Scorers(), progress=False) == 1 and len(again.given) == 3
    second = read_records(demo, config.folder(tmp_path))
    strip = [[{k: v for k, v in t.items() if k != "seconds"} for t in r["turns"]] for r in first]
    assert strip == [[{k: v for k, v in t.items() if k != "seconds"} for t in r["turns"]] for r in second]


def test_unfinished_run_and_changed_settings_are_refused(tmp_path, demo):
    config = RunConfig("scripted", "demo", PARAMS)
    prepare_folder(config, tmp_path)
    with pytest.raises(FileNotFoundError, match="unfinished; run the same command again"):
        read_records(demo, config.folder(tmp_path))
    run_file = config.folder(tmp_path) / "run.json"
    recorded = json.loads(run_file.read_text())
    run_file.write_text(json.dumps(recorded | {"steps": 50}))
    with pytest.raises(ValueError, match=r"written by another run \(steps: 50; this run: steps: 2\)"):
        prepare_folder(config, tmp_path)
    # another folder of the same kind (ids like 000001 repeat across folders) never reuses these records
    other = RunConfig("scripted", "demo", PARAMS, data="/data/elsewhere")
    run_file.write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="data: 'demo'; this run: data: '/data/elsewhere'"):
        prepare_folder(other, tmp_path)
    # nor does an evaluation of other weights (before, it reused the first weights' cached outputs)
    retrained = RunConfig("scripted", "demo", PARAMS, weights="/runs/other-weights")
    with pytest.raises(ValueError, match="weights: ''; this run: weights: '/runs/other-weights'"):
        prepare_folder(retrained, tmp_path)


def test_shards_partition_the_samples(tmp_path, demo):
    config = RunConfig("scripted", "demo", PARAMS)
    prepare_folder(config, tmp_path)
    editors = [ScriptedEditor(lambda image, _: image) for _ in range(3)]
    for rank, editor in enumerate(editors):
        run(editor, demo, config, tmp_path, Scorers(), rank=rank, world=3, progress=False)
    counts = [len(e.given) // 3 for e in editors]
    assert counts == [3, 3, 2] and len(read_records(demo, config.folder(tmp_path))) == 8


def test_feature_scores_with_tiny_backbones(tmp_path, demo):
    from editor.eval.lpips import LpipsScorer
    from editor.eval.metrics import DinoScorer
    from tests.test_lpips import write_tiny_lpips

    write_tiny_lpips(tmp_path / "lpips")
    scorers = Scorers(
        clip=ClipScorer(build_tiny_clip(tmp_path / "clip")),
        dino=DinoScorer(build_tiny_dino(tmp_path / "dino")),
        lpips=LpipsScorer(tmp_path / "lpips"),
    )
    small = EvalDataset(demo.name, None, demo.samples[:2], demo.columns, demo.clip, demo.groups)
    _, records = _records(tmp_path / "oracle", ScriptedEditor(oracle(small)), small, scorers=scorers)
    scores = records[0]["turns"][0]["scores"]
    assert scores["clip_i"] == pytest.approx(1.0) and scores["dino"] == pytest.approx(1.0) and scores["lpips"] == 0
    assert scores["in_clip_i"] < 1 and scores["bg_lpips"] > 0  # the goal differs from the input inside the mask
    first = small.samples[0].turns[0]
    assert scores["clip_t"] == pytest.approx(scorers.clip.text_similarity(open_image(first.target), first.caption))
    _, records = _records(tmp_path / "identity", ScriptedEditor(lambda image, _: image), small, scorers=scorers)
    scores = records[0]["turns"][0]["scores"]
    assert scores["lpips"] > 0 and scores["in_clip_i"] == pytest.approx(1.0) and scores["in_dino"] == pytest.approx(1)


def test_report_tables_csv_and_plots(tmp_path, demo):
    runs = []
    for guidance in (1.0, 1.5, 2.0):
        params = EditParams(steps=2, image_guidance=guidance, resolution=Resolution(size=world.SIZE))

        def blend(image, _, weight=1 / guidance):  # more αV, closer to the input
            return Image.blend(image, image.point(lambda v: 255 - v), 0.5 * weight)

        runs.append(_records(tmp_path / "runs", ScriptedEditor(blend), demo, turns=True, params=params))
    missing = {"lpips": "no weights/lpips"}
    markdown = write_report(tmp_path / "report", demo, runs, missing)
    assert "| scripted | 1.5 | all turns | 24 |" in markdown and "| scripted | 2 | turn 3 | 8 |" in markdown
    assert "| scripted | 1 | final turn | 8 |" in markdown and "| scripted | 1 | reasoning | 6 |" in markdown
    assert "held-out" not in markdown  # the group of all four splits would repeat "all turns"
    assert "not computed: the lpips scores (no weights/lpips)" in markdown
    with (tmp_path / "report/samples.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 24 and {r["setting"].split("_")[2] for r in rows} == {"aV1", "aV1.5", "aV2"}
    for name in ("tradeoff.png", "drift.png"):
        with Image.open(tmp_path / "report" / name) as plot:
            assert plot.format == "PNG" and plot.width > 300
    with (tmp_path / "report/summary.csv").open() as f:
        summary = {(r["setting"].split("_")[2], r["slice"]): r for r in csv.DictReader(f)}
    # the in-input consistency rises with αV, as the scripted editor makes it
    assert float(summary["aV1", "all turns"]["in_ssim"]) < float(summary["aV2", "all turns"]["in_ssim"])


def test_parse_sweep():
    assert eval_cli.parse_sweep("1.0:2.2:0.2") == [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2]
    assert eval_cli.parse_sweep("1.5:1.5:0.1") == [1.5]
    for bad in ("1.0:2.2", "a:b:c", "2:1:0.1", "1:2:0"):
        with pytest.raises(Exception, match="START:STOP:STEP|STEP > 0"):
            eval_cli.parse_sweep(bad)


def test_cli_on_the_demo_model_resumes(tmp_path, capsys):
    args = ["--model", "mgie-demo", "--data", "demo:1", "--steps", "2", "--out", str(tmp_path), "--turns",
            "--sweep-image-guidance", "1.0:1.5:0.5", "--no-progress", "--weights", str(tmp_path / "none")]  # fmt: skip
    eval_cli.main(args)
    report = capsys.readouterr().out
    assert "## demo: 4 samples" in report and "| mgie-demo | 1.5 | turn 2 | 4 |" in report
    assert "not computed: the clip scores" in report  # no backbones under --weights
    folder = tmp_path / "demo/report"
    assert {p.name for p in folder.iterdir()} >= {"report.md", "samples.csv", "summary.csv", "tradeoff.png"}
    images = sorted((tmp_path / "demo/mgie-demo").glob("*/images/*.png"))
    assert len(images) == 2 * 4 * 3
    runs = {p.parent.parent.name.split("_")[1] for p in images}
    assert runs == {f"aX{load_editor('mgie-demo', tmp_path / 'none').defaults.text_guidance:g}"}  # αX not given
    stamps = [p.stat().st_mtime_ns for p in images]
    eval_cli.main(args)  # everything cached: nothing is edited again, the same report
    assert capsys.readouterr().out == report and [p.stat().st_mtime_ns for p in images] == stamps
    # another command on the same samples: its report compares it with the finished runs above
    eval_cli.main([*args[:8], "--image-guidance", "2.0", "--no-progress", "--weights", str(tmp_path / "none")])
    combined = capsys.readouterr().out
    assert "### single-turn" in combined and "| mgie-demo | 2 | all turns | 12 |" in combined
    assert "### multi-turn" in combined and "| mgie-demo | 1.5 | turn 2 | 4 |" in combined


def test_accelerate_launch_shards_over_two_cpu_processes(tmp_path):
    """`accelerate launch --multi_gpu` starts torchrun; with --device cpu the processes join over gloo."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(_free_port()), "-m", "editor.eval", "--model", "ip2p-demo", "--data", "demo:1", "--steps", "2",
               "--device", "cpu", "--threads", "1", "--out", str(tmp_path), "--no-progress",
               "--weights", str(tmp_path / "none")]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("## demo: 4 samples") == 1  # only the main process reports
    with (tmp_path / "demo/report/samples.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4 * 3
    single, threads = tmp_path / "single", torch.get_num_threads()
    eval_cli.main(["--model", "ip2p-demo", "--data", "demo:1", "--steps", "2", "--out", str(single), "--no-progress",
                   "--device", "cpu", "--threads", "1", "--weights", str(tmp_path / "none")])  # fmt: skip
    torch.set_num_threads(threads)  # one thread, as each launched process: the same arithmetic, the same pixels
    sharded = sorted((tmp_path / "demo/ip2p-demo").glob("*/images/*.png"))
    alone = sorted((single / "demo/ip2p-demo").glob("*/images/*.png"))
    assert [p.name for p in sharded] == [p.name for p in alone] and len(alone) == 12
    assert all(Image.open(a).tobytes() == Image.open(b).tobytes() for a, b in zip(sharded, alone, strict=True))


def _free_port() -> int:
    from tests.fakes import free_port

    return free_port()


def _noise_png(path: Path, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = torch.randint(0, 256, (32, 32, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())
    (image.convert("L").point(lambda v: 255 * (v > 200)) if mode == "L" else image).save(path)


def test_reason_edit_and_magicbrush_folders_end_to_end(tmp_path):
    """Folder datasets through the same runner and report: Reason-Edit's background/foreground scores per category
    and pooled understanding; MagicBrush's goal scores at the final turn; one table across both."""
    reason = tmp_path / "ReasonEdit"
    layout = (("1-Left-Right", "Left_Right_text.txt", 3), ("4-Color", "Color_text.txt", 1),
              ("6-Reasoning", "Reason_test.txt", 2))  # fmt: skip
    for category, text, count in layout:  # unequal counts: a pooled mean differs from the mean of category means
        for k in range(count):
            _noise_png(reason / category / f"{k}.png", seed=k)
            _noise_png(reason / category / f"{k}_mask.jpg", seed=10 + k, mode="L")
        (reason / category / text).write_text("".join(f"darken by {k + 1} CLIP: a thing\n" for k in range(count)))
    dataset = load_dataset(str(reason))
    scorers = Scorers(clip=ClipScorer(build_tiny_clip(tmp_path / "clip")))

    def darken(image, instruction):
        amount = 20 * int(instruction.split()[-1])
        return image.point(lambda v: max(v - amount, 0))

    runs = [_records(tmp_path / "runs", ScriptedEditor(darken), dataset, scorers=scorers)]
    markdown = write_report(tmp_path / "out/reason-edit/report", dataset, runs, {})
    with (tmp_path / "out/reason-edit/report/samples.csv").open() as f:
        rows = list(csv.DictReader(f))
    understanding = [float(r["bg_mse"]) for r in rows if r["category"] in ("1-Left-Right", "4-Color")]
    per_category = [float(r["bg_mse"]) for r in rows if r["category"] == "1-Left-Right"]
    pooled, of_means = sum(understanding) / 4, (sum(per_category) / 3 + understanding[-1]) / 2
    assert abs(pooled - of_means) > 1e-4  # the test can tell the two apart
    with (tmp_path / "out/reason-edit/report/summary.csv").open() as f:
        summary = {r["slice"]: r for r in csv.DictReader(f)}
    assert float(summary["understanding"]["bg_mse"]) == pytest.approx(pooled) and summary["understanding"]["n"] == "4"
    assert "reasoning" not in summary  # one category only: it is the 6-Reasoning row
    assert "| scripted | 1.5 | 6-Reasoning | 2 |" in markdown and "CLIP score ↑" in markdown

    brush = tmp_path / "MagicBrush" / "test"
    sessions = {"5": [{"input": "5-input.png", "mask": "5-mask1.png", "instruction": "one", "output": "5-output1.png"},
                      {"input": "5-output1.png", "mask": "5-mask2.png", "instruction": "two",
                       "output": "5-output2.png"}]}  # fmt: skip
    for k, name in enumerate(("5-input.png", "5-output1.png", "5-output2.png", "5-mask1.png", "5-mask2.png")):
        _noise_png(brush / "images" / "5" / name, seed=20 + k)
    (brush / "edit_sessions.json").write_text(json.dumps(sessions))
    dataset = load_dataset(str(brush.parent))
    config, records = _records(tmp_path / "brush", ScriptedEditor(oracle(dataset)), dataset, scorers=scorers)
    assert [t["scores"]["l1"] for t in records[0]["turns"]] == [0, 0]
    assert not any(key.startswith("bg_") for t in records[0]["turns"] for key in t["scores"])  # masks unused
    write_report(tmp_path / "out/magicbrush/report", dataset, [(config, records)], {})
    # one table across both benchmarks, a column group per benchmark and reported slice (MGIE's Table 1 layout)
    table = paper_table(tmp_path / "out").splitlines()
    assert table[0].startswith("| model | setting | magicbrush (final turn) L1 ↓ | magicbrush (final turn) L2 ↓ |")
    assert "| magicbrush (all turns) L1 ↓ |" in table[0] and "| reason-edit (understanding) bg PSNR ↑ |" in table[0]
    assert "| reason-edit (reasoning) CLIP score ↑ |" in table[0] and len(table) == 3
    assert table[2].startswith(f"| scripted | {config.setting} | 0.0000 | 0.0000 | 1.0000 | – | ")
    reasoning_psnr = float(next(v for k, v in summary.items() if k == "6-Reasoning")["bg_psnr"])
    assert f"| {reasoning_psnr:.2f} |" in table[2]


def test_cli_errors_are_one_line(tmp_path, capsys):
    base = ["--model", "mgie-demo", "--out", str(tmp_path), "--no-progress"]
    assert eval_cli.main([*base, "--data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert eval_cli.main([*base, "--data", "demo:1", "--clip", str(tmp_path / "no-clip")]) == 2
    assert "no-clip" in capsys.readouterr().err
    assert eval_cli.main(["--model", "mgie-7b", "--data", "demo:1", "--out", str(tmp_path), "--weights",
                          str(tmp_path / "none")]) == 2  # fmt: skip
    assert "python -m editor.weights download mgie-7b" in capsys.readouterr().err
    assert eval_cli.main([*base, "--data", "demo:1", "--device", "cpu", "--offload"]) == 2
    assert "without a GPU, leave it out" in capsys.readouterr().err


def test_backbones_added_later_rescore_from_the_kept_images(tmp_path, demo):
    from editor.eval.metrics import DinoScorer

    small = EvalDataset(demo.name, None, demo.samples[:3], demo.columns, demo.clip, demo.groups)
    darker = ScriptedEditor(lambda image, _: image.point(lambda v: v // 2))
    config, before = _records(tmp_path / "late", darker, small, turns=True)
    assert not any("dino" in t["scores"] for r in before for t in r["turns"])
    dino = Scorers(dino=DinoScorer(build_tiny_dino(tmp_path / "dino")))
    again = ScriptedEditor(lambda image, _: image)  # would give other images, were it asked
    assert run(again, small, config, tmp_path / "late", dino, progress=False) == 0 and again.given == []
    after = read_records(small, config.folder(tmp_path / "late"))
    _, fresh = _records(tmp_path / "fresh", ScriptedEditor(darker.answer), small, turns=True, scorers=dino)
    assert [[t["scores"] for t in r["turns"]] for r in after] == [[t["scores"] for t in r["turns"]] for r in fresh]
    assert all(r["backbones"] == {"dino": "dino"} for r in after)
    # a later run without the DINO folder keeps those scores (nothing to rescore)
    assert run(again, small, config, tmp_path / "late", Scorers(), progress=False) == 0
    assert read_records(small, config.folder(tmp_path / "late")) == after


def test_a_mask_too_thin_for_a_box_leaves_only_the_foreground_score_out(tmp_path, demo):
    from editor.eval.data import Turn
    from editor.eval.run import score_turn

    clip = Scorers(clip=ClipScorer(build_tiny_clip(tmp_path / "clip")))
    image = open_image(demo.samples[0].turns[0].source).resize((256, 256))  # Reason-Edit's size: no resampling
    line = Image.new("L", image.size)
    line.paste(255, (10, 20, 40, 21))  # one row: the box excludes its bottom edge and has no area
    scores = score_turn(image, image, Turn("x", image, None, line, "a red thing"), "reason-edit", clip, None)
    assert "fg_clip" not in scores and scores["bg_psnr"] == math.inf
    block = Image.new("L", image.size)
    block.paste(255, (10, 20, 40, 40))
    assert "fg_clip" in score_turn(image, image, Turn("x", image, None, block, "red"), "reason-edit", clip, None)


def test_backbone_folders_follow_the_catalog_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDITOR_DINO_VITS16_DIR", str(build_tiny_dino(tmp_path / "elsewhere")))
    eval_cli.main(["--model", "ip2p-demo", "--data", "demo:1", "--limit", "1", "--steps", "1", "--out",
                   str(tmp_path / "out"), "--no-progress", "--weights", str(tmp_path / "none")])  # fmt: skip
    report = capsys.readouterr().out
    assert "not computed: the dino scores" not in report and "not computed: the clip scores" in report
    record = next((tmp_path / "out/demo/ip2p-demo").glob("*/samples/*.json"))
    assert json.loads(record.read_text())["backbones"] == {"dino": "elsewhere"}


@pytest.mark.parametrize("model", ["mgie-7b", "smartedit-7b"])
def test_the_real_architectures_through_the_harness(model, tiny_tree, tmp_path, capsys):
    """The real loaders on tiny official-layout trees: the harness drives the real pipelines, multi-turn."""
    if model == "smartedit-7b":
        from editor.tiny.smartedit import build_tiny_smartedit_tree

        tiny_tree = build_tiny_smartedit_tree(tmp_path / "weights")
    out = tmp_path / "out"
    assert eval_cli.main(["--model", model, "--data", "demo:1", "--limit", "1", "--steps", "2", "--turns",
                          "--out", str(out), "--no-progress", "--weights", str(tiny_tree)]) == 0  # fmt: skip
    assert f"| {model} | 1.5 | turn 3 | 1 |" in capsys.readouterr().out
    record = json.loads(next((out / "demo" / model).glob("*/samples/*.json")).read_text())
    assert [t["generated"] for t in record["turns"]] == [True] * 3 and "expressive_acc" in record["turns"][0]["scores"]
