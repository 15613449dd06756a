"""An unlabeled pool of images in a folder tree, for prediction and troubleshooting.

``docs/datasets.md`` (Unlabeled image pools) says what a pool reads and reports. Ids are the POSIX
path of a file relative to ``root``, extension included (``street/0001.jpg``), served in sorted
order. Images are read by :func:`segmend.datamodules.image_io.read_image`, as people see them.
Unreadable files are left out by the scan (:mod:`segmend.datamodules.pool_scan`); a file that fails
later, when loaded, gives ``None``, which :func:`collate_skip_none` drops.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.errors import DataFormatError, missing_data_error
from segmend.datamodules.image_io import IMAGE_EXTENSIONS, read_image
from segmend.datamodules.label_files import IGNORE_INDEX
from segmend.datamodules.pool_scan import (
    NUM_EXAMPLES,
    PHOTO_EXTENSIONS,
    PoolReport,
    Verify,
    check_image_file,
    check_verify,
    describe_files_by_extension,
)
from segmend.datamodules.seeding import loader_generator
from segmend.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, to_sample

SECTION = "Unlabeled image pools"
SIZE_MULTIPLE = 32
LOAD_FAILURE = "failed when loaded after passing the scan"

log = logging.getLogger(__name__)


def collate_skip_none(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate samples of the batch contract, dropping the ``None`` of images that failed to load.

    Samples of different sizes are padded at the bottom/right to the largest (images with the
    normalised value of black, as the eval transform pads; masks with 255; boxes with 0).

    Args:
        samples: Samples from :class:`ImageFolderPool` (or any reader), ``None`` for failures.

    Returns:
        The batch, or ``None`` when every sample failed (:class:`SkipNoneDataLoader` skips it).

    """
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    height = max(s["image"].shape[-2] for s in kept)
    width = max(s["image"].shape[-1] for s in kept)
    if any(s["image"].shape[-2:] != (height, width) for s in kept):
        kept = [_pad_sample(s, height, width) for s in kept]
    return default_collate(kept)


