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

SUPPORTED_FORMATS = "PNG, JPEG, WebP, GIF, BMP, TIFF and the other formats Pillow reads"
_ARRAY_HELP = "accepted: HxW, HxWx1, HxWx3 or HxWx4 arrays of uint8, uint16, bool, or float in [0, 1]"
# What Pillow raises for corrupt or truncated data, depending on the format plugin.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, IndexError)
_WHITE = (255, 255, 255, 255)

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


def load_image(source: ImageSource, *, draft_for: Resolution | None = None) -> Image.Image:
    """Return a new, fully loaded, upright 8-bit RGB copy of `source`.

    `draft_for` is only a speed hint: for a JPEG that `prepare_image(..., draft_for)` will shrink anyway,
    the decoder downscales by 1/2, 1/4 or 1/8 while staying at least as large as the target.
    """
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ValueError("the image data is empty (0 bytes)")
        return _from_file(io.BytesIO(source), f"the given data ({len(source)} bytes)", draft_for)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            file = open(path, "rb")  # closed by the `with` below
        except FileNotFoundError:
            raise ValueError(f"image file not found: {path!r}") from None
        except OSError as error:
            raise ValueError(f"could not open image file {path!r}: {error.strerror or error}") from None
        with file:
            if os.fstat(file.fileno()).st_size == 0:
                raise ValueError(f"image file is empty (0 bytes): {path!r}")
            return _from_file(file, repr(path), draft_for)
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


def _from_file(file: IO[bytes], name: str, draft_for: Resolution | None) -> Image.Image:
    try:
        image = Image.open(file)  # opens on the first frame of animated files
        if draft_for is not None:
            # A no-op except for JPEG; the requested size is a lower bound, so no detail the target needs is lost.
            image.draft(None, _draft_request(image.size, draft_for))
        image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(_too_large(name, error)) from None
    except _DECODE_ERRORS as error:
        detail = "" if isinstance(error, UnidentifiedImageError) else f": {error}"
        raise ValueError(f"could not read {name} as an image (supported: {SUPPORTED_FORMATS}){detail}") from None
    with image:
        return _finish(image, name)


def _draft_request(size: tuple[int, int], resolution: Resolution) -> tuple[int, int]:
    if resolution.mode == "center_crop":  # the shorter side is what gets resized to the target
        side = _round8(resolution.size)
        return side, side
    return target_size(size[0], size[1], resolution)


def _too_large(name: str, error: Exception) -> str:
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(error))
    if found is None:
        return f"{name} is too large to decode safely ({error})"
    pixels, limit = (int(group) for group in found.groups())
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
