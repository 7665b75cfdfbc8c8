"""The shapes world: seeded, held-out splits really held out, references unique, ground truth rendered."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import replace

import numpy as np
import pytest

from editor.demo import world
from editor.demo.world import Background, Scene, Shape

BG = Background((60, 60, 60), (90, 80, 70), 0.3, 0.0, 1.0, 0.0)


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) + "$")


def _matches(terse: str, held_out: bool) -> bool:
    templates = [t for train, held in world.TEMPLATES.values() for t in (held if held_out else train)]
    return any(_template_regex(t).match(terse) for t in templates)


def test_samples_and_renders_are_reproducible():
    a, b = world.dataset("train", 40, seed=3), world.dataset("train", 40, seed=3)
    assert a == b
    assert world.dataset("train", 40, seed=4) != a
    assert np.array_equal(np.asarray(world.render(a[0].source)), np.asarray(world.render(b[0].source)))
    assert world.render(a[0].source).size == (world.SIZE, world.SIZE)


def test_training_never_draws_held_out_combinations_or_paraphrases():
    for sample in world.dataset("train", 400, seed=0):
        for scene in (sample.source, sample.target):
            assert not {(s.kind, s.colour) for s in scene.shapes} & world.HELD_OUT_COMBOS
        assert _matches(sample.terse, held_out=False), sample.terse
    for sample in world.dataset("paraphrase", 100, seed=1):
        assert _matches(sample.terse, held_out=True), sample.terse


def test_combo_split_edits_a_held_out_combination():
    for sample in world.dataset("combo", 100, seed=1):
        edited = (set(sample.source.shapes) ^ set(sample.target.shapes)) or set(sample.source.shapes)
        assert {(s.kind, s.colour) for s in edited} & world.HELD_OUT_COMBOS, sample.terse


def test_reasoning_references_resolve_to_the_edited_object():
    circle = Shape("circle", "red", "small", (0, 1))
    square = Shape("square", "blue", "large", (1, 1))
    pentagon = Shape("pentagon", "green", "small", (2, 1))
    shapes = (circle, square, pentagon)
    assert "the shape with the most corners" in world.reasoning_references(shapes, pentagon)
    assert "the shape with the fewest corners" in world.reasoning_references(shapes, circle)
    assert "the shape left of the square" in world.reasoning_references(shapes, circle)
    assert "the shape right of the square" in world.reasoning_references(shapes, pentagon)
    # two shapes are left of the pentagon: the relation does not pick one out
    assert not [r for r in world.reasoning_references(shapes, circle) if "left of the pentagon" in r]
    assert world.plain_references(shapes, square)[0] == "the square"
    reasoning = world.dataset("reasoning", 60, seed=1)
    assert all(s.reasoning and s.op not in ("add", "tone") for s in reasoning)


def test_canonical_terse_is_a_training_form_naming_the_edited_object_by_place():
    scene = Scene(BG, (Shape("circle", "red", "small", (0, 1)), Shape("square", "blue", "large", (1, 1))))
    recolour = world.Sample(scene, replace(scene, shapes=(scene.shapes[0], replace(scene.shapes[1], colour="green"))),
                            "recolour", "green for the blue one", "", "test", False)  # fmt: skip
    assert world.canonical_terse(recolour) == "make the square at the centre green"
    for split in world.SPLITS:
        for sample in world.dataset(split, 200, seed=5):
            text = world.canonical_terse(sample)
            assert _matches(text, held_out=False), text  # the words the ablation's text encoder learnt
            if sample.op in ("recolour", "remove", "move", "resize"):
                (old,) = [s for s in sample.source.shapes if s not in sample.target.shapes]
                ref = f"the {old.kind} at the {world.CELL_NAMES[old.cell]}"
                assert ref in text and ref in world.plain_references(sample.source.shapes, old), (text, sample)
            elif sample.op == "add":
                assert sample.expressive == f"a {text.removeprefix('add a ')}.".replace(" at the ", " appears at the ")
            else:
                assert text == world.TEMPLATES[sample.target.tone][0][0]


def test_expressive_text_names_the_object_fully():
    sample = next(s for s in world.dataset("test", 50, seed=2) if s.op == "recolour")
    (old,) = set(sample.source.shapes) - set(sample.target.shapes)
    (new,) = set(sample.target.shapes) - set(sample.source.shapes)
    assert sample.expressive == f"the {old.describe()} turns {new.colour}."


@pytest.mark.parametrize("op", ["recolour", "remove", "move", "resize", "add"])
def test_ground_truth_changes_only_the_edited_object(op):
    rng = random.Random(5)
    sample = next(s for s in iter(lambda: world.make_sample(rng, "test"), None) if s.op == op)
    source, target = world.render_array(sample.source), world.render_array(sample.target)
    changed = np.abs(source - target).max(axis=2) > 2
    assert changed.any()
    touched = set(sample.source.shapes) ^ set(sample.target.shapes)
    cells = {s.cell for s in touched}
    ys, xs = np.nonzero(changed)
    cell = world.SIZE / world.GRID
    assert {(int(x // cell), int(y // cell)) for x, y in zip(xs, ys, strict=True)} <= cells


def test_tone_edits_change_the_whole_picture():
    scene = Scene(BG, (Shape("square", "white", "large", (1, 1)),))
    brighter = world.render_array(Scene(BG, scene.shapes, tone="brighter"))
    assert (brighter >= world.render_array(scene) - 1e-6).all()
    with pytest.raises(ValueError, match="unknown split"):
        world.make_sample(random.Random(0), "validation")


def test_existing_samples_are_unchanged():
    """Pinned before `edit_scene` existed: make_sample / dataset draw exactly what they drew before."""
    digest = hashlib.sha256()
    for seed in (0, 1):
        for split in world.SPLITS:
            for sample in world.dataset(split, 40, seed):
                digest.update(repr(sample).encode())
    assert digest.hexdigest() == "49bd57ccc2a956f7911447a3613bc1ace598be5189d58103e1520cc9415ad933"
    assert [s.terse for s in world.dataset("reasoning", 3, 1)] == [
        "make the shape left of the red one red",
        "remove the shape above the purple one",
        "put the shape with the most corners at the top",
    ]
    first = world.dataset("test", 1, 1)[0]
    assert (first.op, first.terse) == ("add", "put a large cyan pentagon at the top")
    assert first.source.shapes[0] == Shape("circle", "purple", "small", (0, 0), (2, 3))
    assert first.target.shapes[-1] == Shape("pentagon", "cyan", "large", (1, 0), (0, 0))
    rng = random.Random(7)
    for split in world.SPLITS:
        world.make_sample(rng, split)
    assert rng.random() == 0.17000365997189548  # the same number of draws


@pytest.mark.parametrize("split", world.SPLITS)
def test_edit_scene_continues_the_given_scene_with_the_split_rules(split):
    for index, first in enumerate(world.dataset(split, 30, seed=1)):
        sample = world.edit_scene(random.Random(index), first.target, split)
        assert sample.source == first.target and sample.split == split
        assert sample.target != sample.source
        assert np.abs(world.render_array(sample.source) - world.render_array(sample.target)).max() > 2
        if split == "paraphrase":
            assert _matches(sample.terse, held_out=True), sample.terse
        if split == "combo":
            edited = (set(sample.source.shapes) ^ set(sample.target.shapes)) or set(sample.source.shapes)
            assert {(s.kind, s.colour) for s in edited} & world.HELD_OUT_COMBOS, sample.terse
        if split != "combo":
            assert not {(s.kind, s.colour) for s in sample.target.shapes} & world.HELD_OUT_COMBOS
        if split == "reasoning" and sample.op == "add":  # only when nothing can be referred to relationally
            shapes = sample.source.shapes
            assert not any(world.reasoning_references(shapes, s) for s in shapes)
        elif split == "reasoning":
            assert sample.reasoning and sample.op != "tone"


def test_edit_scene_redraws_impossible_edits():
    full = Scene(BG, tuple(Shape("square", "red", "small", cell) for cell in sorted(world.CELL_NAMES)), "darker")
    for seed in range(20):  # no free cell for add / move, already toned: recolour, remove or resize
        assert world.edit_scene(random.Random(seed), full, "test").op in ("recolour", "remove", "resize")
    empty = Scene(BG, (), "warmer")
    assert {world.edit_scene(random.Random(seed), empty, "test").op for seed in range(20)} == {"add"}
    single = Scene(BG, (Shape("circle", "red", "small", (1, 1)),))
    sample = world.edit_scene(random.Random(0), single, "reasoning")
    assert sample.op == "add" and not sample.reasoning and len(sample.target.shapes) == 2
    with pytest.raises(ValueError, match="unknown split"):
        world.edit_scene(random.Random(0), single, "validation")
