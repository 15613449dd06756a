"""The one reader of input images: every photo segmend reads is read as people see it.

Every input image (image pools, the VOC/SBD, Cityscapes, ADE20K and synthetic readers) goes
through :func:`read_image`, which returns ``(H, W, 3)`` uint8 RGB with the EXIF orientation
applied, 16-bit images scaled to 8 bits by their declared depth (never clipped), transparency
composited over :data:`ALPHA_BACKGROUND` and other colour modes converted; ``docs/datasets.md``
(How images are read) gives each rule and its reason. Label masks never go through this reader:
their values are class indices (:mod:`segmend.datamodules.label_files`). A label made for the raw,
unrotated pixels of an oriented image is refused by :func:`check_label_orientation`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from segmend.datamodules.errors import DataFormatError

log = logging.getLogger(__name__)

#: Colour transparent pixels are composited over (RGB, white; see the module docstring).
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

#: Transposition of each EXIF orientation value, as in :func:`PIL.ImageOps.exif_transpose`.
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Orientations that swap width and height.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

#: Extensions of the photo formats Pillow can read when built with them.
PILLOW_PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".avif")


def _readable_extensions() -> tuple[str, ...]:
    Image.init()
    registered = Image.registered_extensions()
    return tuple(ext for ext in PILLOW_PHOTO_EXTENSIONS if registered.get(ext) in Image.OPEN)


#: Extensions of the photo formats this installation of Pillow reads (JPEG, PNG, TIFF, BMP, WebP,
#: GIF and AVIF when Pillow was built with them), lower case.
IMAGE_EXTENSIONS: tuple[str, ...] = _readable_extensions()

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
NOT_FOUND = "file not found"


class ImageReadError(DataFormatError):
    """An image file cannot be read.

    Attributes:
        path: The file.
        reason: A short reason without the path, e.g. ``"not an image: ..."``, ``"corrupt or
            truncated: OSError: ..."``, ``"empty file (0 bytes)"`` (used by image pool reports).

    """

    def __init__(self, path: Path, reason: str, advice: str) -> None:
        if reason == NOT_FOUND:
            message = f"Image file not found: {path}. {advice}"
        else:
            message = f"Cannot decode image {path}: {reason}. {advice}"
        super().__init__(message)
        self.path = path
        self.reason = reason


def exif_orientation(img: Image.Image, path: Path | str = "<image>", loaded: bool = True) -> int:
    """The EXIF orientation (1..8) of an open image; 1 when absent, invalid or unparsable.

    Args:
        img: The open image.
        path: Its file, named in the warning about an unparsable EXIF block.
        loaded: Whether ``img`` was loaded. For an image only opened, nothing is decoded: only the
            EXIF met before the pixel data counts (a PNG ``eXIf`` chunk placed after the pixel
            data, which the PNG specification discourages, is seen only once loaded).

    """
    try:
        # Image.Image.getexif, not PngImageFile.getexif, which decodes the whole file to find a late eXIf chunk.
        exif = img.getexif() if loaded else Image.Image.getexif(img)
        value = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception as err:  # noqa: BLE001 - a broken EXIF block raises many types; browsers ignore it too
        log.warning(
            "Ignoring the unreadable EXIF block of %s (%s: %s); using its raw pixels.", path, type(err).__name__, err
        )
        return 1
    return value if value in ORIENTATION_TRANSPOSE else 1


def _open_error(path: Path, err: Exception) -> ImageReadError:
    if isinstance(err, FileNotFoundError):
        return ImageReadError(path, NOT_FOUND, "Check the path, or restore the file.")
    if isinstance(err, UnidentifiedImageError):
        return ImageReadError(
            path,
            "not an image: Pillow cannot identify the file's format",
            f"Expected one of {', '.join(IMAGE_EXTENSIONS)}; replace the file or remove it.",
        )
    if isinstance(err, Image.DecompressionBombError):
        return ImageReadError(
            path, f"too large: {err}", "Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if it is trusted."
        )
    return ImageReadError(
        path,
        f"corrupt or truncated: {type(err).__name__}: {err}",
        "Re-export or re-copy the file (or re-extract it from the dataset archive).",
    )


@contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """The image file opened, every way it can fail turned into an :class:`ImageReadError` naming it."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)", "Remove the file or replace it.")
        with Image.open(path) as img:
            if img.width == 0 or img.height == 0:
                raise ImageReadError(path, f"image of size {img.width}x{img.height}", "Remove the file or replace it.")
            yield img
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types on corrupt data; all mean "cannot read"
        raise _open_error(path, err) from err


def read_image_size(path: str | Path) -> tuple[int, int]:
    """The oriented ``(height, width)`` of an image, from its header (pixels are not decoded).

    Returns:
        ``(H, W)`` as :func:`read_image` would return it (width and height swapped for EXIF
        orientations 5..8).

    Raises:
        ImageReadError: If the file is missing, empty or not an image Pillow can identify.

    """
    with opened_image(Path(path)) as img:
        (width, height), orientation = img.size, exif_orientation(img, path, loaded=False)
    return (width, height) if orientation in SWAPPING_ORIENTATIONS else (height, width)


