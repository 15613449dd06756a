"""The shared reader of input images: orientation, bit depth, alpha, formats, errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from segmend.datamodules.image_io import (
    ALPHA_BACKGROUND,
    IMAGE_EXTENSIONS,
    DataFormatError,
    ImageReadError,
    check_label_orientation,
    read_image,
    read_image_size,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def upright_with_corner(width: int = 60, height: int = 40) -> Image.Image:
    """A blue picture with a red 10x10 square in its top-left corner."""
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, 10, 10))
    return img


def save_with_orientation(img: Image.Image, path: Path, orientation: int, **kwargs) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, **kwargs)
    return path


def near(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= tol)


def test_exif_orientation_6_is_read_upright(tmp_path: Path):
    # A phone taken upright stores the pixels sideways: raw 60x40 (WxH) with orientation 6 ("rotate 90 CW to view").
    path = save_with_orientation(upright_with_corner(60, 40), tmp_path / "phone.jpg", 6, quality=95)
    image = read_image(path)
    assert image.shape == (60, 40, 3)  # seen as 40 wide, 60 tall
    assert read_image_size(path) == (60, 40)  # the header-only size agrees
    # the raw top-left corner lands top-right once rotated 90 degrees clockwise
    assert near(image[4, -5], RED) and near(image[4, 4], BLUE) and near(image[-5, -5], BLUE)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(tmp_path: Path, orientation: int):
    path = save_with_orientation(upright_with_corner(12, 8), tmp_path / "o.png", orientation)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)
    assert read_image_size(path) == expected.shape[:2]


def test_unparsable_exif_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "bad_exif.jpg"
    upright_with_corner().save(path, exif=b"Exif\x00\x00MM\x00*garbage")
    with pytest.warns(UserWarning, match="Corrupt EXIF"):  # Pillow itself tolerates this one
        assert read_image(path).shape == (40, 60, 3)

    def broken(self):
        raise struct.error("unpack requires a buffer of 2 bytes")

    path = save_with_orientation(upright_with_corner(), tmp_path / "o6.jpg", 6)
    monkeypatch.setattr(Image.Image, "getexif", broken)
    assert read_image(path).shape == (40, 60, 3)  # raw pixels, as browsers show a file whose EXIF they cannot parse
    assert read_image_size(path) == (40, 60)
    assert "Ignoring the unreadable EXIF block of" in caplog.text and "o6.jpg" in caplog.text


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (32, 48), dtype=np.uint16)
    values[0, :4] = (0, 65535, 32768, 257)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # Pillow's own convert("L") would clip this to near white
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (32, 48, 3)
    assert abs(image.mean() - values.mean() / 257) < 0.6 and 120 < image.mean() < 134
    assert image[0, :4, 0].tolist() == [0, 255, 128, 1]
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_16bit_tiff_is_scaled_by_its_bits_per_sample(tmp_path: Path):
    values = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.tif")
    assert read_image(tmp_path / "grey16.tif")[0, 0].tolist() == [128, 128, 128]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_16bit_rgb_png_is_scaled(tmp_path: Path):
    """Pillow decodes 16-bit RGB to 8 bits per channel (high byte): a scaling, not a clip."""
    height, width = 4, 5
    pixel = np.array([40000, 65535, 1000], dtype=">u2")
    rows = b"".join(b"\x00" + np.tile(pixel, width).tobytes() for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path = tmp_path / "rgb16.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )
    image = read_image(path)
    assert image.shape == (4, 5, 3)
    expected = np.round(pixel.astype(float) * 255 / 65535)
    assert np.abs(image[2, 3].astype(int) - expected).max() <= 1  # 156, 255, 4


def test_rgba_is_composited_over_white(tmp_path: Path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (0, 0, 0)  # black under every pixel
    rgba[0, 0, 3] = 0  # transparent
    rgba[0, 1, 3] = 255  # opaque black
    rgba[0, 2] = (255, 0, 0, 128)  # half-transparent red
    rgba[1:, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert ALPHA_BACKGROUND == (255, 255, 255)
    assert image[0, 0].tolist() == [255, 255, 255]  # the background, not the black under it
    assert image[0, 1].tolist() == [0, 0, 0]
    assert np.abs(image[0, 2].astype(int) - [255, 127, 127]).max() <= 1
    assert read_image(tmp_path / "a.png", background=(0, 255, 0))[0, 0].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="background must be an RGB colour"):
        read_image(tmp_path / "a.png", background=(0, 300, 0))


def test_la_and_palette_transparency_are_composited(tmp_path: Path):
    la = Image.fromarray(np.stack([np.full((3, 3), 10, np.uint8), np.zeros((3, 3), np.uint8)], axis=2), "LA")
    la.save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png") == 255).all()
    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=0)
    image = read_image(tmp_path / "p.png")
    assert image[0, 0].tolist() == [255, 255, 255] and image[1, 1].tolist() == [200, 10, 10]


@pytest.mark.parametrize(
    ("suffix", "fmt", "mode"),
    [
        (".tif", "TIFF", "RGB"),
        (".bmp", "BMP", "RGB"),
        (".tiff", "TIFF", "CMYK"),
        (".bmp", "BMP", "P"),
        (".tif", "TIFF", "L"),
    ],
)
def test_tiff_bmp_and_colour_modes(tmp_path: Path, suffix: str, fmt: str, mode: str):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"x{suffix}"
    img.save(path, format=fmt)
    image = read_image(path)
    assert image.shape == (6, 7, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.asarray(img.convert("RGB")))


def test_photo_formats_are_readable_here():
    for ext in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"):
        assert ext in IMAGE_EXTENSIONS


def test_errors_name_the_file_and_the_reason(tmp_path: Path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    jpg = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(jpg)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    Image.fromarray(np.ones((3, 3), np.float32)).save(tmp_path / "float.tif")
    cases = {
        "missing.png": r"Image file not found: .*missing.png",
        "empty.png": r"Cannot decode image .*empty.png: empty file \(0 bytes\)",
        "text.jpg": r"Cannot decode image .*text.jpg: not an image: Pillow cannot identify .*Expected one of .*\.jpg",
        "cut.jpg": r"Cannot decode image .*cut.jpg: corrupt or truncated: OSError",
        "float.tif": r"float.tif: unsupported pixels: 32-bit floating point .*Expected 8- or 16-bit integer",
    }
    for name, pattern in cases.items():
        with pytest.raises(ImageReadError, match=pattern) as info:
            read_image(tmp_path / name)
        assert isinstance(info.value, DataFormatError) and info.value.path == tmp_path / name
    with pytest.raises(ImageReadError, match="not an image"):
        read_image_size(tmp_path / "text.jpg")
    assert read_image_size(jpg) == (40, 60)  # the header is intact: only decoding finds the damage


def test_label_of_raw_pixels_is_refused_with_the_reason(tmp_path: Path):
    image_path = save_with_orientation(upright_with_corner(60, 40), tmp_path / "phone.jpg", 6)
    label = tmp_path / "phone.png"
    check_label_orientation(label, (60, 40), image_path, (60, 40))  # fits the upright image: no complaint
    with pytest.raises(DataFormatError, match=r"phone.png is 60x40 \(WxH\): it fits the raw pixels .*orientation 6"):
        check_label_orientation(label, (40, 60), image_path, (60, 40))
    plain = upright_with_corner(60, 40)
    plain.save(tmp_path / "plain.jpg")
    check_label_orientation(label, (60, 40), tmp_path / "plain.jpg", (40, 60))  # no orientation: the caller reports


def test_voc_reader_reads_images_upright_and_explains_raw_masks(tmp_path: Path):
    from segmend.datamodules.voc import VOCSegmentationDataset
    from segmend.datamodules.voc_format import write_palette_mask

    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / folder).mkdir(parents=True)
    save_with_orientation(upright_with_corner(60, 40), tmp_path / "JPEGImages/up.jpg", 6, quality=95)
    save_with_orientation(upright_with_corner(60, 40), tmp_path / "JPEGImages/raw.jpg", 6, quality=95)
    write_palette_mask(tmp_path / "SegmentationClass/up.png", np.zeros((60, 40), np.uint8))  # drawn upright
    write_palette_mask(tmp_path / "SegmentationClass/raw.png", np.zeros((40, 60), np.uint8))  # for the raw pixels
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("up\nraw\n")
    ds = VOCSegmentationDataset(tmp_path, "val", ("background", "thing"), transform=lambda *a: a)
    image, mask = ds.read_sample(0)
    assert image.shape == (60, 40, 3) and mask.shape == (60, 40) and near(image[4, -5], RED)
    with pytest.raises(DataFormatError, match=r"raw.png is 60x40 \(WxH\): it fits the raw pixels .*orientation 6"):
        ds.read_sample(1)