def _pad_sample(sample: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    pad = (0, width - sample["image"].shape[-1], 0, height - sample["image"].shape[-2])
    black = [(0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    image = torch.stack([torch.nn.functional.pad(c, pad, value=v) for c, v in zip(sample["image"], black, strict=True)])
    out = {**sample, "image": image, "mask": torch.nn.functional.pad(sample["mask"], pad, value=IGNORE_INDEX)}
    if "boxes" in sample:
        out["boxes"] = torch.nn.functional.pad(sample["boxes"], pad, value=0.0)
    return out


class SkipNoneDataLoader(DataLoader):
    """A DataLoader that never yields ``None``: batches whose every sample failed are skipped.

    Use it with :func:`collate_skip_none`. ``len()`` still counts every batch, skipped or not.
    """

    def __iter__(self):  # noqa: ANN204, D105
        return (batch for batch in super().__iter__() if batch is not None)


class ImageFolderPool(Dataset):
    """Unlabeled images found recursively under a folder, scanned once for unreadable files.

    Samples follow the batch contract with ``has_mask=False`` and a mask of 255 everywhere.

    Args:
        root: Folder of the pool; searched recursively (symbolic links to folders are not followed).
        transform: Callable ``(image, mask, box_mask, id) -> sample``; ``None`` uses the eval
            transform (normalise, pad to a multiple of 32).
        extensions: File extensions read as images, matched case-insensitively; the default is
            every photo format Pillow reads here. Other files are listed in :attr:`report`.
        verify: Scan check: ``"decode"`` decodes every file in full (catches truncated and corrupt
            files; a few ms per small image), ``"header"`` reads only headers.
        argument: The argument ``root`` was given as, named in errors (e.g. MAD's ``pool_root``).

    Raises:
        FileNotFoundError: If ``root`` is missing or holds no image files.
        DataFormatError: If image files were found but none of them is readable.
        ValueError: If ``verify`` or ``extensions`` is invalid.

    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[..., dict[str, Any]] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        verify: Verify = "decode",
        argument: str = "root",
    ) -> None:
        check_verify(verify)
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        if not self.extensions:
            raise ValueError("extensions is empty; give the image extensions to read, e.g. ('.jpg', '.png').")
        self.root = Path(root)
        self.transform = transform or partial(to_sample, eval_transform(SIZE_MULTIPLE))
        self.verify = verify
        expected = f"a folder tree of images ({', '.join(self.extensions)})"
        if not self.root.is_dir():
            raise missing_data_error(self.root, expected, SECTION, argument)
        candidates, other_files = self._find_files()
        if not candidates:
            held = f" (only {describe_files_by_extension(other_files)})" if other_files else ""
            raise missing_data_error(self.root, f"{expected}; the folder holds none{held}", SECTION, argument)
        self.report = PoolReport(root=str(self.root), verify=verify, other_files=other_files)
        self.ids: list[str] = []
        for sample_id in candidates:
            path = self.root / sample_id
            reason = "broken symbolic link" if not path.exists() else check_image_file(path, verify)
            if reason is None:
                self.ids.append(sample_id)
            else:
                self.report.skipped.append((sample_id, reason))
        self.report.num_images = len(self.ids)
        self._failed_at_load: set[str] = set()
        if not self.ids:
            listed = "; ".join(f"{p}: {r}" for p, r in self.report.skipped[:10])
            raise DataFormatError(
                f"None of the {len(candidates)} image files under {self.root} can be read ({listed}). "
                "Replace the corrupt files or point root at another folder."
            )
        if self.report.skipped:
            log.warning(
                "Image pool %s: skipped %d unreadable file(s) of %d; see the pool report.",
                self.root,
                self.report.num_skipped,
                len(candidates),
            )
        unread = {ext: v for ext, v in other_files.items() if ext in PHOTO_EXTENSIONS}
        if unread:
            log.warning(
                "Image pool %s: left out %s: images of a format not read (extensions: %s). Convert them to "
                "JPEG or PNG, or pass their extension in `extensions` if Pillow reads them; see the pool report.",
                self.root,
                describe_files_by_extension(unread),
                ", ".join(self.extensions),
            )

    def _find_files(self) -> tuple[list[str], dict[str, tuple[int, list[str]]]]:
        """Ids (relative POSIX paths) of the files with an image extension, sorted; the others by extension."""
        found: list[str] = []
        others: dict[str, list[str]] = {}
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                rel = (Path(dirpath) / name).relative_to(self.root).as_posix()
                ext = os.path.splitext(name)[1].lower()
                if ext in self.extensions:
                    found.append(rel)
                else:
                    others.setdefault(ext, []).append(rel)
        other_files = {ext: (len(paths), sorted(paths)[:NUM_EXAMPLES]) for ext, paths in sorted(others.items())}
        return sorted(found), other_files

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, sample_id: str) -> Path:
        """Path of the image of ``sample_id``."""
        return self.root / sample_id

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """The sample at ``index``, or ``None`` if its file cannot be read any more.

        A failure is logged and recorded in :attr:`report` (once per file). In DataLoader worker
        processes the record stays in the worker's copy of the pool and does not reach
        :attr:`report` of the main process (the log message does); the scan is the primary guard,
        loading is the fallback.
        """
        sample_id = self.ids[index]
        try:
            image = read_image(self.image_path(sample_id))
        except DataFormatError as err:
            self.record_load_failure(sample_id, str(err))
            return None
        return self.transform(image, None, None, sample_id)

    def record_load_failure(self, sample_id: str, reason: str) -> None:
        """Record that ``sample_id`` passed the scan but failed to load (once per file)."""
        log.warning("Image pool %s: skipping %s, which %s: %s", self.root, sample_id, LOAD_FAILURE, reason)
        if sample_id in self._failed_at_load:
            return
        self._failed_at_load.add(sample_id)
        self.report.skipped.append((sample_id, f"{LOAD_FAILURE}: {reason}"))
        self.report.num_images -= 1

    def write_report(self, path: str | Path) -> Path:
        """Write :attr:`report` as JSON (atomically: a kill never leaves half a file).

        Returns:
            The path written.

        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.report.to_dict(), indent=1))
        tmp.replace(path)
        return path


class ImageFolderPoolDataModule(SegmentationDataModule):
    """An unlabeled :class:`ImageFolderPool` served for ``predict`` (split ``"pool"``).

    A pool has no labels, so the classes of the model it is used with are given here; under
    ``segmend``/``lightning`` the model's ``num_classes`` and ``class_names`` are linked from them.
    Training, validation and testing are not available.

    Args:
        root: Folder of the pool (searched recursively).
        class_names: Names of the model's classes, background included (at least 2).
        image_size: Longer side images are resized to, padded to a square of a multiple of 32;
            ``None`` keeps sizes (batches are padded to the largest).
        batch_size: Prediction batch size.
        num_workers: DataLoader worker processes.
        verify: Scan check of :class:`ImageFolderPool`, ``"decode"`` or ``"header"``.
        extensions: File extensions read as images.
        report_path: Where to write the pool report as JSON after the scan and after each stage;
            ``None`` writes none (the report is still at ``datamodule.pool.report``).

    Raises:
        ValueError: For fewer than 2 or repeated class names, or a non-positive ``image_size``.

    """

    def __init__(
        self,
        root: str,
        class_names: list[str],
        image_size: int | None = 512,
        batch_size: int = 8,
        num_workers: int = 0,
        verify: Verify = "decode",
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        report_path: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, predict_split="pool")
        names = tuple(str(n) for n in class_names)
        if len(names) < 2:
            raise ValueError(
                f"class_names has {len(names)} entries; give the names of the model's classes, background "
                "included (at least 2), e.g. class_names: [background, person, car]."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"class_names repeats names: {list(names)}; give each class once.")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels or null, got {image_size}.")
        check_verify(verify)
        self.root = Path(root)
        self.class_names = names
        self.image_size = image_size
        self.verify = verify
        self.extensions = tuple(extensions)
        self.report_path = report_path

    def build_dataset(self, split: str, train: bool) -> Dataset:
        """Scan the pool (split ``"pool"``); other splits do not exist.

        Raises:
            ValueError: For any split but ``"pool"``.

        """
        if split != "pool":
            raise ValueError(
                f"ImageFolderPoolDataModule holds unlabeled images and serves only `predict` (split 'pool'), "
                f"not the '{split}' split. Train, validate and test with a labeled DataModule (e.g. "
                "VOCDataModule) and use the pool with `segmend predict` or for troubleshooting."
            )
        pool = ImageFolderPool(
            self.root,
            transform=partial(to_sample, eval_transform(SIZE_MULTIPLE, self.image_size)),
            extensions=self.extensions,
            verify=self.verify,
        )
        if self.report_path:
            pool.write_report(self.report_path)
        return pool

    @property
    def pool(self) -> ImageFolderPool:
        """The scanned pool (scanned on first use)."""
        return self.dataset("pool")  # type: ignore[return-value]

    def predict_dataloader(self) -> DataLoader:
        """Batches of the pool in id order (under DDP each image on one process); failed images are dropped."""
        return SkipNoneDataLoader(
            self.pool,
            batch_size=self.eval_batch_size,
            sampler=self.eval_sampler(self.pool),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_skip_none,
            generator=loader_generator(self.data_seed, "eval"),
        )

    def teardown(self, stage: str) -> None:
        """Write the report again, with failures found while loading (main process only)."""
        if self.report_path and self.has_dataset("pool"):
            self.pool.write_report(self.report_path)
