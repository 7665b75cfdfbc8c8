"""Turn whatever a user hands the editor into a clean RGB image that the InstructPix2Pix pipeline accepts.

Choices:
- Inputs are file paths, encoded bytes, PIL images and numpy arrays. Every problem becomes a ValueError
  that names it and says what is accepted, so a UI can show it instead of a traceback.
- Camera photos are turned upright (EXIF orientation); animated files give their first frame.
- Transparency is composited over white, not black: a cut-out is meant to be seen on a light page, and a
  black fill would make the model edit a dark scene.
- High-bit-depth pixels are scaled from their real range (16-bit 65535 -> 255) instead of being clipped,
  which would turn most 16-bit images white. Mode "I" holds 8-bit data, 16-bit PNGs or wider integers, so
  its range is read from its largest value; mode "F" is [0, 1] when its maximum is <= 1, else [0, 255].
- Sizes are multiples of 8 (minimum 8) because the VAE downsamples by 8. "keep_aspect" makes the longer
  side `size`; "center_crop" is the MGIE Gradio demo's crop_resize.
- ICC profiles are not applied: pixels are taken as sRGB, as the reference demo does.
- Only the formats an editor needs are opened (`ALLOWED_FORMATS`, Pillow's `formats=` allow-list), all decoded
  inside Pillow: EPS/PostScript would run Ghostscript, an external program that can loop forever, so it and every
  other format get "unsupported image format X" (X found by Pillow's own header tests, which read bytes only).
- The pixel count is checked from the header, before any decoding (`MAX_PIXELS`); `max_side` downscales a large
  input right after decoding, before anything heavy sees it (the app passes its largest edit size).
"""

from __future__ import annotations

import io
import math
import numbers
import os
import re
import struct
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from editor.params import Resolution

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # "JPEG" also opens MPO (phone JPEGs)
SUPPORTED_FORMATS = "PNG, JPEG, WebP, GIF (first frame), BMP, TIFF"
MAX_PIXELS = 40_000_000  # 40 MP: above any camera photo a user edits; decoding it takes ~120 MB as RGB
_ARRAY_HELP = "accepted: HxW, HxWx1, HxWx3 or HxWx4 arrays of uint8, uint16, bool, or float in [0, 1]"
# What Pillow raises for corrupt or truncated data, depending on the format plugin.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, IndexError, NotImplementedError)
_WHITE = (255, 255, 255, 255)

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


def load_image(
    source: ImageSource, *, draft_for: Resolution | None = None, max_side: int | None = None, name: str | None = None
) -> Image.Image:
    """Return a new, fully loaded, upright 8-bit RGB copy of `source`.

    `draft_for` is only a speed hint: for a JPEG that `prepare_image(..., draft_for)` will shrink anyway,
    the decoder downscales by 1/2, 1/4 or 1/8 while staying at least as large as the target.
    `max_side`: a larger image is downscaled (aspect kept) so its longer side is `max_side`.
    `name`: how messages call a file or bytes source (e.g. an upload's own name instead of a server path).
    """
    image = _load(source, draft_for, max_side, name)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _load(source: ImageSource, draft_for: Resolution | None, max_side: int | None, name: str | None) -> Image.Image:
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ValueError("the image data is empty (0 bytes)")
        label = repr(name) if name else f"the given data ({len(source)} bytes)"
        return _from_file(io.BytesIO(source), label, _draft(draft_for, max_side))
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        label = repr(name or path)
        try:
            file = open(path, "rb")  # closed by the `with` below
        except FileNotFoundError:
            raise ValueError(f"image file not found: {label}") from None
        except OSError as error:
            raise ValueError(f"could not open image file {label}: {error.strerror or error}") from None
        with file:
            if os.fstat(file.fileno()).st_size == 0:
                raise ValueError(f"image file is empty (0 bytes): {label}")
            return _from_file(file, label, _draft(draft_for, max_side))
    raise ValueError(
        f"cannot load an image from a {type(source).__name__}; "
        "pass a file path, encoded image bytes, a PIL image or a numpy array"
    )


def target_size(width: int, height: int, resolution: Resolution) -> tuple[int, int]:
    """The (width, height) that `prepare_image` produces for a `width` x `height` image."""
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"image size must be positive integers, got {width!r} x {height!r}")
    if resolution.mode == "center_crop":
        side = _round8(resolution.size)
        return side, side
    longer = max(width, height)
    return _round8(width * resolution.size / longer), _round8(height * resolution.size / longer)


def prepare_image(image: Image.Image, resolution: Resolution) -> Image.Image:
    """Resize (and for "center_crop", crop) an image from `load_image` to the pipeline's input size."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"prepare_image expects a PIL image (see load_image), got a {type(image).__name__}")
    if image.mode != "RGB":
        image = _to_rgb(image)
    width, height = image.size
    size = target_size(width, height, resolution)
    box = (0, 0, width, height)
    if resolution.mode == "center_crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    box_width, box_height = box[2] - box[0], box[3] - box[1]
    if size == (box_width, box_height):
        return image.crop(box)  # a new image even when the box is the whole image
    # Lanczos keeps the most detail when shrinking; when enlarging, its negative lobes ring around edges,
    # so bicubic gives the smoother result there.
    shrinking = size[0] < box_width or size[1] < box_height
    resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    return image.resize(size, resample, box=box)


def _round8(value: float) -> int:
    return max(8, 8 * math.floor(value / 8 + 0.5))


def _draft(draft_for: Resolution | None, max_side: int | None) -> Resolution | int | None:
    """What the JPEG decoder may shrink to: the edit's target, else the largest side kept."""
    return draft_for if draft_for is not None else max_side


