"""The session tree: turns, undo, revert, branches, and the exported archive restoring exactly."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from editor.params import EditParams
from editor.ui.history import History, image_key


def _image(seed: int, size=(24, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _edit(history: History, image: Image.Image, instruction: str, seed: int) -> int:
    """What the UI does: find the parent, render (here: a random picture), commit."""
    parent = history.parent_for(image)
    if parent is None:
        history.origin = image
    turn = history.add(
        parent,
        model="fake",
        instruction=instruction,
        expressive=f"{instruction}, expressively",
        raw_text=f"{instruction} [IMG0]",
        guidance_source="generated",
        params=EditParams(steps=3, seed=seed),
        input=image,
        output=_image(seed),
        stats={"render_s": 0.5},
    )
    return turn.id


def _three_turns() -> tuple[History, Image.Image]:
    history, upload = History(), _image(100, size=(48, 32))
    _edit(history, upload, "one", 1)
    _edit(history, history.current_input(), "two", 2)
    _edit(history, history.current_input(), "three", 3)
    return history, upload


def test_turns_chain_outputs_into_inputs():
    history, upload = _three_turns()
    assert [t.parent for t in history.turns] == [None, 0, 1] and history.head == 2
    assert history.turns[0].input is upload and history.turns[1].input is history.turns[0].output
    assert history.lineage() == [0, 1, 2]


def test_undo_revert_and_branching_keep_everything_reachable():
    history, upload = _three_turns()
    history.undo()
    assert history.head == 1 and image_key(history.current_input()) == image_key(history.turns[1].output)
    branch = _edit(history, history.current_input(), "two, other way", 4)  # edit after undo: a new branch
    assert history.turns[branch].parent == 1 and len(history.turns) == 4
    history.revert(2)  # the old branch is still there
    assert history.lineage() == [0, 1, 2]
    history.undo(), history.undo(), history.undo()
    assert history.head is None and history.current_input() is upload
    with pytest.raises(ValueError, match="nothing to undo"):
        history.undo()
    with pytest.raises(ValueError, match="no turn 9"):
        history.revert(9)


def test_a_reuploaded_result_continues_its_turn_and_a_new_picture_starts_a_root():
    history, _ = _three_turns()
    history.undo()
    reupload = history.turns[2].output.copy()
    assert history.parent_for(reupload) == 2
    assert history.parent_for(_image(999)) is None


def test_archive_restores_exactly(tmp_path):
    history, _ = _three_turns()
    history.undo()
    _edit(history, history.current_input(), "branch", 7)
    path = history.to_archive(tmp_path / "s.zip")
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        assert names == ["images/0000.png", "images/0001.png", "images/0002.png", "images/0003.png",
                         "images/0004.png", "session.json"]  # fmt: skip  # 1 upload + 4 outputs, each once
        record = json.loads(archive.read("session.json"))
    assert record["head"] == 3 and record["turns"][3]["params"]["seed"] == 7

    restored = History.from_archive(path)
    assert restored.head == history.head and len(restored.turns) == 4
    for old, new in zip(history.turns, restored.turns, strict=True):
        assert (old.id, old.parent, old.instruction, old.expressive, old.params, old.stats, old.created) == (
            new.id, new.parent, new.instruction, new.expressive, new.params, new.stats, new.created
        )  # fmt: skip
        assert image_key(old.input) == image_key(new.input) and image_key(old.output) == image_key(new.output)
    assert restored.turns[1].input is restored.turns[0].output  # shared, as before
    assert History.from_archive(path.read_bytes()).head == 3


def _rewrite(tmp_path, path, edit) -> bytes:
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    record = json.loads(files["session.json"])
    edit(record, files)
    files["session.json"] = json.dumps(record).encode()
    out = tmp_path / "bad.zip"
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.read_bytes()


def test_bad_archives_are_named(tmp_path):
    history, _ = _three_turns()
    path = history.to_archive(tmp_path / "s.zip")
    with pytest.raises(ValueError, match="not a session archive"):
        History.from_archive(b"PNG? no")
    cases = [
        (lambda r, f: r.update(version=99), "version 99"),
        (lambda r, f: r.update(format="other"), "lacks format"),
        (lambda r, f: f.pop("images/0002.png"), "not in the zip"),
        (lambda r, f: r["turns"][1]["params"].update(steps=0), "turn 1 is invalid: steps must be"),
        (lambda r, f: r["turns"][2].update(parent=5), "turn 2 has parent 5"),
        (lambda r, f: r["turns"][0].pop("instruction"), "turn 0 is invalid"),
        (lambda r, f: f.update({"images/0001.png": b"garbage"}), "image"),
        (lambda r, f: r.update(head=7), "no turn 7"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            History.from_archive(_rewrite(tmp_path, path, edit))


def test_the_original_of_a_branch_and_going_back_to_it():
    upload, other = _image(7), _image(8)
    history = History(origin=upload)
    assert history.original() is upload
    _edit(history, upload, "one", 1)
    _edit(history, history.current_input(), "two", 2)
    history.origin = other  # a new upload meanwhile: the branch's original is still the one it started from
    assert history.original() is upload
    history.go_to_original()
    assert history.head is None and history.current_input() is upload
    with pytest.raises(ValueError, match="no image yet"):
        History().go_to_original()
