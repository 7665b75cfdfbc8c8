"""The UI's example photos: four pictures bundled with scikit-image, each with a terse MGIE-style instruction.

`write_examples(folder)` (re)creates `folder/*.png` and `folder/examples.json` from `skimage.data`; the results are
committed under `examples/`, so the app itself does not need scikit-image. `load_examples(folder)` reads them back.
Licences are those stated in scikit-image's docstrings for each image.

    python -m editor.examples [FOLDER]    # default: <repo>/examples
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
LONG_SIDE = 512

# (skimage.data function, instruction, licence as skimage's docs state it)
EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("chelsea", "make the cat a tiger", "CC0 by the photographer (Stefan van der Walt)"),
    ("astronaut", "make her wear sunglasses", "public domain (NASA)"),
    ("coffee", "add latte art of a heart", "CC0 by the photographer (Rachel Michetti)"),
    ("rocket", "make it night", "public domain (SpaceX)"),
)


def write_examples(folder: str | Path = EXAMPLES_DIR) -> list[dict[str, str]]:
    """Write the example PNGs (long side LONG_SIDE) and examples.json into `folder`; return the JSON entries."""
    import skimage.data  # only needed to regenerate the committed files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, instruction, licence in EXAMPLES:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = LONG_SIDE / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        image.resize(size, Image.Resampling.LANCZOS).save(folder / f"{name}.png", optimize=True)
        entries.append(
            {"image": f"{name}.png", "instruction": instruction, "source": f"skimage.data.{name}", "licence": licence}
        )
    (folder / "examples.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def load_examples(folder: str | Path = EXAMPLES_DIR) -> list[dict[str, str]]:
    """Entries of `folder/examples.json`, with "image" made an absolute path; a ValueError if anything is off."""
    folder = Path(folder).resolve()
    index = folder / "examples.json"
    try:
        entries = json.loads(index.read_text())
    except FileNotFoundError:
        raise ValueError(f"no examples index at {index}; run `python -m editor.examples {folder}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{index} is not valid JSON: {err}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{index} must hold a list of examples, got {type(entries).__name__}")
    examples = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("image", "instruction")):
            raise ValueError(f"{index}: entry {i} needs string fields 'image' and 'instruction'")
        image = folder / entry["image"]
        if not image.is_file():
            raise ValueError(f"{index}: entry {i} names {entry['image']!r}, but {image} does not exist")
        examples.append({**entry, "image": str(image)})
    return examples


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLES_DIR
    for entry in write_examples(target):
        print(f"{target / entry['image']}: {entry['instruction']!r} ({entry['licence']})")
