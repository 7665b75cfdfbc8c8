"""Multi-turn editing, MagicBrush-style: each output is the next input. A session is a tree of turns.

`head` is the turn whose output is the current input (None: the uploaded `origin` image is). Editing appends a
turn under the head, so editing after an undo or a revert starts a new branch and the old one stays reachable.
Images are kept as PIL objects in memory (no lossy re-encoding between turns) and saved as PNG in the session
archive: a zip with `session.json` and every distinct image once, which `History.from_archive` restores exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from editor.images import load_image
from editor.params import EditParams, Resolution

ARCHIVE_FORMAT = "mgie-editor-session"
ARCHIVE_VERSION = 1
MAX_ARCHIVE_BYTES = 2 * 1024**3  # uncompressed; a session of a thousand 1024-px turns is ~3 GB of raw pixels


def image_key(image: Image.Image) -> str:
    """Identifies an image by its pixels: equal keys mean identical images."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()
    return f"{image.mode}-{image.width}x{image.height}-{digest}"


@dataclass(frozen=True)
class Turn:
    id: int
    parent: int | None  # the turn whose output was this turn's input; None: an uploaded image was
    model: str
    instruction: str
    expressive: str  # the text the edit followed (the model's, or the user's rewrite)
    raw_text: str
    guidance_source: str  # "generated", "user" or "instruction"
    params: EditParams  # with the seed actually used
    input: Image.Image
    output: Image.Image
    stats: dict[str, float] = field(default_factory=dict)
    created: str = ""  # ISO 8601, UTC


