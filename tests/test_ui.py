"""The Gradio app: wiring with a fake editor, then the tiny MGIE served and driven by gradio_client."""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from editor.images import prepare_image
from editor.params import DEFAULT_SEED, EditParams, Resolution
from editor.ui import Session, build_demo, resolve_guidance
from editor.ui.examples import EXAMPLES_DIR, load_examples, write_examples
from editor.ui.history import image_key
from editor.ui.layout import build_ui
from editor.ui.state import FILE_ROUTE
from tests.fakes import SETTINGS, FakeEditor, fake_ui, last

ENDPOINTS = {
    "think",
    "edit",
    "undo",
    "revert",
    "reset",
    "export",
    "restore",
    "explore",
    "keep",
    "compare",
    "variations",
    "pick",
}


def test_examples_are_complete_and_reproducible(tmp_path):
    committed = load_examples()
    assert len(committed) == 8
    for entry in committed:
        image = Image.open(entry["image"])
        photo = entry["source"].startswith("skimage.data.")
        assert max(image.size) == (512 if photo else 64) and image.mode == "RGB"
        assert os.path.getsize(entry["image"]) < 500_000
        assert entry["instruction"] and (photo or entry["source"].startswith("editor.demo.world")) and entry["licence"]
    write_examples(tmp_path)
    assert load_examples(tmp_path) == [{**e, "image": str(tmp_path / Path(e["image"]).name)} for e in committed]
    for entry in committed:  # the committed files are exactly what the generator writes
        assert (tmp_path / Path(entry["image"]).name).read_bytes() == Path(entry["image"]).read_bytes()
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


def test_demo_wires_every_endpoint_and_the_model_selector():
    editors = {"fake": FakeEditor(), "other": FakeEditor(name="other")}
    ui = build_ui(editors, notice="weights missing", examples_dir=None)
    assert ENDPOINTS <= {fn.api_name for fn in ui.demo.fns.values()}
    dropdown = ui.widgets.model
    assert dropdown.visible and dropdown.choices == [("fake", "fake"), ("other", "other")]
    assert not build_ui({"fake": FakeEditor()}, examples_dir=EXAMPLES_DIR).widgets.model.visible
    with pytest.raises(ValueError, match="at least one editor"):
        build_demo({})


def test_choosing_a_model_sets_its_own_steps_guidance_and_size():
    fast = FakeEditor(name="fast", defaults=EditParams(steps=20, text_guidance=3.0, image_guidance=1.2))
    ui = fake_ui(FakeEditor(), fast)
    w = ui.widgets
    change = next(fn.fn for fn in ui.demo.fns.values() if getattr(fn.fn, "__name__", "") == "model_settings")
    sliders = w.steps, w.text_guidance, w.image_guidance
    assert [change("fast")[s] for s in sliders] == [20, 3.0, 1.2]
    assert [change("fake")[s] for s in sliders] == [EditParams().steps, EditParams().text_guidance,
                                                    EditParams().image_guidance]  # fmt: skip
    assert change(["not", "a", "name"]) == {}  # nothing updated
    slider = next(b for b in build_demo({"fast": fast}, examples_dir=None).blocks.values() if isinstance(b, gr.Slider))
    assert slider.label == "Steps" and slider.value == 20  # the first model's own settings from the start


# --- served: the tiny MGIE behind a real server, driven by gradio_client ---------------------------------------

FAST = dict(steps=2, size=64)


@pytest.fixture
def connect(app_url, tmp_path):
    """Each call is a new client, i.e. a new browser session with its own history."""

    def make() -> Client:
        return Client(app_url, verbose=False, analytics_enabled=False, download_files=tmp_path)

    return make


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _edit(client: Client, instruction: str, image=None, **extra):
    out = client.predict(image=image, instruction=instruction, **(FAST | extra), api_name="/edit")
    keys = ("expressive", "raw", "used", "seed", "input", "output", "compare", "status", "history", "details")
    return dict(zip(keys, out, strict=True))


