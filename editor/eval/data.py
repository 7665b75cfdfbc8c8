"""Dataset readers of the evaluation harness: every benchmark becomes an `EvalDataset` of `EvalSample` sessions.

`load_dataset(spec, kind=None, limit=None)` reads a folder (the layout is detected, or named by `kind`) or builds the
offline demo world ("demo", "demo:N"). Images are not opened here, only checked to exist; `open_image` opens them.
Samples are sorted by id (stable); `limit` keeps the first N. Ids match [A-Za-z0-9._-]+ (they name cache files).

Layouts (paths are relative to the folder given as --data):

magicbrush: MagicBrush's test split (OSU-NLP-Group/MagicBrush release, its `test` folder; --data may also be the
  parent that contains `test/`):
    edit_sessions.json        {session id: [turn, ...]} with the turns in order, each turn
                              {"input": "<id>-input.png", "mask": "<id>-mask1.png", "instruction": "...",
                               "output": "<id>-output1.png"}; turn k > 1 lists the previous output as its input
    images/<session id>/<file>  every file named above
    local_descriptions.json   {session id: {"<id>-output1.png": "caption", ...}}  (optional)
    global_descriptions.json  the same shape, also describing the input  (optional)
  One sample per session (id = session id, category ""); turn k: source = its "input", target = its "output",
  mask = its "mask" (kept as a path; the runner does not score with it, as how the release's masks encode the
  edited region is not verified here), caption = the local description of the output (what the paper's CLIP-T uses,
  OSU-NLP-Group/MagicBrush#17), else its global description, else None.

reason-edit: SmartEdit's Reason-Edit benchmark: category folders 1-Left-Right, 2-Relative-Size, 3-Mirror, 4-Color,
  5-Multiple-Objects, 6-Reasoning (a folder whose name ends in "Reasoning-231115", the release's name, is read as
  6-Reasoning); any subset of them. Each folder holds:
    *.png                     the sources, in name order (a *_mask.png is not a source)
    <stem>_mask.jpg           the mask of <stem>.png (white = foreground)
    one text file             Left_Right_text.txt, Size_text.txt, Mirror_text.txt, Color_text.txt,
                              MultipleObjects_text.txt or Reason_test.txt; line k ("<instruction> CLIP: <foreground
                              description>") belongs to the k-th png; trailing blank lines are ignored
  One single-turn sample per png: id "<category>_<stem>" (characters outside [A-Za-z0-9._-] become "_"), target
  None, mask the jpg, caption the text after "CLIP:" (stripped), instruction the text before it (stripped).
  The official script pairs the k-th sorted png with the k-th sorted mask; pairing by name is the same whenever
  names sort alike (not for e.g. 1.png / 10.png, whose masks sort the other way).

evr, gier, ma5k, pairs: one layout for all (their raw releases differ; converting a release into edits.jsonl, one
  line per (input, goal) pair, is the user's step):
    edits.jsonl               one JSON object per line, blank lines skipped:
                              {"input": "in/0001.png", "instruction": "make the sky blue", "goal": "out/0001.png",
                               "id": "0001", "caption": "a blue sky", "mask": "masks/0001.png",
                               "expressive": "the sky turns a deep clear blue"}
                              input, instruction and goal are required; id defaults to the line number ("000012");
                              caption, mask and expressive (an expressive instruction, MGIE's L_ins target in
                              editor.finetune) are optional; image paths are relative to the folder
  Detected as "pairs"; pass kind evr / gier / ma5k to get that paper's columns.

demo: the built-in shapes world (editor/demo/world.py), no files. "demo:N" = N sessions per held-out split
  (default 25); the spec "demo" always means this world (write ./demo for a folder of that name). Session i of
  split s: turn 1 is `world.dataset(s, N, seed=1)[i]`, exactly the samples of `python -m editor.eval demo`; turns
  2..DEMO_TURNS are `world.edit_scene` edits of the previous turn's target scene drawn from
  random.Random(f"1/{s}/{i}/turn{k}") with the split's rules. In `reasoning`, a turn that leaves no shape to refer
  to relationally is redrawn unless it is the last; when turn 1 leaves such a scene (e.g. one shape), turn 2 is a
  plain `add` (about 15 % of reasoning sessions). Images are rendered PIL images; the mask is the judge's changed
  region (editor.demo.judge.changed_region, the whole image for tone edits); caption and expressive = the
  expressive sentence; reference = the world.Sample; category = the split; id "<split>-<i:04d>"; groups
  {"held-out": the four splits}.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from editor.demo import world
from editor.images import load_image

ImageRef = Path | Image.Image  # a file to open lazily, or an image held in memory (demo world)

KINDS = ("magicbrush", "reason-edit", "evr", "gier", "ma5k", "pairs", "demo")
COLUMNS = {
    "magicbrush": ("l1", "l2", "clip_i", "dino", "clip_t"),
    "reason-edit": ("bg_psnr", "bg_ssim", "bg_lpips", "fg_clip"),
    "evr": ("l1", "dino", "clip_i"),
    "gier": ("l1", "ssim", "clip_i"),
    "ma5k": ("l1", "ssim", "lpips"),
    "pairs": ("l1", "l2", "ssim", "lpips", "clip_i", "dino"),
    "demo": ("edit_acc", "l1", "bg_psnr", "clip_i", "expressive_acc"),
}
CLIP_BASE, CLIP_LARGE = "clip-vit-base-patch32", "clip-vit-large-patch14"
REASON_EDIT_TEXTS = {
    "1-Left-Right": "Left_Right_text.txt",
    "2-Relative-Size": "Size_text.txt",
    "3-Mirror": "Mirror_text.txt",
    "4-Color": "Color_text.txt",
    "5-Multiple-Objects": "MultipleObjects_text.txt",
    "6-Reasoning": "Reason_test.txt",
}
REASONING = "6-Reasoning"
REASONING_ALIAS = "Reasoning-231115"  # the release's folder name ends with this
PAIR_FIELDS = ("input", "instruction", "goal", "id", "caption", "mask", "expressive")
DEMO_SPLITS = ("test", "combo", "paraphrase", "reasoning")  # the held-out splits (editor.eval.cli.HELD_OUT)
DEMO_SEED = 1  # training draws from seed 0's stream; evaluation from seed 1's (editor.eval.cli.EVAL_SEED)
DEMO_PER_SPLIT = 25
DEMO_TURNS = 3
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Turn:
    instruction: str
    source: ImageRef  # this turn's ground-truth input (turn 1: the session's input image)
    target: ImageRef | None = None  # ground-truth output ("goal"); None when the dataset has none (Reason-Edit)
    mask: ImageRef | None = None  # grey mask, white (255) = the region the edit should change; None if none
    caption: str | None = None  # text the output should match (MagicBrush local caption, Reason-Edit "CLIP:" text)
    reference: Any = None  # dataset-specific object (demo world: the world.Sample of this turn), else None
    expressive: str | None = None  # expressive instruction (edits.jsonl "expressive", demo world), else None


@dataclass(frozen=True)
class EvalSample:
    id: str  # unique in the dataset, stable across runs, matches [A-Za-z0-9._-]+ (cache key)
    turns: tuple[Turn, ...]  # >= 1; MagicBrush and demo sessions have several
    category: str = ""  # Reason-Edit folder name, demo split, else ""


@dataclass(frozen=True)
class EvalDataset:
    name: str  # one of KINDS
    root: Path | None  # the folder read; None for the built-in demo world
    samples: tuple[EvalSample, ...]
    columns: tuple[str, ...]  # metric keys of the paper table for this dataset, in order
    clip: str  # CLIP folder name the benchmark's paper used
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pooled categories


def open_image(ref: ImageRef) -> Image.Image:
    """The image as the editors see it: `editor.images.load_image` (upright by its EXIF orientation, 8-bit RGB,
    transparency over white), so outputs, inputs and goals are compared in one orientation and colour space."""
    if isinstance(ref, Image.Image):
        return load_image(ref)
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        return load_image(path)
    except ValueError as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def load_dataset(spec: str, kind: str | None = None, limit: int | None = None) -> EvalDataset:
    """spec: a folder, or "demo" (built-in world; "demo:N" = N samples per held-out split, default 25).
    kind None -> detected from the folder (edit_sessions.json -> magicbrush; the Reason-Edit category folders ->
    reason-edit; edits.jsonl -> "pairs", or evr/gier/ma5k when given as kind). limit: first N samples (after a
    stable sort by id). Errors: missing folder, unrecognised layout (say which files were looked for), a malformed
    line (file + line number), a referenced image that does not exist (path)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    spec = str(spec)
    if kind in (None, "demo") and (spec == "demo" or spec.startswith("demo:")):
        dataset = _demo(_demo_count(spec))
    elif kind == "demo":
        raise ValueError(f"the demo world takes the spec 'demo' or 'demo:N', not {spec!r}")
    else:
        root = Path(spec).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder {root} does not exist (or is not a folder)")
        kind = kind or _detect(root)
        if kind == "magicbrush":
            dataset = _magicbrush(root)
        elif kind == "reason-edit":
            dataset = _reason_edit(root)
        else:
            dataset = _pairs(root, kind)
    if not dataset.samples:
        raise ValueError(f"the {dataset.name} dataset in {dataset.root} has no samples")
    samples = sorted(dataset.samples, key=lambda sample: sample.id)
    seen: set[str] = set()
    for sample in samples:
        if not ID_PATTERN.fullmatch(sample.id):
            raise ValueError(f"sample id {sample.id!r} in {dataset.root} must match [A-Za-z0-9._-]+")
        if sample.id in seen:
            raise ValueError(f"sample id {sample.id!r} occurs twice in {dataset.root}; ids must be unique")
        seen.add(sample.id)
    return replace(dataset, samples=tuple(samples[:limit] if limit else samples))


