"""Pixel labels with people's tools: export S and T with pre-annotations, import the corrected masks.

:func:`export_labels` writes the images of a round's S and T that people must label, in the
PASCAL VOC / CVAT "Segmentation mask 1.1" layout::

    OUT/
      JPEGImages/<name>.jpg|.png        the upright image (the run folder's copy or the pool's file; a plain
                                        JPEG is copied, anything else written as PNG)
      SegmentationClass/<name>.png      pre-annotation: the label already in labels/, else the target's prediction
      labelmap.txt                      the run's classes in the VOC colours, and the ignore label (255)
      ImageSets/Segmentation/default.txt  the names, one a line
      segmend-labels.json               segmend-mad-label-export v1: round, classes, name -> id, sizes

Image ids are pool paths (``street/0001.jpg``); tools want flat names, so ``<name>`` is the id
with its image extension dropped, ``/`` replaced by ``__`` and every character other than
``A-Z a-z 0-9 . _ -`` by ``_`` (``street__0001``); ids whose names would collide (case-insensitively)
or exceed 120 characters get ``-<first 8 hex digits of the id's SHA-1>``. The names depend only on
the round's ids, so :func:`import_labels` finds them again without ``segmend-labels.json`` (a CVAT
export does not carry it); with it, its mapping is used.

:func:`import_labels` validates every returned mask before anything is written (size, palette or
colours through ``labelmap.txt``, masks of images not asked for), then moves them into
``round_<r>/labels/<id>.png`` in the format :class:`~segmend.mad.oracle.FileOracle` reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shlex
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segmend.datamodules.image_io import IMAGE_EXTENSIONS
from segmend.mad.files import (
    TEMP_MARKER,
    MADFileError,
    atomic_write_bytes,
    check_id,
    id_path,
    ids_in,
    read_json,
    write_json,
)
from segmend.mad.human_files import read_label_mask, write_label_mask
from segmend.mad.labelmap import MaskError, decode_mask, default_table, labelmap_text, read_labelmap
from segmend.mad.layout import MADLayout
from segmend.mad.pool_images import PoolImages, candidate_image_file, upright_image
from segmend.mad.run_config import fit_command, read_run_config
from segmend.mad.state import MADState
from segmend.text import counted

EXPORT_FORMAT, EXPORT_VERSION = "segmend-mad-label-export", 1
MANIFEST_NAME = "segmend-labels.json"
IMAGES_DIR, MASKS_DIR, LABELMAP_NAME = "JPEGImages", "SegmentationClass", "labelmap.txt"
IMAGE_SET = Path("ImageSets") / "Segmentation" / "default.txt"
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STAGING = f".labels{TEMP_MARKER}import-"


class LabelImportError(MADFileError):
    """Returned masks were refused; nothing was written.

    Attributes:
        problems: One message per problem, each naming the file, what was expected and what was found.

    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s), nothing imported:\n" + "\n".join(self.problems))


# --------------------------------------------------------------------------------------------- the round


def open_state(run_dir: str | Path) -> MADState:
    """The loop's state of a run folder, with its classes.

    Raises:
        MADFileError: If the folder holds no ``mad/state.json`` or it records no classes.

    """
    layout = MADLayout(Path(run_dir))
    if not layout.state_file.is_file():
        raise MADFileError(
            f"{layout.state_file} is missing: {run_dir} is not a MAD run folder, or its loop has not mined round 0 yet."
        )
    state = MADState(run_dir)
    if state.classes is None:
        raise MADFileError(f"{layout.state_file} records no classes; labels cannot be checked without them.")
    return state


