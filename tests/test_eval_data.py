"""Dataset readers of the evaluation harness: each layout read from a tiny tree, errors that say what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editor.demo import judge, world
from editor.eval import data as eval_data
from editor.eval.data import EvalDataset, load_dataset, open_image
from editor.images import load_image


def _image(path: Path, colour=(10, 20, 30), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), colour if mode != "L" else colour[0]).save(path)
    return path


# --- MagicBrush ------------------------------------------------------------------------------------------------


def _magicbrush(root: Path) -> Path:
    test = root / "test"
    sessions = {
        "7": [{"input": "7-input.png", "mask": "7-mask1.png", "instruction": "add a dog", "output": "7-output1.png"}],
        "101": [
            {"input": "101-input.png", "mask": "101-mask1.png", "instruction": " first ", "output": "101-output1.png"},
            {"input": "101-output1.png", "mask": "101-mask2.png", "instruction": "second", "output": "101-output2.png"},
        ],
    }
    (test / "images").mkdir(parents=True)
    (test / "edit_sessions.json").write_text(json.dumps(sessions))
    for session, turns in sessions.items():
        for turn in turns:
            for key in ("input", "output"):
                _image(test / "images" / session / turn[key])
            _image(test / "images" / session / turn["mask"], (255, 255, 255, 255), "RGBA")
    local = {"101": {"101-output1.png": "a local caption"}, "7": {}}
    glob = {"101": {"101-input.png": "the input", "101-output1.png": "global 1", "101-output2.png": "global 2"}}
    (test / "local_descriptions.json").write_text(json.dumps(local))
    (test / "global_descriptions.json").write_text(json.dumps(glob))
    return test


def test_magicbrush_sessions_chain_turns_and_prefer_local_captions(tmp_path):
    test = _magicbrush(tmp_path)
    for spec in (tmp_path, test):  # the test folder or its parent
        dataset = load_dataset(str(spec))
        assert (dataset.name, dataset.root, dataset.clip) == ("magicbrush", test, "clip-vit-base-patch32")
        assert dataset.columns == ("l1", "l2", "clip_i", "dino", "clip_t") and dataset.groups == {}
        assert [s.id for s in dataset.samples] == ["101", "7"]  # sorted by id (as text)
    session = dataset.samples[0]
    assert session.category == "" and [t.instruction for t in session.turns] == ["first", "second"]
    images = test / "images" / "101"
    assert session.turns[0].source == images / "101-input.png"
    assert session.turns[0].target == images / "101-output1.png" == session.turns[1].source
    assert session.turns[1].target == images / "101-output2.png"
    assert session.turns[1].mask == images / "101-mask2.png"
    assert [t.caption for t in session.turns] == ["a local caption", "global 2"]
    assert dataset.samples[1].turns[0].caption is None  # neither description file describes it


def test_magicbrush_errors_name_the_session_turn_and_file(tmp_path):
    test = _magicbrush(tmp_path)
    (test / "images" / "101" / "101-output2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"session 101 turn 2: image .*101-output2\.png does not exist"):
        load_dataset(str(tmp_path))
    sessions = json.loads((test / "edit_sessions.json").read_text())
    sessions["7"][0].pop("instruction")
    (test / "edit_sessions.json").write_text(json.dumps(sessions))
    with pytest.raises(ValueError, match="session 7 turn 1: the instruction is missing"):
        load_dataset(str(test), kind="magicbrush")


# --- Reason-Edit -----------------------------------------------------------------------------------------------


def _category(folder: Path, text_name: str, lines: list[str], stems: list[str]) -> None:
    for stem in stems:
        _image(folder / f"{stem}.png")
        _image(folder / f"{stem}_mask.jpg", (255, 255, 255))
    (folder / text_name).write_text("\n".join(lines) + "\n\n")


def _reason_edit(root: Path) -> Path:
    lines = ["make the left cup red CLIP: a red cup ", "shrink the dog CLIP:a small dog", "mirror it CLIP: a mirror"]
    _category(root / "1-Left-Right", "Left_Right_text.txt", lines, ["b", "c", "a"])  # written out of order
    _image(root / "1-Left-Right" / "c_mask.png")  # a mask saved as png is not a source
    _category(root / "Reason-Edit-Reasoning-231115", "Reason_test.txt", ["the fruit I eat CLIP: an apple"], ["x y"])
    return root


def test_reason_edit_pairs_sorted_sources_with_lines_masks_and_clip_texts(tmp_path):
    root = _reason_edit(tmp_path)
    dataset = load_dataset(str(root))
    assert (dataset.name, dataset.root, dataset.clip) == ("reason-edit", root, "clip-vit-large-patch14")
    assert dataset.columns == ("bg_psnr", "bg_ssim", "bg_lpips", "fg_clip")
    assert dataset.groups == {"understanding": ("1-Left-Right",), "reasoning": ("6-Reasoning",)}
    ids = ["1-Left-Right_a", "1-Left-Right_b", "1-Left-Right_c", "6-Reasoning_x_y"]
    assert [s.id for s in dataset.samples] == ids
    first, second, _, reasoning = (s.turns[0] for s in dataset.samples)
    assert (first.instruction, first.caption) == ("make the left cup red", "a red cup")
    assert (second.instruction, second.caption) == ("shrink the dog", "a small dog")
    folder = root / "1-Left-Right"
    assert (first.source, first.mask, first.target) == (folder / "a.png", folder / "a_mask.jpg", None)
    assert second.mask == folder / "b_mask.jpg"
    assert [s.category for s in dataset.samples] == ["1-Left-Right"] * 3 + ["6-Reasoning"]
    assert (reasoning.instruction, reasoning.caption) == ("the fruit I eat", "an apple")
    assert reasoning.source == root / "Reason-Edit-Reasoning-231115" / "x y.png"


def test_reason_edit_subset_and_errors(tmp_path):
    _category(tmp_path / "4-Color", "Color_text.txt", ["blue CLIP: blue", "green CLIP: green"], ["p", "q"])
    assert load_dataset(str(tmp_path)).groups == {"understanding": ("4-Color",)}
    _image(tmp_path / "4-Color" / "r.png")
    with pytest.raises(ValueError, match=r"4-Color: Color_text\.txt has 2 lines but there are 3 source images"):
        load_dataset(str(tmp_path))
    (tmp_path / "4-Color" / "Color_text.txt").write_text("blue CLIP: blue\ngreen, no marker\nred CLIP: red\n")
    with pytest.raises(ValueError, match=r"Color_text\.txt:2: expected '<instruction> CLIP: .*for q\.png"):
        load_dataset(str(tmp_path))
    (tmp_path / "4-Color" / "Color_text.txt").write_text("blue CLIP: blue\ngreen CLIP: green\nred CLIP: red\n")
    with pytest.raises(FileNotFoundError, match=r"Color_text\.txt:3: image .*r_mask\.jpg does not exist"):
        load_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="no Reason-Edit category folder"):
        load_dataset(str(tmp_path / "4-Color"), kind="reason-edit")


# --- edits.jsonl -----------------------------------------------------------------------------------------------


def _pairs(root: Path, extra: str = "") -> Path:
    for name in ("in/1.png", "in/2.png", "out/1.png", "out/2.png", "masks/1.png"):
        _image(root / name)
    lines = [
        {"input": "in/1.png", "instruction": "make it blue", "goal": "out/1.png", "caption": "blue"},
        {"input": "in/2.png", "instruction": "zoom", "goal": "out/2.png", "id": "a.b-1"},
    ]
    lines[0]["mask"] = "masks/1.png"
    (root / "edits.jsonl").write_text(json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n" + extra)
    return root


def test_pairs_default_ids_optional_fields_and_kinds(tmp_path):
    root = _pairs(tmp_path)
    dataset = load_dataset(str(root))
    assert (dataset.name, dataset.columns) == ("pairs", ("l1", "l2", "ssim", "lpips", "clip_i", "dino"))
    assert [s.id for s in dataset.samples] == ["000001", "a.b-1"]
    first, second = (s.turns[0] for s in dataset.samples)
    assert (first.source, first.target, first.mask) == (root / "in/1.png", root / "out/1.png", root / "masks/1.png")
    assert (first.instruction, first.caption, second.caption, second.mask) == ("make it blue", "blue", None, None)
    for kind, columns in (("evr", ("l1", "dino", "clip_i")), ("gier", ("l1", "ssim", "clip_i")), ("ma5k", None)):
        named = load_dataset(str(root), kind=kind)
        assert named.name == kind and named.columns == (columns or ("l1", "ssim", "lpips"))
        assert named.clip == "clip-vit-base-patch32" and named.samples == dataset.samples


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        ('{"input": "in/9.png", "instruction": "x", "goal": "out/1.png"}', FileNotFoundError, r":4: image .*in/9\.png"),
        ('{"input": "in/1.png", "instruction": "x"', ValueError, r"edits\.jsonl:4: not valid JSON"),
        ('{"input": "in/1.png", "instruction": "x", "target": "out/1.png"}', ValueError, r":4: unknown field.* target"),
        ('{"input": "in/1.png", "instruction": "", "goal": "out/1.png"}', ValueError, r":4: 'instruction' must be"),
        ('{"input": "in/1.png", "instruction": "x", "goal": "out/1.png", "id": "a b"}', ValueError, r":4: id 'a b'"),
        ('{"input": "in/1.png", "instruction": "x", "goal": "out/1.png", "id": "a.b-1"}', ValueError, "occurs twice"),
    ],
)  # fmt: skip
def test_pairs_errors_name_the_line(tmp_path, extra, error, message):
    with pytest.raises(error, match=message):
        load_dataset(str(_pairs(tmp_path, extra)))


# --- detection, limit, images ----------------------------------------------------------------------------------


def test_unrecognised_layouts_and_bad_arguments(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    expected = r"unrecognised dataset layout .*edit_sessions\.json.*1-Left-Right.*edits\.jsonl"
    with pytest.raises(ValueError, match=expected):
        load_dataset(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset folder .*missing does not exist"):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown dataset kind 'coco'"):
        load_dataset(str(tmp_path), kind="coco")
    with pytest.raises(FileNotFoundError, match=r"edit_sessions\.json not found"):
        load_dataset(str(_pairs(tmp_path)), kind="magicbrush")
    (tmp_path / "edits.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="the pairs dataset in .* has no samples"):
        load_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="limit must be a positive"):
        load_dataset(str(tmp_path), limit=0)
    for spec in ("demo:0", "demo:x"):
        with pytest.raises(ValueError, match="'demo:N' with N a positive"):
            load_dataset(spec)


def test_limit_keeps_the_first_samples_by_id(tmp_path):
    _image(tmp_path / "a.png")
    lines = [{"input": "a.png", "instruction": "x", "goal": "a.png", "id": name} for name in ("c", "a", "b")]
    (tmp_path / "edits.jsonl").write_text("\n".join(map(json.dumps, lines)))
    assert [s.id for s in load_dataset(str(tmp_path), limit=2).samples] == ["a", "b"]
    assert [s.id for s in load_dataset(str(tmp_path), limit=9).samples] == ["a", "b", "c"]


def test_open_image_reads_rgb_and_names_bad_files(tmp_path):
    grey = open_image(_image(tmp_path / "grey.png", (200, 0, 0), "L"))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (200, 200, 200)
    memory = Image.new("L", (3, 3), 9)
    assert open_image(memory).mode == "RGB" and memory.mode == "L"
    with pytest.raises(FileNotFoundError, match="gone.png"):
        open_image(tmp_path / "gone.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image .*junk.png"):
        open_image(tmp_path / "junk.png")

    # EXIF orientation is applied as the editors apply it (editor.images.load_image), once
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    wide.save(tmp_path / "turned.jpg", exif=exif)
    upright = open_image(tmp_path / "turned.jpg")
    assert upright.size == (20, 40) and load_image(upright).size == (20, 40)
    assert upright.tobytes() == load_image(tmp_path / "turned.jpg").tobytes()


# --- demo ------------------------------------------------------------------------------------------------------


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_demo_sessions_continue_the_eval_samples():
    dataset = load_dataset("demo:3")
    assert (dataset.name, dataset.root, dataset.clip) == ("demo", None, "clip-vit-base-patch32")
    assert dataset.groups == {"held-out": ("test", "combo", "paraphrase", "reasoning")}
    ids = [s.id for s in dataset.samples]
    assert len(ids) == len(set(ids)) == 12 and all(re.fullmatch(r"[A-Za-z0-9._-]+", i) for i in ids)
    for sample in dataset.samples:
        split, index = sample.id.rsplit("-", 1)
        assert sample.category == split and len(sample.turns) == eval_data.DEMO_TURNS == 3
        first = world.dataset(split, 3, seed=1)[int(index)]  # what `python -m editor.eval demo` scores
        assert sample.turns[0].reference == first and sample.turns[0].instruction == first.terse
        assert np.array_equal(_pixels(sample.turns[0].source), _pixels(world.render(first.source)))
        for before, turn in zip(sample.turns, sample.turns[1:], strict=False):
            assert turn.reference.source == before.reference.target and turn.reference.split == split
            assert np.array_equal(_pixels(turn.source), _pixels(before.target))
        for turn in sample.turns:
            edit = turn.reference
            assert (turn.caption, turn.instruction) == (edit.expressive, edit.terse)
            source, target = judge.as_float(turn.source), judge.as_float(turn.target)
            changed = np.abs(source - target).max(axis=2) > judge.CHANGE_THRESHOLD
            mask = _pixels(turn.mask) > 127
            assert turn.mask.mode == "L" and changed.any() and mask[changed].all()
            assert mask.all() == (edit.op == "tone") and set(np.unique(_pixels(turn.mask))) <= {0.0, 255.0}
            if split == "reasoning" and turn is sample.turns[1]:  # turn 2 never leaves a dead end for turn 3
                assert any(world.reasoning_references(edit.target.shapes, s) for s in edit.target.shapes)
    again = load_dataset("demo:3")
    assert again == dataset  # rendered images compare by pixels
    assert [s.id for s in load_dataset("demo:3", limit=4).samples] == ids[:4] == sorted(ids)[:4]


def test_demo_default_size_and_kind(monkeypatch):
    monkeypatch.setattr(eval_data, "DEMO_PER_SPLIT", 1)
    dataset = load_dataset("demo", kind="demo")
    assert isinstance(dataset, EvalDataset) and len(dataset.samples) == 4
    assert [s.id for s in dataset.samples] == ["combo-0000", "paraphrase-0000", "reasoning-0000", "test-0000"]
    with pytest.raises(ValueError, match="the demo world takes the spec 'demo' or 'demo:N'"):
        load_dataset("somewhere", kind="demo")


def test_reason_edit_masks_pair_by_name_not_by_sorted_position(tmp_path):
    folder = tmp_path / "3-Mirror"
    _category(folder, "Mirror_text.txt", ["one CLIP: 1", "ten CLIP: 10"], ["1", "10"])
    assert sorted(p.name for p in folder.glob("*_mask.jpg")) == ["10_mask.jpg", "1_mask.jpg"]  # the other order
    turns = [s.turns[0] for s in load_dataset(str(tmp_path)).samples]
    assert [(t.source.name, t.mask.name, t.caption) for t in turns] == [
        ("1.png", "1_mask.jpg", "1"),
        ("10.png", "10_mask.jpg", "10"),
    ]
