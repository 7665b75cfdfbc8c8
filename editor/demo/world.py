"""A procedural world of coloured shapes on textured backgrounds, with edits whose results are rendered, not drawn.

Each `Sample` is (source scene, target scene) plus three texts, as MGIE and SmartEdit train on:
  - `terse`: what a user types ("make the big one blue", "blue for the large square");
  - `expressive`: the visual result spelled out, MGIE's instruction-loss target ("the large red square at the left
    turns blue.");
  - reasoning samples refer to the object by a relation instead ("remove the shape with the most corners",
    "recolour the shape left of the circle"), in the spirit of SmartEdit's Reason-Edit.
Scenes are 64 x 64 RGB: a 3 x 3 grid of cells, at most one shape per cell, 1-4 shapes. Everything is seeded.

Splits (`SPLITS`): `train`; `test` (unseen scenes); `combo` (the edited object has a shape/colour pair never drawn
in training); `paraphrase` (instruction templates never used in training); `reasoning` (unseen scenes, relational
references only).

Multi-turn sessions: `edit_scene` draws a further edit of a given scene (e.g. the previous edit's target) with a
split's rules, so that `make_sample`'s first edit can be continued; `make_sample` and `dataset` are unaffected.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
GRID = 3
SUPERSAMPLE = 4
KINDS = ("circle", "triangle", "square", "pentagon")
CORNERS = {"circle": 0, "triangle": 3, "square": 4, "pentagon": 5}
COLOURS = {
    "red": (225, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 30),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
}
RADIUS = {"small": 6, "large": 10}
CELL_NAMES = {
    (0, 0): "top left", (1, 0): "top", (2, 0): "top right",
    (0, 1): "left", (1, 1): "centre", (2, 1): "right",
    (0, 2): "bottom left", (1, 2): "bottom", (2, 2): "bottom right",
}  # fmt: skip
TONES = {"brighter": (1.3, 0, 0), "darker": (0.7, 0, 0), "warmer": (1.0, 30, -30), "cooler": (1.0, -30, 30)}
HELD_OUT_COMBOS = frozenset({("circle", "yellow"), ("square", "purple"), ("triangle", "cyan"), ("pentagon", "red")})
SPLITS = ("train", "test", "combo", "paraphrase", "reasoning")
OPS = ("recolour", "remove", "add", "move", "resize", "tone")
OP_WEIGHTS = (3, 2, 2, 2, 2, 1)


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    cell: tuple[int, int]  # (column, row)
    offset: tuple[int, int] = (0, 0)  # jitter inside the cell, pixels

    def describe(self) -> str:
        return f"{self.size} {self.colour} {self.kind} at the {CELL_NAMES[self.cell]}"


@dataclass(frozen=True)
class Background:
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    angle: float  # gradient direction, radians
    texture: float  # amplitude of the low-frequency wave texture (0: plain gradient)
    frequency: float
    phase: float


@dataclass(frozen=True)
class Scene:
    background: Background
    shapes: tuple[Shape, ...]
    tone: str | None = None  # a global edit applied on top of the drawing


@dataclass(frozen=True)
class Sample:
    source: Scene
    target: Scene
    op: str
    terse: str
    expressive: str
    split: str
    reasoning: bool


# --- rendering ---------------------------------------------------------------------------------------------------


def _background(bg: Background) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    t = (x * math.cos(bg.angle) + y * math.sin(bg.angle) + 1.0) / 2.0
    image = (1 - t)[..., None] * np.array(bg.colour_a) + t[..., None] * np.array(bg.colour_b)
    wave = np.sin(2 * math.pi * bg.frequency * (x * math.sin(bg.angle) - y * math.cos(bg.angle)) + bg.phase)
    return image + bg.texture * wave[..., None]


def _outline(shape: Shape) -> tuple[str, list[tuple[float, float]]]:
    cell = SIZE / GRID
    cx = (shape.cell[0] + 0.5) * cell + shape.offset[0]
    cy = (shape.cell[1] + 0.5) * cell + shape.offset[1]
    r = RADIUS[shape.size]
    if shape.kind == "circle":
        return "ellipse", [(cx - r, cy - r), (cx + r, cy + r)]
    if shape.kind == "square":
        h = r * 0.85
        return "polygon", [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    n = CORNERS[shape.kind]
    start = -math.pi / 2
    return "polygon", [
        (cx + r * math.cos(start + 2 * math.pi * i / n), cy + r * math.sin(start + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _shape_layer(shapes: tuple[Shape, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Colour and coverage (0..1, anti-aliased by supersampling) of the shapes."""
    big = SIZE * SUPERSAMPLE
    colour = Image.new("RGB", (big, big))
    alpha = Image.new("L", (big, big))
    paint, cover = ImageDraw.Draw(colour), ImageDraw.Draw(alpha)
    for shape in shapes:
        kind, points = _outline(shape)
        points = [(px * SUPERSAMPLE, py * SUPERSAMPLE) for px, py in points]
        fill = COLOURS[shape.colour]
        getattr(paint, kind)(points, fill=fill)
        getattr(cover, kind)(points, fill=255)
    colour = colour.resize((SIZE, SIZE), Image.Resampling.BOX)
    alpha = alpha.resize((SIZE, SIZE), Image.Resampling.BOX)
    a = np.asarray(alpha, dtype=np.float32)[..., None] / 255
    rgb = np.asarray(colour, dtype=np.float32) / np.maximum(a, 1e-6)  # un-premultiply the box filter's edge mix
    return rgb, a


