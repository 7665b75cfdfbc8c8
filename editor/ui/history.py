"""Multi-turn editing, MagicBrush-style: each output is the next input. A session is a tree of turns.

`head` is the turn whose output is the current input (None: the uploaded `origin` image is). Editing appends a
turn under the head, so editing after an undo or a revert starts a new branch and the old one stays reachable.
Images are kept as PIL objects in memory (no lossy re-encoding between turns) and saved as PNG in the session
archive (editor/ui/session_archive.py): a zip with `session.json` and every distinct image once, which
`History.from_archive` restores exactly. A session holds at most `MAX_TURNS` turns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from editor.params import EditParams

ARCHIVE_FORMAT = "mgie-editor-session"
ARCHIVE_VERSION = 1
MAX_TURNS = 1000  # per session, in the app and in an archive


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
        if len(self.turns) >= MAX_TURNS:
            raise ValueError(f"this session has {MAX_TURNS} turns, the limit: export it and start a new session")
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

    def original(self) -> Image.Image | None:
        """The first image of the current branch: the upload the head's lineage started from (else `origin`)."""
        if self.head is not None:
            return self.turns[self.lineage()[0]].input
        return self.origin if self.origin is not None or not self.turns else self.turns[0].input

    def go_to_original(self) -> None:
        """Makes the branch's first image the input again (no turn selected)."""
        if not self.turns and self.origin is None:
            raise ValueError("no image yet: upload one or pick an example")
        self.origin, self.head = self.original(), None

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

    # --- the session archive (editor/ui/session_archive.py) -------------------------------------------------------

    def to_archive(self, path: str | Path) -> Path:
        """Writes the zip: `session.json` + `images/<key>.png`, each distinct image once."""
        from editor.ui.session_archive import write_archive

        return write_archive(self, path)

    @classmethod
    def from_archive(cls, source: str | Path | bytes) -> History:
        """Reads a zip written by `to_archive`, every bound checked first; any problem is a ValueError naming it."""
        from editor.ui.session_archive import read_archive

        return read_archive(source)
