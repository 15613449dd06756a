"""The MAD loop's own inference over the pool: per-image statistics, competitor maps cached on disk.

:func:`pool_statistics` runs the target (and each competitor whose map of an image is not cached
yet) over this process's shard of the pool and returns one :class:`~segmend.mad.ImageStats` per
image; :func:`gather_records` collects the records of every DDP process in pool order, so the
statistics do not depend on the number of processes. Maps are never gathered: a competitor's
map is written once to ``<run>/mad/competitors/<name>-<checkpoint hash>/<id>.png`` and read back
in later rounds (a checkpoint that changes gets a new folder).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from segmend.checkpoints import read_weights
from segmend.datamodules.pool import collate_skip_none
from segmend.frozen import FrozenModel
from segmend.mad import ImageStats, batch_discrepancy, class_fractions, mean_pixel_entropy
from segmend.mad.files import id_path
from segmend.mad.human_files import read_label_mask, write_label_mask
from segmend.nets.error_pixel import error_mass

IGNORE_INDEX = 255


@dataclass
class PoolSource:
    """The pool: a dataset of batch-contract samples with ``ids`` and ``image_path(id)``.

    Attributes:
        dataset: The pool's dataset (``ImageFolderPool`` or a DataModule split read with the eval transform).
        skipped: ``(id, reason)`` of images left out before loading (an ``ImageFolderPool``'s scan).

    """

    dataset: Any
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """The readable images' ids, in pool order."""
        return list(self.dataset.ids)

    def image_path(self, image_id: str) -> Path:
        """The image file of ``image_id``."""
        return Path(self.dataset.image_path(image_id))

    def index(self, image_id: str) -> int:
        """The dataset index of ``image_id``."""
        if not hasattr(self, "_index"):
            self._index = {key: i for i, key in enumerate(self.dataset.ids)}
        return self._index[image_id]


class _Shard(Dataset):
    """Samples of some pool indices; a sample that fails to load becomes ``{"failed": id, "reason": ...}``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.indices[k]
        image_id = self.dataset.ids[index]
        try:
            sample = self.dataset[index]
        except (OSError, ValueError) as error:  # DataFormatError is a ValueError
            return {"failed": image_id, "reason": str(error)}
        return sample if sample is not None else {"failed": image_id, "reason": "failed when loaded"}


def _collate(samples: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    failed = [(s["failed"], s["reason"]) for s in samples if "failed" in s]
    return collate_skip_none([s for s in samples if "failed" not in s]), failed


def checkpoint_hash(path: str | Path) -> str:
    """The first 12 hex digits of the file's SHA-1 (the key of a competitor's cached maps)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class CompetitorCache:
    """A competitor's predicted maps, computed once per image and checkpoint, read back afterwards.

    Args:
        name: The competitor's name (a folder name).
        checkpoint: Its SegmentationModule checkpoint (loaded only when a map is missing).
        folder: ``<run>/mad/competitors``; maps go to ``<folder>/<name>-<hash>/<id>.png``.
        num_classes: C.

    """

    def __init__(self, name: str, checkpoint: str | Path, folder: Path, num_classes: int) -> None:
        self.name = name
        self.checkpoint = Path(checkpoint)
        self.folder = Path(folder) / f"{name}-{checkpoint_hash(self.checkpoint)}"
        self.num_classes = num_classes
        self._model: FrozenModel | None = None

    def path(self, image_id: str) -> Path:
        """The cached map of ``image_id``."""
        return id_path(self.folder, image_id, ".png")

    def has(self, image_id: str) -> bool:
        """Whether the map of ``image_id`` is cached."""
        return self.path(image_id).is_file()

    def read(self, image_id: str) -> np.ndarray:
        """The cached (H, W) uint8 map."""
        return read_label_mask(self.path(image_id), self.num_classes)

    def model(self, device: torch.device) -> FrozenModel:
        """The frozen competitor, loaded on first use."""
        if self._model is None:
            self._model = FrozenModel.from_checkpoint(self.checkpoint)
        return self._model.to(device)

    def maps(self, batch: dict[str, Any], device: torch.device) -> Tensor:
        """(B, H, W) long maps of a batch (255 outside each image), from the cache or computed and cached."""
        ids, sizes = batch["id"], batch["content_size"].tolist()
        out = torch.full(batch["image"].shape[:1] + batch["image"].shape[-2:], IGNORE_INDEX, dtype=torch.long)
        if all(self.has(i) for i in ids):
            for b, image_id in enumerate(ids):
                h, w = sizes[b]
                out[b, :h, :w] = torch.from_numpy(self.read(image_id).astype(np.int64))
            return out
        logits = self.model(device)(batch["image"].to(device))
        logits = logits["out"] if isinstance(logits, dict) else logits
        if logits.shape[-2:] != batch["image"].shape[-2:]:
            logits = nn.functional.interpolate(logits, batch["image"].shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1).cpu()
        for b, image_id in enumerate(ids):
            h, w = sizes[b]
            out[b, :h, :w] = pred[b, :h, :w]
            if not self.has(image_id):
                write_label_mask(self.path(image_id), pred[b, :h, :w].numpy().astype(np.uint8))
        return out