def _from_file(file: IO[bytes], name: str, draft: Resolution | int | None) -> Image.Image:
    try:
        image = Image.open(file, formats=ALLOWED_FORMATS)  # opens on the first frame of animated files
    except Image.DecompressionBombError as error:
        raise ValueError(_too_large(name, error)) from None
    except UnidentifiedImageError:
        found = _sniff_format(file)
        if found is not None:
            raise ValueError(f"unsupported image format {found} in {name} (supported: {SUPPORTED_FORMATS})") from None
        raise ValueError(f"could not read {name} as an image (supported: {SUPPORTED_FORMATS})") from None
    except _DECODE_ERRORS as error:
        raise ValueError(f"could not read {name} as an image (supported: {SUPPORTED_FORMATS}): {error}") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:  # from the header: nothing is decoded yet
            raise ValueError(
                f"{name} is too large: {width * height:,} pixels ({width}x{height}), the limit is {MAX_PIXELS:,} "
                "pixels; downscale it first"
            )
        try:
            if draft is not None:
                # A no-op except for JPEG; the requested size is a lower bound, so no detail the target needs is lost.
                image.draft(None, _draft_request(image.size, draft))
            image.load()
        except _DECODE_ERRORS as error:
            raise ValueError(f"could not read {name} as an image (supported: {SUPPORTED_FORMATS}): {error}") from None
        return _finish(image, name)


def _sniff_format(file: IO[bytes]) -> str | None:
    """The format Pillow would recognise `file` as, by its header tests alone (they read bytes, never decode)."""
    file.seek(0)
    prefix = file.read(64)
    Image.init()
    for format_id, (_factory, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return format_id
        except Exception:  # a header test that chokes on short data is simply not a match
            continue
    return None


def _draft_request(size: tuple[int, int], draft: Resolution | int) -> tuple[int, int]:
    if isinstance(draft, int):
        return draft, draft
    resolution = draft
    if resolution.mode == "center_crop":  # the shorter side is what gets resized to the target
        side = _round8(resolution.size)
        return side, side
    return target_size(size[0], size[1], resolution)


def _too_large(name: str, error: Exception) -> str:
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(error))
    if found is None:
        return f"{name} is too large to decode safely ({error})"
    pixels, limit = (int(group) for group in found.groups())
    limit = min(limit, MAX_PIXELS)  # Pillow refuses at twice its warning limit; ours is lower
    return f"{name} is too large: {pixels:,} pixels, the limit is {limit:,} pixels; downscale it first"


def _from_pil(image: Image.Image) -> Image.Image:
    try:
        image.load()  # an image straight from Image.open is lazy; this is where broken data shows up
    except _DECODE_ERRORS as error:
        raise ValueError(f"could not read the given image: {error}") from None
    return _finish(image, "the given image")


def _finish(image: Image.Image, name: str) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name} has zero size ({image.width}x{image.height})")
    return _to_rgb(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    """A new image, rotated/flipped as its EXIF orientation says."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF must not block an edit: the pixels themselves are fine
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB image; transparency is composited over white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    if image.mode == "La":  # premultiplied; Pillow converts it only to LA
        image = image.convert("LA")
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, _WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ValueError(f"unsupported image mode {image.mode!r}; save the image as 8-bit RGB") from None


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float32), nan=0.0)
    peak = float(values.max(initial=0.0))
    if mode == "F":
        top = 1.0 if peak <= 1.0 else 255.0
    elif mode.startswith("I;16") or 255.0 < peak <= 65535.0:
        top = 65535.0
    else:  # "I" holding 8-bit data, or integers wider than 16 bits: scale by the largest value
        top = max(peak, 255.0)
    return np.rint(np.clip(values / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"unsupported image array shape {array.shape}; {_ARRAY_HELP}")
    if array.size == 0:
        raise ValueError(f"the image array is empty (shape {array.shape})")
    # fromarray reads uint8 as L, RGB or RGBA by shape; _to_rgb then makes a copy the caller does not share.
    return _to_rgb(Image.fromarray(np.ascontiguousarray(_array_to_uint8(array))))


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    kind, itemsize = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind == "u" and itemsize == 1:
        return array
    if kind == "u" and itemsize == 2:
        return np.rint(array / 257.0).astype(np.uint8)
    if kind == "f":
        if np.isnan(array).any():
            raise ValueError("float image array contains NaN; accepted: float values in [0, 1]")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float image array values must be in [0, 1], got [{low:g}, {high:g}]; scale it first")
        return np.rint(array.astype(np.float32) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported image array dtype {array.dtype}; {_ARRAY_HELP}")
