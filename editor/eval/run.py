"""Run one editor over an evaluation dataset, scoring every turn, with a per-sample cache and accelerate sharding.

A run is (model, dataset, settings); its folder is `<out>/<dataset>/<model>/<setting>/` (`RunConfig.folder`):
    run.json                 the settings, written once; a later run with other settings in that folder is refused
    samples/<id>.json        one record per sample: each turn's instruction, expressive text, seconds and scores
    images/<id>_t<k>.png     every output image, turn k
A sample whose record exists is not edited again, so an interrupted run resumes where it stopped; the record is
written (atomically) only after all of its turns, so a half-done sample is redone from its first turn. A record
scored without a backbone the run has (say DINO was downloaded since, or CLIP-L replaced CLIP-B) is rescored from
its kept images; scores of backbones absent now are kept.

Turns (`RunConfig.turns`):
- single-turn (default): every turn starts from the dataset's own input for that turn (MagicBrush's "independent"
  setting); each turn is one edit.
- multi-turn (`--turns`): turn 1 starts from the session's input and every later turn from the model's previous
  output, as the app's multi-turn editing does; each turn is still scored against that turn's ground truth.

Scores of one turn (`score_turn`; the definitions are in editor.eval.metrics and editor.eval.lpips):
- against the ground-truth output, when the dataset has one: l1, l2 (MagicBrush's, generated resized to the truth),
  psnr, ssim (after the same resize), clip_i (CVS), dino, lpips;
- clip_t (CTS): the output against the turn's caption;
- Reason-Edit (and the demo world), with a mask whose white marks the edit: bg_psnr, bg_ssim, bg_mse, bg_lpips
  (source and output weighted by 1 − mask/255 at 256 × 256) and fg_clip (CLIP score of the mask's box). MagicBrush's
  masks are not used: their encoding of the edit region is not verified here;
- consistency with the turn's input (the image the model was given): in_l1, in_ssim, in_clip_i, in_dino, for the
  αV trade-off;
- the demo world's judge: edit_acc (the output matches the rendered goal), judge_bg_psnr / judge_bg_ssim (against
  the goal outside the changed region, not for tone edits), and expressive_acc for editors whose MLLM writes an
  expressive instruction.
Feature scores need their backbones; a missing backbone leaves its scores out and says so (`Scorers.missing`).

Seeds: every sample is edited with the same seed (`EditParams.seed`), so a sample's output does not depend on how
samples are split across processes. Sharding: under `accelerate launch` each process takes samples i ≡ rank
(mod world size) and writes its own records; after a barrier the main process reads them all.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from editor import metrics
from editor.core import Editor
from editor.eval.data import EvalDataset, EvalSample, Turn, open_image
from editor.eval.metrics import (
    ClipScorer,
    DinoScorer,
    background_scores,
    l1_distance,
    l2_distance,
    reason_edit_resize,
    resized_to,
)
from editor.params import EditParams, Resolution

MASKED_DATASETS = ("reason-edit", "demo", "pairs", "evr", "gier", "ma5k")  # masks whose white marks the edit
RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunConfig:
    """What identifies a run: the model, the data read, and every setting that changes an output image."""

    model: str
    dataset: str  # the benchmark kind (editor.eval.data KINDS)
    params: EditParams
    turns: bool = False
    dtype: str = "float32"  # the editor's weights dtype (editor.pipelines.registry DTYPES name)
    data: str = "demo"  # the folder read (resolved), or "demo": two folders of one kind never share a cache
    weights: str = ""  # the weights folder the model was loaded from (resolved): other weights never share a cache

    @property
    def setting(self) -> str:
        """Folder name of the settings, e.g. `single_aX7.5_aV1.5_s100_seed13331_r512_float16`."""
        p = self.params
        mode = "multi" if self.turns else "single"
        size = f"{p.resolution.size}" + ("c" if p.resolution.mode == "center_crop" else "")
        return f"{mode}_aX{p.text_guidance:g}_aV{p.image_guidance:g}_s{p.steps}_seed{p.seed}_r{size}_{self.dtype}"

    def folder(self, out: Path) -> Path:
        return Path(out) / self.dataset / self.model / self.setting

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> RunConfig:
        """The inverse of `describe` (a run.json)."""
        params = EditParams(
            steps=described["steps"], text_guidance=described["text_guidance"],
            image_guidance=described["image_guidance"], seed=described["seed"],
            resolution=Resolution(**described["resolution"]),
        )  # fmt: skip
        multi = described["turns"] == "multi"
        return cls(
            described["model"], described["dataset"], params, multi, described["dtype"], described["data"],
            described.get("weights", ""),
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {
            "model": self.model, "dataset": self.dataset, "data": self.data, "weights": self.weights,
            "turns": "multi" if self.turns else "single", "text_guidance": p.text_guidance,
            "image_guidance": p.image_guidance, "steps": p.steps, "seed": p.seed,
            "resolution": asdict(p.resolution), "dtype": self.dtype, "setting": self.setting,
        }  # fmt: skip


def data_id(dataset: EvalDataset) -> str:
    """`RunConfig.data` of a dataset: its resolved folder; for the built-in world "demo", or "demo:first-turn" for
    its sessions cut to turn 1 (`demo_first_turns`), so the two never share a cache."""
    if dataset.root is not None:
        return str(Path(dataset.root).resolve())
    return "demo" if any(len(sample.turns) > 1 for sample in dataset.samples) else "demo:first-turn"


def weights_id(weights_dir: str | Path) -> str:
    """`RunConfig.weights`: the weights folder, resolved. Two evaluations of other weights into one --out are told
    apart (the second is refused by `prepare_folder`) instead of the second reusing the first's cached outputs.
    Weights retrained in place keep their folder: evaluate them into a new --out (`eval demo` always edits afresh)."""
    return str(Path(weights_dir).resolve())


@dataclass
class Scorers:
    """The feature backbones loaded for a run; None where a folder is missing (`missing` says what and how)."""

    clip: ClipScorer | None = None
    dino: DinoScorer | None = None
    lpips: Any = None  # editor.eval.lpips.LpipsScorer
    missing: dict[str, str] = field(default_factory=dict)  # backbone -> why it is absent and how to get it

    def signature(self) -> dict[str, str]:
        """Which backbones scored a record: a record with another signature is rescored from its images."""
        loaded = {"clip": self.clip, "dino": self.dino, "lpips": self.lpips}
        return {
            name: f"{Path(scorer.folder).name}" + (f"/{scorer.net}" if name == "lpips" else "")
            for name, scorer in loaded.items()
            if scorer is not None
        }


# ---------------------------------------------------------------------------------------------------- scoring


def _against_target(output: Image.Image, target: Image.Image, scorers: Scorers) -> dict[str, float]:
    resized = resized_to(output, target)
    scores = {
        "l1": l1_distance(output, target),
        "l2": l2_distance(output, target),
        "psnr": metrics.psnr(resized, target),
        "ssim": metrics.ssim(resized, target),
    }
    if scorers.clip:
        scores["clip_i"] = scorers.clip.image_similarity(output, target)
    if scorers.dino:
        scores["dino"] = scorers.dino.similarity(output, target)
    if scorers.lpips:
        scores["lpips"] = scorers.lpips.distance(resized, target)
    return scores


def _against_input(output: Image.Image, given: Image.Image, scorers: Scorers) -> dict[str, float]:
    resized = resized_to(output, given)
    scores = {"in_l1": metrics.l1(resized, given), "in_ssim": metrics.ssim(resized, given)}
    if scorers.clip:
        scores["in_clip_i"] = scorers.clip.image_similarity(output, given)
    if scorers.dino:
        scores["in_dino"] = scorers.dino.similarity(output, given)
    return scores


def _reason_edit(output: Image.Image, given: Image.Image, turn: Turn, scorers: Scorers) -> dict[str, float]:
    """Reason-Edit's background and foreground scores, at its 256 × 256."""
    source, edit, mask = reason_edit_resize(given, output, open_image(turn.mask).convert("L"))
    background = background_scores(source, edit, mask)
    scores = {"bg_psnr": background.psnr, "bg_ssim": background.ssim, "bg_mse": background.mse}
    if scorers.lpips:
        scores["bg_lpips"] = scorers.lpips.background_distance(source, edit, mask)
    if scorers.clip and turn.caption:
        try:
            scores["fg_clip"] = scorers.clip.foreground_score(edit, mask, turn.caption)
        except ValueError:  # an empty mask, or a box one pixel wide or tall: the score is undefined, left out
            pass
    return scores


