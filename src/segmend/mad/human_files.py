"""The files people write: one weak-score file per rater, and palette PNG label masks; the images they see.

Both are read by :class:`segmend.mad.oracle.FileOracle` and written by the loop (a simulated
oracle's answers are stored in the same formats), the rating page and the label import.

Score file (``round_<r>/scores/<rater>.json``), format ``segmend-mad-scores`` version 1::

    {"format": "segmend-mad-scores", "version": 1, "round": 0, "rater": "alice",
     "scores": {"street/0001.jpg": 3, "street/0002.jpg": "ood"}}

A score is an integer from 1 ("bad") to 5 ("excellent") for the target's prediction, or ``"ood"``
for an image out of the domain (it becomes :data:`segmend.mad.OUT_OF_DOMAIN`). A rater still at work
leaves images out.

Label mask (``round_<r>/labels/<id>.png``): a palette ('P') or greyscale ('L') PNG of the image's
(upright) size whose pixel values are class indices 0..C-1, 255 = ignore; written in the VOC palette.

Image for people (``round_<r>/images/<id>.jpg``): a candidate image upright (EXIF orientation applied,
8 bits, alpha composited over white: as :func:`segmend.datamodules.image_io.read_image` reads it), as
a baseline RGB JPEG without EXIF, so every viewer shows it the way the loop saw it.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segmend.datamodules.errors import DataFormatError
from segmend.datamodules.voc_format import read_index_mask, voc_palette
from segmend.mad.files import MADFileError, atomic_write_bytes, read_json, require_key, write_json
from segmend.mad.layout import check_rater
from segmend.mad.scores import MAX_SCORE, MIN_SCORE, OUT_OF_DOMAIN
from segmend.text import counted

SCORES_FORMAT, SCORES_VERSION = "segmend-mad-scores", 1
OOD_MARK = "ood"
"""How a score file marks an image out of domain."""

IGNORE_INDEX = 255
DISPLAY_JPEG_QUALITY = 90
"""JPEG quality of the images written for people (no chroma subsampling: class borders stay sharp)."""


@dataclass(frozen=True)
class RaterScores:
    """One rater's weak scores of one round.

    Attributes:
        rater: The rater's name.
        scores: ``image id -> score``, an int 1..5 or :data:`OUT_OF_DOMAIN`.

    """

    rater: str
    scores: dict[str, float]


def _score_to_json(image_id: str, score: object) -> int | str:
    if not isinstance(score, bool) and isinstance(score, (int, np.integer)) and MIN_SCORE <= score <= MAX_SCORE:
        return int(score)
    if isinstance(score, (float, np.floating)) and score == OUT_OF_DOMAIN:
        return OOD_MARK
    raise ValueError(
        f"Image {image_id!r} has the score {score!r}; expected an integer from {MIN_SCORE} to {MAX_SCORE} "
        "or OUT_OF_DOMAIN."
    )


def write_rater_scores(path: str | Path, round_index: int, rater: str, scores: Mapping[str, float]) -> Path:
    """Write one rater's scores of a round atomically.

    Args:
        path: The score file, ``round_<r>/scores/<rater>.json``.
        round_index: The round.
        rater: The rater's name (see :func:`segmend.mad.layout.check_rater`).
        scores: ``image id -> int 1..5 or OUT_OF_DOMAIN``.

    Raises:
        ValueError: For a bad rater name or score.

    """
    payload = {image: _score_to_json(image, score) for image, score in scores.items()}
    return write_json(
        path, SCORES_FORMAT, SCORES_VERSION, {"round": round_index, "rater": check_rater(rater), "scores": payload}
    )


def read_rater_scores(path: str | Path, round_index: int, candidates: Collection[str] | None = None) -> RaterScores:
    """Read and check one rater's score file.

    Args:
        path: The score file; its name (without ``.json``) must be the rater's name.
        round_index: The round whose folder holds it.
        candidates: The ids that may be scored (M); ``None`` accepts any id.

    Returns:
        The rater's scores, ``"ood"`` turned into :data:`OUT_OF_DOMAIN`.

    Raises:
        MADFileError: Naming the file and what is wrong: format or version, another round, a rater
            name that differs from the file name, an unknown id or a score outside 1..5 / ``"ood"``.

    """
    path = Path(path)
    document = read_json(path, SCORES_FORMAT, (SCORES_VERSION,))
    found_round = require_key(document, "round", int, path)
    if found_round != round_index:
        raise MADFileError(
            f"{path} holds scores of round {found_round}; it is in the folder of round {round_index}. "
            f"Move it to round_{found_round}/scores/ or score the images of round {round_index}."
        )
    rater = require_key(document, "rater", str, path)
    if rater != path.stem:
        raise MADFileError(f"{path} names the rater {rater!r}; the file of rater {rater!r} must be {rater}.json.")
    raw = require_key(document, "scores", dict, path)
    known = None if candidates is None else set(candidates)
    unknown = [image for image in raw if known is not None and image not in known]
    if unknown:
        raise MADFileError(
            f"{path} scores {counted(len(unknown), 'image')} outside the candidates of round {round_index}, e.g. "
            f"{unknown[:5]}; score only the ids of round_{round_index}/candidates.json."
        )
    scores = {}
    for image, value in raw.items():
        if value == OOD_MARK:
            scores[image] = OUT_OF_DOMAIN
        elif isinstance(value, int) and not isinstance(value, bool) and MIN_SCORE <= value <= MAX_SCORE:
            scores[image] = value
        else:
            raise MADFileError(
                f"{path}: image {image!r} has the score {value!r}; expected an integer from {MIN_SCORE} to "
                f"{MAX_SCORE} or {OOD_MARK!r} (out of domain)."
            )
    return RaterScores(rater, scores)


def encode_mask_png(mask: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """A (H, W) map of class indices (255 = ignore) as palette PNG bytes (VOC palette by default).

    Raises:
        ValueError: If the map is not 2-D or holds values outside 0..255.

    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"A label map is (H, W); found shape {mask.shape}.")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"A label map holds class indices 0..255; found values {mask.min()}..{mask.max()}.")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette((voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_label_mask(path: str | Path, mask: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write a label map as a palette PNG atomically (see :func:`encode_mask_png`)."""
    return atomic_write_bytes(path, encode_mask_png(mask, palette))


def read_label_mask(
    path: str | Path,
    num_classes: int,
    size: tuple[int, int] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Read and check a label mask.

    Args:
        path: A palette or greyscale PNG of class indices.
        num_classes: C; valid values are 0..C-1 and ``ignore_index``.
        size: The image's (H, W) (upright), or ``None`` not to check it.
        ignore_index: The ignore value.

    Returns:
        (H, W) uint8 class indices.

    Raises:
        MADFileError: If the file is missing, not an index PNG (an RGB export loses the classes), of
            another size, or holds unknown values (listed with their pixel counts).

    """
    path = Path(path)
    try:
        mask = read_index_mask(path)
    except DataFormatError as err:
        raise MADFileError(str(err)) from err
    if size is not None and tuple(mask.shape) != tuple(size):
        raise MADFileError(
            f"{path} is {mask.shape[1]}x{mask.shape[0]} (width x height); the image is {size[1]}x{size[0]}. "
            "Label the image as it is shown upright, at its full size."
        )
    values, counts = np.unique(mask, return_counts=True)
    bad = (values >= num_classes) & (values != ignore_index)
    if bad.any():
        listed = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in zip(values[bad], counts[bad], strict=True))
        raise MADFileError(
            f"{path} holds values that are not classes: {listed}; expected class indices 0..{num_classes - 1} "
            f"or {ignore_index} (ignore)."
        )
    return mask.astype(np.uint8)


def write_display_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an upright RGB image for people as a JPEG atomically (no EXIF, so nothing rotates it again).

    Args:
        path: The file, ``round_<r>/images/<id>.jpg``.
        image: (H, W, 3) uint8 RGB, upright (as :func:`segmend.datamodules.image_io.read_image` returns it).

    Raises:
        ValueError: If ``image`` is not (H, W, 3) uint8.

    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"An image for people is (H, W, 3) uint8 RGB; found {image.dtype} {image.shape}.")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=DISPLAY_JPEG_QUALITY, subsampling=0)
    return atomic_write_bytes(path, buffer.getvalue())