class ErrorMassScorer:
    """Per-image error mass of the pool's images from an error-prediction branch (the ``error_mass`` strategy).

    Loads an :class:`~segmend.modules.ErrorPixelModule` checkpoint whose error stage is trained
    and scores each image with its error branch, which judges the predictions of the module's own
    frozen semantic branch. Padding is left out: each image's scores are over its own pixels.

    Args:
        checkpoint: The ErrorPixelModule checkpoint (its ``semantic_checkpoint``, if it names one, must exist).

    """

    def __init__(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)
        self._model: LightningModule | None = None

    def model(self, device: torch.device) -> LightningModule:
        """The error-pixel module in eval mode, loaded on first use."""
        if self._model is None:
            from segmend.modules import ErrorPixelModule

            self._model = load_module(ErrorPixelModule, self.checkpoint)
            if not bool(self._model.error_ready):
                raise ValueError(
                    f"error_checkpoint {self.checkpoint}: its error branch is not trained (error_ready is false); "
                    "give the checkpoint of a finished 'error' stage or later."
                )
        return self._model.to(device)

    def __call__(self, images: Tensor, sizes: Sequence[Sequence[int]], device: torch.device) -> dict[str, list[float]]:
        """``error_mass`` (mean predicted error probability) and ``error_area`` (error-mask fraction) per image."""
        model = self.model(device)
        with torch.no_grad():
            error_prob = model.cascade(images.to(device), detail=False).error_prob.cpu()  # (B, 1, H, W)
        threshold = float(model.hparams.threshold)
        scores: dict[str, list[float]] = {"error_mass": [], "error_area": []}
        for b, (h, w) in enumerate(sizes):
            mass = error_mass(error_prob[b : b + 1, :, :h, :w], threshold)
            scores["error_mass"].append(float(mass.mean[0]))
            scores["error_area"].append(float(mass.area[0]))
        return scores


def load_module(cls: type[LightningModule], checkpoint: str | Path) -> LightningModule:
    """A module of class ``cls`` built from a checkpoint's hyper-parameters, its weights loaded, in eval mode.

    Raises:
        ValueError: If the file is not a checkpoint of such a module or its weights do not fit.

    """
    weights = read_weights(checkpoint, prefix="")
    try:
        module = cls(**weights.hyper_parameters)
        module.configure_models()
        module.load_state_dict(weights.state_dict)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"checkpoint {checkpoint}: not a {cls.__name__} checkpoint that loads ({error})") from error
    return module.eval()


def target_probabilities(target: LightningModule, images: Tensor) -> Tensor:
    """(B, C, H, W) class probabilities of the target (eval mode is the caller's), without gradients."""
    predict = getattr(target, "predict_probabilities", None)
    with torch.no_grad():
        if callable(predict):
            return predict(images, stage="predict").float()
        return target(images).float().softmax(1)


def _masked(pred: Tensor, sizes: list[list[int]]) -> Tensor:
    out = torch.full_like(pred, IGNORE_INDEX)
    for b, (h, w) in enumerate(sizes):
        out[b, :h, :w] = pred[b, :h, :w]
    return out


