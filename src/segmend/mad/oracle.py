"""Oracles: who gives the MAD loop its weak scores and pixel labels.

An :class:`Oracle` answers two requests of a round: weak scores for the candidates M (seeing the
target's predicted maps), and dense labels for S and T. Each returns the answer, or ``None`` when
people have not finished yet; the loop then saves its state and stops, and a later run asks again.

* :class:`SimulatedOracle` answers at once from hidden ground truth (experiments, tests).
* :class:`FileOracle` reads what people wrote into the run folder (one score file per rater, palette
  PNG masks; :mod:`segmend.mad.human_files`) and writes ``README.txt`` saying what is missing.

An oracle that shows people the images (:class:`ShowsImages`, as :class:`FileOracle` does) is told
where the pool's image files are; it copies the candidates' images, upright, into the run folder, so
the rating page and other tools read nothing outside it.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from segmend.datamodules.errors import DataFormatError
from segmend.datamodules.image_io import IMAGE_EXTENSIONS, read_image
from segmend.datamodules.voc_format import read_index_mask
from segmend.mad.discrepancy import discrepancy
from segmend.mad.files import MADFileError, atomic_write_bytes, ids_in, is_temporary
from segmend.mad.human_files import (
    OOD_MARK,
    SCORES_FORMAT,
    SCORES_VERSION,
    read_label_mask,
    read_rater_scores,
    write_display_image,
    write_label_mask,
)
from segmend.mad.layout import MADLayout
from segmend.mad.scores import MAX_SCORE, MIN_SCORE, OUT_OF_DOMAIN
from segmend.mad.state import MADState
from segmend.text import counted

if TYPE_CHECKING:
    from segmend.datamodules import SyntheticDataModule

IGNORE_INDEX = 255
Sizes = Mapping[str, tuple[int, int]]


@runtime_checkable
class Oracle(Protocol):
    """Gives a round's weak scores and pixel labels, or ``None`` while people are not done."""

    def request_scores(
        self, round_index: int, predictions: Mapping[str, np.ndarray]
    ) -> dict[str, dict[str, float]] | None:
        """Weak scores of the candidates.

        Args:
            round_index: The round.
            predictions: ``image id -> (H, W) uint8`` target's predicted map, for every candidate of M.

        Returns:
            ``image id -> {rater -> int 1..5 or OUT_OF_DOMAIN}`` for every candidate, each image
            scored by the same raters; ``None`` if not available yet.

        """
        ...

    def request_labels(
        self, round_index: int, ids: Sequence[str], sizes: Sizes | None = None
    ) -> dict[str, np.ndarray] | None:
        """Dense labels.

        Args:
            round_index: The round.
            ids: The images to label (S and T).
            sizes: ``image id -> (H, W)`` upright image sizes the labels must have, where known.

        Returns:
            ``image id -> (H, W) uint8`` class indices (255 = ignore) for every id; ``None`` if not
            available yet.

        """
        ...


@runtime_checkable
class ShowsImages(Protocol):
    """An oracle that shows people the candidates' images (the loop tells it where the pool's files are)."""

    def show_images(self, image_file: Callable[[str], str | Path]) -> None:
        """Set ``image id -> image file`` of the pool, read when the images are shown."""
        ...


def _check_size(image_id: str, mask: np.ndarray, sizes: Sizes | None, source: str) -> None:
    if sizes is not None and image_id in sizes and tuple(mask.shape) != tuple(sizes[image_id]):
        raise ValueError(
            f"{source} of {image_id!r} is {tuple(mask.shape)} (H, W); the image is {tuple(sizes[image_id])}."
        )


