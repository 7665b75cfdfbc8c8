"""The UI wired by name: every endpoint keeps its API, and the variations (several seeds, one picked) as handlers."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from tests.fakes import SETTINGS, FakeEditor, fake_ui

# Each endpoint's parameter names (what gradio_client users type) and the number of values it returns.
API = {
    "/think": (["model", "image", "instruction"], 2),
    "/edit": (["model", "image", "instruction", "expressive", "steps", "text_guidance", "image_guidance", "seed",
               "randomize_seed", "resize", "size"], 10),
    "/undo": ([], 6), "/revert": (["turn"], 6), "/reset": ([], 6), "/restore": (["archive"], 6), "/export": ([], 1),
    "/explore": (["model", "image", "instruction", "expressive", "steps", "text_values", "start", "stop", "step",
                  "seed", "randomize_seed", "resize", "size"], 5),
    "/compare": (["model_a", "model_b", "image", "instruction", "steps", "text_guidance", "image_guidance", "seed",
                  "randomize_seed", "resize", "size"], 5),
    "/keep": (["index"], 8),
    "/variations": (["model", "image", "instruction", "expressive", "steps", "text_guidance", "image_guidance", "seed",
                     "randomize_seed", "resize", "size", "variations"], 4),
    "/pick": (["index"], 9),
}  # fmt: skip


def test_every_endpoint_keeps_its_parameter_names_and_outputs():
    info = fake_ui(FakeEditor(), FakeEditor(name="other")).demo.get_api_info()["named_endpoints"]
    shown = {name: ([p["parameter_name"] for p in e["parameters"]], len(e["returns"])) for name, e in info.items()}
    assert shown == API


def test_variations_show_several_seeds_and_only_the_picked_one_becomes_a_turn():
    editor = FakeEditor()
    ui = fake_ui(editor)
    handlers, w = ui.handlers, ui.widgets
    image = Image.new("RGB", (64, 48), (200, 40, 10))
    steps, text, picture, seed, _, resize, size = SETTINGS
    updates = list(handlers.variations("fake", image, "make it blue", "", steps, text, picture, 7, False, resize, size,
                                       3, None))  # fmt: skip
    shown = [u[w.variants] for u in updates if w.variants in u][-1]
    state = updates[-1][w.state]
    assert shown["visible"] and [caption for _, caption in shown["value"]] == ["#1 · seed 7", "#2 · seed 8",
                                                                              "#3 · seed 9"]  # fmt: skip
    assert editor.calls == ["think", "render", "render", "render"]  # one thought, three renders
    assert not state.history.turns  # nothing enters the history before a pick
    picked = handlers.pick(1, state)
    assert picked[w.seed] == 8 and picked[w.status] == "Turn 1 of 1 · edited from the original"
    assert not picked[w.variants]["visible"] and state.history.turns[0].params.seed == 8
    with pytest.raises(gr.Error, match="no variation 0: edit with variations first"):
        handlers.pick(0, state)  # the others were dropped
    with pytest.raises(gr.Error, match="variations must be 2 to 4, got 1"):
        list(handlers.variations("fake", image, "x", "", *SETTINGS, 1, state))
    assert len(state.history.turns) == 1
