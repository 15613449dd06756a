"""The candidates' images for people: found through the loop's pool, written upright.

The loop reads a pool image from ``PoolSource.image_path(id)``: ``<pool_root>/<id>`` for a folder
of images (``ImageFolderPool``), ``DataModule.dataset(pool_split).image_path(id)`` for a split of the
DataModule. :class:`PoolImages` does the same from the run folder's ``config.yaml`` (or from a
folder given by hand). :func:`candidate_image_file` is the one place that says where a candidate's
image comes from: the loop's upright copy in the run folder (``round_<r>/images/<id>.jpg``), else
the pool. :func:`upright_image` gives the bytes a person's tool shows the way
the loop saw them (:func:`segmend.datamodules.image_io.read_image`: EXIF orientation applied,
8 bits, alpha over white).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segmend.datamodules.image_io import exif_orientation, read_image, read_image_size
from segmend.mad.files import MADFileError, check_id
from segmend.mad.layout import MADLayout
from segmend.mad.run_config import read_run_config


class PoolImages:
    """``image id -> image file`` of the loop's pool.

    Args:
        image_path: The pool's ``image_path``.
        description: What the pool is (named in errors).

    """

    def __init__(self, image_path: Callable[[str], Path], description: str) -> None:
        self._image_path = image_path
        self.description = description

    @classmethod
    def from_root(cls, root: str | Path) -> PoolImages:
        """A folder of images whose ids are paths relative to it, as ``ImageFolderPool`` (not scanned)."""
        root = Path(root)

        def image_path(image_id: str) -> Path:
            check_id(image_id)
            return root / image_id

        return cls(image_path, f"the image folder {root}")

    @classmethod
    def from_run(cls, run_dir: str | Path, pool_root: str | Path | None = None) -> PoolImages:
        """The pool of a run: ``pool_root`` if given, else the ``MADTroubleshooting`` arguments of ``config.yaml``.

        A ``pool_split`` builds the config's DataModule (its ``dataset(split)``, not its training data).

        Raises:
            MADFileError: Without ``config.yaml`` or a MAD callback in it (give ``pool_root``), or
                when the DataModule cannot be built.

        """
        if pool_root is not None:
            return cls.from_root(pool_root)
        config = read_run_config(run_dir)
        mad = config.mad
        hint = "pass the folder of the pool's images (--pool DIR), where <DIR>/<id> is each image"
        if config.path is None:
            raise MADFileError(f"{Path(run_dir) / 'config.yaml'} is missing (a run started from Python?); {hint}.")
        if mad.get("pool_root"):
            return cls.from_root(mad["pool_root"])
        if not mad.get("pool_split") or config.data is None:
            raise MADFileError(f"{config.path} names no pool (MADTroubleshooting pool_root or pool_split); {hint}.")
        split = str(mad["pool_split"])
        dataset = _datamodule(config.data, config.path).dataset(split, False)
        return cls(lambda image_id: Path(dataset.image_path(image_id)), f"the {split!r} split of {config.path}")

    def path(self, image_id: str) -> Path:
        """The image file of ``image_id``."""
        return self._image_path(image_id)


def _datamodule(data: dict[str, Any], path: Path) -> Any:
    """The DataModule of a config's ``data`` section, as ``segmend fit`` builds it."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    import segmend.datamodules  # noqa: F401 - registers the short class names

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    try:
        return parser.instantiate(parser.parse_object({"data": data})).data
    except Exception as err:  # noqa: BLE001 - jsonargparse and DataModules raise many types
        raise MADFileError(f"The DataModule of {path} cannot be built to read the pool ({err}).") from err


def candidate_image_file(
    layout: MADLayout, round_index: int, image_id: str, pool: Callable[[], PoolImages], prefer_pool: bool = False
) -> Path:
    """The image file of a candidate of round ``round_index``: the one place that says where it comes from.

    The run folder's copy ``round_<r>/images/<id>.jpg`` (written by the loop for people, upright)
    when it exists, else the pool's file as the loop reads it; ``prefer_pool`` reverses the order.

    Args:
        layout: The run folder's layout.
        round_index: The round.
        image_id: The candidate.
        pool: Returns the pool (called only when the pool is needed: building it may take a while).
        prefer_pool: Take the pool's file when it exists (the original bytes, e.g. a lossless PNG).

    Raises:
        MADFileError: If neither file exists.

    """
    copy = layout.image_file(round_index, image_id)
    if copy.is_file() and not prefer_pool:
        return copy
    images = pool()
    path = images.path(image_id)
    if path.is_file():
        return path
    if copy.is_file():
        return copy
    raise MADFileError(
        f"The image of {image_id!r} is missing: neither {copy} (the run folder's copy) nor {path} (from "
        f"{images.description}) exists. Restore the pool, or give its folder with --pool."
    )


def upright_image(path: Path) -> tuple[bytes, str, tuple[int, int]]:
    """An image file's bytes as people should see it, with the file extension they need, and its (H, W).

    A baseline 8-bit JPEG without an EXIF rotation is passed through unchanged (no re-encoding);
    any other image is read as the loop reads it (:func:`read_image`) and written as a PNG.

    Raises:
        ImageReadError: If the image cannot be read.

    """
    size = read_image_size(path)  # a missing or broken file raises here, with a clear message
    with Image.open(path) as img:
        plain_jpeg = (
            img.format == "JPEG" and img.mode in ("RGB", "L") and exif_orientation(img, path, loaded=False) == 1
        )
    if plain_jpeg:
        return path.read_bytes(), ".jpg", size
    pixels = read_image(path)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue(), ".png", (int(pixels.shape[0]), int(pixels.shape[1]))
