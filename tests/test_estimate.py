"""The time estimate next to Edit: the pure estimate and its words, the timings it is made of, and the handler that
shows it (wired to every setting it depends on, updated by each edit)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from editor.core import EditResult
from editor.params import EditParams, Resolution
from editor.ui.estimate import (
    CPU_STEP_S,
    Estimate,
    Timings,
    branches,
    duration_text,
    estimate,
    estimate_text,
    render_device,
)
from editor.ui.streaming import Progress, stream_render
from tests.fakes import SETTINGS, FakeEditor, fake_ui

MP_512 = 512 * 512 / 1e6


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)


def test_durations_in_words():
    assert [duration_text(s) for s in (31, 44, 89, 90, 200, 5399, 5400, 9000)] == [
        "about 30 s", "about 45 s", "about 90 s", "about 2 min", "about 3 min", "about 90 min", "about 1.5 h",
        "about 2.5 h",
    ]  # fmt: skip


def test_a_published_model_on_a_cpu_starts_from_the_rough_figure(one_thread):
    found = estimate(Timings(), "mgie-7b", "cpu", 50, (512, 512), 3)
    step_s = CPU_STEP_S * MP_512 * 3
    assert found == Estimate(pytest.approx(50 * step_s), 50, pytest.approx(step_s), None, "cpu", None)
    assert found.think_s is None  # MGIE's thinking: not known before its first think
    minutes = round(50 * step_s / 60)
    rough = f"About {minutes} min on this CPU plus thinking (rough estimate until the first edit)"
    assert estimate_text(found) == rough
    quick = estimate(Timings(), "instruct-pix2pix", "cpu", 50, (512, 512), 3)
    assert quick.think_s == 0.0 and "thinking" not in estimate_text(quick)  # its "thinking" is a text encoder


def test_the_rough_figure_spreads_over_torchs_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert estimate(Timings(), "mgie-7b", "cpu", 10, (512, 512), 1).step_s == pytest.approx(CPU_STEP_S * MP_512 / 4)


def test_no_estimate_without_a_figure_or_for_a_short_edit(one_thread):
    timings = Timings()
    assert estimate(timings, "mgie-demo", "cpu", 150, (1024, 1024), 3) is None  # no rough figure for small models
    assert estimate(timings, "mgie-7b", "cuda", 150, (1024, 1024), 3) is None  # GPUs: only measured figures
    assert estimate(timings, "mgie-7b", None, 150, (1024, 1024), 3) is None  # the device is not known
    assert estimate_text(None) == ""
    short = estimate(timings, "instruct-pix2pix", "cpu", 1, (64, 64), 1)
    assert short.seconds < 30 and estimate_text(short) == ""


def test_guidance_branches_follow_diffusers_rule():
    assert branches(7.5, 1.5) == 3 and branches(7.5, 1.0) == 3
    assert branches(1.0, 1.5) == 1  # αX 1: guidance off, one image per UNet call
    on, off = (estimate(Timings(), "magicbrush", "cpu", 20, (512, 512), n) for n in (3, 1))
    assert on.step_s == pytest.approx(3 * off.step_s)


def result(width: int, height: int, params: EditParams) -> EditResult:
    picture = Image.new("RGB", (width, height))
    guidance = SimpleNamespace(stats={})
    return EditResult(picture, picture, guidance, params.with_seed(1))


def stream(at: list[float], final: EditResult | None):
    yield from (Progress(i + 1, len(at), None, t) for i, t in enumerate(at))
    if final is not None:
        yield final


def test_timings_measure_the_steps_of_a_finished_render_and_say_so():
    timings = Timings()
    params = EditParams(steps=3, resolution=Resolution("keep_aspect", 512))
    items = list(timings.watch("mgie-demo", stream([10.0, 12.0, 14.0], None)))  # stopped: no result
    assert len(items) == 3 and timings.rate("mgie-demo", "cpu") is None
    list(timings.watch("mgie-demo", stream([10.0, 12.0, 14.0], result(512, 256, params))))  # 2 s a step
    rate = timings.rate("mgie-demo", "cuda")  # measured: on any device
    assert rate.measured_at == (512, 256) and rate.seconds == pytest.approx(2 / (512 * 256 / 1e6) / 3)
    timings.thought("mgie-demo", SimpleNamespace(stats={"think_s": 12.4}))
    timings.thought("mgie-demo", SimpleNamespace(stats={}))  # a rewritten expressive text: nothing thought
    found = estimate(timings, "mgie-demo", "cuda", 40, (512, 512), 3)
    assert found.step_s == pytest.approx(4.0) and found.seconds == pytest.approx(40 * 4 + 12.4)
    assert estimate_text(found) == "About 3 min on this GPU (estimate from the last edit, at 512 × 256 px)"
    list(timings.watch("mgie-demo", stream([5.0], result(64, 64, params))))  # one step: no interval to measure
    assert timings.rate("mgie-demo", "cpu") == rate


def test_each_step_is_timed_in_the_render_thread():
    editor = FakeEditor(step_seconds=0.05)
    params = EditParams(steps=4, seed=1, resolution=Resolution(size=64))
    picture = Image.new("RGB", (64, 64))
    *steps, _ = stream_render(editor, picture, editor.think(picture, "x"), params, preview_every=None)
    gaps = [b.at - a.at for a, b in zip(steps, steps[1:], strict=False)]
    assert len(gaps) == 3 and all(0.04 <= gap < 1.0 for gap in gaps), gaps


def test_the_device_is_the_pipelines_execution_device():
    assert render_device(SimpleNamespace(pipe=SimpleNamespace(_execution_device=torch.device("cuda", 0)))) == "cuda"
    assert render_device(SimpleNamespace(device=torch.device("cpu"))) == "cpu"
    assert render_device(object()) is None


def test_the_plan_next_to_edit_gives_the_estimate_and_updates_it_with_real_timings(one_thread):
    editor = FakeEditor(name="instruct-pix2pix", step_seconds=0.02)
    ui = fake_ui(editor)
    handlers, w = ui.handlers, ui.widgets
    photo = Image.new("RGB", (512, 320))
    before = handlers.size_plan("instruct-pix2pix", photo, "keep_aspect", 1024, 150, 7.5, 1.5)[w.plan]
    assert before.startswith("Edits at **1024 × 640 px**. About ")
    assert before.endswith(" on this CPU (rough estimate until the first edit)")  # IP2P's "thinking": known
    short = handlers.plan_text("instruct-pix2pix", photo, "keep_aspect", 64, 2, 7.5, 1.5)
    assert short == "Edits at **64 × 40 px**; your 512 × 320 image is scaled down to it"  # too short to estimate
    steps, text, picture, seed, randomize, resize, size = SETTINGS
    list(handlers.edit("instruct-pix2pix", photo, "make it blue", "", 5, text, picture, seed, randomize, resize, size,
                       None))  # fmt: skip
    after = handlers.plan_text("instruct-pix2pix", photo, "keep_aspect", 1024, 150, 7.5, 1.5)
    assert after.endswith(" on this CPU (estimate from the last edit, at 64 × 40 px)")
    timings = handlers.timings  # the fake's steps (20 ms each at 64 × 40), scaled to 150 steps at 1024 × 640
    seconds = 150 * timings.rate("instruct-pix2pix", "cpu").seconds * 1024 * 640 / 1e6 * 3
    seconds += timings.think_s("instruct-pix2pix")
    said = duration_text(seconds).capitalize()
    assert after == f"Edits at **1024 × 640 px**. {said} on this CPU (estimate from the last edit, at 64 × 40 px)"
    assert handlers.plan_text("instruct-pix2pix", photo, "keep_aspect", 1024, 1, 1.0, 1.5) == (
        "Edits at **1024 × 640 px**"
    )  # one step without guidance: short
    assert handlers.plan_text("fake", photo, "keep_aspect", 1024, 150, 7.5, 1.5) == ""  # not a model of the app


def test_the_plan_follows_every_setting_and_each_render():
    ui = fake_ui(FakeEditor(), FakeEditor(name="other"))
    w, config = ui.widgets, ui.demo.config
    fns = {i: d for i, d in enumerate(config["dependencies"])}
    plans = [d for d in fns.values() if d["outputs"] == [w.plan._id]]
    changes = {target for d in plans for target in map(tuple, d["targets"])}
    for widget in (w.image, w.size, w.resize, w.model, w.steps, w.text_guidance, w.image_guidance):
        assert (widget._id, "change") in changes, widget.label
    after = {fns[d["trigger_after"]].get("api_name") for d in plans if d.get("trigger_after") is not None}
    assert after == {"edit", "variations", "compare"}
    assert all(d["trigger_only_on_success"] for d in plans if d.get("trigger_after") is not None)
