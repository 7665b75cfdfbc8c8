"""The Gradio UI: wiring with a fake editor (no server), and the tiny MGIE served and driven by gradio_client."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import gradio as gr
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from editor.core import EditResult, Guidance
from editor.examples import EXAMPLES_DIR, load_examples, write_examples
from editor.images import prepare_image
from editor.params import DEFAULT_SEED, EditParams, Resolution
from editor.prompts import check_text
from editor.ui import Session, build_demo, image_key, resolve_guidance


@dataclass
class FakeEditor:
    """Implements the Editor protocol without a model; counts the MLLM calls."""

    name: str = "fake"
    calls: list[str] = field(default_factory=list)

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
        params = params or EditParams()
        source = prepare_image(image, params.resolution)
        for step in range(params.steps):
            if on_step is not None:
                on_step(step + 1, params.steps, torch.zeros(1))
        seed = 42 if params.seed is None else params.seed
        return EditResult(Image.new("RGB", source.size), source, guidance, params.with_seed(seed))


def handler(demo: gr.Blocks, api_name: str):
    return next(fn.fn for fn in demo.fns.values() if fn.api_name == api_name)


def test_examples_are_complete_and_reproducible(tmp_path):
    committed = load_examples()
    assert len(committed) == 4
    for entry in committed:
        image = Image.open(entry["image"])
        assert max(image.size) == 512 and image.mode == "RGB"
        assert os.path.getsize(entry["image"]) < 500_000
        assert entry["instruction"] and entry["source"].startswith("skimage.data.") and entry["licence"]
    write_examples(tmp_path)
    assert [e["instruction"] for e in load_examples(tmp_path)] == [e["instruction"] for e in committed]
    (tmp_path / "rocket.png").unlink()
    with pytest.raises(ValueError, match="rocket.png"):
        load_examples(tmp_path)


def test_resolve_guidance_thinks_reuses_and_follows_user_text():
    editor, image = FakeEditor(), Image.new("RGB", (32, 24), "red")
    session = resolve_guidance(editor, None, image, "make it blue", "")
    first = session.guidance
    assert session == Session(editor.name, image_key(image), first)
    assert resolve_guidance(editor, session, image, "make it blue", first.expressive) is session
    assert resolve_guidance(editor, session, image, " make it blue ", "") is session
    assert editor.calls == ["think"]
    mine = resolve_guidance(editor, session, image, "make it blue", "a deep blue picture").guidance
    assert (mine.source, mine.expressive, editor.calls[-1]) == ("user", "a deep blue picture", "text")
    resolve_guidance(editor, session, image, "make it green", first.expressive)  # stale model text: think again
    resolve_guidance(editor, session, Image.new("RGB", (32, 24), "blue"), "make it blue", first.expressive)
    assert editor.calls[-2:] == ["think", "think"]


def test_build_demo_with_a_fake_editor():
    editors = {"fake": FakeEditor(), "other": FakeEditor(name="other")}
    demo = build_demo(editors, notice="weights missing", examples_dir=None)
    assert isinstance(demo, gr.Blocks)
    assert {"think", "edit"} <= {fn.api_name for fn in demo.fns.values()}
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown))
    assert dropdown.visible and dropdown.choices == [("fake", "fake"), ("other", "other")]

    image = Image.new("RGB", (100, 50), "white")
    expressive, raw, session = handler(demo, "think")("other", image, "make it red", None)
    assert expressive == "imagine: make it red" and session.model == "other" and editors["other"].calls == ["think"]
    args = ("other", image, "make it red", expressive, 3, 7.5, 1.5, 5, False, "keep_aspect", 64, session)
    edited, (before, after), _, _, seed, _ = handler(demo, "edit")(*args)
    assert edited.size == before.size == after.size == (64, 32) and seed == 5
    assert editors["other"].calls == ["think"]  # the session's guidance was reused
    *_, seed, _ = handler(demo, "edit")(*args[:8], True, *args[9:])
    assert seed == 42  # randomized: the editor's choice is shown
    with pytest.raises(gr.Error, match="no input image"):
        handler(demo, "edit")("fake", None, "make it red", "", 3, 7.5, 1.5, 5, False, "keep_aspect", 64, None)
    with pytest.raises(gr.Error, match="unknown model"):
        handler(demo, "think")("nope", image, "make it red", None)

    single = build_demo({"fake": FakeEditor()}, examples_dir=EXAMPLES_DIR)
    assert not next(b for b in single.blocks.values() if isinstance(b, gr.Dropdown)).visible


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(mgie, tmp_path_factory):
    demo = build_demo({mgie.name: mgie}).queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield Client(
            demo.local_url, verbose=False, analytics_enabled=False, download_files=tmp_path_factory.mktemp("dl")
        )
    finally:
        demo.close()


def test_served_tiny_mgie_thinks_edits_and_survives_errors(client):
    cat = load_examples()[0]["image"]
    expressive, raw = client.predict(image=handle_file(cat), instruction="make the cat a tiger", api_name="/think")
    assert isinstance(expressive, str) and expressive.strip() and raw

    edit = dict(image=handle_file(cat), instruction="make the cat a tiger", expressive="", steps=2, size=64)
    path, (before, after), text, _, seed = client.predict(**edit, api_name="/edit")
    expected = prepare_image(Image.open(cat), Resolution("keep_aspect", 64)).size
    assert Image.open(path).format == "PNG" and Image.open(path).size == expected == Image.open(after).size
    assert seed == DEFAULT_SEED and text.strip()

    with pytest.raises(AppError, match="instruction is empty"):
        client.predict(**{**edit, "instruction": "  "}, api_name="/edit")
    path, *_, seed = client.predict(
        **{**edit, "expressive": "a tiger on a sofa"}, randomize_seed=True, api_name="/edit"
    )
    assert Image.open(path).size == expected and isinstance(seed, int)