def _detect(root: Path) -> str:
    if (root / "edit_sessions.json").is_file() or (root / "test" / "edit_sessions.json").is_file():
        return "magicbrush"
    if _reason_edit_folders(root):
        return "reason-edit"
    if (root / "edits.jsonl").is_file():
        return "pairs"
    raise ValueError(
        f"unrecognised dataset layout in {root}: looked for edit_sessions.json or test/edit_sessions.json "
        f"(MagicBrush), the Reason-Edit folders {', '.join(REASON_EDIT_TEXTS)} (or *{REASONING_ALIAS}), and "
        "edits.jsonl (evr / gier / ma5k / pairs); the layouts are described in editor/eval/data.py"
    )


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} does not exist")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None


# --- MagicBrush ------------------------------------------------------------------------------------------------


def _magicbrush(root: Path) -> EvalDataset:
    if not (root / "edit_sessions.json").is_file() and (root / "test" / "edit_sessions.json").is_file():
        root = root / "test"
    sessions_path = root / "edit_sessions.json"
    if not sessions_path.is_file():
        raise FileNotFoundError(f"{sessions_path} not found: point --data at MagicBrush's test folder (or its parent)")
    sessions = _read_json(sessions_path)
    if not isinstance(sessions, dict):
        raise ValueError(f"{sessions_path}: expected an object {{session id: [turns]}}, got {type(sessions).__name__}")
    descriptions = []  # local captions first (the paper's CLIP-T), then global ones
    for name in ("local_descriptions.json", "global_descriptions.json"):
        path = root / name
        found = _read_json(path) if path.is_file() else {}
        if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
            raise ValueError(f"{path}: expected an object {{session id: {{image file: caption}}}}")
        descriptions.append(found)
    samples = []
    for session_id, entries in sessions.items():
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{sessions_path}: session {session_id}: expected a non-empty list of turns")
        folder = root / "images" / session_id
        turns = []
        for number, entry in enumerate(entries, 1):
            where = f"{sessions_path}: session {session_id} turn {number}"
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("input", "output")):
                raise ValueError(f"{where}: expected {{'input', 'mask', 'instruction', 'output'}}, got {entry!r}")
            if not isinstance(entry.get("instruction"), str) or not entry["instruction"].strip():
                raise ValueError(f"{where}: the instruction is missing or empty")
            output = entry["output"]
            captions = [d.get(session_id, {}).get(output) for d in descriptions]
            mask = entry.get("mask")
            turns.append(
                Turn(
                    instruction=entry["instruction"].strip(),
                    source=_existing(folder / entry["input"], where),
                    target=_existing(folder / output, where),
                    mask=_existing(folder / mask, where) if mask else None,
                    caption=next((c.strip() for c in captions if isinstance(c, str) and c.strip()), None),
                )
            )
        samples.append(EvalSample(session_id, tuple(turns)))
    return EvalDataset("magicbrush", root, tuple(samples), COLUMNS["magicbrush"], CLIP_BASE)