CAT = load_examples()[1]["image"]  # chelsea.png


def test_think_then_edit_follows_the_rewritten_text(connect):
    client = connect()
    expressive, raw = client.predict(image=handle_file(CAT), instruction="make the cat a tiger", api_name="/think")
    assert isinstance(expressive, str) and expressive.strip() and raw
    out = _edit(client, "make the cat a tiger", handle_file(CAT), expressive="A tiger lies on the sofa.")
    assert out["expressive"] == "A tiger lies on the sofa." and out["seed"] == DEFAULT_SEED
    expected = prepare_image(Image.open(CAT), Resolution("keep_aspect", 64)).size
    assert Image.open(out["output"]).format == "PNG" and Image.open(out["output"]).size == expected
    assert out["status"].startswith("Turn 1 of 1") and f"seed {DEFAULT_SEED}" in out["used"]
    assert "rewritten by the user" in out["details"]


def test_three_turns_undo_revert_branch_export_restore(connect, tmp_path):
    client = connect()
    first = _edit(client, "make the cat a tiger", handle_file(CAT))
    second = _edit(client, "make it snowy")  # no image: continue from the current turn
    third = _edit(client, "add a hat", randomize_seed=True)
    assert [first["status"], second["status"], third["status"]] == [
        "Turn 1 of 1 · edited from the original", "Turn 2 of 2 · edited from turn 1", "Turn 3 of 3 · edited from turn 2"
    ]  # fmt: skip
    assert (_pixels(second["input"]) == _pixels(second["output"])).all()  # the result is the next input
    assert len(third["history"]) == 4 and isinstance(third["seed"], int)

    *_, status, history, details = client.predict(api_name="/undo")
    assert status == "Turn 2 of 3 · edited from turn 1" and len(history) == 4 and "make it snowy" in details
    reverted = client.predict(turn=0, api_name="/revert")
    assert (_pixels(reverted[0]) == _pixels(first["output"])).all()  # turn 0's result is the input again
    branch = _edit(client, "make it night")
    assert branch["status"] == "Turn 4 of 4 · edited from turn 1"

    archive = client.predict(api_name="/export")
    with zipfile.ZipFile(archive) as zipped:
        record = json.loads(zipped.read("session.json"))
        outputs = [_pixels(zipped.open(turn["output"])) for turn in record["turns"]]
    assert [t["parent"] for t in record["turns"]] == [None, 0, 1, 0] and record["head"] == 3
    assert [t["instruction"] for t in record["turns"]] == ["make the cat a tiger", "make it snowy", "add a hat",
                                                           "make it night"]  # fmt: skip
    assert record["turns"][2]["params"]["seed"] == third["seed"]
    for out, turn in zip((first, second, third, branch), outputs, strict=True):
        assert (_pixels(out["output"]) == turn).all()  # lossless: what the API returned is what was kept

    other = connect()
    restored = other.predict(archive=handle_file(archive), api_name="/restore")
    assert restored[3] == branch["status"] and len(restored[4]) == 5
    again = other.predict(api_name="/export")
    with zipfile.ZipFile(archive) as a, zipfile.ZipFile(again) as b:
        assert json.loads(a.read("session.json")) == json.loads(b.read("session.json"))
        for name in a.namelist():
            if name.endswith(".png"):
                assert (_pixels(a.open(name)) == _pixels(b.open(name))).all()
    continued = _edit(other, "make it day")  # the restored session goes on from the restored head
    assert continued["status"] == "Turn 5 of 5 · edited from turn 4"

    reset = other.predict(api_name="/reset")
    assert reset[3] == "No edits yet" and [item["caption"] for item in reset[4]] == ["▶ Original"]
    assert (_pixels(reset[0]) == _pixels(CAT)).all()  # back to the original upload


