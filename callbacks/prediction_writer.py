"""Write predicted label maps, overlays and probabilities to disk while ``predict`` runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from segmend.datamodules.image_io import IMAGE_EXTENSIONS
from segmend.datamodules.voc_format import voc_palette, write_palette_mask
from segmend.viz import blend, colorize, denormalize

#: Extensions removed from sample ids to name the written files (``street/0001.jpg`` -> ``street/0001.png``).
LABELS, OVERLAYS, PROBS = "labels", "overlays", "probs"


class SegmentationPredictionWriter(BasePredictionWriter):
    """Write each predicted label map to disk as its batch finishes; nothing is kept in memory.

    ``segmend predict`` adds one with the defaults below when the config has no prediction writer,
    and does not return predictions (``return_predictions`` defaults to false), so predicting over a
    large set needs no more memory than one batch. In your own Trainer, add it to ``callbacks`` and
    call ``trainer.predict(..., return_predictions=False)``.

    Files written under ``output_dir`` (``<name>`` is the sample id without its image extension, so
    ``street/0001.jpg`` gives ``labels/street/0001.png``; sub-folders of ids are kept):

    * ``labels/<name>.png``: palette ('P') PNG of class indices, coloured with the DataModule's
      ``palette`` (VOC colours when it has none), at the image's original size: the padding added
      by the eval transforms is cropped off, and an image the DataModule resized (e.g. an image pool
      with ``image_size``) is brought back to its original size (probabilities resized bilinearly,
      then the arg max).
    * ``overlays/<name>.png`` (``overlays=True``): the image blended with the colour map.
    * ``probs/<name>.npy`` (``probabilities=True``): float16 class probabilities, (C, H, W).

    Two ids that differ only in their extension (``a.jpg`` and ``a.png`` in one folder of a pool)
    keep it instead, so neither overwrites the other: ``labels/a.jpg.png`` and ``labels/a.png.png``.
    Ids that would leave ``output_dir`` (absolute, or with a ``..`` part) are refused. Files are
    written atomically (a kill never leaves half a file); a re-run into the same folder overwrites
    the files of the same ids. With several predict dataloaders, each writes into
    ``dataloader_<k>/``.

    Under DDP every rank writes the samples of its own shard. Lightning's predict sampler does not
    repeat samples to even out the shards, and an id seen twice on a rank is written once. At the
    end, rank zero prints the folder and how many files were written (per rank, under DDP).

    Args:
        output_dir: Folder to write into, created when missing. ``None`` (the default) means
            ``<trainer.default_root_dir>/predictions/<split>``, where ``<split>`` is the
            DataModule's ``predict_split`` (``val``, ``test``, ``pool``, ...) or ``predict`` when the
            DataModule has none.
        overlays: Also write overlays of the image and the colour map.
        overlay_alpha: Weight of the colour map in overlays, in [0, 1].
        probabilities: Also write the class probabilities as float16 ``.npy`` arrays (large:
            2 bytes x classes x pixels per image).

    Raises:
        ValueError: For an ``overlay_alpha`` outside [0, 1] or an ``output_dir`` that is a file.

    """

    def __init__(
        self,
        output_dir: str | None = None,
        overlays: bool = False,
        overlay_alpha: float = 0.5,
        probabilities: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be in [0, 1] (the colour map's weight), got {overlay_alpha}.")
        if output_dir is not None:
            _check_folder(Path(output_dir))
        self.output_dir = output_dir
        self.overlays = overlays
        self.overlay_alpha = overlay_alpha
        self.probabilities = probabilities
        self.resolved_dir: Path | None = None
        self.counts = {LABELS: 0, OVERLAYS: 0, PROBS: 0}
        self.duplicates = 0
        self._seen: set[tuple[int, str]] = set()
        self._keep_suffix: list[set[str]] = []
        self._num_loaders = 1
        self._palette = voc_palette()
        self._warned_size = False

    # ------------------------------------------------------------------ hooks
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Resolve and create the output folder, read the palette, reset the counts."""
        self.resolved_dir = self.default_output_dir(trainer) if self.output_dir is None else Path(self.output_dir)
        _check_folder(self.resolved_dir)
        try:
            self.resolved_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"Cannot create the prediction folder {self.resolved_dir}: {err}. Set the writer's output_dir "
                "to a writable folder."
            ) from err
        self.counts = {LABELS: 0, OVERLAYS: 0, PROBS: 0}
        self.duplicates = 0
        self._seen = set()
        self._palette = self.palette_of(trainer, getattr(pl_module, "num_classes", None))
        loaders = trainer.predict_dataloaders
        loaders = loaders if isinstance(loaders, Sequence) else [loaders]
        self._keep_suffix = [_colliding_stems(getattr(loader, "dataset", None)) for loader in loaders]
        self._num_loaders = len(loaders)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write the label maps (and overlays and probabilities) of one batch."""
        if not isinstance(prediction, dict) or ("labels" not in prediction and "probs" not in prediction):
            raise ValueError(
                "SegmentationPredictionWriter expects predict_step to return a dict with 'labels' (B, H, W) "
                f"and/or 'probs' (B, C, H, W), as SegmentationModule.predict_step does; got {type(prediction).__name__}"
                f"{' with keys ' + str(sorted(prediction)) if isinstance(prediction, dict) else ''}."
            )
        ids = prediction.get("id") or (batch.get("id") if isinstance(batch, dict) else None)
        if ids is None:
            raise ValueError(
                "SegmentationPredictionWriter names files by sample id, but the batch has no 'id' list; "
                "give each sample an 'id' (segmend's batch contract) to write its predictions."
            )
        probs: Tensor | None = prediction.get("probs")
        labels: Tensor | None = prediction.get("labels")
        if self.probabilities and probs is None:
            raise ValueError(
                "probabilities=True needs predict_step to return 'probs' (B, C, H, W); it returned only "
                f"{sorted(k for k, v in prediction.items() if v is not None)}. Switch probabilities off or return them."
            )
        reference = probs if probs is not None else labels
        for i, sample_id in enumerate(ids):
            key = (dataloader_idx, str(sample_id))
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            name = self.file_name(str(sample_id), dataloader_idx)
            content, original = self._sizes(batch, i, tuple(reference.shape[-2:]))
            sample_probs, sample_labels = _restore(
                None if probs is None else probs[i], None if labels is None else labels[i], content, original
            )
            self._write_labels(name, sample_labels)
            if self.overlays:
                self._write_overlay(name, batch["image"][i], sample_labels, content, original)
            if self.probabilities:
                self._write_probs(name, sample_probs)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Print (rank zero) the output folder and the number of files written, per rank under DDP."""
        # each rank fills its own row, a sum over ranks gathers the rows (without a deprecated all_gather)
        counts = torch.zeros(trainer.world_size, 4, dtype=torch.long, device=pl_module.device)
        counts[trainer.global_rank] = torch.tensor(
            [self.counts[LABELS], self.counts[OVERLAYS], self.counts[PROBS], self.duplicates]
        )
        per_rank = trainer.strategy.reduce(counts, reduce_op="sum").cpu().tolist()
        if not trainer.is_global_zero:
            return
        print(self.summary(per_rank))

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def default_output_dir(trainer: Trainer) -> Path:
        """``<trainer.default_root_dir>/predictions/<predict_split or "predict">``."""
        split = getattr(trainer.datamodule, "predict_split", None) if trainer.datamodule is not None else None
        return Path(trainer.default_root_dir) / "predictions" / str(split or "predict")

    @staticmethod
    def palette_of(trainer: Trainer, num_classes: int | None) -> np.ndarray:
        """(256, 3) uint8 colours: the DataModule's ``palette``, VOC colours when it has none.

        Raises:
            ValueError: If the model has more classes than an 8-bit palette PNG holds, or than the
                palette has colours.

        """
        palette = getattr(trainer.datamodule, "palette", None) if trainer.datamodule is not None else None
        palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        if num_classes is not None and num_classes > 256:
            raise ValueError(
                f"The model has {num_classes} classes; label maps are written as 8-bit palette PNGs, which "
                "hold at most 256. Write probabilities only with your own BasePredictionWriter."
            )
        if num_classes is not None and len(palette) < num_classes:
            raise ValueError(
                f"The DataModule's palette has {len(palette)} colours but the model has {num_classes} classes; "
                "give the DataModule a palette with one (R, G, B) row per class."
            )
        full = np.zeros((256, 3), dtype=np.uint8)
        full[: min(len(palette), 256)] = palette[:256]
        return full

    def file_name(self, sample_id: str, dataloader_idx: int = 0) -> PurePosixPath:
        """Relative name (without extension) the files of ``sample_id`` are written under.

        Raises:
            ValueError: If the id is empty, absolute or has a ``..`` part (it would leave ``output_dir``).

        """
        path = PurePosixPath(sample_id)
        if not sample_id or path.is_absolute() or ".." in path.parts or "\\" in sample_id or path.name in ("", "."):
            raise ValueError(
                f"Sample id {sample_id!r} cannot name a file inside the prediction folder: expected a relative "
                "path such as 'street/0001.jpg' (no leading '/', no '..' part, no backslash). Give the dataset "
                "ids of that form."
            )
        keep = self._keep_suffix[dataloader_idx] if dataloader_idx < len(self._keep_suffix) else set()
        if path.suffix.lower() in IMAGE_EXTENSIONS and _stem(sample_id) not in keep:
            path = path.with_suffix("")
        if getattr(self, "_num_loaders", 1) > 1:
            path = PurePosixPath(f"dataloader_{dataloader_idx}") / path
        return path

    def summary(self, per_rank: list[list[int]]) -> str:
        """The line printed at the end of ``predict``."""
        totals = [sum(row[k] for row in per_rank) for k in range(4)]
        parts = [f"{totals[0]} label maps ({LABELS}/)"]
        if self.overlays:
            parts.append(f"{totals[1]} overlays ({OVERLAYS}/)")
        if self.probabilities:
            parts.append(f"{totals[2]} float16 probability arrays ({PROBS}/)")
        line = f"Predictions written to {self.resolved_dir}: {', '.join(parts)}"
        if len(per_rank) > 1:
            line += f"; label maps per rank: {' + '.join(str(row[0]) for row in per_rank)}"
        if totals[3]:
            line += f"; {totals[3]} repeated samples not written again"
        return line

    def _sizes(self, batch: Any, i: int, tensor_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """(content, original) sizes of sample ``i``; the whole tensor when the batch lacks them."""
        if isinstance(batch, dict) and "content_size" in batch and "image_size" in batch:
            content = tuple(int(v) for v in batch["content_size"][i])
            original = tuple(int(v) for v in batch["image_size"][i])
            return content, original  # type: ignore[return-value]
        if not self._warned_size:
            rank_zero_warn(
                "The predict batches carry no 'image_size' / 'content_size' (segmend's batch contract), so "
                "label maps are written at the network's input size, padding included."
            )
            self._warned_size = True
        return tensor_size, tensor_size

    def _target(self, kind: str, name: PurePosixPath, suffix: str) -> Path:
        assert self.resolved_dir is not None
        path = self.resolved_dir / kind / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write_labels(self, name: PurePosixPath, labels: np.ndarray) -> None:
        path = self._target(LABELS, name, ".png")
        _atomic(path, lambda tmp: write_palette_mask(tmp, labels.astype(np.uint8), self._palette))
        self.counts[LABELS] += 1

    def _write_overlay(
        self,
        name: PurePosixPath,
        image: Tensor,
        labels: np.ndarray,
        content: tuple[int, int],
        original: tuple[int, int],
    ) -> None:
        rgb = image[:, : content[0], : content[1]].float()
        if content != original:
            rgb = F.interpolate(rgb[None], size=original, mode="bilinear", align_corners=False)[0]
        colors = colorize(labels, self._palette)
        picture = blend(denormalize(rgb), colors, self.overlay_alpha)
        path = self._target(OVERLAYS, name, ".png")
        _atomic(path, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))
        self.counts[OVERLAYS] += 1

    def _write_probs(self, name: PurePosixPath, probs: Tensor | None) -> None:
        assert probs is not None
        array = probs.to(torch.float16).cpu().numpy()
        path = self._target(PROBS, name, ".npy")

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, array)

        _atomic(path, save)
        self.counts[PROBS] += 1