# --- Reason-Edit -----------------------------------------------------------------------------------------------


def _reason_edit_folders(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        if child.name in REASON_EDIT_TEXTS:
            category = child.name
        elif child.name.endswith(REASONING_ALIAS):
            category = REASONING
        else:
            continue
        if not child.is_dir():
            continue
        if category in found:
            raise ValueError(f"{root}: both {found[category].name} and {child.name} hold {category}; keep one")
        found[category] = child
    return found


def _reason_edit(root: Path) -> EvalDataset:
    folders = _reason_edit_folders(root)
    if not folders:
        raise ValueError(
            f"no Reason-Edit category folder in {root}: expected some of {', '.join(REASON_EDIT_TEXTS)} "
            f"(or a folder ending in {REASONING_ALIAS})"
        )
    samples = []
    for category, folder in sorted(folders.items()):
        text_path = folder / REASON_EDIT_TEXTS[category]
        if not text_path.is_file():
            raise FileNotFoundError(f"{folder}: the instruction file {text_path.name} is missing")
        lines = text_path.read_text(encoding="utf-8-sig").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        sources = sorted((p for p in folder.glob("*.png") if not p.stem.endswith("_mask")), key=lambda p: p.name)
        if len(lines) != len(sources):
            raise ValueError(
                f"Reason-Edit folder {folder}: {text_path.name} has {len(lines)} lines but there are {len(sources)} "
                "source images (*.png); line k must belong to the k-th png in name order"
            )
        for number, (line, source) in enumerate(zip(lines, sources, strict=True), 1):
            instruction, marker, caption = line.partition("CLIP:")
            if not marker or not instruction.strip() or not caption.strip():
                raise ValueError(
                    f"{text_path}:{number}: expected '<instruction> CLIP: <foreground description>' "
                    f"(for {source.name}), got {line!r}"
                )
            where = f"{text_path}:{number}"
            mask = _existing(source.with_name(f"{source.stem}_mask.jpg"), where)
            turn = Turn(instruction.strip(), source, None, mask, caption.strip())
            samples.append(EvalSample(f"{category}_{re.sub(r'[^A-Za-z0-9._-]', '_', source.stem)}", (turn,), category))
    groups = {"understanding": tuple(c for c in sorted(folders) if c != REASONING)}
    if REASONING in folders:
        groups["reasoning"] = (REASONING,)
    groups = {name: categories for name, categories in groups.items() if categories}
    return EvalDataset("reason-edit", root, tuple(samples), COLUMNS["reason-edit"], CLIP_LARGE, groups)


# --- edits.jsonl (EVR, GIER, MA5k, generic pairs) --------------------------------------------------------------


def _pairs(root: Path, kind: str) -> EvalDataset:
    path = root / "edits.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a {kind} dataset is a folder with edits.jsonl (see eval/data.py)")
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a JSON object with input, instruction and goal")
        unknown = sorted(set(entry) - set(PAIR_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(PAIR_FIELDS)}")
        for key in PAIR_FIELDS:
            required = key in ("input", "instruction", "goal")
            if (required or entry.get(key) is not None) and not (isinstance(entry.get(key), str) and entry[key]):
                raise ValueError(f"{where}: {key!r} must be a non-empty string, got {entry.get(key)!r}")
        sample_id = entry.get("id") or f"{number:06d}"
        if not ID_PATTERN.fullmatch(sample_id):
            raise ValueError(f"{where}: id {sample_id!r} must match [A-Za-z0-9._-]+ (it names cache files)")
        turn = Turn(
            instruction=entry["instruction"].strip(),
            source=_existing(root / entry["input"], where),
            target=_existing(root / entry["goal"], where),
            mask=_existing(root / entry["mask"], where) if entry.get("mask") else None,
            caption=entry["caption"].strip() if entry.get("caption") else None,
            expressive=entry["expressive"].strip() if entry.get("expressive") else None,
        )
        samples.append(EvalSample(sample_id, (turn,)))
    return EvalDataset(kind, root, tuple(samples), COLUMNS[kind], CLIP_BASE)


# --- demo world ------------------------------------------------------------------------------------------------


def _demo_count(spec: str) -> int:
    if spec == "demo":
        return DEMO_PER_SPLIT
    count = spec.removeprefix("demo:")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"expected 'demo' or 'demo:N' with N a positive number of samples per split, got {spec!r}")
    return int(count)