def labels_round(state: MADState, round_index: int | None = None, importing: bool = False) -> int:
    """The round whose pixel labels are exchanged: ``round_index``, or the round waiting for them.

    Raises:
        MADFileError: If no round waits for labels, the round has no S and T yet, or (``importing``)
            its labels are already recorded.

    """
    r = state.current_round if round_index is None else round_index
    if r not in state.rounds or not state.reached(r, "selected"):
        phase = state.rounds[r].phase if r in state.rounds else None
        which = "No round waits for pixel labels: " if round_index is None else ""
        raise MADFileError(
            f"{which}round {r} has no S and T yet (phase {phase!r}); labels are exchanged once it reaches 'selected'. "
            f"Run `segmend status {state.layout.run_dir}` to see what it waits for."
        )
    if importing and state.reached(r, "labelled"):
        raise MADFileError(
            f"Round {r}'s labels are already recorded (phase {state.rounds[r].phase!r}): the loop has used them, and "
            "they are not changed afterwards."
        )
    return r


def requested_ids(state: MADState, round_index: int) -> list[str]:
    """S then T of the round, without the images labelled in an earlier round (the loop reuses those)."""
    earlier = {
        i
        for k in range(round_index)
        if state.reached(k, "labelled")
        for i in state.round(k).counterexamples + state.round(k).test
    }
    record = state.round(round_index)
    return [i for i in dict.fromkeys(record.counterexamples + record.test) if i not in earlier]