def render_array(scene: Scene) -> np.ndarray:
    """The scene as float32 H x W x 3 in [0, 255]."""
    rgb, a = _shape_layer(scene.shapes)
    image = _background(scene.background) * (1 - a) + rgb * a
    if scene.tone:
        gain, dr, db = TONES[scene.tone]
        image = image * gain + np.array([dr, 0.0, db])
    return np.clip(image, 0, 255)


def render(scene: Scene) -> Image.Image:
    return Image.fromarray(np.round(render_array(scene)).astype(np.uint8))


# --- scenes ------------------------------------------------------------------------------------------------------


def _allowed(kind: str, colour: str, split: str) -> bool:
    return split == "combo" or (kind, colour) not in HELD_OUT_COMBOS


def random_background(rng: random.Random) -> Background:
    def muted() -> tuple[int, int, int]:
        grey = rng.randint(35, 115)
        return tuple(min(255, max(0, grey + rng.randint(-22, 22))) for _ in range(3))

    textured = rng.random() < 0.5
    return Background(
        muted(), muted(), rng.uniform(0, 2 * math.pi), rng.uniform(6, 14) if textured else 0.0,
        rng.uniform(1.0, 2.5), rng.uniform(0, 2 * math.pi),
    )  # fmt: skip


def random_shape(rng: random.Random, cell: tuple[int, int], split: str) -> Shape:
    while True:
        kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
        if _allowed(kind, colour, split):
            break
    size = rng.choice(list(RADIUS))
    slack = int(SIZE / GRID / 2 - RADIUS[size] - 1)
    return Shape(kind, colour, size, cell, (rng.randint(-slack, slack), rng.randint(-slack, slack)))


def random_scene(rng: random.Random, split: str, count: int) -> Scene:
    cells = rng.sample(sorted(CELL_NAMES), count)
    return Scene(random_background(rng), tuple(random_shape(rng, cell, split) for cell in cells))


def _placed(shape: Shape, **changes) -> Shape:
    """`shape` with `changes`, re-jittered within the (maybe new) cell so that it stays inside."""
    moved = replace(shape, **changes)
    slack = int(SIZE / GRID / 2 - RADIUS[moved.size] - 1)
    ox, oy = (max(-slack, min(slack, v)) for v in moved.offset)
    return replace(moved, offset=(ox, oy))


# --- references and texts ----------------------------------------------------------------------------------------


def plain_references(shapes: tuple[Shape, ...], target: Shape) -> list[str]:
    """Every attribute-based phrase that picks out `target` alone among `shapes`."""
    forms = [
        ("the {kind}", lambda s: s.kind == target.kind),
        ("the {colour} one", lambda s: s.colour == target.colour),
        ("the {size} one", lambda s: s.size == target.size),
        ("the {colour} {kind}", lambda s: (s.colour, s.kind) == (target.colour, target.kind)),
        ("the {size} {kind}", lambda s: (s.size, s.kind) == (target.size, target.kind)),
        ("the {size} {colour} {kind}", lambda s: s.describe().split(" at ")[0] == target.describe().split(" at ")[0]),
        ("the {kind} at the {where}", lambda s: s is target),
    ]  # fmt: skip
    words = {"kind": target.kind, "colour": target.colour, "size": target.size, "where": CELL_NAMES[target.cell]}
    return [form.format(**words) for form, match in forms if sum(map(match, shapes)) == 1]


RELATIONS = {
    "left of": lambda a, b: a.cell[1] == b.cell[1] and a.cell[0] < b.cell[0],
    "right of": lambda a, b: a.cell[1] == b.cell[1] and a.cell[0] > b.cell[0],
    "above": lambda a, b: a.cell[0] == b.cell[0] and a.cell[1] < b.cell[1],
    "below": lambda a, b: a.cell[0] == b.cell[0] and a.cell[1] > b.cell[1],
}


