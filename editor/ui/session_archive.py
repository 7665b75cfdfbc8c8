"""The session archive: one zip with `session.json` and every distinct image once, as PNG.

Writing (`write_archive`) stores the history as it is. Reading (`read_archive`) treats the zip as hostile and
checks everything before the session is touched, so each request costs a bounded amount of memory and time:
1. the zip's directory: number of entries, total unpacked size, each entry stored or deflated and not encrypted,
   `session.json` present and at most `MAX_JSON_BYTES` (zipfile never unpacks past a declared size);
2. `session.json`: valid JSON (a nesting too deep for the parser is named), then the whole record against the
   `SessionRecord` schema (pydantic, strict types: a parent "1" or 1.0 is not an integer), at most `MAX_TURNS` turns;
3. every image it names: in the zip, a PNG whose header gives at most `MAX_PIXELS` pixels, all of them together at
   most `MAX_TOTAL_PIXELS`;
4. every turn's values (EditParams' ranges), ids, parents and the head; only then are the images decoded.
Every problem is a ValueError naming what is wrong ("turn 3 is invalid: parent must be an integer"); every zipfile
error (bad CRC, a size that lies, an unsupported method) is caught and named.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import IO, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from editor.images import MAX_PIXELS, load_image
from editor.params import EditParams, Resolution
from editor.ui.history import ARCHIVE_FORMAT, ARCHIVE_VERSION, MAX_TURNS, History, Turn, image_key

MAX_UNPACKED_BYTES = 1024**3  # a thousand 512-px turns are ~0.4 GB of PNG
MAX_JSON_BYTES = 16 * 1024**2  # a turn's record is ~2-4 KB
MAX_IMAGES = 2 * MAX_TURNS + 1  # an input and an output per turn, plus the origin
MAX_TOTAL_PIXELS = 300_000_000  # ~0.9 GB as RGB: a thousand 512-px turns fit
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
# What zipfile and its decompressors raise on damaged or hostile members.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, EOFError,
               zlib.error, ValueError)  # fmt: skip


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class ResolutionRecord(_Record):
    mode: Literal["keep_aspect", "center_crop"]
    size: int


class ParamsRecord(_Record):
    steps: int
    text_guidance: float
    image_guidance: float
    seed: int | None
    resolution: ResolutionRecord


class TurnRecord(_Record):
    id: int
    parent: int | None
    model: str
    instruction: str
    expressive: str
    raw_text: str
    guidance_source: str
    params: ParamsRecord
    input: str
    output: str
    stats: dict[str, float] = Field(default_factory=dict)
    created: str = ""


class SessionRecord(_Record):
    format: Literal["mgie-editor-session"]
    version: Literal[1]
    head: int | None = None
    origin: str | None = None
    turns: list[TurnRecord] = Field(max_length=MAX_TURNS)


# --- writing -------------------------------------------------------------------------------------------------------


def write_archive(history: History, path: str | Path) -> Path:
    """Writes the zip: `session.json` + `images/<n>.png`, each distinct image once."""
    path, names = Path(path), {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:  # PNG is compressed already

        def store(image: Image.Image | None) -> str | None:
            if image is None:
                return None
            key = image_key(image)
            if key not in names:
                names[key] = f"images/{len(names):04d}.png"
                with archive.open(names[key], "w") as file:
                    image.save(file, format="PNG")
            return names[key]

        turns = [_turn_record(turn, store(turn.input), store(turn.output)) for turn in history.turns]
        record = {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "head": history.head,
            "origin": store(history.origin),
            "turns": turns,
        }
        archive.writestr("session.json", json.dumps(record, indent=1, ensure_ascii=False))
    return path


def _turn_record(turn: Turn, input_name: str | None, output_name: str | None) -> dict:
    record = asdict(turn) | {"input": input_name, "output": output_name}
    record["params"] = asdict(turn.params)  # nested Resolution becomes a dict too
    return record


# --- reading -------------------------------------------------------------------------------------------------------


def read_archive(source: str | Path | bytes | IO[bytes]) -> History:
    """The History in a zip written by `write_archive`; any problem is a ValueError naming it (module docstring)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except _ZIP_ERRORS as err:
        raise ValueError(f"not a session archive (a .zip exported by this app): {err}") from None
    with archive:
        _check_directory(archive)
        record = _validate(_read_json(archive))
        names = [n for n in (record.origin, *(name for t in record.turns for name in (t.input, t.output))) if n]
        _check_images(archive, list(dict.fromkeys(names)))
        return _build(archive, record)


def _check_directory(archive: zipfile.ZipFile) -> None:
    entries = archive.infolist()
    if len(entries) > MAX_IMAGES + 1:
        raise ValueError(f"session archive has {len(entries):,} files; a session has at most {MAX_IMAGES + 1:,}")
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > MAX_UNPACKED_BYTES:
        raise ValueError(
            f"session archive too large: {unpacked:,} bytes unpacked, the limit is {MAX_UNPACKED_BYTES:,} bytes"
        )
    for entry in entries:
        if entry.flag_bits & 0x1:
            raise ValueError(f"session archive: {entry.filename!r} is encrypted; export the session again")
        if entry.compress_type not in _METHODS:
            raise ValueError(
                f"session archive: {entry.filename!r} uses compression method {entry.compress_type}; "
                f"this app reads {' or '.join(_METHODS.values())} entries"
            )


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise
    except _ZIP_ERRORS as err:
        raise ValueError(f"session archive: {name!r} cannot be read ({err}); the zip is damaged") from None


