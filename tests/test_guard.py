"""editor.ui.guard without a server: each component kind refuses what it cannot take, naming the input."""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import pytest
from gradio.utils import get_upload_folder

from editor.ui.guard import NOT_AN_UPLOAD, check_payload, input_names


@pytest.mark.parametrize(
    ("block", "value", "message"),
    [
        (gr.Slider(1, 150, step=1, precision=0), "ten", r"steps must be a whole number in \[1, 150\], got str 'ten'"),
        (gr.Slider(1, 150, step=1, precision=0), 2.5, r"in \[1, 150\], got 2.5"),
        (gr.Slider(1, 150, step=1, precision=0), 0, r"in \[1, 150\], got 0"),
        (gr.Slider(1, 150, step=1, precision=0), math.nan, "got float nan"),
        (gr.Slider(1, 150, step=1, precision=0), True, "got bool True"),
        (gr.Number(minimum=0, precision=0), -1, "steps must be a whole number >= 0, got -1"),
        (gr.Number(minimum=0, maximum=10), math.inf, r"steps must be a number in \[0, 10\], got float inf"),
        (gr.Checkbox(), "yes", "steps must be true or false, got str 'yes'"),
        (gr.Dropdown(["a", "b"]), ["a"], "steps must be one of a, b; got list"),
        (gr.Radio([("Keep", "keep"), ("Crop", "crop")]), "Keep", "must be one of keep, crop; got str 'Keep'"),
        (gr.Textbox(), 12, "steps must be text, got int 12"),
        (gr.Textbox(), "a\ud800", "steps contains a broken character"),
        (gr.Image(), {"path": "/etc/passwd"}, f"steps: {NOT_AN_UPLOAD}"),
        (gr.Image(), {"path": f"{get_upload_folder()}/../../etc/passwd"}, f"steps: {NOT_AN_UPLOAD}"),
        (gr.File(), {"path": "http://127.0.0.1:1/x"}, f"steps: {NOT_AN_UPLOAD}"),
        (gr.File(), "/etc/passwd", f"steps: {NOT_AN_UPLOAD}"),
    ],
)
def test_bad_payloads_are_named(block, value, message):
    with pytest.raises(gr.Error, match=message):
        check_payload(block, value, "steps")


def test_good_payloads_pass(tmp_path):
    check_payload(gr.Slider(1, 150, step=1, precision=0), 30.0, "steps")
    check_payload(gr.Number(minimum=0, maximum=10), 2.5, "x")
    check_payload(gr.Checkbox(), False, "x")
    check_payload(gr.Dropdown(["a", "b"]), "b", "x")
    check_payload(gr.Textbox(), None, "x")
    check_payload(gr.Image(), None, "x")
    outside = tmp_path / "u.png"  # only files inside Gradio's upload folder pass
    outside.write_bytes(b"x")
    with pytest.raises(gr.Error, match=NOT_AN_UPLOAD):
        check_payload(gr.Image(), {"path": str(outside)}, "image")
    folder = Path(get_upload_folder()) / "test-guard"
    folder.mkdir(parents=True, exist_ok=True)
    inside = folder / "u.png"
    inside.write_bytes(b"x")
    try:
        check_payload(gr.Image(), {"path": str(inside)}, "image")
    finally:
        inside.unlink()


def test_inputs_are_named_by_the_handler_parameters():
    def edit(model, image, steps, state, progress=None):
        return None

    blocks = [gr.Dropdown(["a"]), gr.Image(label="Input image"), gr.Slider(label="Steps"), gr.State()]
    assert input_names(edit, blocks) == ["model", "image", "steps", "state"]
    assert input_names(lambda: None, blocks[:3]) == ["Dropdown", "Input image", "Steps"]