def score_turn(
    output: Image.Image, given: Image.Image, turn: Turn, dataset: str, scorers: Scorers, expressive: str | None
) -> dict[str, float]:
    """Every score this turn supports (see the module docstring); `given` is the image the model edited,
    `expressive` the MLLM's expressive instruction (None for editors without one)."""
    scores = _against_input(output, given, scorers)
    if turn.target is not None:
        scores |= _against_target(output, open_image(turn.target), scorers)
    if turn.caption and scorers.clip:
        scores["clip_t"] = scorers.clip.text_similarity(output, turn.caption)
    if turn.mask is not None and dataset in MASKED_DATASETS:
        scores |= _reason_edit(output, given, turn, scorers)
    if dataset == "demo" and turn.reference is not None:
        from editor.demo import judge

        verdict = judge.score(resized_to(output, given), turn.reference)
        scores["edit_acc"] = float(verdict.correct)
        # the judge's own background numbers (against the goal, outside the changed region; none for tone edits),
        # which `python -m editor.eval demo` and the demo model card report as bg PSNR / SSIM
        judged = {"judge_bg_psnr": verdict.background_psnr, "judge_bg_ssim": verdict.background_ssim}
        scores |= {key: value for key, value in judged.items() if value is not None}
        if expressive is not None:
            scores["expressive_acc"] = float(judge.expressive_correct(expressive, turn.reference))
    return scores


