"""Pictures the shapes world's generator never draws, so that the demo model holds up on what a user uploads.

The world (editor.demo.world) paints its shapes on muted, dark backgrounds. A user's own test drawing is often a
plain light canvas with a shape of any colour and size. Two sources widen what the demo models see in training:

- `restyle(sample, rng)`: the same edit on another background (plain or gradient, light or dark, any hue), the
  source and the target repainted alike, so the edit and its texts are unchanged;
- `drawing(rng)`: free drawings for the VAE (ellipses and polygons of any colour, radius, rotation and place).

Neither changes the world's own splits: evaluation scenes stay exactly those of `world.dataset`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from editor.demo import world


def random_background(rng: random.Random) -> world.Background:
    """Plain (half of them) or gradient backgrounds over the whole brightness range, faint texture at most."""
    base = rng.randint(0, 255)

    def colour() -> tuple[int, int, int]:
        return tuple(min(255, max(0, base + rng.randint(-40, 40))) for _ in range(3))

    first = colour()
    second = first if rng.random() < 0.5 else colour()
    texture = rng.uniform(0, 8) if rng.random() < 0.25 else 0.0
    return world.Background(first, second, rng.uniform(0, 2 * math.pi), texture, rng.uniform(1, 2.5), 0.0)


def restyle(sample: world.Sample, rng: random.Random) -> world.Sample:
    """`sample` with another background under both scenes (the edit, its texts and its op unchanged)."""
    background = random_background(rng)
    return replace(
        sample,
        source=replace(sample.source, background=background),
        target=replace(sample.target, background=background),
    )


def restyle_scene(scene: world.Scene, rng: random.Random) -> world.Scene:
    return replace(scene, background=random_background(rng))


def drawing(rng: random.Random) -> np.ndarray:
    """A free drawing as float32 H x W x 3 in [0, 255]: 0-5 shapes of any colour, radius and rotation."""
    size, scale = world.SIZE, world.SUPERSAMPLE
    background = world.render_array(world.Scene(random_background(rng), ()))
    canvas = Image.fromarray(np.round(background).astype(np.uint8)).resize((size * scale,) * 2)
    paint = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(0, 5)):
        r = rng.uniform(2, size / 3) * scale
        cx, cy = rng.uniform(0, size) * scale, rng.uniform(0, size) * scale
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        sides = rng.choice((0, 3, 4, 5, 6))
        if sides == 0:
            aspect = rng.uniform(0.5, 1.0)
            paint.ellipse([(cx - r, cy - r * aspect), (cx + r, cy + r * aspect)], fill=fill)
        else:
            turn = rng.uniform(0, 2 * math.pi)
            angles = [turn + 2 * math.pi * i / sides for i in range(sides)]
            paint.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], fill=fill)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


@dataclass(frozen=True)
class Drawn:
    """An edit of a picture drawn outside the world's generator, judged like the world's (judge.score_images)."""

    source: Image.Image
    target: Image.Image
    terse: str
    op: str


def _draw(size: int, background: tuple[int, int, int], shapes: list[tuple[str, tuple, float, float, float]]):
    scale = world.SUPERSAMPLE
    canvas = Image.new("RGB", (size * scale, size * scale), background)
    paint = ImageDraw.Draw(canvas)
    for kind, fill, cx, cy, r in shapes:
        cx, cy, r = cx * scale, cy * scale, r * scale
        if kind == "circle":
            paint.ellipse([(cx - r, cy - r), (cx + r, cy + r)], fill=fill)
        else:
            sides = world.CORNERS[kind]
            start = -math.pi / 2 if kind != "square" else -math.pi / 4
            angles = [start + 2 * math.pi * i / sides for i in range(sides)]
            paint.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles], fill=fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


def user_edit(rng: random.Random, size: int = 256) -> Drawn:
    """What a user might try first: 1-2 named shapes of any radius and place on a plain light canvas, drawn at
    `size` pixels, then "make the circle blue" or "remove the red square" (the world's words and templates)."""
    background = tuple(rng.randint(200, 255) for _ in range(3))
    count = rng.randint(1, 2)
    kinds = rng.sample(world.KINDS, count)
    colours = rng.sample([c for c in world.COLOURS if c != "white"], count)
    shapes, taken = [], []
    for kind, colour in zip(kinds, colours, strict=True):
        for _ in range(100):
            r = rng.uniform(0.08, 0.2) * size
            cx, cy = rng.uniform(r + 2, size - r - 2), rng.uniform(r + 2, size - r - 2)
            if all(math.hypot(cx - x, cy - y) > r + q + 4 for x, y, q in taken):
                break
        taken.append((cx, cy, r))
        shapes.append([kind, world.COLOURS[colour], cx, cy, r])
    index = rng.randrange(count)
    kind, colour = kinds[index], colours[index]
    ref = f"the {kind}" if rng.random() < 0.5 else f"the {colour} {kind}"
    op = rng.choice(("recolour", "remove"))
    source = _draw(size, background, [tuple(s) for s in shapes])
    if op == "recolour":
        new = rng.choice([c for c in world.COLOURS if c not in (colour, "white")])
        shapes[index][1] = world.COLOURS[new]
        terse = rng.choice(world.TEMPLATES["recolour"][0]).format(ref=ref, new=new)
    else:
        del shapes[index]
        terse = rng.choice(world.TEMPLATES["remove"][0]).format(ref=ref)
    return Drawn(source, _draw(size, background, [tuple(s) for s in shapes]), terse, op)
