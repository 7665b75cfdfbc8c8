"""Cancelling a render, and renders that overlap: each render owns its scheduler, so a render that starts while a
cancelled one is still stepping gives exactly the image of a clean run (the tiny MGIE on the CPU)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
from PIL import Image

from editor.params import EditParams, Resolution
from editor.ui.explore import Sweep, explore
from editor.ui.state import fresh
from editor.ui.streaming import Progress, stream_render

IMAGE = Image.new("RGB", (64, 48), (40, 160, 90))
PARAMS = EditParams(steps=6, seed=7, resolution=Resolution(size=64))


@contextmanager
def slow_unet(editor, seconds: float):
    """Every UNet call sleeps first (so renders overlap for sure) and is counted."""
    calls = []

    def pause(_module, _args):
        calls.append(threading.current_thread().name)
        time.sleep(seconds)

    handle = editor.pipe.unet.register_forward_pre_hook(pause)
    try:
        yield calls
    finally:
        handle.remove()


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_overlapping_renders_each_own_their_scheduler(mgie):
    guidance = mgie.think(IMAGE, "make it blue")
    clean = {seed: _pixels(mgie.render(IMAGE, guidance, replace(PARAMS, seed=seed)).image) for seed in (7, 8)}
    with slow_unet(mgie, 0.02), ThreadPoolExecutor(2) as pool:
        first = pool.submit(mgie.render, IMAGE, guidance, PARAMS)
        time.sleep(0.05)  # the first render is mid-way when the second starts
        second = pool.submit(mgie.render, IMAGE, guidance, replace(PARAMS, seed=8))
        results = first.result(), second.result()
    assert (_pixels(results[0].image) == clean[7]).all() and (_pixels(results[1].image) == clean[8]).all()


def test_a_cancelled_render_stops_at_its_next_step_and_a_rerun_equals_a_clean_run(mgie):
    guidance = mgie.think(IMAGE, "make it blue")
    clean = _pixels(mgie.render(IMAGE, guidance, PARAMS).image)
    with slow_unet(mgie, 0.03) as calls:
        stream = stream_render(mgie, IMAGE, guidance, replace(PARAMS, steps=60), preview_every=None)
        for item in stream:
            assert isinstance(item, Progress)
            if item.index == 2:
                started = len(calls)  # UNet calls the cancelled render had begun
                stream.close()  # what a client disconnect or /cancel does
                break
        rerun = list(stream_render(mgie, IMAGE, guidance, PARAMS, preview_every=None))[-1]
    assert (_pixels(rerun.image) == clean).all()  # same seed, identical to the clean run
    cancelled = len(calls) - PARAMS.steps  # the rerun makes one UNet call per step, after the cancelled one ended
    assert started <= cancelled <= started + 1  # the cancelled render stopped at its next step (of 60)


def test_the_explorers_stop_ends_its_cell_at_the_next_step_and_renders_no_other(mgie):
    guidance = mgie.think(IMAGE, "make it blue")
    stop, calls = threading.Event(), []

    def pause(_module, _args):
        calls.append(1)
        if len(calls) == 3:
            stop.set()  # what the explorer's Stop does (Handlers.halted), mid-way through the first cell
        time.sleep(0.01)

    handle = mgie.pipe.unet.register_forward_pre_hook(pause)
    try:
        cells = list(explore(mgie, IMAGE, guidance, replace(PARAMS, steps=60), Sweep((1.0, 1.5, 2.0), (5.0,)), stop))
    finally:
        handle.remove()
    assert cells == [] and len(calls) <= 4  # the cell ended at its next step (of 60); no other cell started


def test_the_compare_tabs_stop_ends_the_render_and_shows_what_finished():
    from tests.fakes import fake_ui

    ui = fake_ui()
    handlers, w = ui.handlers, ui.widgets
    state = fresh(None)
    started = threading.Event()

    def slow(*_args):
        started.set()
        while not state.stop.is_set():  # a render that would go on until stopped
            time.sleep(0.01)
        yield Progress(1, 60, None, 0.0)

    handlers._render = slow
    with ThreadPoolExecutor(1) as pool:
        shown = pool.submit(handlers.compare, "fake", "fake", IMAGE, "make it blue", 60, 7.5, 1.5, 1, False,
                            "keep_aspect", 64, state)  # fmt: skip
        assert started.wait(10)
        handlers.halted(state)
        result = shown.result(timeout=10)
    assert result == {w.seed: 1}  # neither side was rendered to the end, nothing else ran