def iterate_shard(
    source: PoolSource, indices: Sequence[int], batch_size: int, num_workers: int = 0
) -> Iterator[tuple[dict[str, Any] | None, list[tuple[str, str]]]]:
    """Batches of the pool at ``indices`` and the images that failed to load in each."""
    loader = DataLoader(
        _Shard(source.dataset, indices), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    yield from loader


def pool_statistics(
    target: LightningModule,
    competitors: Sequence[CompetitorCache],
    source: PoolSource,
    world_size: int,
    rank: int,
    num_classes: int,
    device: torch.device,
    batch_size: int = 8,
    num_workers: int = 0,
    scorers: Sequence[Callable[[Tensor, list[list[int]], torch.device], dict[str, list[float]]]] = (),
) -> list[ImageStats]:
    """Per-image statistics of this process's shard of the pool (images ``rank, rank + world_size, ...``).

    Records of images that fail to load have ``readable=False``; rank 0 also adds the images the
    pool skipped before loading. Scalars: ``entropy`` (mean pixel entropy of the target), the
    image's ``height`` and ``width``, and whatever each of ``scorers`` returns: a callable
    ``(images, sizes, device) -> {name: one value per image}`` (e.g. :class:`ErrorMassScorer`).
    """
    records: list[ImageStats] = []
    indices = range(rank, len(source.dataset), world_size)
    for batch, failed in iterate_shard(source, indices, batch_size, num_workers):
        records += [ImageStats(id=image_id, readable=False) for image_id, _ in failed]
        if batch is None:
            continue
        sizes = batch["content_size"].tolist()
        probs = target_probabilities(target, batch["image"].to(device)).cpu()
        pred = _masked(probs.argmax(1), sizes)
        maps = [c.maps(batch, device) for c in competitors]
        fractions = class_fractions(pred, num_classes).numpy()
        disc = [batch_discrepancy(pred, m, num_classes).numpy() for m in maps]
        comp = [class_fractions(m, num_classes).numpy() for m in maps]
        extra: dict[str, list[float]] = {}
        for scorer in scorers:
            extra.update(scorer(batch["image"], sizes, device))
        for b, image_id in enumerate(batch["id"]):
            h, w = sizes[b]
            entropy = float(mean_pixel_entropy(probs[b : b + 1, :, :h, :w])[0])
            scalars = {"entropy": entropy, "height": float(h), "width": float(w)}
            scalars.update({name: values[b] for name, values in extra.items()})
            records.append(
                ImageStats(
                    id=image_id,
                    discrepancy=np.array([d[b] for d in disc], dtype=np.float32),
                    target_fractions=fractions[b].astype(np.float32),  # a copy: the batch's array is not kept alive
                    competitor_fractions=np.array([c[b] for c in comp], dtype=np.float32),
                    scalars=scalars,
                )
            )
    if rank == 0:
        records += [ImageStats(id=image_id, readable=False) for image_id, _ in source.skipped]
    return records


def gather_records(records: list[ImageStats], all_gather: Callable[[list[ImageStats]], list[list[ImageStats]]] | None,
                   order: Sequence[str]) -> list[ImageStats]:  # fmt: skip
    """Every process's records in pool order (``order``: the pool's ids; others, e.g. skipped, after them).

    Args:
        records: This process's records.
        all_gather: ``records -> [records of each process]`` (``None``: one process).
        order: The pool's ids in order.

    """
    parts = all_gather(records) if all_gather is not None else [records]
    merged = {record.id: record for part in parts for record in part}
    position = {image_id: i for i, image_id in enumerate(order)}
    return sorted(merged.values(), key=lambda r: (position.get(r.id, len(position)), r.id))


def predict_maps(
    target: LightningModule, source: PoolSource, ids: Sequence[str], device: torch.device, batch_size: int = 8
) -> dict[str, np.ndarray]:
    """The target's (H, W) uint8 maps of some pool images (images that fail to load are left out)."""
    maps: dict[str, np.ndarray] = {}
    for batch, _failed in iterate_shard(source, [source.index(i) for i in ids], batch_size):
        if batch is None:
            continue
        pred = target_probabilities(target, batch["image"].to(device)).argmax(1).cpu()
        for b, (h, w) in enumerate(batch["content_size"].tolist()):
            maps[batch["id"][b]] = pred[b, :h, :w].numpy().astype(np.uint8)
    return maps


def dataset_miou(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int) -> float:
    """MIoU over a set of images (confusion summed; classes with an empty union left out, mmseg's rule)."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, label in zip(predictions, labels, strict=True):
        valid = (label != IGNORE_INDEX) & (pred < num_classes)
        confusion += np.bincount(
            label[valid].astype(np.int64) * num_classes + pred[valid], minlength=num_classes**2
        ).reshape(num_classes, num_classes)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean()) if present.any() else float("nan")