def reasoning_references(shapes: tuple[Shape, ...], target: Shape) -> list[str]:
    """Phrases that pick out `target` through comparison or spatial relation (SmartEdit-style reasoning)."""
    refs = []
    corners = [CORNERS[s.kind] for s in shapes]
    if len(shapes) > 1:
        for word, best in (("most", max(corners)), ("fewest", min(corners))):
            if corners.count(best) == 1 and CORNERS[target.kind] == best:
                refs.append(f"the shape with the {word} corners")
    for name, rel in RELATIONS.items():
        for anchor in shapes:
            if anchor is target or not rel(target, anchor):
                continue
            if sum(rel(s, anchor) for s in shapes if s is not anchor) == 1:
                for anchor_ref in plain_references(shapes, anchor)[:2]:
                    refs.append(f"the shape {name} {anchor_ref}")
    return refs


TEMPLATES = {  # op -> (training templates, held-out paraphrases)
    "recolour": (
        ("make {ref} {new}", "turn {ref} {new}", "colour {ref} {new}", "{new} for {ref}"),
        ("change {ref} to {new}", "{ref} should be {new}"),
    ),
    "remove": (("remove {ref}", "delete {ref}", "get rid of {ref}"), ("erase {ref}", "take away {ref}")),
    "add": (("add a {new} at the {where}", "put a {new} at the {where}"), ("draw a {new} at the {where}",)),
    "move": (("move {ref} to the {where}", "put {ref} at the {where}"), ("shift {ref} to the {where}",)),
    "bigger": (("make {ref} bigger", "enlarge {ref}"), ("make {ref} larger",)),
    "smaller": (("make {ref} smaller", "shrink {ref}"), ("make {ref} tiny",)),
    "brighter": (("make it brighter", "brighten the picture"), ("more light please",)),
    "darker": (("make it darker", "darken the picture"), ("less light please",)),
    "warmer": (("make it warmer", "warmer colours"), ("give it a warm tone",)),
    "cooler": (("make it cooler", "cooler colours"), ("give it a cool tone",)),
}


def _terse(rng: random.Random, key: str, split: str, **words: str) -> str:
    train, held_out = TEMPLATES[key]
    return rng.choice(held_out if split == "paraphrase" else train).format(**words)


def canonical_terse(sample: Sample) -> str:
    """The plainest training-form instruction for `sample`'s edit: each operation's first training template, the
    object named by kind and place ("the {kind} at the {where}", unique since a cell holds one shape). What the
    expressive instruction states, said in the words the ablation's text encoder learnt; MGIE's edit head is
    distilled onto that encoder's reading of it (editor.demo.distil)."""
    if sample.op == "tone":
        return TEMPLATES[sample.target.tone][0][0]
    if sample.op == "add":
        new = sample.target.shapes[-1]
        what = f"{new.size} {new.colour} {new.kind}"
        return TEMPLATES["add"][0][0].format(new=what, where=CELL_NAMES[new.cell])
    (index,) = [i for i, shape in enumerate(sample.source.shapes) if shape not in sample.target.shapes]
    old = sample.source.shapes[index]
    ref = f"the {old.kind} at the {CELL_NAMES[old.cell]}"
    if sample.op == "remove":
        return TEMPLATES["remove"][0][0].format(ref=ref)
    new = sample.target.shapes[index]
    if sample.op == "recolour":
        return TEMPLATES["recolour"][0][0].format(ref=ref, new=new.colour)
    if sample.op == "move":
        return TEMPLATES["move"][0][0].format(ref=ref, where=CELL_NAMES[new.cell])
    return TEMPLATES["bigger" if new.size == "large" else "smaller"][0][0].format(ref=ref)


def corpus() -> list[str]:
    """Every word the world's texts can use, in sentences: what the demo tokenizers are built from."""
    colours, kinds = " ".join(COLOURS), " ".join(KINDS)
    places = " ".join(f"at the {name}" for name in CELL_NAMES.values())
    lines = [" ".join(t) for pair in TEMPLATES.values() for t in pair]
    lines += [colours, kinds, places, "the small one the large one the shape with the most corners fewest"]
    lines += ["the shape left of right of above below", "turns disappears appears moves to becomes gets"]
    lines += ["the whole picture gets brighter darker warmer cooler", "a small large red circle appears at the top"]
    return lines


# --- samples -----------------------------------------------------------------------------------------------------