# ------------------------------------------------------------------------------------------------------ a run


def edit_sample(
    editor: Editor, sample: EvalSample, config: RunConfig, images: Path, scorers: Scorers
) -> dict[str, Any]:
    """All turns of one sample; returns its record and writes its output images."""
    turns, previous = [], None
    for k, turn in enumerate(sample.turns, start=1):
        given = previous if (config.turns and previous is not None) else open_image(turn.source)
        start = time.perf_counter()
        guidance = editor.think(given, turn.instruction)
        output = editor.render(given, guidance, config.params).image.convert("RGB")
        seconds = time.perf_counter() - start
        output.save(images / f"{sample.id}_t{k}.png")
        generated = guidance.source == "generated"
        scores = score_turn(output, given, turn, config.dataset, scorers, guidance.expressive if generated else None)
        turns.append(
            {"turn": k, "instruction": turn.instruction, "expressive": guidance.expressive, "generated": generated,
             "seconds": seconds, "scores": scores}
        )  # fmt: skip
        previous = output
    return {"id": sample.id, "category": sample.category, "backbones": scorers.signature(), "turns": turns}


def rescore_sample(record: dict[str, Any], sample: EvalSample, config: RunConfig, images: Path, scorers: Scorers):
    """The record with every turn scored again from its kept output image (no editing): for backbones added (or
    changed) after the run; the scores of backbones not loaded now stay."""
    previous = None
    for turn, entry in zip(sample.turns, record["turns"], strict=True):
        given = previous if (config.turns and previous is not None) else open_image(turn.source)
        output = open_image(images / f"{sample.id}_t{entry['turn']}.png")
        expressive = entry["expressive"] if entry["generated"] else None
        # scores of backbones absent now are kept; every score the loaded backbones give is replaced
        entry["scores"] |= score_turn(output, given, turn, config.dataset, scorers, expressive)
        previous = output
    return record | {"backbones": record.get("backbones", {}) | scorers.signature()}


def needs_rescoring(record: dict[str, Any], scorers: Scorers) -> bool:
    """A backbone loaded now that did not score the record (added since, or another folder: CLIP B/32 -> L/14)."""
    scored = record.get("backbones", {})
    return any(scored.get(name) != folder for name, folder in scorers.signature().items())


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_suffix(path.suffix + f".{os.getpid()}.part")
    partial.write_text(text)
    partial.replace(path)