class SimulatedOracle:
    """Answers from hidden ground truth, like raters who see it (paper Sect. 3.1.2, simulated).

    A rater's weak score is the target's per-image mIoU against the ground truth (over the classes
    present in either map, as :func:`segmend.mad.discrepancy`) mapped linearly to 1..5, plus
    independent Gaussian noise, rounded and clipped to 1..5. Every rater marks an out-of-domain
    image :data:`OUT_OF_DOMAIN`. The noise of (round, rater, image) comes from a generator seeded by
    all three and ``seed``: the scores do not depend on the order of the ids.

    Args:
        ground_truth: ``image id -> (H, W)`` class indices (255 = ignore).
        num_classes: C, background included.
        out_of_domain: The out-of-domain ids, or a predicate ``id -> bool``.
        raters: Number of simulated raters (``simulated1``, ``simulated2``, ...).
        noise_std: Standard deviation of each rater's noise, in score units (0: exact).
        seed: Seed of the noise.
        ignore_index: Ground-truth label left out of the mIoU.

    Raises:
        ValueError: For fewer than 2 classes, fewer than 1 rater or a negative ``noise_std``.

    """

    def __init__(
        self,
        ground_truth: Callable[[str], np.ndarray],
        num_classes: int,
        out_of_domain: Collection[str] | Callable[[str], bool] = (),
        raters: int = 3,
        noise_std: float = 0.5,
        seed: int = 0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if num_classes < 2 or raters < 1 or not noise_std >= 0:
            raise ValueError(
                f"SimulatedOracle needs num_classes >= 2, raters >= 1 and noise_std >= 0; found {num_classes}, "
                f"{raters}, {noise_std}."
            )
        self.ground_truth = ground_truth
        self.num_classes = num_classes
        self.is_out_of_domain = out_of_domain if callable(out_of_domain) else frozenset(out_of_domain).__contains__
        self.raters = tuple(f"simulated{j + 1}" for j in range(raters))
        self.noise_std = float(noise_std)
        self.seed = seed
        self.ignore_index = ignore_index

    @classmethod
    def from_synthetic_wild(cls, datamodule: SyntheticDataModule, **kwargs: object) -> SimulatedOracle:
        """An oracle over segmend's synthetic ``wild`` split: its masks are the hidden ground truth.

        The images whose ``wild.json`` domain is ``ood`` are out of domain. Ids are the split's ids
        (``wild_0003``); a pool id with an image extension (``wild_0003.jpg``) is accepted too.

        Args:
            datamodule: The synthetic data (generated on first use).
            **kwargs: Other arguments of :class:`SimulatedOracle` (``raters``, ``noise_std``, ``seed``).

        """
        meta = datamodule.wild_metadata()
        masks = _VOCMasks(Path(datamodule.root) / "SegmentationClass", meta)
        ood = {masks.key(image) for image, info in meta.items() if info["domain"] == "ood"}
        is_ood = lambda image: masks.key(image) in ood  # noqa: E731
        return cls(masks, num_classes=len(datamodule.class_names), out_of_domain=is_ood, **kwargs)

    def quality(self, image_id: str, prediction: np.ndarray) -> float:
        """The target's mIoU on ``image_id`` against the ground truth.

        Raises:
            ValueError: If the shapes differ or the ground truth has no labelled pixel.

        """
        truth = np.asarray(self.ground_truth(image_id))
        prediction = np.asarray(prediction)
        if truth.shape != prediction.shape:
            raise ValueError(
                f"The prediction of {image_id!r} is {prediction.shape}; its ground truth is {truth.shape}."
            )
        miou = discrepancy(prediction, truth, self.num_classes, self.ignore_index)
        if not np.isfinite(miou):
            raise ValueError(f"The ground truth of {image_id!r} has no labelled pixel; it cannot be scored.")
        return miou

    def _noise(self, round_index: int, rater: int, image_id: str) -> float:
        if self.noise_std == 0:
            return 0.0
        key = [self.seed, round_index, rater, zlib.crc32(image_id.encode("utf-8"))]
        return float(np.random.default_rng(key).normal(0.0, self.noise_std))

    def request_scores(self, round_index: int, predictions: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """Noisy quantised mIoU per rater, :data:`OUT_OF_DOMAIN` for out-of-domain images (see the class)."""
        scores: dict[str, dict[str, float]] = {}
        for image, prediction in predictions.items():
            if self.is_out_of_domain(image):
                scores[image] = dict.fromkeys(self.raters, OUT_OF_DOMAIN)
                continue
            quality = MIN_SCORE + (MAX_SCORE - MIN_SCORE) * self.quality(image, prediction)
            scores[image] = {
                rater: int(np.clip(np.rint(quality + self._noise(round_index, j, image)), MIN_SCORE, MAX_SCORE))
                for j, rater in enumerate(self.raters)
            }
        return scores

    def request_labels(self, round_index: int, ids: Sequence[str], sizes: Sizes | None = None) -> dict[str, np.ndarray]:
        """The ground truth of ``ids``.

        Raises:
            ValueError: If a ground-truth mask does not have the image's size.

        """
        labels = {}
        for image in ids:
            labels[image] = np.asarray(self.ground_truth(image)).astype(np.uint8)
            _check_size(image, labels[image], sizes, "The ground truth")
        return labels


class _VOCMasks:
    """``id -> mask`` over a VOC ``SegmentationClass`` folder of known ids (picklable, unlike a closure)."""

    def __init__(self, folder: Path, ids: Collection[str]) -> None:
        self.folder, self.ids = folder, frozenset(ids)

    def key(self, image_id: str) -> str:
        stem, dot, extension = image_id.rpartition(".")
        if image_id not in self.ids and dot and f".{extension.lower()}" in IMAGE_EXTENSIONS and stem in self.ids:
            return stem
        return image_id

    def __call__(self, image_id: str) -> np.ndarray:
        key = self.key(image_id)
        if key not in self.ids:
            raise ValueError(f"{image_id!r} is not an image of the synthetic wild split (ids like {min(self.ids)!r}).")
        return read_index_mask(self.folder / f"{key}.png")


class FileOracle:
    """The human oracle: reads the scores and labels people put into the run folder.

    Scores are complete when at least ``min_raters`` raters have each scored every candidate (all
    complete raters are used; raters still at work are left out). Labels are complete when every
    requested id has a mask. Until then the requests return ``None`` and ``round_<r>/README.txt``
    says what is missing and where it goes. Every file present is checked (see
    :func:`segmend.mad.human_files.read_rater_scores` and :func:`~segmend.mad.human_files.read_label_mask`):
    a bad file raises :class:`~segmend.mad.files.MADFileError` naming it.

    Args:
        run_dir: The run folder; ``None`` until :meth:`attach` is called (the loop's callback does).
        class_names: Class names by index; ``None`` reads them from ``mad/state.json``.
        min_raters: Raters who must have scored every candidate.
        ignore_index: The ignore value of label masks.

    Raises:
        ValueError: If ``min_raters`` < 1.

    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        min_raters: int = 1,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if min_raters < 1:
            raise ValueError(f"min_raters must be >= 1; found {min_raters}.")
        self.layout = None if run_dir is None else MADLayout(Path(run_dir))
        self.class_names = None if class_names is None else tuple(class_names)
        self.min_raters = min_raters
        self.ignore_index = ignore_index
        self.image_file: Callable[[str], str | Path] | None = None

    def attach(self, run_dir: str | Path, class_names: Sequence[str] | None = None) -> None:
        """Set the run folder (and the class names, unless given to the constructor)."""
        self.layout = MADLayout(Path(run_dir))
        self.class_names = self.class_names or (None if class_names is None else tuple(class_names))

    def show_images(self, image_file: Callable[[str], str | Path]) -> None:
        """Copy the candidates' images for people when scores are asked: ``round_<r>/images/<id>.jpg``.

        Args:
            image_file: ``image id -> the pool's image file``, read as the loop reads it (EXIF
                orientation applied, 8 bits, alpha over white; :func:`~segmend.datamodules.image_io.read_image`).

        """
        self.image_file = image_file

    def _layout(self) -> MADLayout:
        if self.layout is None:
            raise ValueError("FileOracle has no run folder: pass run_dir=..., or call attach(run_dir).")
        return self.layout

    def _classes(self) -> tuple[str, ...]:
        if self.class_names is None:
            self.class_names = MADState(self._layout().run_dir).classes
        if self.class_names is None:
            raise ValueError(
                f"FileOracle does not know the classes: pass class_names=..., or record them in "
                f"{self._layout().state_file} (MADState(run_dir, classes=...))."
            )
        return self.class_names

    def rater_progress(self, round_index: int, candidates: Collection[str]) -> dict[str, dict[str, float]]:
        """Every rater's scores of the round so far (``rater -> {id -> score}``), each file checked.

        Raises:
            MADFileError: For a bad score file.

        """
        folder = self._layout().scores_dir(round_index)
        paths = sorted(p for p in folder.glob("*.json") if not is_temporary(p)) if folder.is_dir() else []
        return {p.stem: read_rater_scores(p, round_index, candidates).scores for p in paths}

    def request_scores(
        self, round_index: int, predictions: Mapping[str, np.ndarray]
    ) -> dict[str, dict[str, float]] | None:
        """The complete raters' scores, or ``None`` (after writing the predictions and the README).

        Raises:
            MADFileError: For a bad score file.

        """
        layout, ids = self._layout(), list(predictions)
        progress = self.rater_progress(round_index, ids)
        complete = sorted(rater for rater, own in progress.items() if len(own) == len(ids))
        if len(complete) >= self.min_raters:
            return {image: {rater: progress[rater][image] for rater in complete} for image in ids}
        for image in ids:
            path = layout.prediction_file(round_index, image)
            if not path.is_file():
                write_label_mask(path, predictions[image])
        self._write_images(round_index, ids)
        text = _scores_instructions(layout, round_index, ids, progress, self.min_raters, self.image_file is not None)
        self._write_readme(round_index, text)
        return None

    def request_labels(
        self, round_index: int, ids: Sequence[str], sizes: Sizes | None = None
    ) -> dict[str, np.ndarray] | None:
        """The masks of ``ids``, or ``None`` (after writing the README) while some are missing.

        Raises:
            MADFileError: For a mask of the wrong size or with unknown values, or a mask of an id
                that was not requested.

        """
        layout, classes = self._layout(), self._classes()
        present = ids_in(layout.labels_dir(round_index), ".png")
        unknown = sorted(set(present) - set(ids))
        if unknown:
            raise MADFileError(
                f"{layout.labels_dir(round_index)} holds masks of images that were not asked for: {unknown[:5]}. "
                f"Rename them to the ids listed in {layout.readme_file(round_index)}, or remove them."
            )
        sizes = sizes or {}
        labels = {
            image: read_label_mask(present[image], len(classes), sizes.get(image), self.ignore_index)
            for image in ids
            if image in present
        }
        if len(labels) == len(ids):
            return labels
        missing = [image for image in ids if image not in labels]
        self._write_readme(round_index, _labels_instructions(layout, round_index, missing, sizes, classes))
        return None

    def _write_images(self, round_index: int, ids: Sequence[str]) -> None:
        """Write the images of ``ids`` not there yet to ``round_<r>/images/``, once :meth:`show_images` was called.

        An image that cannot be read any more is left out with a warning (people then see its prediction only).
        """
        if self.image_file is None:
            return
        for image in ids:
            path = self._layout().image_file(round_index, image)
            if path.is_file():
                continue
            try:
                picture = read_image(self.image_file(image))
            except DataFormatError as error:
                warnings.warn(f"segmend MAD: image {image!r} is not shown to people: {error}", stacklevel=3)
                continue
            write_display_image(path, picture)

    def _write_readme(self, round_index: int, text: str) -> None:
        layout = self._layout()
        header = f"segmend MAD troubleshooting, round {round_index}: waiting for people.\n\n"
        footer = (
            "\nWhen everything is in place, run the same command again: the loop continues where it stopped.\n"
            f"Formats: docs/mad.md, section 'State and file formats'. Run folder: {layout.run_dir}\n"
        )
        atomic_write_bytes(layout.readme_file(round_index), (header + text + footer).encode("utf-8"))


def _scores_instructions(
    layout: MADLayout,
    round_index: int,
    ids: Sequence[str],
    progress: Mapping[str, Mapping[str, float]],
    needed: int,
    with_images: bool,
) -> str:
    folder = layout.scores_dir(round_index)
    shown = f";\nthe image upright is {layout.images_dir(round_index)}/<id>.jpg" if with_images else ""
    rows = [f"  {rater}: {len(own)} of {len(ids)} scored" for rater, own in progress.items()] or ["  (no rater yet)"]
    example = ids[0] if ids else "<image id>"
    return (
        f"WEAK SCORES: {needed} rater(s) must each score all {len(ids)} candidate images.\n"
        f"The candidates are listed in {layout.candidates_file(round_index)} ('ids'); the target's prediction of\n"
        f"each is {layout.predictions_dir(round_index)}/<id>.png (VOC palette colours){shown}.\n"
        f"The rating page shows them and writes the score files: segmend rate {layout.run_dir}\n"
        "Score how well the prediction segments the image: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent;\n"
        f'"{OOD_MARK}" for an image out of the domain (no known class, or not to be used).\n'
        f"Each rater writes their own file {folder}/<rater>.json\n"
        "(name: letters, digits, '_', '.', '-'), for example:\n"
        f'  {{"format": "{SCORES_FORMAT}", "version": {SCORES_VERSION}, "round": {round_index}, '
        f'"rater": "alice", "scores": {{"{example}": 3}}}}\n'
        "Progress:\n" + "\n".join(rows) + "\n"
    )


def _labels_instructions(
    layout: MADLayout, round_index: int, missing: Sequence[str], sizes: Sizes, classes: Sequence[str]
) -> str:
    legend = "\n".join(f"  {index}: {name}" for index, name in enumerate(classes))
    rows = []
    for image in missing:
        size = f" ({sizes[image][1]}x{sizes[image][0]} px, width x height)" if image in sizes else ""
        rows.append(f"  {layout.label_file(round_index, image)}{size}")
    return (
        f"PIXEL LABELS: a mask is still needed for {counted(len(missing), 'image')}.\n"
        "Each mask is a palette ('P') or greyscale PNG of the upright image's size whose pixel values are class\n"
        f"indices (255 = ignore / unsure), saved as {layout.labels_dir(round_index)}/<id>.png. Classes:\n"
        f"{legend}\n  255: ignore\nMissing:\n" + "\n".join(rows) + "\n"
    )