def test_two_clients_at_once_keep_their_own_histories(connect):
    a, b = connect(), connect()
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(_edit, a, "make it red", handle_file(CAT)),
            pool.submit(_edit, b, "make it blue", handle_file(CAT)),
        ]
        done = [job.result() for job in jobs]
    assert [d["status"] for d in done] == ["Turn 1 of 1 · edited from the original"] * 2
    _edit(a, "make it redder")
    assert a.predict(api_name="/undo")[3].startswith("Turn 1 of 2")
    assert b.predict(api_name="/undo")[3] == "The original image · 1 turns in the history"
    assert "make it blue" in b.predict(turn=0, api_name="/revert")[5]


def test_explorer_sweeps_one_seed_and_a_cell_becomes_a_turn(connect):
    client = connect()
    expressive, _, grid, plot, table = client.predict(
        image=handle_file(CAT), instruction="make it snowy", start=1.0, stop=1.4, step=0.2, text_values="5, 7.5",
        **FAST, api_name="/explore",
    )  # fmt: skip
    assert expressive and len(grid) == 6 and [c["caption"] for c in grid][:2] == ["αX 5 · αV 1", "αX 5 · αV 1.2"]
    assert table["headers"][:2] == ["αX", "αV"] and "CLIP-I" in table["headers"] and len(table["data"]) == 6
    used, seed, *_, status, history, _ = client.predict(index=4, api_name="/keep")
    assert status == "Turn 1 of 1 · edited from the original" and "αX 7.5 · αV 1.2" in used and seed == DEFAULT_SEED


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header announcing a huge image (what a decompression bomb looks like before any pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_bad_input_gets_a_clear_message_and_the_app_keeps_serving(connect, tmp_path):
    client = connect()
    notes, bomb, fake_zip = tmp_path / "notes.txt", tmp_path / "huge.png", tmp_path / "session.zip"
    notes.write_text("not a picture")
    fake_zip.write_text("not a zip")
    bomb.write_bytes(_png_claiming(40_000, 40_000))
    cases = [
        (dict(image=handle_file(notes), instruction="x"), "could not read 'notes.txt' as an image"),
        (dict(image=handle_file(bomb), instruction="x"), "too large: 1,600,000,000 pixels, the limit is 40,000,000"),
        (dict(image=handle_file(CAT), instruction="   "), "instruction is empty"),
        (dict(image=handle_file(CAT), instruction="x", steps=0), r"steps must be a whole number in \[1, 150\], got 0"),
        (
            dict(image=handle_file(CAT), instruction="x", image_guidance=50),
            r"image_guidance must be a number in \[1, 5\], got 50",
        ),
        (dict(image=None, instruction="x"), "no input image"),
    ]
    for args, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(**(FAST | args), api_name="/edit")
    for api, kwargs, message in [
        ("/undo", {}, "nothing to undo"),
        ("/revert", {"turn": 3}, "no turn 3: this session has no turns yet"),
        ("/export", {}, "nothing to export"),
        ("/restore", {"archive": handle_file(notes)}, "Invalid file type"),
        ("/restore", {"archive": handle_file(fake_zip)}, "not a session archive"),
        ("/keep", {"index": 0}, "run the explorer first"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(**kwargs, api_name=api)
    assert _edit(client, "make it red", handle_file(CAT))["status"] == "Turn 1 of 1 · edited from the original"


def test_compare_runs_two_models_on_one_input_and_seed_without_touching_history():
    a, b = FakeEditor(), FakeEditor(name="other")
    ui = fake_ui(a, b)
    handlers, w = ui.handlers, ui.widgets
    image = Image.new("RGB", (64, 48), (200, 40, 10))
    out = handlers.compare("fake", "other", image, "make it blue", 3, 7.5, 1.5, 0, True, "keep_aspect", 64, None)
    assert out[w.caption_a] == "**fake**: imagine: make it blue" and out[w.caption_b].startswith("**other**")
    assert a.calls == b.calls == ["think", "render"]
    assert out[w.image_a].size == out[w.image_b].size == (64, 48)
    assert isinstance(out[w.seed], int)  # a random seed, drawn once, shown
    assert w.state not in out and w.strip not in out  # the history is not touched
    with pytest.raises(gr.Error, match="no input image"):
        handlers.compare("fake", "other", None, "x", 3, 7.5, 1.5, 0, False, "keep_aspect", 64, None)


def test_session_state_expires_and_its_temporary_files_are_removed():
    from editor.ui.layout import CACHE_SWEEP, SESSION_TTL_S
    from editor.ui.state import AppState, remove_files

    demo = build_demo({"fake": FakeEditor()}, examples_dir=None)
    state_block = next(b for b in demo.blocks.values() if isinstance(b, gr.State))
    assert state_block.time_to_live == SESSION_TTL_S and demo.delete_cache == CACHE_SWEEP
    ui = fake_ui()
    handlers, w = ui.handlers, ui.widgets
    image = Image.new("RGB", (64, 48), (200, 40, 10))
    state = last(handlers.edit("fake", image, "make it blue", "", *SETTINGS, None))[w.state]
    archive = Path(handlers.export(state)[w.archive])
    folder = Path(state.folder)
    assert archive.parent == folder and len(list(folder.iterdir())) >= 3  # display PNGs and the export, together
    restored = handlers.restore(str(archive), state)[w.state]
    assert not folder.exists() and isinstance(restored, AppState)  # the replaced session's files went at once
    assert len(restored.history.turns) == 1 and restored.folder is not None
    remove_files(restored)  # what gr.State calls when the session ends or expires
    assert not Path(restored.folder).exists()


def test_a_user_error_is_one_log_line_without_a_traceback(caplog):
    handlers = fake_ui().handlers
    image = Image.new("RGB", (64, 48), (200, 40, 10))
    with caplog.at_level("INFO", logger="editor"), pytest.raises(gr.Error, match="instruction is empty") as err:
        list(handlers.edit("fake", image, "  ", "", *SETTINGS, None))
    assert err.value.print_exception is False  # Gradio prints no traceback for it
    assert [r.getMessage() for r in caplog.records] == [f"user error: {err.value.message}"]


def test_after_undo_or_revert_the_boxes_hold_the_current_turns_texts():
    ui = fake_ui()
    handlers, w = ui.handlers, ui.widgets
    image = Image.new("RGB", (64, 48), (200, 40, 10))

    def texts(state) -> list[str]:
        shown = handlers.turn_texts(state)
        return [shown[w.instruction], shown[w.expressive], shown[w.raw_text]]

    state = last(handlers.edit("fake", image, "make it blue", "", *SETTINGS, None))[w.state]
    state = last(handlers.edit("fake", None, "add a hat", "a red hat on top", *SETTINGS, state))[w.state]
    assert texts(state) == ["add a hat", "a red hat on top", "a red hat on top [IMG0]"]
    state = handlers.undo(state)[w.state]
    assert texts(state) == ["make it blue", "imagine: make it blue", "imagine: make it blue [IMG0]"]
    state = handlers.undo(state)[w.state]
    assert texts(state) == ["", "", ""]  # the original image: nothing made it
    state = handlers.revert(1, state)[w.state]
    assert texts(state)[0] == "add a hat"


def test_the_strip_starts_with_the_original_and_numbers_turns_as_the_status_does():
    ui = fake_ui()
    handlers, w = ui.handlers, ui.widgets
    image = Image.new("RGB", (64, 16), (200, 40, 10))
    state = last(handlers.edit("fake", image, "make it blue", "", *SETTINGS, None))[w.state]
    out = last(handlers.edit("fake", None, "add a hat", "", *SETTINGS, state))
    strip, state = out[w.strip], out[w.state]
    assert [item["caption"] for item in strip] == ["Original", "Turn 1: make it blue", "▶ Turn 2: add a hat"]
    assert out[w.status] == "Turn 2 of 2 · edited from turn 1" and out[w.details].startswith("**Turn 2**")
    assert all(item["src"].startswith(FILE_ROUTE) for item in strip)  # served by Gradio's file route, as they are
    thumbs = [Image.open(unquote(item["src"].removeprefix(FILE_ROUTE))) for item in strip]
    assert all(t.size == (160, 160) for t in thumbs)  # square
    assert (np.asarray(thumbs[0])[:60] == 255).all() and (np.asarray(thumbs[0])[60:100] == (200, 40, 10)).all()
    # a click on the strip: the first picture is the original, then turns 1, 2
    out = handlers.go_to(0, state)
    state = out[w.state]
    assert out[w.status].startswith("The original image") and out[w.strip][0]["caption"] == "▶ Original"
    assert state.history.head is None
    assert handlers.go_to(1, state)[w.status].startswith("Turn 1 of 2")
    assert handlers.revert(1, state)[w.status].startswith("Turn 2 of 2")  # the API's /revert keeps turn ids


def test_the_explorer_plot_has_titled_axes_and_one_colour_per_text_guidance():
    ui = fake_ui()
    handlers, w = ui.handlers, ui.widgets
    image = Image.new("RGB", (64, 48), (200, 40, 10))
    out = last(handlers.explore("fake", image, "make it blue", "", 2, "5, 7.5", 1.0, 1.4, 0.2, 1, False,
                                "keep_aspect", 64, None))  # fmt: skip
    grid, plot, table = out[w.grid], out[w.plot], out[w.table]
    assert len(grid) == 6 and handlers.sweep_columns(1.0, 1.4, 0.2, "5, 7.5")[w.grid].columns == 3  # a row per αX
    assert handlers.sweep_columns(1.0, 0.5, 0.2, "5") == {}  # a bad sweep: the explorer itself says what is wrong
    assert plot.color == "αX" and plot.x_title.startswith("consistency") and plot.y_title.startswith("edit strength")
    assert {"αX", "αV"} <= set(plot.tooltip) and len(table) == 6


def test_each_model_event_has_one_progress_display_and_a_stop():
    demo = build_demo({"fake": FakeEditor(), "other": FakeEditor(name="other")}, examples_dir=None)
    deps = {d["api_name"]: d for d in demo.config["dependencies"] if d.get("api_name")}
    labels = {b._id: getattr(b, "label", None) for b in demo.blocks.values()}
    assert deps["edit"]["show_progress"] == "hidden"  # its own progress line under the result
    assert [labels[i] for i in deps["explore"]["show_progress_on"]] == ["Sweep"]
    assert [labels[i] for i in deps["compare"]["show_progress_on"]] == ["A", "B"]
    cancelled = {i for d in demo.config["dependencies"] for i in d.get("cancels") or []}
    assert {deps[name]["id"] for name in ("edit", "explore", "compare")} <= cancelled  # each has a Stop


def test_the_size_of_the_next_edit_is_shown_and_the_demo_model_says_what_it_cannot_do():
    demo_model = FakeEditor(name="mgie-demo")
    demo_model.native_size = 64
    handlers = fake_ui(FakeEditor(), demo_model).handlers
    photo = Image.new("RGB", (512, 320))
    plan = handlers.plan_text("fake", photo, "keep_aspect", 256)
    assert plan.startswith("Edits at **256 × 160 px**") and "your 512 × 320 image is scaled down" in plan
    assert "demo model" not in plan
    plan = handlers.plan_text("mgie-demo", photo, "keep_aspect", 64)
    assert "**64 × 40 px** (the model's own size)" in plan and "only knows 64-px scenes of coloured shapes" in plan
    assert "demo model" not in handlers.plan_text("mgie-demo", Image.new("RGB", (64, 64)), "keep_aspect", 64)
    assert handlers.plan_text("fake", None, "center_crop", 128) == "Edits at 128 × 128 px"
