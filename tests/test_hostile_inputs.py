"""Hostile inputs at every endpoint of the served app (all generated here): each gets a message naming the input
or the problem, the server keeps serving, and a session with a turn keeps it byte-identical.

gradio_client cannot send NaN or a lone surrogate (its JSON encoder refuses), so those go as raw HTTP like an
attacker's script would, through Gradio's documented /gradio_api/call/<endpoint> route.
"""

from __future__ import annotations

import json
import struct
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from editor.ui import build_demo
from editor.ui.guard import NOT_AN_UPLOAD, public_message
from tests.fakes import FakeEditor, free_port

FAST = dict(steps=2, size=64)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    demo = build_demo({"fake": FakeEditor()}, examples_dir=None).queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")
    made = {
        "photo.png": lambda p: Image.new("RGB", (80, 60), (30, 140, 200)).save(p),
        "loop.eps": lambda p: p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n{ } loop\n%%EOF\n"),
        "texture.dds": lambda p: p.write_bytes(b"DDS |" + b"\0" * 123),
        "bomb.png": lambda p: p.write_bytes(_png_claiming(12000, 12000)),
        "notes.txt": lambda p: p.write_text("not a picture"),
    }
    for name, make in made.items():
        make(folder / name)
    return {name: str(folder / name) for name in made}


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _hostile_archive(folder, good: str) -> str:
    members = _members(good)
    record = json.loads(members["session.json"])
    record["turns"][0]["parent"] = "0"
    path = folder / "hostile.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (members | {"session.json": json.dumps(record).encode()}).items():
            archive.writestr(name, data)
    return str(path)


def _raw_call(url: str, api: str, data: list) -> str:
    """One event over raw HTTP; returns the event stream's text (errors arrive as `event: error`)."""
    body = json.dumps({"data": data}).encode()  # NaN stays NaN; a lone surrogate goes as its \\ud800 escape
    request = urllib.request.Request(f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=60) as response:
        return response.read().decode()


def test_every_bad_input_is_named_and_the_session_survives(url, files, tmp_path):
    client = Client(url, verbose=False, analytics_enabled=False, download_files=tmp_path)
    photo = handle_file(files["photo.png"])
    client.predict(image=photo, instruction="make it red", **FAST, api_name="/edit")
    before = _members(client.predict(api_name="/export"))
    edit_cases = [
        (dict(steps="ten"), r"steps must be a whole number in \[1, 150\], got str 'ten'"),
        (dict(steps=None), r"steps must be a whole number in \[1, 150\], got NoneType"),
        (dict(size=[1]), r"size must be a whole number in \[64, 1024\], got list"),
        (dict(text_guidance="x"), r"text_guidance must be a number in \[1, 15\]"),
        (dict(seed=2**40), r"seed must be a whole number in \[0, 4294967295\], got 1099511627776"),
        (dict(seed={"a": 1}), "seed must be a whole number"),
        (dict(model=["fake"]), "model must be one of fake; got list"),
        (dict(resize="zzz"), "resize must be one of keep_aspect, center_crop; got str 'zzz'"),
        (dict(randomize_seed="yes"), "randomize_seed must be true or false"),
        (dict(instruction=12345), "instruction must be text, got int 12345"),
        (dict(instruction=True), "instruction must be text, got bool"),
        (dict(instruction=["a"]), "instruction must be text, got list"),
        (dict(instruction="\x00\x00"), "instruction contains the control character U\\+0000"),
        (dict(instruction="\u200b\u200d\ufeff"), "instruction has no visible characters"),
        (dict(instruction="\ufeff"), "instruction has no visible characters"),
        (dict(expressive=7), "expressive must be text"),
        (dict(image=handle_file("/etc/hostname")), "could not read 'hostname' as an image"),  # uploaded by the client
        (dict(image=handle_file(files["loop.eps"])), r"unsupported image format EPS in 'loop.eps' \(supported: PNG"),
        (dict(image=handle_file(files["texture.dds"])), "unsupported image format DDS in 'texture.dds'"),
        (dict(image=handle_file(files["bomb.png"])), "'bomb.png' is too large: 144,000,000 pixels"),
        (dict(image=handle_file(files["notes.txt"])), "could not read 'notes.txt' as an image"),
    ]
    for change, message in edit_cases:
        with pytest.raises(AppError, match=message) as caught:
            client.predict(**({"image": photo, "instruction": "x"} | FAST | change), api_name="/edit")
        assert "/tmp/" not in str(caught.value) and "upstream Gradio app" not in str(caught.value)
    other_cases = [
        ("/revert", dict(turn=1.5), r"turn must be a whole number in \[0, 999\], got 1.5"),
        ("/revert", dict(turn="a"), "turn must be a whole number"),
        ("/revert", dict(turn=None), "turn must be a whole number"),
        ("/keep", dict(index=None), r"index must be a whole number in \[0, 35\]"),
        ("/keep", dict(index="x"), "index must be a whole number"),
        ("/explore", dict(start=None), r"start must be a number in \[0, 100\], got NoneType"),
        ("/explore", dict(step="a"), "step must be a number"),
        ("/explore", dict(step=1e-320), r"step must be a number in \[0.01, 100\], got 1e-320"),
        ("/explore", dict(start=-1e308), r"start must be a number in \[0, 100\], got -1e\+308"),
        ("/explore", dict(text_values=[1]), "text_values must be text"),
        (
            "/restore",
            dict(archive=handle_file(_hostile_archive(tmp_path, client.predict(api_name="/export")))),
            "session archive: turn 0 is invalid: parent must be an integer",
        ),  # fmt: skip
    ]
    for api, change, message in other_cases:
        base = {"image": photo, "instruction": "x", **FAST} if api == "/explore" else {}
        with pytest.raises(AppError, match=message):
            client.predict(**(base | change), api_name=api)

    assert _members(client.predict(api_name="/export")) == before  # the turn survived, byte for byte
    out = client.predict(image=None, instruction="make it redder", **FAST, api_name="/edit")
    assert out[7] == "Turn 2 of 2 · edited from turn 1"  # and the session goes on


