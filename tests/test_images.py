"""editor.images: loading any user input as clean RGB, and sizing it for the pipeline (offline, in memory)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editor.images import load_image, prepare_image, target_size
from editor.params import Resolution

KEEP = Resolution()
CROP = Resolution(mode="center_crop")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def only_pixel(image: Image.Image) -> tuple[int, ...]:
    assert image.mode == "RGB"
    colours = image.getcolors()
    assert colours is not None and len(colours) == 1, colours
    return colours[0][1]


# --- modes ---------------------------------------------------------------------------------------------


def test_rgb_is_copied() -> None:
    original = Image.new("RGB", (4, 3), (10, 20, 30))
    loaded = load_image(original)
    assert loaded is not original
    assert loaded.size == (4, 3) and only_pixel(loaded) == (10, 20, 30)


def test_rgba_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 128))
    loaded = load_image(image)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((3, 3)) == (255, 255, 255)
    assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert all(abs(channel - 127) <= 1 for channel in loaded.getpixel((1, 0)))


def test_palette_with_transparency_becomes_white() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0  # index 0 (black) is transparent
    loaded = load_image(image)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == (0, 0, 255)


def test_palette_png_round_trip_keeps_transparency() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((2, 2), 0)
    loaded = load_image(encode(image, "PNG", transparency=0))
    assert loaded.getpixel((2, 2)) == (255, 255, 255)
    assert loaded.getpixel((0, 0)) == (0, 255, 0)


def test_palette_without_transparency_uses_palette() -> None:
    image = Image.new("P", (2, 2), 3)
    image.putpalette([0, 0, 0] * 3 + [200, 100, 50] + [0] * 756)
    assert only_pixel(load_image(image)) == (200, 100, 50)


def test_pa_and_la_composite_over_white() -> None:
    assert only_pixel(load_image(Image.new("LA", (2, 2), (0, 0)))) == (255, 255, 255)
    assert only_pixel(load_image(Image.new("LA", (2, 2), (40, 255)))) == (40, 40, 40)
    assert only_pixel(load_image(Image.new("La", (2, 2), (40, 255)))) == (40, 40, 40)
    palette_alpha = Image.new("PA", (2, 2), (1, 0))
    palette_alpha.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
    assert only_pixel(load_image(palette_alpha)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("1", 0, (0, 0, 0)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("LAB", (255, 128, 128), (254, 255, 254)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
    ],
)
def test_8bit_modes(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    assert only_pixel(load_image(Image.new(mode, (3, 2), value))) == expected


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32768, 128), (0, 0)])
def test_16bit_modes_scale_the_full_range(mode: str, value: int, expected: int) -> None:
    if mode == "I" and value == 0:
        value = 256  # an all-zero "I" image is read as 8-bit; 256 marks it as 16-bit data
        expected = 1
    image = Image.new(mode, (2, 2), 0)
    image.putpixel((0, 0), value)
    image.putpixel((1, 1), 65535)  # a realistic 16-bit image uses its range
    assert load_image(image).getpixel((0, 0)) == (expected,) * 3


def test_16bit_png_from_bytes() -> None:
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    loaded = load_image(encode(Image.fromarray(values), "PNG"))
    assert [loaded.getpixel(xy)[0] for xy in ((0, 0), (1, 0), (0, 1))] == [0, 128, 255]


def test_mode_i_with_8bit_data_is_not_darkened() -> None:
    assert only_pixel(load_image(Image.new("L", (2, 2), 200).convert("I"))) == (200, 200, 200)


def test_mode_i_clips_negative_values() -> None:
    image = Image.new("I", (2, 1), -5)
    image.putpixel((1, 0), 100)
    assert load_image(image).getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 128.0, 300.0], [0, 128, 255]), ([-1.0, np.nan, 1.0], [0, 0, 255])],
)
def test_float_mode(values: list[float], expected: list[int]) -> None:
    image = Image.fromarray(np.array([values], dtype=np.float32))
    assert image.mode == "F"
    loaded = load_image(image)
    assert [loaded.getpixel((x, 0))[0] for x in range(3)] == expected


# --- numpy ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((3, 5), 90, np.uint8), (90, 90, 90)),
        (np.full((3, 5, 1), 90, np.uint8), (90, 90, 90)),
        (np.full((3, 5, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.full((3, 5, 4), (1, 2, 3, 255), np.uint8), (1, 2, 3)),
        (np.full((3, 5, 4), (1, 2, 3, 0), np.uint8), (255, 255, 255)),
        (np.full((3, 5), 65535, np.uint16), (255, 255, 255)),
        (np.full((3, 5, 3), (32768, 0, 65535), np.uint16), (128, 0, 255)),
        (np.full((3, 5), 32768, ">u2"), (128, 128, 128)),
        (np.ones((3, 5), bool), (255, 255, 255)),
        (np.zeros((3, 5, 1), bool), (0, 0, 0)),
        (np.full((3, 5, 3), (0.0, 0.5, 1.0), np.float32), (0, 128, 255)),
        (np.full((3, 5), 0.25, np.float64), (64, 64, 64)),
        (np.full((3, 5, 4), (1.0, 0.0, 0.0, 1.0), np.float16), (255, 0, 0)),
    ],
)
def test_numpy_inputs(array: np.ndarray, expected: tuple[int, int, int]) -> None:
    loaded = load_image(array)
    assert loaded.size == (5, 3)
    assert only_pixel(loaded) == expected


def test_numpy_non_contiguous_and_not_aliased() -> None:
    array = np.zeros((4, 6, 3), np.uint8)
    array[:, :3] = (255, 0, 0)
    loaded = load_image(array[:, ::-1])
    assert loaded.getpixel((0, 0)) == (0, 0, 0) and loaded.getpixel((5, 0)) == (255, 0, 0)
    square = np.full((2, 2, 3), 7, np.uint8)
    loaded = load_image(square)
    square[:] = 99
    assert only_pixel(loaded) == (7, 7, 7)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((2, 2), 1.5, np.float32), r"\[0, 1\], got \[1.5, 1.5\]"),
        (np.full((2, 2), -0.1), r"must be in \[0, 1\]"),
        (np.array([[0.1, np.nan]]), "NaN"),
        (np.array([[0.1, np.inf]]), r"must be in \[0, 1\]"),
        (np.zeros((2, 2), np.int32), "dtype int32.*uint8, uint16, bool"),
        (np.zeros((2, 2, 2), np.uint8), r"shape \(2, 2, 2\).*HxWx3"),
        (np.zeros((2, 2, 3, 1), np.uint8), "shape"),
        (np.zeros(5, np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_bad_numpy_inputs(array: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_image(array)


# --- files, bytes, errors ------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 40))  # a red band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "photo.jpg"
    image.save(path, "JPEG", exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (40, 60)
    red, green, blue = loaded.getpixel((20, 3))  # the left edge is now the top edge
    assert red > 200 and blue < 60
    assert loaded.getexif().get(0x0112) in (None, 1)
    assert prepare_image(loaded, KEEP).size == (344, 512)


def test_path_str_and_bytes_inputs(tmp_path: Path) -> None:
    data = encode(Image.new("RGB", (16, 8), (5, 6, 7)), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data)):
        loaded = load_image(source)
        assert loaded.size == (16, 8) and only_pixel(loaded) == (5, 6, 7)


def test_loaded_file_image_is_detached(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("L", (8, 8), 3).save(path)
    loaded = load_image(path)
    path.unlink()  # works on any OS only if no handle is left open
    assert loaded.getpixel((0, 0)) == (3, 3, 3)
    assert not hasattr(loaded, "fp") or loaded.fp is None


def test_webp_and_jpeg_bytes() -> None:
    image = Image.new("RGB", (16, 16), (0, 200, 0))
    for fmt in ("JPEG", "WEBP"):
        red, green, blue = load_image(encode(image, fmt)).getpixel((8, 8))
        assert green > 180 and red < 30 and blue < 30


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found: .*nope.png"):
        load_image(tmp_path / "nope.png")


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="could not open image file"):
        load_image(tmp_path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ValueError, match=r"could not read '.*notes.png' as an image \(supported: PNG, JPEG, WebP"):
        load_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read .*cut.png.* as an image"):
        load_image(path)
    with pytest.raises(ValueError, match="could not read the given data"):
        load_image(data[:100])


def test_truncated_lazy_pil_image() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="could not read the given image"):
        load_image(lazy)


def test_empty_inputs(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\): .*empty.png"):
        load_image(path)
    with pytest.raises(ValueError, match="empty"):
        load_image(b"")
    with pytest.raises(ValueError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))


def test_unsupported_source_type() -> None:
    with pytest.raises(ValueError, match="cannot load an image from a int"):
        load_image(42)  # type: ignore[arg-type]


def test_decompression_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"too large: 10,000 pixels, the limit is 2,000 pixels"):
        load_image(data)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert only_pixel(load_image(data)) == (255, 0, 0)


def test_animated_png_gives_first_frame() -> None:
    frames = [Image.new("RGBA", (8, 8), colour) for colour in ((0, 0, 255, 255), (255, 0, 0, 255))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert only_pixel(load_image(data)) == (0, 0, 255)


def test_caller_image_is_not_mutated() -> None:
    image = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6
    image.info["exif"] = exif.tobytes()
    before = image.tobytes()
    loaded = load_image(image)
    assert loaded.size == (20, 30) and loaded.mode == "RGB"
    assert image.mode == "RGBA" and image.size == (30, 20) and image.tobytes() == before
    assert image.getexif().get(0x0112) == 6
    prepared = prepare_image(loaded, KEEP)
    assert loaded.size == (20, 30) and prepared is not loaded


# --- sizing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1, 1), (512, 512)),
        ((4000, 3000), (512, 384)),
        ((3000, 4000), (384, 512)),
        ((1, 10000), (8, 512)),
        ((10000, 1), (512, 8)),
        ((512, 512), (512, 512)),
        ((640, 480), (512, 384)),
        ((100, 37), (512, 192)),
    ],
)
def test_keep_aspect_sizes(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert target_size(*size, KEEP) == expected
    prepared = prepare_image(Image.new("RGB", size, (9, 9, 9)), KEEP)
    assert prepared.size == expected and prepared.mode == "RGB"


@pytest.mark.parametrize("side", [64, 100, 500, 512, 777, 2048])
@pytest.mark.parametrize("mode", ["keep_aspect", "center_crop"])
def test_sizes_are_multiples_of_8(side: int, mode: str) -> None:
    resolution = Resolution(mode=mode, size=side)  # type: ignore[arg-type]
    for width, height in [(1, 1), (3, 7), (999, 1001), (1920, 1080), (1, 10000), (12345, 77)]:
        out = target_size(width, height, resolution)
        assert all(value % 8 == 0 and value >= 8 for value in out)
        assert abs(max(out) - side) <= 4


def test_center_crop_uses_the_centre() -> None:
    image = Image.new("RGB", (640, 480), (255, 0, 0))  # red left band
    image.paste((0, 255, 0), (80, 0, 560, 480))  # green centre: exactly the (640 - 480) // 2 crop
    image.paste((0, 0, 255), (560, 0, 640, 480))  # blue right band
    prepared = prepare_image(image, CROP)
    assert prepared.size == (512, 512)
    assert only_pixel(prepared.crop((4, 4, 508, 508))) == (0, 255, 0)
    tall = prepare_image(image.rotate(90, expand=True), CROP)
    assert tall.size == (512, 512) and tall.getpixel((256, 256)) == (0, 255, 0)


def test_center_crop_odd_offset_matches_reference() -> None:
    image = Image.new("RGB", (7, 4), (0, 0, 0))
    image.putpixel((1, 0), (255, 255, 255))  # offset (7 - 4) // 2 == 1: this column is the crop's first
    crop = prepare_image(image, Resolution(mode="center_crop", size=64)).resize((4, 4), Image.Resampling.NEAREST)
    assert crop.getpixel((0, 0))[0] > 100


def test_same_size_returns_a_copy() -> None:
    image = Image.new("RGB", (512, 384), (1, 2, 3))
    prepared = prepare_image(image, KEEP)
    assert prepared is not image and prepared.size == (512, 384)
    prepared.putpixel((0, 0), (9, 9, 9))
    assert image.getpixel((0, 0)) == (1, 2, 3)


def test_resize_filter_downscale_lanczos_upscale_bicubic(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[int] = []
    real_resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], resample: int | None = None, **kwargs: object) -> Image.Image:
        used.append(resample)
        return real_resize(self, size, resample, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    prepare_image(Image.new("RGB", (1024, 768)), KEEP)
    prepare_image(Image.new("RGB", (100, 50)), KEEP)
    assert used == [Image.Resampling.LANCZOS, Image.Resampling.BICUBIC]


def test_prepare_image_converts_non_rgb_and_rejects_non_images() -> None:
    assert prepare_image(Image.new("RGBA", (16, 16)), Resolution(size=64)).mode == "RGB"
    with pytest.raises(ValueError, match="expects a PIL image"):
        prepare_image(np.zeros((8, 8, 3), np.uint8), KEEP)  # type: ignore[arg-type]


@pytest.mark.parametrize(("width", "height"), [(0, 5), (5, -1), (2.5, 4), (True, 4)])
def test_target_size_rejects_bad_sizes(width: object, height: object) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        target_size(width, height, KEEP)  # type: ignore[arg-type]


# --- JPEG draft ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "drafted", "final"),
    [(KEEP, (512, 384), (512, 384)), (CROP, (1024, 768), (512, 512))],
)
def test_jpeg_draft_shrinks_while_decoding(
    resolution: Resolution, drafted: tuple[int, int], final: tuple[int, int]
) -> None:
    image = Image.new("RGB", (2048, 1536), (200, 30, 30))
    data = encode(image, "JPEG", quality=90)
    full = load_image(data)
    assert full.size == (2048, 1536)
    fast = load_image(data, draft_for=resolution)
    assert fast.size == drafted and fast.mode == "RGB"
    prepared = prepare_image(fast, resolution)
    assert prepared.size == final == prepare_image(full, resolution).size
    red, green, blue = prepared.getpixel((10, 10))
    assert red > 180 and green < 60 and blue < 60


def test_jpeg_draft_never_goes_below_target() -> None:
    data = encode(Image.new("L", (1000, 600), 128), "JPEG")
    assert load_image(data, draft_for=KEEP).size == (1000, 600)  # 1000 // 512 == 1: no draft
    assert load_image(encode(Image.new("RGB", (600, 600)), "PNG"), draft_for=KEEP).size == (600, 600)


# --- hostile files: format allow-list, header pixel limit, downscaling ---------------------------------------------

LOOPING_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n{ } loop\n%%EOF\n"


def png_header(width: int, height: int, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A PNG whose header claims `width` x `height` (1-bit grey by default), with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (LOOPING_EPS, "EPS"),
        (b"\xc5\xd0\xd3\xc6" + b"\0" * 40, "EPS"),  # the binary EPS header
        (b"DDS |" + b"\0" * 123, "DDS"),
        (b"8BPS\x00\x01" + b"\0" * 40, "PSD"),
    ],
)
def test_formats_outside_the_allow_list_are_named_and_never_reach_an_external_program(
    data: bytes, found: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an external program was started to decode an upload")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, forbidden)
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"unsupported image format {found} in 'photo.png' \(supported: PNG, JPEG"):
        load_image(path, name="photo.png")
    with pytest.raises(ValueError, match=f"unsupported image format {found}"):
        load_image(data)


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size))
    with pytest.raises(ValueError, match=r"too large: 144,000,000 pixels \(12000x12000\), the limit is 40,000,000"):
        load_image(png_header(12000, 12000))  # 17 KB-style 1-bit bomb, under Pillow's own limit (which only warns)
    assert decoded == []  # refused from the header: not one pixel decoded
    with pytest.raises(ValueError, match="too large: 42,000,000 pixels"):
        load_image(png_header(7000, 6000, bit_depth=8, colour_type=2))


def test_large_inputs_are_downscaled_right_after_decoding() -> None:
    wide = encode(Image.new("RGB", (3000, 1000), (10, 120, 200)), "PNG")
    small = load_image(wide, max_side=2048)
    assert small.size == (2048, 683) and only_pixel(small) == (10, 120, 200)
    assert load_image(wide).size == (3000, 1000)  # no bound asked: untouched
    jpeg = encode(Image.new("RGB", (4096, 512), (200, 30, 30)), "JPEG")
    assert load_image(jpeg, max_side=1024).size == (1024, 128)


def test_messages_use_the_given_name_instead_of_the_path(tmp_path: Path) -> None:
    path = tmp_path / "3f1c" / "upload"
    path.parent.mkdir()
    path.write_text("not an image")
    with pytest.raises(ValueError, match=r"could not read 'cat.png' as an image") as caught:
        load_image(path, name="cat.png")
    assert str(tmp_path) not in str(caught.value)