def read_image(path: str | Path, background: Sequence[int] = ALPHA_BACKGROUND) -> np.ndarray:
    """Read an input image as people see it: oriented, 8-bit, alpha composited, RGB.

    ``docs/datasets.md`` (How images are read) gives each step and its reason. Not for label masks
    (use :func:`segmend.datamodules.voc_format.read_index_mask`).

    Args:
        path: The image file (any format Pillow reads; the extension is not trusted).
        background: RGB colour transparent pixels are composited over.

    Returns:
        ``(H, W, 3)`` uint8 RGB array, ``H`` and ``W`` oriented.

    Raises:
        ImageReadError: (a :class:`DataFormatError`) if the file is missing, empty, not an image,
            corrupt or truncated, or of a pixel format with no defined 8-bit rendering.
        ValueError: If ``background`` is not an RGB colour.

    """
    path, background = Path(path), _rgb_colour(background)
    with opened_image(path) as img:
        img.load()
        rgb = to_rgb(img, path, background)
        method = ORIENTATION_TRANSPOSE.get(exif_orientation(img, path))
        # within the `with`: `rgb` may be `img` itself, whose pixels a closed file need not keep
        return np.asarray(rgb if method is None else rgb.transpose(method))


def _rgb_colour(colour: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(c) for c in colour)
    if len(values) != 3 or not all(0 <= c <= 255 for c in values):
        raise ValueError(f"background must be an RGB colour of three values in 0..255, got {tuple(colour)}.")
    return values  # type: ignore[return-value]


def bit_depth(img: Image.Image) -> int:
    """Declared bits per sample of a high-bit-depth (``I;16*`` or ``I``) image.

    ``I;16*`` modes and PNG files are 16-bit; TIFF files give their ``BitsPerSample``; other
    ``I`` images are taken as 16-bit (Pillow's decoders of other formats scale to 16 bits).
    """
    if img.mode in _SIXTEEN_BIT_MODES or img.format == "PNG":
        return 16
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 258 in tags:
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return 16


def scale_to_8bit(values: np.ndarray, bits: int) -> np.ndarray:
    """Scale unsigned integer samples of ``bits`` bits to uint8: ``round(v * 255 / (2**bits - 1))``.

    Values above ``2**bits - 1`` (not possible in a valid file) are saturated.
    """
    top = (1 << bits) - 1
    if bits <= 16:
        wide = np.minimum(values.astype(np.uint32), top)
        return ((wide * 255 + top // 2) // top).astype(np.uint8)
    return np.rint(np.minimum(values.astype(np.float64), top) * (255.0 / top)).astype(np.uint8)


def to_rgb(img: Image.Image, path: Path | str = "<image>", background: Sequence[int] = ALPHA_BACKGROUND) -> Image.Image:
    """Convert a loaded image to 8-bit RGB: bit depth scaled, alpha composited (no orientation).

    Args:
        img: A loaded image.
        path: Its file, named in errors.
        background: RGB colour transparent pixels are composited over.

    Returns:
        An ``RGB`` image of the same size.

    Raises:
        ImageReadError: For float (``F``) images, integer images with negative values, or a mode
            Pillow cannot convert to RGB.

    """
    path = Path(path)
    fill = _rgb_colour(background)
    mode = img.mode
    if mode == "F":
        raise ImageReadError(
            path,
            "unsupported pixels: 32-bit floating point (mode 'F'), which has no defined white level",
            "Expected 8- or 16-bit integer pixels; export the image as an 8- or 16-bit PNG or TIFF.",
        )
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img)
        if values.size and values.min() < 0:
            raise ImageReadError(
                path,
                f"unsupported pixels: signed integers (mode {mode!r}, minimum {int(values.min())})",
                "Expected unsigned 8- or 16-bit pixels; export the image as an 8- or 16-bit PNG or TIFF.",
            )
        grey = scale_to_8bit(values, bit_depth(img))
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        key = img.info.get("transparency")
        if isinstance(key, int):  # tRNS of a 16-bit greyscale PNG: one fully transparent grey value
            rgb[values == key] = fill
        return Image.fromarray(rgb, "RGB")
    try:
        if img.has_transparency_data:
            rgba = img.convert("RGBA")
            under = Image.new("RGBA", rgba.size, (*fill, 255))
            return Image.alpha_composite(under, rgba).convert("RGB")
        return img if mode == "RGB" else img.convert("RGB")
    except ValueError as err:
        raise ImageReadError(
            path,
            f"unsupported colour mode {mode!r}: {err}",
            "Expected an RGB, greyscale, palette or CMYK image; export it as PNG or JPEG.",
        ) from err


def check_label_orientation(
    label_path: Path, label_shape: tuple[int, ...], image_path: Path, image_shape: tuple[int, int]
) -> None:
    """Refuse, with the reason, a label that fits the raw, unrotated pixels of an oriented image.

    Call it where a label's size was found to differ from its image's (oriented) size; it reads
    only the image's header.

    Args:
        label_path: The label file, named in the error.
        label_shape: The label's ``(H, W)``.
        image_path: Its image.
        image_shape: The image's oriented ``(H, W)`` as read by :func:`read_image`.

    Raises:
        DataFormatError: If the image has an orientation tag that swaps its sides and the label has
            the raw (swapped) size.

    """
    if tuple(label_shape[:2]) != (image_shape[1], image_shape[0]) or image_shape[0] == image_shape[1]:
        return
    try:
        with Image.open(image_path) as img:
            orientation = exif_orientation(img, image_path, loaded=False)
    except Exception:  # noqa: BLE001 - only a hint: the caller reports the size mismatch anyway
        return
    if orientation in SWAPPING_ORIENTATIONS:
        raise DataFormatError(
            f"Label {label_path} is {label_shape[1]}x{label_shape[0]} (WxH): it fits the raw pixels of its image "
            f"{image_path}, whose EXIF orientation {orientation} makes it {image_shape[1]}x{image_shape[0]} as seen "
            "upright (segmend reads images as people see them). Make the label on the upright image, or remove the "
            "image's orientation tag after rotating its pixels (e.g. `exiftran -ai <file>`)."
        )