@dataclass
class History:
    turns: list[Turn] = field(default_factory=list)
    head: int | None = None
    origin: Image.Image | None = None  # the input when no turn is selected (the last uploaded image)

    def current_input(self) -> Image.Image | None:
        return self.turns[self.head].output if self.head is not None else self.origin

    def parent_for(self, image: Image.Image) -> int | None:
        """The turn an edit of `image` continues: the head when `image` is its output, else the newest turn that
        produced these pixels (a re-uploaded result), else None (a new root)."""
        key = image_key(image)
        newest_first = range(len(self.turns) - 1, -1, -1)
        candidates = dict.fromkeys(([self.head] if self.head is not None else []) + list(newest_first))  # no repeats
        return next((i for i in candidates if image_key(self.turns[i].output) == key), None)

    def add(self, parent: int | None, **fields) -> Turn:
        """Appends a turn under `parent` (from `parent_for`, taken when the edit started) and makes it the head."""
        if parent is not None:
            self._check_id(parent)
            fields["input"] = self.turns[parent].output  # the same object: one copy of the pixels
        created = datetime.now(UTC).isoformat(timespec="seconds")
        turn = Turn(id=len(self.turns), parent=parent, created=created, **fields)
        self.turns.append(turn)
        self.head = turn.id
        return turn

    def undo(self) -> None:
        """Steps back to the head's parent; the undone turn stays in the history (revert to it to redo)."""
        if self.head is None:
            raise ValueError("nothing to undo: no turn is selected")
        turn = self.turns[self.head]
        self.head = turn.parent
        if turn.parent is None:
            self.origin = turn.input

    def revert(self, turn_id: int) -> None:
        """Makes `turn_id` the head: its output becomes the input; editing from here starts a branch."""
        self._check_id(turn_id)
        self.head = turn_id

    def lineage(self, turn_id: int | None = None) -> list[int]:
        """Turn ids from the root to `turn_id` (default: the head)."""
        turn_id = self.head if turn_id is None else turn_id
        path = []
        while turn_id is not None:
            path.append(turn_id)
            turn_id = self.turns[turn_id].parent
        return path[::-1]

    def _check_id(self, turn_id: int) -> None:
        if isinstance(turn_id, bool) or not isinstance(turn_id, int) or not 0 <= turn_id < len(self.turns):
            has = f"turns 0 to {len(self.turns) - 1}" if self.turns else "no turns yet"
            raise ValueError(f"no turn {turn_id!r}: this session has {has}")

    # --- the session archive ----------------------------------------------------------------------------------

    def to_archive(self, path: str | Path) -> Path:
        """Writes the zip: `session.json` + `images/<key>.png`, each distinct image once."""
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

            turns = [_turn_record(turn, store(turn.input), store(turn.output)) for turn in self.turns]
            record = {
                "format": ARCHIVE_FORMAT,
                "version": ARCHIVE_VERSION,
                "head": self.head,
                "origin": store(self.origin),
                "turns": turns,
            }
            archive.writestr("session.json", json.dumps(record, indent=1, ensure_ascii=False))
        return path

    @classmethod
    def from_archive(cls, source: str | Path | bytes) -> History:
        """Reads a zip written by `to_archive`; any problem is a ValueError naming the part that is wrong."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (zipfile.BadZipFile, OSError) as err:
            raise ValueError(f"not a session archive (a .zip exported by this app): {err}") from None
        with archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_ARCHIVE_BYTES:
                raise ValueError(f"session archive too large: over {MAX_ARCHIVE_BYTES / 1024**3:.0f} GB unpacked")
            record = _read_record(archive)
            images: dict[str, Image.Image] = {}

            def image(name: str | None, what: str) -> Image.Image | None:
                if name is None:
                    return None
                if name not in images:
                    try:
                        images[name] = load_image(archive.read(name))
                    except KeyError:
                        raise ValueError(f"session archive: {what} names {name!r}, which is not in the zip") from None
                return images[name]

            history = cls(origin=image(record.get("origin"), "origin"))
            for number, entry in enumerate(record["turns"]):
                try:
                    turn = _turn_from_record(entry, number, image)
                except (KeyError, TypeError, ValueError) as err:
                    raise ValueError(f"session archive: turn {number} is invalid: {err}") from None
                if turn.parent is not None and not 0 <= turn.parent < number:
                    raise ValueError(f"session archive: turn {number} has parent {turn.parent}, not an earlier turn")
                history.turns.append(turn)
            head = record.get("head")
            if head is not None:
                history.revert(head)
            return history


def _turn_record(turn: Turn, input_name: str | None, output_name: str | None) -> dict:
    record = asdict(turn) | {"input": input_name, "output": output_name}
    record["params"] = asdict(turn.params)  # nested Resolution becomes a dict too
    return record


def _turn_from_record(entry: dict, number: int, image) -> Turn:
    params = dict(entry["params"])
    params["resolution"] = Resolution(**params["resolution"])
    fields = {name: entry[name] for name in ("id", "parent", "model", "instruction", "expressive", "raw_text")}
    if fields["id"] != number:
        raise ValueError(f"its id is {fields['id']!r}, expected {number}")
    for name in ("model", "instruction", "expressive", "raw_text"):
        if not isinstance(fields[name], str):
            raise TypeError(f"{name} must be text")
    return Turn(
        **fields,
        guidance_source=str(entry["guidance_source"]),
        params=EditParams(**params),
        input=image(entry["input"], f"turn {number} input"),
        output=image(entry["output"], f"turn {number} output"),
        stats={str(k): float(v) for k, v in entry.get("stats", {}).items()},
        created=str(entry.get("created", "")),
    )


def _read_record(archive: zipfile.ZipFile) -> dict:
    try:
        record = json.loads(archive.read("session.json"))
    except KeyError:
        raise ValueError("not a session archive: the zip has no session.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"session archive: session.json is not valid JSON: {err}") from None
    if not isinstance(record, dict) or record.get("format") != ARCHIVE_FORMAT:
        raise ValueError(f"not a session archive: session.json lacks format {ARCHIVE_FORMAT!r}")
    if record.get("version") != ARCHIVE_VERSION:
        raise ValueError(f"session archive version {record.get('version')!r}; this app reads {ARCHIVE_VERSION}")
    if not isinstance(record.get("turns"), list):
        raise ValueError("session archive: session.json has no list of turns")
    return record