def prepare_folder(config: RunConfig, out: Path) -> Path:
    """The run's folder with run.json; refuses a folder whose run.json records other settings."""
    folder = config.folder(out)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    described = config.describe()
    run_file = folder / RUN_FILE
    if run_file.is_file():
        recorded = json.loads(run_file.read_text())
        if recorded != described:
            differ = sorted(k for k in described.keys() | recorded.keys() if recorded.get(k) != described.get(k))
            raise ValueError(
                f"{run_file} was written by another run ({', '.join(f'{k}: {recorded.get(k)!r}' for k in differ)}; "
                f"this run: {', '.join(f'{k}: {described.get(k)!r}' for k in differ)}); use another --out or remove "
                "that folder"
            )
    else:
        _write_atomic(run_file, json.dumps(described, indent=2))
    return folder


def run(
    editor: Editor,
    dataset: EvalDataset,
    config: RunConfig,
    out: Path,
    scorers: Scorers,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
) -> int:
    """Edit and score this process's share of the samples (i ≡ rank mod world) that have no record yet, and rescore
    (from the kept images, without editing) those recorded with other backbones than `scorers`. Returns how many
    samples were edited (0 when every image was cached)."""
    folder = config.folder(out)
    share = dataset.samples[rank::world]
    todo = unrecorded(share, folder)
    new = {s.id for s in todo}
    rescore([s for s in share if s.id not in new], config, out, scorers)  # the records written below are current
    label = f"{config.model} {config.setting}" + (f" [{rank + 1}/{world}]" if world > 1 else "")
    for sample in tqdm(todo, desc=label, disable=not progress, dynamic_ncols=True):
        try:
            record = edit_sample(editor, sample, config, folder / "images", scorers)
        except (ValueError, OSError) as err:  # name the sample: the rest of the run stays cached
            raise type(err)(f"sample {sample.id} of {folder}: {err}") from err
        _write_atomic(record_path(folder, sample), json.dumps(record))
    return len(todo)


def rescore(samples: Iterable[EvalSample], config: RunConfig, out: Path, scorers: Scorers) -> None:
    """Rescore, from the kept images, the recorded samples that a loaded backbone did not score."""
    folder = config.folder(out)
    for sample in samples:
        path = record_path(folder, sample)
        record = json.loads(path.read_text())
        if needs_rescoring(record, scorers):
            _write_atomic(path, json.dumps(rescore_sample(record, sample, config, folder / "images", scorers)))


def record_path(folder: Path, sample: EvalSample) -> Path:
    return folder / "samples" / f"{sample.id}.json"


def unrecorded(samples: Iterable[EvalSample], folder: Path) -> list[EvalSample]:
    """The samples that have no record in a run folder yet."""
    return [s for s in samples if not record_path(folder, s).is_file()]


def pending(dataset: EvalDataset, config: RunConfig, out: Path, rank: int = 0, world: int = 1) -> list[EvalSample]:
    """This process's samples that still need editing (no record)."""
    return unrecorded(dataset.samples[rank::world], config.folder(out))


def read_records(dataset: EvalDataset, folder: Path) -> list[dict[str, Any]]:
    """The records of every sample of `dataset` in a run folder, in dataset order; a missing one raises."""
    if missing := [s.id for s in unrecorded(dataset.samples, folder)]:
        raise FileNotFoundError(
            f"{folder} has no record for {len(missing)} sample(s) (e.g. {', '.join(missing[:3])}): the run is "
            "unfinished; run the same command again to complete it"
        )
    return [json.loads(record_path(folder, s).read_text()) for s in dataset.samples]


def finished_runs(dataset: EvalDataset, out: Path) -> list[RunConfig]:
    """Every run under `<out>/<dataset>/` of this data that holds a record for each sample of `dataset` (runs of
    other commands included, so one report compares them all), sorted by model, turns and guidance."""
    runs = []
    for run_file in sorted((Path(out) / dataset.name).glob(f"*/*/{RUN_FILE}")):
        described = json.loads(run_file.read_text())
        if described.get("data") != data_id(dataset) or "dtype" not in described:
            continue  # another folder of this kind (or a run.json from before these fields)
        if not unrecorded(dataset.samples, run_file.parent):
            runs.append(RunConfig.from_description(described))
    return sorted(runs, key=lambda c: (c.model, c.turns, c.params.text_guidance, c.params.image_guidance))
