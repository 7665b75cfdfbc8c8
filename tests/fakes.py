"""Test helpers: an Editor without a model (for what sits around the model: UI wiring, streaming, the explorer),
and a free local port for served apps."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageOps

from editor.core import EditResult, Guidance, Step
from editor.images import load_image, prepare_image
from editor.params import EditParams
from editor.prompts import check_text

if TYPE_CHECKING:
    from editor.ui.layout import UI


@dataclass
class FakeEditor:
    """think -> "imagine: <instruction>"; render -> the inverted input, blended by image guidance. Counts calls."""

    name: str = "fake"
    step_seconds: float = 0.0
    fail_at_step: int | None = None
    calls: list[str] = field(default_factory=list)
    defaults: EditParams = field(default_factory=EditParams)
    native_size: int | None = None  # not known: edits at DEFAULT_SIZE
    device: str = "cpu"  # where it "renders" (the size plan's time estimate reads it)

    def _guidance(self, instruction: str, expressive: str, source) -> Guidance:
        zeros = torch.zeros(1, 77, 8)
        return Guidance(self.name, check_text(instruction), expressive, f"{expressive} [IMG0]", zeros, zeros, source)

    def think(self, image, instruction: str) -> Guidance:
        self.calls.append("think")
        return self._guidance(instruction, f"imagine: {instruction.strip()}", "generated")

    def guidance_from_text(self, image, instruction: str, expressive_text: str) -> Guidance:
        self.calls.append("text")
        return self._guidance(instruction, check_text(expressive_text), "user")

    def render(self, image, guidance, params=None, on_step=None) -> EditResult:
        self.calls.append("render")
        params = params or EditParams()
        source = prepare_image(load_image(image), params.resolution)
        for index in range(1, params.steps + 1):
            time.sleep(self.step_seconds)
            if index == self.fail_at_step:
                raise ValueError(f"failed at step {index}")
            if on_step is not None:
                on_step(Step(index, params.steps, torch.zeros(1, 4, 1, 1), lambda: Image.new("RGB", (8, 8))))
        weight = min(1.0, 1.0 / max(params.image_guidance, 1.0))  # more image guidance, closer to the input
        edited = Image.blend(source, ImageOps.invert(source), weight * 0.5)
        seed = 42 if params.seed is None else params.seed
        return EditResult(edited, source, guidance, params.with_seed(seed), {"render_s": 0.01})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SETTINGS = (2, 7.5, 1.5, 1, False, "keep_aspect", 64)  # steps, αX, αV, seed, randomize, resize, size


def fake_ui(*editors: FakeEditor) -> UI:
    """The app around fake editors (default: one), without examples or previews, for driving its handlers."""
    from editor.ui.layout import build_ui  # the UI package is only needed by the tests that drive it

    return build_ui({e.name: e for e in editors or [FakeEditor()]}, examples_dir=None, preview_every=None)


def last(updates):
    """The last update of a generator handler."""
    return list(updates)[-1]
