"""Hostile session archives (all generated here): each is refused with a message naming the problem, quickly, and
before anything is decoded; a good archive still restores exactly."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from editor.params import EditParams
from editor.ui import session_archive
from editor.ui.history import History, image_key
from editor.ui.session_archive import read_archive


def _image(seed: int, size=(24, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _history(turns: int = 3) -> History:
    history = History(origin=_image(100))
    for number in range(turns):
        history.add(
            None if number == 0 else number - 1, model="fake", instruction=f"edit {number}", expressive="e",
            raw_text="r", guidance_source="generated", params=EditParams(steps=3, seed=number),
            input=history.origin, output=_image(number), stats={"render_s": 0.5},
        )  # fmt: skip
    return history


@pytest.fixture
def good(tmp_path) -> bytes:
    return _history().to_archive(tmp_path / "s.zip").read_bytes()


def _zip(files: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _with_record(data: bytes, edit) -> bytes:
    files = _members(data)
    record = json.loads(files["session.json"])
    edit(record)
    return _zip(files | {"session.json": json.dumps(record).encode()})


def _patch_central(data: bytes, name: str, offset: int, fmt: str, value: int) -> bytes:
    """Overwrites one field of `name`'s central-directory entry (offsets from the zip specification)."""
    out = bytearray(data)
    start = 0
    while (start := out.find(b"PK\x01\x02", start)) >= 0:
        length = struct.unpack_from("<H", out, start + 28)[0]
        if out[start + 46 : start + 46 + length] == name.encode():
            struct.pack_into(fmt, out, start + offset, value)
            return bytes(out)
        start += 4
    raise AssertionError(f"{name} not in the central directory")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["turns"][2].update(parent="1"), "turn 2 is invalid: parent must be an integer"),
        (lambda r: r["turns"][2].update(parent=[1]), "turn 2 is invalid: parent must be an integer"),
        (lambda r: r["turns"][2].update(parent=1.0), "turn 2 is invalid: parent must be an integer"),
        (lambda r: r["turns"][1].update(stats=[1, 2]), "turn 1 is invalid: stats must be an object"),
        (lambda r: r["turns"][1].update(stats=None), "turn 1 is invalid: stats must be an object"),
        (lambda r: r["turns"][0].update(output=None), "turn 0 is invalid: output must be text"),
        (lambda r: r.update(origin=["images/0000.png"]), "session.json: origin must be text"),
        (lambda r: r.update(origin={"a": 1}), "session.json: origin must be text"),
        (lambda r: r["turns"][1]["params"].update(seed="7"), "turn 1 is invalid: params.seed must be an integer"),
        (lambda r: r["turns"][1]["params"].update(steps=True), "turn 1 is invalid: params.steps must be an integer"),
        (lambda r: r["turns"][1]["params"].update(text_guidance="x"), "params.text_guidance must be a number"),
        (lambda r: r["turns"][1]["params"]["resolution"].update(mode="big"), "params.resolution.mode"),
        (lambda r: r["turns"][1]["params"].update(text_guidance=float("nan")), "text_guidance must be a finite"),
        (lambda r: r.update(turns={"0": 1}), "session.json: turns must be a list"),
        (lambda r: r.update(head="2"), "session.json: head must be an integer"),
        (lambda r: r["turns"][0].pop("model"), "turn 0 is invalid: model is missing"),
        (lambda r: r.update(turns=[r["turns"][0]] * 20_000), "has 20,000 turns; a session has at most 1,000"),
    ],
)
def test_wrong_types_and_values_in_session_json_are_named(good, edit, message, monkeypatch):
    hostile = _with_record(good, edit)
    decoded = []
    monkeypatch.setattr(session_archive, "load_image", lambda *a, **k: decoded.append(a))
    with pytest.raises(ValueError, match=message):
        read_archive(hostile)
    assert decoded == []  # refused from session.json alone: no image decoded (20,000 turns took 40 s before)


def test_deep_nesting_and_a_huge_session_json_are_refused(good):
    files = _members(good)
    deep = b'{"format": "mgie-editor-session", "version": 1, "turns": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ValueError, match="nested too deeply"):
        read_archive(_zip(files | {"session.json": deep}))
    padded = files["session.json"] + b" " * (session_archive.MAX_JSON_BYTES + 1)
    bloated = _zip(files | {"session.json": padded}, method=zipfile.ZIP_DEFLATED)
    assert len(bloated) < 100_000  # small on the wire, 16 MB unpacked
    with pytest.raises(ValueError, match=r"session.json is 16,77\d,\d+ bytes, the limit is 16,777,216"):
        read_archive(bloated)


def test_archive_bounds_are_checked_before_reading(good, monkeypatch):
    monkeypatch.setattr(session_archive, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(ValueError, match=r"too large: [\d,]+ bytes unpacked, the limit is 1,000 bytes"):
        read_archive(good)
    monkeypatch.undo()
    monkeypatch.setattr(session_archive, "MAX_TOTAL_PIXELS", 24 * 16 * 2)
    with pytest.raises(ValueError, match="pixels in all"):
        read_archive(good)
    monkeypatch.undo()
    huge = _members(good) | {"images/0001.png": _png_header(7000, 6000)}
    with pytest.raises(ValueError, match=r"'images/0001.png' has 42,000,000 pixels, the limit is 40,000,000"):
        read_archive(_zip(huge))
    jpeg = io.BytesIO()
    _image(1).save(jpeg, "JPEG")
    with pytest.raises(ValueError, match="'images/0001.png' is not a readable PNG image"):
        read_archive(_zip(_members(good) | {"images/0001.png": jpeg.getvalue()}))


def _png_header(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_damaged_and_unusual_zips_are_named(good):
    record = _members(good)["session.json"]
    at = good.index(record) + len(record) // 2
    bad_crc = good[:at] + bytes([good[at] ^ 0x01]) + good[at + 1 :]
    cases = [
        (bad_crc, "'session.json' cannot be read .*Bad CRC-32.*the zip is damaged"),
        (_patch_central(good, "session.json", 24, "<I", len(record) - 10), "'session.json' cannot be read"),
        (_patch_central(good, "session.json", 8, "<H", 0x1), "'session.json' is encrypted"),
        (_patch_central(good, "images/0000.png", 10, "<H", 99), "'images/0000.png' uses compression method 99"),
        (_patch_central(good, "session.json", 10, "<H", zipfile.ZIP_BZIP2), "method 12; this app reads stored or"),
        (good[: len(good) // 2], "not a session archive"),
        (b"PK\x05\x06" + b"\0" * 18, "not a session archive: the zip has no session.json"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            read_archive(data)


def test_a_good_archive_still_restores_exactly(good):
    history, restored = _history(), read_archive(good)
    assert restored.head == history.head == 2 and len(restored.turns) == 3
    for old, new in zip(history.turns, restored.turns, strict=True):
        assert (old.parent, old.instruction, old.params, old.stats) == (new.parent, new.instruction, new.params,
                                                                        new.stats)  # fmt: skip
        assert image_key(old.output) == image_key(new.output)
    assert image_key(restored.origin) == image_key(history.origin)


def test_a_session_stops_at_the_turn_limit(monkeypatch):
    monkeypatch.setattr("editor.ui.history.MAX_TURNS", 2)
    history = _history(turns=2)
    with pytest.raises(ValueError, match="this session has 2 turns, the limit: export it"):
        _history_add(history)


def _history_add(history: History) -> None:
    history.add(1, model="fake", instruction="one more", expressive="e", raw_text="r", guidance_source="generated",
                params=EditParams(steps=3), input=history.origin, output=_image(9))  # fmt: skip