def _read_json(archive: zipfile.ZipFile) -> object:
    try:
        info = archive.getinfo("session.json")
    except KeyError:
        raise ValueError("not a session archive: the zip has no session.json") from None
    if info.file_size > MAX_JSON_BYTES:
        raise ValueError(f"session archive: session.json is {info.file_size:,} bytes, the limit is {MAX_JSON_BYTES:,}")
    data = _read_member(archive, "session.json")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("session archive: session.json is nested too deeply to be a session") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"session archive: session.json is not valid JSON: {err}") from None


_PROBLEMS = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "list_type": "must be a list",
    "missing": "is missing",
    "too_long": f"has too many entries (a session has at most {MAX_TURNS:,} turns)",
}


def _validate(record: object) -> SessionRecord:
    if not isinstance(record, dict) or record.get("format") != ARCHIVE_FORMAT:
        raise ValueError(f"not a session archive: session.json lacks format {ARCHIVE_FORMAT!r}")
    if record.get("version") != ARCHIVE_VERSION:
        raise ValueError(f"session archive version {record.get('version')!r}; this app reads {ARCHIVE_VERSION}")
    turns = record.get("turns")
    if isinstance(turns, list) and len(turns) > MAX_TURNS:  # before validating any of them
        raise ValueError(f"session archive has {len(turns):,} turns; a session has at most {MAX_TURNS:,}")
    try:
        return SessionRecord.model_validate(record)
    except ValidationError as err:
        raise ValueError(f"session archive: {_describe(err.errors()[0])}") from None


def _describe(error: dict) -> str:
    """One pydantic error as "turn 3 is invalid: parent must be an integer"."""
    loc = [part for part in error["loc"] if part not in ("int", "float", "str", "none", "function-after")]
    problem = _PROBLEMS.get(error["type"], error["msg"].lower())
    if len(loc) >= 2 and loc[0] == "turns" and isinstance(loc[1], int):
        field = ".".join(str(part) for part in loc[2:]) or "the record"
        return f"turn {loc[1]} is invalid: {field} {problem}"
    return f"session.json: {'.'.join(str(part) for part in loc) or 'the record'} {problem}"


def _check_images(archive: zipfile.ZipFile, names: list[str]) -> None:
    """Each named image is in the zip and a PNG within the pixel limits, read from its header only."""
    if len(names) > MAX_IMAGES:
        raise ValueError(f"session archive names {len(names):,} images; a session has at most {MAX_IMAGES:,}")
    total = 0
    for name in names:
        try:
            with archive.open(name) as member, Image.open(member, formats=["PNG"]) as image:
                width, height = image.size
        except KeyError:
            raise ValueError(f"session archive: session.json names {name!r}, which is not in the zip") from None
        except (*_ZIP_ERRORS, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"session archive: {name!r} is not a readable PNG image ({err})") from None
        if width * height > MAX_PIXELS:
            raise ValueError(
                f"session archive: image {name!r} has {width * height:,} pixels, the limit is {MAX_PIXELS:,}"
            )
        total += width * height
        if total > MAX_TOTAL_PIXELS:
            raise ValueError(f"session archive: its images hold over {MAX_TOTAL_PIXELS:,} pixels in all, too many")


def _build(archive: zipfile.ZipFile, record: SessionRecord) -> History:
    """Checks every turn's values and links first, then decodes the images (each distinct one once)."""
    params = []
    for number, entry in enumerate(record.turns):
        try:
            params.append(_params(entry, number))
        except ValueError as err:
            raise ValueError(f"session archive: turn {number} is invalid: {err}") from None
        if entry.parent is not None and not 0 <= entry.parent < number:
            raise ValueError(f"session archive: turn {number} has parent {entry.parent}, not an earlier turn")
    if record.head is not None and not 0 <= record.head < len(record.turns):
        raise ValueError(f"session archive: head is turn {record.head}, but there is no turn {record.head}")
    images: dict[str, Image.Image] = {}

    def image(name: str | None) -> Image.Image | None:
        if name is None:
            return None
        if name not in images:
            images[name] = load_image(_read_member(archive, name), name=name)
        return images[name]

    history = History(origin=image(record.origin))
    for entry, turn_params in zip(record.turns, params, strict=True):
        history.turns.append(
            Turn(
                id=entry.id,
                parent=entry.parent,
                model=entry.model,
                instruction=entry.instruction,
                expressive=entry.expressive,
                raw_text=entry.raw_text,
                guidance_source=entry.guidance_source,
                params=turn_params,
                input=image(entry.input),
                output=image(entry.output),
                stats=dict(entry.stats),
                created=entry.created,
            )
        )
    history.head = record.head
    return history


def _params(entry: TurnRecord, number: int) -> EditParams:
    if entry.id != number:
        raise ValueError(f"its id is {entry.id!r}, expected {number}")
    params = entry.params
    return EditParams(
        steps=params.steps,
        text_guidance=params.text_guidance,
        image_guidance=params.image_guidance,
        seed=params.seed,
        resolution=Resolution(params.resolution.mode, params.resolution.size),
    )