def make_sample(rng: random.Random, split: str) -> Sample:
    """One edit, drawn from `split`'s distribution (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    while True:
        sample = _try_sample(rng, split)
        if sample is not None:
            return sample


def edit_scene(rng: random.Random, scene: Scene, split: str) -> Sample:
    """A further edit of `scene` (e.g. the previous turn's target) drawn with `split`'s rules; edits the scene does
    not allow (add or move without a free cell, a second tone, no unique reference) are redrawn. A `reasoning` scene
    where no shape can be referred to relationally (e.g. one shape left) gets an `add` instead, which that split
    otherwise never draws, so that a session can go on."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    stuck = split == "reasoning" and not any(reasoning_references(scene.shapes, s) for s in scene.shapes)
    for _ in range(1000):
        sample = _try_sample(rng, split, scene, "add" if stuck else None)
        if sample is not None:
            return sample
    raise ValueError(f"no {split} edit of this scene found in 1000 draws: {scene}")


def _try_sample(rng: random.Random, split: str, scene: Scene | None = None, op: str | None = None) -> Sample | None:
    """One draw: a fresh scene unless `scene` is given, a random op unless `op` is forced; None if it fails."""
    if op is None:
        op = rng.choices(OPS, OP_WEIGHTS)[0]
        if (split == "reasoning" and op in ("add", "tone")) or (split == "combo" and op == "tone"):
            return None
    if scene is None:
        count = rng.randint(1, 3) if op == "add" else rng.randint(2 if split == "reasoning" else 1, 4)
        scene = random_scene(rng, split, count)
    free = sorted(set(CELL_NAMES) - {s.cell for s in scene.shapes})
    if (op == "tone" and scene.tone) or (op in ("add", "move") and not free) or (op != "add" and not scene.shapes):
        return None  # never for a fresh scene: it has 1-4 shapes and no tone
    if op == "tone":
        tone = rng.choice(list(TONES))
        terse = _terse(rng, tone, split)
        return Sample(scene, replace(scene, tone=tone), op, terse, f"the whole picture gets {tone}.", split, False)
    if op == "add":
        new = random_shape(rng, rng.choice(free), split)
        what = f"{new.size} {new.colour} {new.kind}"
        where = CELL_NAMES[new.cell]
        terse = _terse(rng, "add", split, new=what, where=where)
        target = replace(scene, shapes=(*scene.shapes, new))
        if split == "combo" and (new.kind, new.colour) not in HELD_OUT_COMBOS:
            return None
        return Sample(scene, target, op, terse, f"a {what} appears at the {where}.", split, False)
    index = rng.randrange(len(scene.shapes))
    old = scene.shapes[index]
    use_reasoning = split == "reasoning" or (split == "train" and rng.random() < 0.3)
    refs = reasoning_references(scene.shapes, old) if use_reasoning else plain_references(scene.shapes, old)
    if not refs:
        return None
    ref = rng.choice(refs)
    if op == "recolour":
        choices = [c for c in COLOURS if c != old.colour and _allowed(old.kind, c, split)]
        new = _placed(old, colour=rng.choice(choices))
        terse = _terse(rng, "recolour", split, ref=ref, new=new.colour)
        expressive = f"the {old.describe()} turns {new.colour}."
    elif op == "remove":
        new = None
        terse = _terse(rng, "remove", split, ref=ref)
        expressive = f"the {old.describe()} disappears."
    elif op == "move":
        new = _placed(old, cell=rng.choice(free))
        terse = _terse(rng, "move", split, ref=ref, where=CELL_NAMES[new.cell])
        expressive = f"the {old.describe()} moves to the {CELL_NAMES[new.cell]}."
    else:  # resize
        size = "large" if old.size == "small" else "small"
        new = _placed(old, size=size)
        terse = _terse(rng, "bigger" if size == "large" else "smaller", split, ref=ref)
        expressive = f"the {old.describe()} becomes {size}."
    if (
        split == "combo"
        and not ({(old.kind, old.colour)} | ({(new.kind, new.colour)} if new else set())) & HELD_OUT_COMBOS
    ):
        return None
    shapes = list(scene.shapes)
    if new is None:
        del shapes[index]
    else:
        shapes[index] = new
    return Sample(scene, replace(scene, shapes=tuple(shapes)), op, terse, expressive, split, use_reasoning)


def sample_stream(split: str, seed: int, start: int = 0):
    """Sample i of a split is drawn from its own RNG (seed, split, i): any slice can be regenerated exactly."""
    index = start
    while True:
        yield make_sample(random.Random(f"{seed}/{split}/{index}"), split)
        index += 1


def dataset(split: str, count: int, seed: int = 0) -> list[Sample]:
    stream = sample_stream(split, seed)
    return [next(stream) for _ in range(count)]