def test_raw_http_nan_infinity_and_lone_surrogates_are_named(url, files):
    defaults = ["fake", None, "make it red", "", 2, 7.5, 1.5, 1, False, "keep_aspect", 64]
    cases = [
        ({4: float("nan")}, "steps must be a whole number"),
        ({7: float("inf")}, "seed must be a whole number"),
        ({10: float("nan")}, "size must be a whole number"),
        ({2: "make it \ud800 red"}, "instruction contains a broken character"),
        ({3: "\udfff"}, "expressive contains a broken character"),
    ]
    for change, message in cases:
        data = [change.get(i, value) for i, value in enumerate(defaults)]
        stream = _raw_call(url, "edit", data)
        assert "event: error" in stream and message in stream, stream[:300]
    forged = {"meta": {"_type": "gradio.FileData"}}
    for reference in ("/etc/passwd", "../../../../etc/passwd", "file:///etc/passwd", "http://127.0.0.1:1/x.png"):
        for api, data in [("edit", [defaults[0], forged | {"path": reference}, *defaults[2:]]),
                          ("restore", [forged | {"path": reference}])]:  # fmt: skip
            stream = _raw_call(url, api, data)
            assert f"{NOT_AN_UPLOAD}" in stream and "passwd" not in stream.replace(reference, ""), stream[:300]
    assert NOT_AN_UPLOAD in _raw_call(url, "edit", [defaults[0], "/etc/passwd", *defaults[2:]])
    stream = _raw_call(url, "explore", ["fake", None, "x", "", 2, "7.5", float("nan"), 2.0, 0.5, 1, False,
                                        "keep_aspect", 64])  # fmt: skip
    assert "start must be a number" in stream
    assert "event: complete" in _raw_call(url, "undo", []) or "nothing to undo" in _raw_call(url, "undo", [])


def test_public_messages_show_no_server_paths():
    text = "could not read '/tmp/gradio/3f1c9a/cat.png' as an image; see file:///srv/app/x.zip or 1/2"
    assert public_message(text) == "could not read 'cat.png' as an image; see x.zip or 1/2"