def _restore(
    probs: Tensor | None, labels: Tensor | None, content: tuple[int, int], original: tuple[int, int]
) -> tuple[Tensor | None, np.ndarray]:
    """Crop the padding off one sample and bring it back to its original size.

    Returns:
        (C, H, W) probabilities (or ``None``) and (H, W) uint8-ready class indices at ``original``.

    """
    height, width = content
    if probs is not None:
        probs = probs[:, :height, :width].float()
        if content != original:
            probs = F.interpolate(probs[None], size=original, mode="bilinear", align_corners=False)[0]
            return probs, probs.argmax(dim=0).cpu().numpy()
    if labels is not None:
        labels = labels[:height, :width]
        if content != original:
            labels = F.interpolate(labels[None, None].float(), size=original, mode="nearest")[0, 0].long()
        return probs, labels.cpu().numpy()
    assert probs is not None
    return probs, probs.argmax(dim=0).cpu().numpy()


def _stem(sample_id: str) -> str:
    path = PurePosixPath(sample_id)
    return str(path.with_suffix("")) if path.suffix.lower() in IMAGE_EXTENSIONS else sample_id


def _colliding_stems(dataset: Any) -> set[str]:
    """Names shared by several ids of ``dataset`` once their extension is removed (``a.jpg``, ``a.png``)."""
    ids = getattr(dataset, "ids", None)
    if not isinstance(ids, Sequence):
        return set()
    seen: set[str] = set()
    shared: set[str] = set()
    for sample_id in ids:
        stem = _stem(str(sample_id))
        (shared if stem in seen else seen).add(stem)
    return shared


def _check_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"The prediction output_dir {path} is a file; expected a folder (created when missing). "
            "Give another output_dir or move the file."
        )


def _atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
