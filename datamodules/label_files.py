"""The checks every reader applies to label files: opening an index PNG, its size, its values.

Label masks are never read through the image reader: their pixel values are class indices (or a
dataset's label ids), which a colour conversion or an EXIF rotation would destroy. Unlabeled
pixels carry :data:`IGNORE_INDEX` in every mask segmend serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segmend.datamodules.errors import DataFormatError
from segmend.datamodules.image_io import check_label_orientation

#: The label of unlabeled pixels in every mask of the batch contract.
IGNORE_INDEX = 255
#: Pillow modes of single-channel PNGs whose values are indices: palette, 8-bit and 16/32-bit greyscale.
INDEX_MODES = ("P", "L", "I;16", "I")
DEFAULT_COLOUR_ADVICE = (
    "expected a palette ('P') or greyscale ('L') PNG whose pixel values are class indices. It was probably "
    "converted to colours; use the original PNG from the dataset archive."
)


def label_values(
    img: Image.Image,
    path: Path,
    what: str = "mask",
    colour_advice: str = DEFAULT_COLOUR_ADVICE,
    modes: Sequence[str] = INDEX_MODES,
) -> np.ndarray:
    """The stored pixel values of an open single-channel label image, without palette expansion or conversion.

    Args:
        img: The open image.
        path: Its file, named in errors.
        what: What the file is, for messages (``"mask"``, ``"Cityscapes labelIds"``, ...).
        colour_advice: What the message says after "is an RGB image;" (a colour file holds no indices).
        modes: The Pillow modes accepted.

    Raises:
        DataFormatError: If the image is a colour image or has another mode, naming the file.

    """
    name = what[:1].upper() + what[1:]  # at the start of a sentence
    if img.mode in ("RGB", "RGBA"):  # a colour file holds no indices
        raise DataFormatError(f"{name} {path} is an {img.mode} image; {colour_advice}")
    if img.mode not in modes:
        raise DataFormatError(f"{name} {path} has mode {img.mode}; expected one of {', '.join(map(repr, modes))}.")
    return np.asarray(img)


def read_label_png(
    path: Path,
    what: str = "mask",
    colour_advice: str = DEFAULT_COLOUR_ADVICE,
    modes: Sequence[str] = INDEX_MODES,
    decode_advice: str = "",
) -> np.ndarray:
    """Open a label PNG and return its stored values; the arguments after ``path`` are :func:`label_values`'s.

    Raises:
        DataFormatError: If the file is missing, cannot be decoded (``decode_advice`` is appended to
            the message), is a colour image or has another mode, naming the file.

    """
    try:
        with Image.open(path) as img:
            img.load()
            return label_values(img, path, what, colour_advice, modes)
    except FileNotFoundError as err:
        raise DataFormatError(f"{what[:1].upper() + what[1:]} file not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataFormatError(f"Cannot decode {what} {path}: {err}.{' ' * bool(decode_advice)}{decode_advice}") from err


def check_label_size(
    path: Path,
    label_shape: tuple[int, ...],
    image_shape: tuple[int, int],
    image_path: Path | None = None,
    what: str = "Mask",
) -> None:
    """Refuse a label whose (H, W) is not its image's, saying so when it fits an EXIF-rotated image's raw pixels.

    Args:
        path: The label file, named in the error.
        label_shape: The label's shape as read.
        image_shape: The image's (H, W) as read (upright).
        image_path: The image, to check its orientation tag when the sides are swapped; ``None`` skips that.
        what: What the label is, for the message (``"Mask"``, ``"Label"``, ``"Annotation"``, ...).

    Raises:
        DataFormatError: If the sizes differ.

    """
    if tuple(label_shape) == tuple(image_shape):
        return
    if image_path is not None and len(label_shape) == 2:
        check_label_orientation(path, label_shape, image_path, image_shape)
    raise DataFormatError(
        f"{what} {path} is {label_shape[1]}x{label_shape[0]} (WxH) but its image is "
        f"{image_shape[1]}x{image_shape[0]}; {what.lower()}s must match their images pixel for pixel."
    )


def check_mask(
    mask: np.ndarray,
    path: Path,
    image_shape: tuple[int, int],
    num_classes: int,
    image_path: Path | None = None,
) -> np.ndarray:
    """Check a mask of class indices read from ``path`` against its image's (H, W) and the classes.

    Valid values are ``0..num_classes-1`` and 255 (ignore); ``image_path`` is as in :func:`check_label_size`.

    Returns:
        The mask as (H, W) uint8.

    Raises:
        DataFormatError: If the mask is not 2-D, has another size than the image, or holds values
            that are neither classes nor the ignore label.

    """
    if mask.ndim != 2:
        raise DataFormatError(
            f"Mask {path} has shape {mask.shape}; expected a (H, W) array of class indices. A colour "
            "(RGB) mask loses the class indices; use the original file from the dataset archive."
        )
    check_label_size(path, mask.shape, image_shape, image_path)
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes) | (values != np.round(values))) & (values != IGNORE_INDEX)]
    if bad.size:
        raise DataFormatError(
            f"Mask {path} holds label values {bad.tolist()[:10]}, outside 0..{num_classes - 1} "
            f"and not {IGNORE_INDEX} (ignore); check that the dataset matches its {num_classes} classes."
        )
    return mask.astype(np.uint8)