def _relational(scene: world.Scene) -> bool:
    return any(world.reasoning_references(scene.shapes, shape) for shape in scene.shapes)


def _demo_session(split: str, index: int, first: world.Sample, turns: int) -> tuple[world.Sample, ...]:
    """The world samples of demo session `index` of `split`, whose first edit is `first`. A reasoning turn before
    the last is redrawn (up to 100 times) while it leaves no shape to refer to relationally: the next turn would
    have to be a plain `add` (see world.edit_scene)."""
    edits = [first]
    for k in range(2, turns + 1):
        rng = random.Random(f"{DEMO_SEED}/{split}/{index}/turn{k}")
        for _ in range(100):
            edit = world.edit_scene(rng, edits[-1].target, split)
            if split != "reasoning" or k == DEMO_TURNS or _relational(edit.target):
                break
        edits.append(edit)
    return tuple(edits)


def _demo_turn(sample: world.Sample) -> Turn:
    from editor.demo import judge  # imports torch; only the demo needs it

    source, target = world.render(sample.source), world.render(sample.target)
    region = judge.changed_region(judge.as_float(source), judge.as_float(target), sample.op == "tone")
    mask = Image.fromarray(region.astype(np.uint8) * 255)
    return Turn(sample.terse, source, target, mask, sample.expressive, sample, sample.expressive)


def _demo(per_split: int, turns: int = DEMO_TURNS) -> EvalDataset:
    samples = []
    for split in DEMO_SPLITS:
        for index, first in enumerate(world.dataset(split, per_split, DEMO_SEED)):
            session = tuple(_demo_turn(edit) for edit in _demo_session(split, index, first, turns))
            samples.append(EvalSample(f"{split}-{index:04d}", session, split))
    return EvalDataset("demo", None, tuple(samples), COLUMNS["demo"], CLIP_BASE, {"held-out": DEMO_SPLITS})


def demo_first_turns(per_split: int) -> EvalDataset:
    """The demo sessions cut to turn 1 (`world.dataset(split, per_split, seed=1)`): `python -m editor.eval demo`."""
    return _demo(per_split, turns=1)