def expected_sizes(state: MADState, round_index: int, ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Upright (H, W) of the images: ``candidates.json``'s sizes, else the size of the target's prediction."""
    layout, known = state.layout, state.load_candidates(round_index).sizes
    sizes = {}
    for image in ids:
        if image in known:
            sizes[image] = tuple(known[image])
        elif layout.prediction_file(round_index, image).is_file():
            sizes[image] = read_label_mask(layout.prediction_file(round_index, image), 256).shape
    return sizes


def export_names(ids: Iterable[str]) -> dict[str, str]:
    """``id -> flat file name`` (no extension) of a round's images; see the module docstring.

    Raises:
        ValueError: For an invalid id, or names that still collide (practically never).

    """
    bases = {image: _slug(image) for image in ids}
    taken = Counter(base.lower() for base in bases.values())
    names = {}
    for image, base in bases.items():
        if taken[base.lower()] > 1 or len(base) > MAX_NAME:
            base = f"{base[:MAX_NAME]}-{hashlib.sha1(image.encode('utf-8')).hexdigest()[:8]}"
        names[image] = base
    collisions = [name for name, n in Counter(n.lower() for n in names.values()).items() if n > 1]
    if collisions:
        raise ValueError(f"The image ids give the same export name {collisions[0]!r}; rename the pool's files.")
    return names


def _slug(image_id: str) -> str:
    parts = check_id(image_id)
    stem, dot, extension = parts[-1].rpartition(".")
    if dot and stem and f".{extension.lower()}" in IMAGE_EXTENSIONS:
        parts[-1] = stem
    return _UNSAFE.sub("_", "__".join(parts)).lstrip(".-") or "image"


# ------------------------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_labels` wrote.

    Attributes:
        run_dir: The run folder.
        out: The export folder.
        round: The round.
        names: ``id -> name`` of every exported image.
        sources: ``id -> "label" | "prediction" | None``: where each pre-annotation came from.
        reused: Images of S and T labelled in an earlier round (not exported; the loop reuses them).

    """

    run_dir: Path
    out: Path
    round: int
    names: dict[str, str]
    sources: dict[str, str | None]
    reused: int = 0

    def text(self) -> str:
        """A few lines for people."""
        counts = Counter(self.sources.values())
        lines = [
            f"Exported {counted(len(self.names), 'image')} of round {self.round} (S and T) to {self.out}:",
            f"  pre-annotations: {counts['prediction']} from the target's predictions, {counts['label']} from "
            f"labels already given, {counts[None]} without one",
            f"  {IMAGES_DIR}/ images, {MASKS_DIR}/ palette PNG masks, {LABELMAP_NAME}, {IMAGE_SET.as_posix()}, "
            f"{MANIFEST_NAME} (name -> image id)",
        ]
        if self.reused:
            reused = counted(self.reused, "image")
            lines.append(f"  Labelled in an earlier round and reused: {reused} of S and T.")
        command = f"segmend import-labels {shlex.quote(str(self.run_dir))} {shlex.quote(str(self.out))}"
        lines.append(
            f"Correct the masks in {self.out / MASKS_DIR} (or in CVAT: 'Segmentation mask 1.1'), then run "
            f"`{command}` (a zip of CVAT's export is accepted too)."
        )
        return "\n".join(lines)


def export_labels(
    run_dir: str | Path,
    out: str | Path,
    round: int | None = None,  # noqa: A002 - the command's option name
    *,
    pool: str | Path | PoolImages | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Export the images of S and T still to be labelled, with pre-annotations (module docstring).

    Args:
        run_dir: The run folder.
        out: The export folder: new or empty (or an earlier export of this round with ``overwrite``).
        round: The round (default: the one waiting for pixel labels).
        pool: The pool's images, taken before the run folder's copies (``round_<r>/images/``): a
            folder where ``<folder>/<id>`` is each image, or a :class:`PoolImages`. ``None``: the
            run folder's copies, and for images without one the pool as the loop finds it (``config.yaml``).
        overwrite: Replace an earlier export of the same run and round in ``out``.

    Returns:
        What was written.

    Raises:
        MADFileError: If no round waits for labels, ``out`` holds something else, an image is missing
            or not of its recorded size, or a file of the run is invalid.

    """
    state = open_state(run_dir)
    r = labels_round(state, round)
    classes, layout, out = state.classes, state.layout, Path(out)
    labelmap = labelmap_text(classes)
    ids = requested_ids(state, r)
    names, sizes = export_names(ids), expected_sizes(state, r, ids)
    found: list[PoolImages] = []

    def pool_images() -> PoolImages:  # built once, and only if an image is not in the run folder
        if not found:
            found.append(pool if isinstance(pool, PoolImages) else PoolImages.from_run(run_dir, pool))
        return found[0]

    files = {image: candidate_image_file(layout, r, image, pool_images, pool is not None) for image in ids}
    _prepare_out(out, layout.run_dir, r, overwrite)
    _write_manifest(out, layout.run_dir, r, classes, [], complete=False)
    items, sources = [], {}
    for image in ids:
        data, extension, size = upright_image(files[image])
        if image in sizes and tuple(sizes[image]) != tuple(size):
            raise MADFileError(
                f"{files[image]}, the image of {image!r}, is {size[1]}x{size[0]} (width x height) upright; round "
                f"{r} recorded {sizes[image][1]}x{sizes[image][0]}. The file changed since the round was mined."
            )
        item = {"id": image, "name": names[image], "image": f"{IMAGES_DIR}/{names[image]}{extension}",
                "size": list(size), "mask": None, "pre_annotation": None}  # fmt: skip
        for kind, path in (("label", layout.label_file(r, image)), ("prediction", layout.prediction_file(r, image))):
            if path.is_file():
                mask = read_label_mask(path, len(classes), size)
                write_label_mask(out / MASKS_DIR / f"{names[image]}.png", mask)
                item.update(mask=f"{MASKS_DIR}/{names[image]}.png", pre_annotation=kind)
                break
        atomic_write_bytes(out / item["image"], data)
        items.append(item)
        sources[image] = item["pre_annotation"]
    atomic_write_bytes(out / LABELMAP_NAME, labelmap.encode("utf-8"))
    atomic_write_bytes(out / IMAGE_SET, "".join(f"{names[i]}\n" for i in ids).encode("utf-8"))
    _write_manifest(out, layout.run_dir, r, classes, items, complete=True)
    reused = len(dict.fromkeys(state.round(r).counterexamples + state.round(r).test)) - len(ids)
    return ExportSummary(layout.run_dir, out, r, names, sources, reused)


def _prepare_out(out: Path, run_dir: Path, r: int, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not out.is_dir():
        raise MADFileError(f"{out} is a file; give a new or empty folder to export into.")
    manifest = _read_manifest(out)
    same = manifest is not None and manifest["round"] == r and Path(manifest["run_dir"]).resolve() == run_dir.resolve()
    if not same:
        raise MADFileError(
            f"{out} is not empty and holds no export of round {r} of {run_dir}; give a new or empty folder."
        )
    if not overwrite and manifest.get("complete") is not True:
        raise MADFileError(f"{out} holds an export of round {r} that did not finish; pass --overwrite to redo it.")
    if not overwrite:
        raise MADFileError(
            f"{out} holds an export of round {r}: corrections made there would be overwritten. Import them first, "
            "export into a new folder, or pass --overwrite to replace it."
        )


def holds_export(folder: str | Path, run_dir: str | Path, round_index: int) -> bool:
    """Whether ``folder`` holds a finished export of round ``round_index`` of ``run_dir`` (``segmend-labels.json``)."""
    try:
        manifest = _read_manifest(Path(folder))
    except (OSError, ValueError):  # MADFileError: an unreadable manifest is no export to go on with
        return False
    return (
        manifest is not None
        and manifest["round"] == round_index
        and manifest.get("complete") is True
        and Path(str(manifest.get("run_dir"))).resolve() == Path(run_dir).resolve()
    )


def _write_manifest(out: Path, run_dir: Path, r: int, classes: Sequence[str], items: list, complete: bool) -> None:
    payload = {"run_dir": str(run_dir.resolve()), "round": r, "complete": complete, "classes": list(classes),
               "ignore": 255, "items": items}  # fmt: skip
    write_json(out / MANIFEST_NAME, EXPORT_FORMAT, EXPORT_VERSION, payload)


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    document = read_json(path, EXPORT_FORMAT, (EXPORT_VERSION,))
    items = document.get("items")
    if not isinstance(document.get("round"), int) or not isinstance(items, list):
        raise MADFileError(f"{path}: 'round' must be an integer and 'items' a list.")
    if not all(isinstance(i, dict) and isinstance(i.get("id"), str) and isinstance(i.get("name"), str) for i in items):
        raise MADFileError(f"{path}: every item needs an 'id' and a 'name' string.")
    return document


# ------------------------------------------------------------------------------------------------ import


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_labels` did.

    Attributes:
        round: The round.
        labels_dir: ``round_<r>/labels``.
        new: Images that had no mask before.
        replaced: Images whose mask changed.
        unchanged: Images whose returned mask equals the one already there.
        missing: Images of the round that still have no mask.
        fit_command: The command that continues the loop (``None`` for a run started from Python).
        as_predicted: Imported masks equal to the target's prediction (``predictions/<id>.png``): the
            export's pre-annotation, perhaps never corrected.

    """

    round: int
    labels_dir: Path
    new: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fit_command: str | None = None
    as_predicted: list[str] = field(default_factory=list)

    def text(self) -> str:
        """A few lines for people."""
        lines = [
            f"Imported round {self.round}'s masks into {self.labels_dir}: {len(self.new)} new, {len(self.replaced)} "
            f"replaced, {len(self.unchanged)} unchanged."
        ]
        if self.as_predicted:
            listed = ", ".join(self.as_predicted[:10]) + (" ..." if len(self.as_predicted) > 10 else "")
            verb = "equals" if len(self.as_predicted) == 1 else "equal"
            lines.append(
                f"{len(self.as_predicted)} of them {verb} the target's prediction (the pre-annotation, unedited): "
                f"{listed}. If any was not checked, correct it and import again before the fit."
            )
        if self.missing:
            listed = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
            need = "image still needs" if len(self.missing) == 1 else "images still need"
            lines.append(f"{len(self.missing)} {need} a mask: {listed}")
        else:
            run = self.fit_command or "the command (or Python call) that started the run"
            lines.append(f"Every image of round {self.round} has its mask. Continue the loop: {run}")
        return "\n".join(lines)


def import_labels(
    run_dir: str | Path,
    folder: str | Path,
    round: int | None = None,  # noqa: A002 - the command's option name
    *,
    complete: bool = False,
) -> ImportSummary:
    """Validate the masks in ``folder`` (an export, CVAT's export, or its zip), then put them into ``labels/``.

    Every mask is checked before anything is written; on any problem nothing is written and
    :class:`LabelImportError` lists them all. Masks are decoded by :func:`segmend.mad.labelmap.decode_mask`
    (``folder/labelmap.txt`` if present, else the export's VOC colours) and must have the upright
    image's size. Images without a mask are listed in the summary (a partial import is fine: the
    loop waits until every image has one) unless ``complete`` makes that an error too.

    Writing: the masks go to a temporary folder beside ``labels/`` (segmend's atomic writer), then
    each is moved into place with ``os.replace``. When the import completes the round's set, one
    mask that was missing (or, if none was, one that is replaced, removed first) is moved last, so
    an interrupted import leaves the set incomplete (the loop keeps waiting) and never a complete
    mix of old and new masks; run the import again to finish it. Run one import at a time.

    Returns:
        What was written.

    Raises:
        MADFileError: If no round waits for labels or ``folder`` is not an export layout.
        LabelImportError: Listing every problem with the masks.

    """
    state = open_state(run_dir)
    r = labels_round(state, round, importing=True)
    layout, classes = state.layout, state.classes
    ids = requested_ids(state, r)
    with _opened(Path(folder)) as (root, shown):
        masks, problems = _validate(root, state, r, ids)
        problems = [problem.replace(str(root), shown) for problem in problems]
    present = ids_in(layout.labels_dir(r), ".png")
    missing = [i for i in ids if i not in masks and i not in present]
    if complete and missing:
        problems.append(f"No mask in {folder} for {counted(len(missing), 'image')} of round {r}: {missing[:10]}.")
    if problems:
        raise LabelImportError(problems)
    summary = ImportSummary(
        r, layout.labels_dir(r), missing=missing, fit_command=fit_command(run_dir, read_run_config(run_dir))
    )
    changed = {}
    for image, mask in masks.items():
        prediction = layout.prediction_file(r, image)
        if np.array_equal(_existing(prediction if prediction.is_file() else None, len(classes)), mask):
            summary.as_predicted.append(image)
        old = _existing(present.get(image), len(classes))
        if old is None:
            summary.new.append(image)
        elif np.array_equal(old, mask):
            summary.unchanged.append(image)
            continue
        else:
            summary.replaced.append(image)
        changed[image] = mask
    summary.as_predicted.sort(key=ids.index)  # in the round's order (S, then T), as status lists images
    _write(layout, r, changed, ids, set(present))
    return summary


@contextlib.contextmanager
def _opened(folder: Path) -> Iterator[tuple[Path, str]]:
    """The export root in ``folder`` (or in a zip of it) and how to name it in messages."""
    if folder.is_file() and zipfile.is_zipfile(folder):
        with tempfile.TemporaryDirectory(prefix="segmend-import-") as tmp, zipfile.ZipFile(folder) as archive:
            archive.extractall(tmp)  # member names with '..' or a leading '/' are sanitised by zipfile
            root = _root(Path(tmp), folder)
            yield root, f"{folder}!/{root.relative_to(tmp).as_posix()}".removesuffix("/.")
        return
    if not folder.is_dir():
        raise MADFileError(f"{folder} is neither a folder nor a zip file of masks.")
    root = _root(folder, folder)
    yield root, str(root)


def _root(folder: Path, shown: Path) -> Path:
    if (folder / MASKS_DIR).is_dir():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and (p / MASKS_DIR).is_dir()]
    if len(inner) == 1:
        return inner[0]
    raise MADFileError(
        f"{shown} has no {MASKS_DIR}/ folder; expected the layout `segmend export-labels` writes and CVAT exports "
        f"as 'Segmentation mask 1.1' ({MASKS_DIR}/<name>.png, optionally {LABELMAP_NAME})."
    )


def _validate(root: Path, state: MADState, r: int, ids: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Decode and check every mask under ``root``: ``(id -> mask, problems)``."""
    classes, problems = state.classes, []
    manifest = _read_manifest(root)
    if manifest is not None and manifest["round"] != r:
        problems.append(
            f"{root / MANIFEST_NAME} is an export of round {manifest['round']}; round {r} waits for labels."
        )
    if manifest is not None and manifest.get("complete") is not True:
        problems.append(f"{root / MANIFEST_NAME} marks an export that did not finish; export again.")
    names = (
        {i["name"]: i["id"] for i in manifest["items"]} if manifest else {n: i for i, n in export_names(ids).items()}
    )
    labelmap = root / LABELMAP_NAME
    table = read_labelmap(labelmap, classes) if labelmap.is_file() else default_table(classes)
    sizes = expected_sizes(state, r, ids)
    found: dict[str, Path] = {}
    foreign = []
    for path in sorted((root / MASKS_DIR).rglob("*")):
        if not path.is_file() or path.name.startswith("."):  # hidden files: editors' and archivers' leftovers
            continue
        name = path.relative_to(root / MASKS_DIR).as_posix()
        if path.suffix.lower() != ".png":
            problems.append(f"{path} is not a PNG; masks are {MASKS_DIR}/<name>.png.")
            continue
        image = names.get(name[: -len(".png")])
        if image is None or image not in ids:
            foreign.append(name)
        elif image in found:
            problems.append(f"{path} and {found[image]} are both masks of {image!r}; keep one.")
        else:
            found[image] = path
    if foreign:
        expected = ", ".join(f"{n}.png" for n in list(export_names(ids).values())[:5])
        problems.append(
            f"{root / MASKS_DIR} holds {len(foreign)} masks of images that were not asked for in round {r}: "
            f"{foreign[:10]}; expected the names of the export ({expected}, ...). Remove them or rename them."
        )
    masks = {}
    for image, path in found.items():
        try:
            mask = decode_mask(path, table)
        except MaskError as err:
            problems.append(str(err))
            continue
        if image in sizes and mask.shape != tuple(sizes[image]):
            (h, w), (eh, ew) = mask.shape, sizes[image]
            problems.append(
                f"{path} is {w}x{h} (width x height); the image {image!r} is {ew}x{eh} upright. Label the image at "
                "its full size, as it is shown upright."
            )
            continue
        masks[image] = mask
    return masks, problems


def _existing(path: Path | None, num_classes: int) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return read_label_mask(path, num_classes)
    except MADFileError:
        return np.empty((0, 0), dtype=np.uint8)  # an invalid file: replaced


def _write(layout: MADLayout, r: int, masks: dict[str, np.ndarray], requested: list[str], present: set[str]) -> None:
    """Stage every mask, then move them into ``labels/`` with the round's set completed only by the last move."""
    if not masks:
        return
    round_dir = layout.round_dir(r)
    for stale in round_dir.glob(f"{_STAGING}*"):  # left by a killed import
        shutil.rmtree(stale, ignore_errors=True)
    staging = round_dir / f"{_STAGING}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for image, mask in masks.items():
            write_label_mask(id_path(staging, image, ".png"), mask)
        order = list(masks)
        if all(i in present or i in masks for i in requested):  # this import completes the set
            new = [i for i in order if i not in present]
            keystone = new[0] if new else order[0]
            if not new:
                layout.label_file(r, keystone).unlink()
            order = [i for i in order if i != keystone] + [keystone]
        for image in order:
            target = layout.label_file(r, image)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(id_path(staging, image, ".png"), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
