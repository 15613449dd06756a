"""A MAD run folder whose round 0 waits for weak scores, built as the loop builds it, for the rating page's tests.

The pool holds seeded synthetic scenes (``segmend.datamodules.synthetic_scenes``) cropped to 320x240
(width x height), saved as the pool would hold photos: JPEG and PNG files, one phone-style JPEG stored
sideways with EXIF orientation 6, one id with a space, ``#`` and ``%`` (URL encoding). ``MADState``
records M and :class:`~segmend.mad.oracle.FileOracle` is asked for the scores, as the loop's
``_decide`` asks it: it writes the predictions, the upright images and the README, and answers ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from segmend.datamodules.synthetic_scenes import CLASS_NAMES, render_scene, scene_rng

from segmend.mad import Selection
from segmend.mad.oracle import FileOracle
from segmend.mad.state import MADState

HEIGHT, WIDTH = 240, 320
IDS = (
    "street/0001.jpg",
    "phone/0002.jpg",  # stored sideways (240x320 raw) with EXIF orientation 6: upright it is 320x240
    "park/odd name #3 100%.png",
    "street/0004.jpg",
    "park/0005.png",
    "0006.jpg",
)
SIDEWAYS = "phone/0002.jpg"
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class RatingRun:
    """The run folder and what went into it.

    Attributes:
        run: The run folder (``run/mad/state.json``, round 0 at phase ``candidates``).
        pool: The pool folder the images came from (the page must not read it).
        ids: M in order.
        images: ``id -> (H, W, 3)`` upright image as drawn.
        predictions: ``id -> (H, W)`` the target's predicted map.

    """

    run: Path
    pool: Path
    ids: tuple[str, ...]
    images: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray]


def _scene(index: int) -> tuple[np.ndarray, np.ndarray]:
    scene = render_scene(scene_rng(7, "wild", index), size=WIDTH, domain="train")
    return scene.image[:HEIGHT].copy(), scene.mask[:HEIGHT].copy()


def _prediction(truth: np.ndarray, index: int) -> np.ndarray:
    """The truth with a growing share of the objects missed (left part predicted background)."""
    prediction = truth.copy()
    missed = prediction[:, : WIDTH * index // len(IDS)]
    missed[missed > 0] = 0
    return prediction


def _save(picture: np.ndarray, path: Path, image_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(picture)
    if image_id == SIDEWAYS:  # what a phone writes: the pixels rotated, the tag saying how to show them
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    elif path.suffix == ".png":
        image.save(path)
    else:
        image.save(path, quality=95)


def make_rating_run(root: Path) -> RatingRun:
    """Write the pool and the run folder under ``root`` (``root/pool``, ``root/run``)."""
    pool, run = root / "pool", root / "run"
    images, predictions = {}, {}
    for index, image_id in enumerate(IDS):
        picture, truth = _scene(index)
        _save(picture, pool / image_id, image_id)
        images[image_id], predictions[image_id] = picture, _prediction(truth, index)
    state = MADState(run, CLASS_NAMES)
    state.save_candidates(0, Selection(list(IDS), []), dict.fromkeys(IDS, (HEIGHT, WIDTH)))
    oracle = FileOracle(run)
    oracle.show_images(lambda image_id: pool / image_id)
    assert oracle.request_scores(0, predictions) is None  # nobody has scored: the loop would stop here
    return RatingRun(run, pool, IDS, images, predictions)
