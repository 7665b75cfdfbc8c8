"""The demo judge: the ground truth passes, the untouched source and collateral damage fail, facts parse."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from editor.demo import judge, world


def _sample(op: str, split: str = "test") -> world.Sample:
    return next(s for s in world.sample_stream(split, 11) if s.op == op)


def test_the_rendered_target_is_a_correct_edit_and_the_source_is_not():
    for op in ("recolour", "remove", "add", "move", "resize", "tone"):
        sample = _sample(op)
        perfect = judge.score(world.render(sample.target), sample)
        assert perfect.correct and perfect.l1 == 0.0
        assert perfect.background_psnr in (None, math.inf)
        unchanged = judge.score(world.render(sample.source), sample)
        assert not unchanged.correct, op


def test_damage_outside_the_edited_object_fails_and_lowers_background_psnr():
    sample = _sample("recolour")
    target = np.asarray(world.render(sample.target)).copy()
    target[:8, :8] = 255  # a white block in a corner
    score = judge.score(Image.fromarray(target), sample)
    region = judge.changed_region(
        judge.as_float(world.render(sample.source)), judge.as_float(world.render(sample.target)), False
    )
    if not region[:8, :8].any():
        assert not score.correct
    assert score.background_psnr < 30


def test_facts_and_expressive_accuracy():
    assert judge.facts("the small red circle at the top left turns blue.") == (
        "small", "red", "circle", "top", "left", "turns", "blue",
    )  # fmt: skip
    sample = _sample("recolour")
    assert judge.expressive_correct(sample.expressive, sample)
    assert judge.expressive_correct(sample.expressive.upper() + " indeed", sample)
    wrong = sample.expressive.replace(" turns ", " becomes ")
    assert not judge.expressive_correct(wrong, sample)
