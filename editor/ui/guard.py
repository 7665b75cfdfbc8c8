"""Every endpoint input is checked before Gradio processes it, so a bad value gets a message naming the input.

Gradio converts and checks inputs before a handler runs; what it cannot convert (a string where a number goes,
None, a list, NaN from raw JSON, a file reference outside its upload folder) ends as its generic "the upstream
Gradio app has raised an exception". `guard_inputs(demo)` runs `check_payload` on each raw input first, by the
component's kind and bounds, and names the input by the handler's parameter (the API name a gradio_client user
types) or else the component's label. Gradio's own checks stay behind it; anything they still raise becomes a
message naming the endpoint. `upload_reader` gives the handler the input image read by the editor's own loader
(allow-listed formats, header pixel limit, downscaling), with messages using the upload's own name.
`public_message` strips server paths from any message shown to a user.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image

from editor.images import load_image

NOT_AN_UPLOAD = "the file is not an upload of this session"
log = logging.getLogger("editor.ui")
Reader = Callable[[dict], Any]
# An absolute path of two or more parts; shown as its last part (the upload's own name).
_PATH = re.compile(r"(?<![\w.])(?:file://)?/(?:[^/\s'\"]+/)+([^/\s'\"]+)")


def user_error(message: str) -> gr.Error:
    """The error for a mistake of the user's (bad input, missing weights): one message in the UI, one line in the
    server log, no traceback (tracebacks stay for real bugs). The panes keep what they showed (layout.py's CSS)."""
    log.warning("user error: %s", message)
    return gr.Error(message, print_exception=False)


def public_message(text: str) -> str:
    """`text` with every absolute server path replaced by its file name."""
    return _PATH.sub(r"\1", text)


def describe(value: Any) -> str:
    """A short, safe rendering of a bad value for a message."""
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'…' if len(shown) > 40 else ''}"


def check_payload(block: gr.components.Component, value: Any, name: str) -> None:
    """Raises a `user_error` naming `name` when `value` is not something `block` takes."""
    if isinstance(block, gr.Number | gr.Slider):
        _check_number(block, value, name)
    elif isinstance(block, gr.Checkbox):
        if not isinstance(value, bool):
            raise user_error(f"{name} must be true or false, got {describe(value)}")
    elif isinstance(block, gr.Dropdown | gr.Radio):
        choices = [choice[1] for choice in block.choices]
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value not in choices:
            raise user_error(f"{name} must be one of {', '.join(map(str, choices))}; got {describe(value)}")
    elif isinstance(block, gr.Textbox):
        if value is not None and not isinstance(value, str):
            raise user_error(f"{name} must be text, got {describe(value)}")
        if value and any("\ud800" <= char <= "\udfff" for char in value):
            raise user_error(f"{name} contains a broken character (a lone UTF-16 surrogate); retype it")
    elif isinstance(block, gr.Image | gr.File | gr.UploadButton):
        _check_file(value, name)


def _check_number(block: gr.Number | gr.Slider, value: Any, name: str) -> None:
    low, high = block.minimum, block.maximum
    whole = block.precision == 0
    kind = "a whole number" if whole else "a number"
    if low is not None and high is not None:
        bounds = f" in [{_bound(low)}, {_bound(high)}]"
    else:
        bounds = f" >= {_bound(low)}" if low is not None else (f" <= {_bound(high)}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise user_error(f"{name} must be {kind}{bounds}, got {describe(value)}")
    if whole and not float(value).is_integer():
        raise user_error(f"{name} must be {kind}{bounds}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise user_error(f"{name} must be {kind}{bounds}, got {value!r}")


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_file(value: Any, name: str) -> None:
    """A file input is None or a reference to a file in Gradio's upload folder, nothing else."""
    if value is None:
        return
    path = value.get("path") if isinstance(value, dict) else None
    if not isinstance(path, str) or "://" in path or not path:
        raise user_error(f"{name}: {NOT_AN_UPLOAD}")
    folder = Path(get_upload_folder()).resolve()
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        raise user_error(f"{name}: {NOT_AN_UPLOAD}") from None
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        raise user_error(f"{name}: {NOT_AN_UPLOAD}")


def input_names(fn: Any, blocks: list) -> list[str]:
    """The handler's parameter names for its inputs (the API names), else each component's label."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
    except (TypeError, ValueError):
        params = []
    if len(params) >= len(blocks):
        return params[: len(blocks)]
    return [getattr(block, "label", None) or type(block).__name__ for block in blocks]


def guard_inputs(demo: gr.Blocks, readers: Mapping[gr.components.Component, Reader] | None = None) -> gr.Blocks:
    """Wraps `demo.preprocess_data` (Gradio's input step of every event) with `check_payload` per input. `readers`
    replace what the handler gets for a component: the reader takes the checked raw payload, before Gradio's own
    preprocessing, which still runs (a per-session copy of a component would lose a patched `preprocess`)."""
    original = demo.preprocess_data
    by_id = {block._id: reader for block, reader in (readers or {}).items()}

    async def checked(block_fn, inputs, state, explicit_call=False):
        blocks, replaced = list(block_fn.inputs), {}
        names = input_names(block_fn.fn, blocks)
        for index, (block, value, name) in enumerate(zip(blocks, inputs, names, strict=False)):
            if not getattr(block, "stateful", False):
                check_payload(block, value, name)
                if block._id in by_id and value is not None:
                    replaced[index] = await anyio.to_thread.run_sync(by_id[block._id], value)
        try:
            processed = await original(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as err:  # Gradio's own checks: keep the refusal, give it a name and no server path
            endpoint = block_fn.api_name or block_fn.name
            raise user_error(f"{endpoint}: the inputs could not be read ({public_message(str(err))[:200]})") from err
        for index, value in replaced.items():
            processed[index] = value
        return processed

    demo.preprocess_data = checked
    return demo


def upload_reader(max_side: int) -> Reader:
    """A reader for an image upload: the editor's own loader (allow-listed formats, header pixel limit) reads it
    into a PIL RGB image at most `max_side` on its longer side; errors name the upload, never its server path."""

    def read(payload: dict) -> Image.Image:
        path = payload["path"]  # checked by `check_payload`: a file in Gradio's upload folder
        name = payload.get("orig_name") or os.path.basename(path)
        try:
            return load_image(path, max_side=max_side, name=name)
        except ValueError as err:
            raise user_error(public_message(str(err))) from err

    return read
