"""Streaming a render (progress, throttled previews, errors, cancellation) and the trade-off explorer."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from editor.core import EditResult
from editor.params import EditParams, Resolution
from editor.ui.explore import Sweep, explore, measure
from editor.ui.streaming import Progress, stream_render
from tests.fakes import FakeEditor

IMAGE = Image.new("RGB", (96, 64), (200, 40, 40))
PARAMS = EditParams(steps=5, seed=3, resolution=Resolution(size=64))


def _guidance(editor):
    return editor.think(IMAGE, "make it blue")


def test_stream_reports_every_step_then_the_result():
    editor = FakeEditor()
    items = list(stream_render(editor, IMAGE, _guidance(editor), PARAMS, preview_every=0.0))
    assert [i.index for i in items[:-1]] == [1, 2, 3, 4, 5] and isinstance(items[-1], EditResult)
    assert [i.preview is not None for i in items[:-1]] == [True] * 4 + [False]  # the final image replaces it
    assert items[-1].stats["preview_s"] >= 0
    quiet = list(stream_render(editor, IMAGE, _guidance(editor), PARAMS, preview_every=None))
    assert all(isinstance(i, Progress) and i.preview is None for i in quiet[:-1])


def test_previews_are_throttled_by_time():
    editor = FakeEditor(step_seconds=0.02)
    items = list(stream_render(editor, IMAGE, _guidance(editor), EditParams(steps=20, seed=1), preview_every=0.1))
    shots = sum(i.preview is not None for i in items[:-1])
    assert 1 <= shots <= 5  # 20 steps x 20 ms = 0.4 s: about one preview per 0.1 s, not one per step


def test_render_errors_reach_the_consumer():
    editor = FakeEditor(fail_at_step=2)
    with pytest.raises(ValueError, match="failed at step 2"):
        list(stream_render(editor, IMAGE, _guidance(editor), PARAMS))


def test_closing_the_stream_stops_the_render():
    editor = FakeEditor(step_seconds=0.01)
    seen = []
    params = EditParams(steps=200, seed=1)
    stream = stream_render(editor, IMAGE, _guidance(editor), params, preview_every=None)
    for item in stream:
        seen.append(item.index)
        if item.index == 3:
            stream.close()
            break
    assert seen == [1, 2, 3]


def test_sweep_parsing():
    sweep = Sweep.parse(1.0, 2.2, 0.2, "7.5")
    assert sweep.image_guidance == (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2) and sweep == Sweep()
    assert Sweep.parse(1.0, 1.5, 0.5, "5, 10").cells() == [(5.0, 1.0), (5.0, 1.5), (10.0, 1.0), (10.0, 1.5)]
    for args, message in [
        ((2.0, 1.0, 0.1, "7.5"), "start <= stop"),
        ((1.0, 2.0, 0.0, "7.5"), "step > 0"),
        ((1.0, 2.0, 0.5, "a, b"), "numbers separated by commas"),
        ((1.0, 2.0, 0.5, " "), "at least one"),
        ((1.0, 10.0, 0.1, "7.5"), "makes over 36 renders"),
        ((None, 2.0, 0.5, "7.5"), "αV start must be a number, got NoneType"),
        ((1.0, "2", 0.5, "7.5"), "αV stop must be a number, got str"),
        ((1.0, 2.0, [0.5], "7.5"), "αV step must be a number, got list"),
        ((1.0, 2.0, True, "7.5"), "αV step must be a number, got bool"),
        ((1.0, 2.0, 1e-320, "7.5"), "makes over 36 renders"),
        ((-1e308, 2.0, 0.5, "7.5"), r"αV start must be a number in \[0, 100\]"),
        ((1.0, float("nan"), 0.5, "7.5"), "αV stop must be a number in"),
        ((1.0, 2.0, 0.5, "1e400"), "αX value must be a number in"),
        ((1.0, 2.0, 0.5, None), "αX values must be text"),
    ]:
        with pytest.raises(ValueError, match=message):
            Sweep.parse(*args)


def test_explore_uses_one_seed_and_scores_every_cell():
    editor = FakeEditor()
    cells = list(explore(editor, IMAGE, _guidance(editor), PARAMS.with_seed(None), Sweep((1.0, 2.0, 4.0), (5.0,))))
    assert len({c.params.seed for c in cells}) == 1 and [c.params.image_guidance for c in cells] == [1.0, 2.0, 4.0]
    strength = [c.metrics["l1"] for c in cells]
    assert strength == sorted(strength, reverse=True)  # the fake edits less as αV grows
    assert "clip_i" not in cells[0].metrics


def test_measure_uses_the_clip_tower_when_there_is_one(mgie):
    a, b = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    same, other = measure(a, a, mgie), measure(a, b, mgie)
    assert same["clip_i"] == pytest.approx(1.0) and other["clip_i"] < 1.0
    assert torch.is_tensor(mgie.image_embedding(a)) and mgie.image_embedding(a).ndim == 1


def test_explore_embeds_the_shared_source_once():
    calls = []

    class WithClip(FakeEditor):
        def image_embedding(self, image):
            calls.append(image.size)
            return torch.tensor([float(sum(image.convert("L").getdata())), 1.0])

    editor = WithClip()
    cells = list(explore(editor, IMAGE, _guidance(editor), PARAMS, Sweep((1.0, 2.0, 4.0), (5.0,))))
    assert len(calls) == 1 + len(cells) and all("clip_i" in c.metrics for c in cells)
