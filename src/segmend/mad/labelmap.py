"""Class colours of the label exchange: ``labelmap.txt`` and masks decoded to class indices.

``labelmap.txt`` is the label list of the PASCAL VOC / CVAT "Segmentation mask 1.1" layout, one
label a line, ``name:r,g,b:parts:actions`` (lines starting with ``#`` are comments)::

    # label:color_rgb:parts:actions
    background:0,0,0::
    disc:128,0,0::
    ignore:224,224,192::

segmend writes the run's classes in the VOC colour map (class ``k`` gets the VOC colour of index
``k``) and one more label for the ignore value 255 (:func:`ignore_name`, the VOC colour of 255).

A mask a person returns is decoded by :func:`decode_mask`:

* a palette ('P') PNG **by index** (pixel values are class indices, 255 = ignore), unless its
  palette was reordered (an editor's "convert to indexed"): when the colours of the indices it
  uses differ from the expected ones but all are label colours, it is decoded by colour;
* a greyscale ('L') PNG by index;
* an RGB PNG (what CVAT exports) by colour through the label map: each colour names a label, the
  label names a class of the run. An RGBA PNG must be opaque.

Values or colours that are no class are listed with their pixel counts in the error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segmend.datamodules.voc_format import voc_palette
from segmend.mad.files import MADFileError

IGNORE_INDEX = 255
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
Colour = tuple[int, int, int]


class MaskError(MADFileError):
    """A returned mask cannot be turned into class indices (the message names the file and why)."""


def ignore_name(classes: Sequence[str]) -> str:
    """The label name of the ignore value 255: ``ignore`` (``ignore_255`` if a class is named ``ignore``)."""
    return "ignore" if "ignore" not in classes else "ignore_255"


def check_class_names(classes: Sequence[str]) -> None:
    """Refuse class names ``labelmap.txt`` cannot hold.

    Raises:
        ValueError: For a name that is empty, holds ``:`` or a line break, starts with ``#`` or
            has leading or trailing spaces.

    """
    for name in classes:
        if not name or ":" in name or "\n" in name or "\r" in name or name.startswith("#") or name != name.strip():
            raise ValueError(
                f"The class name {name!r} cannot be written to labelmap.txt (no ':', line break, leading '#' "
                "or surrounding spaces). Rename the class in the DataModule's class_names."
            )


def default_colours(classes: Sequence[str]) -> dict[str, Colour]:
    """``label name -> colour`` of the export: class ``k`` in the VOC colour of ``k``, then the ignore label."""
    palette = voc_palette()
    colours: dict[str, Colour] = {name: tuple(int(c) for c in palette[k]) for k, name in enumerate(classes)}
    colours[ignore_name(classes)] = tuple(int(c) for c in palette[IGNORE_INDEX])
    return colours


def labelmap_text(classes: Sequence[str]) -> str:
    """The ``labelmap.txt`` of an export (see the module docstring).

    Raises:
        ValueError: For class names the file cannot hold (:func:`check_class_names`).

    """
    check_class_names(classes)
    lines = [LABELMAP_HEADER]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in default_colours(classes).items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ColourTable:
    """How colours and indices of returned masks become class indices.

    Attributes:
        num_classes: C; valid indices are 0..C-1 and 255.
        by_colour: ``colour -> class index`` (255 for the ignore label).
        index_colour: ``class index -> the colour a palette should give it``.
        foreign: ``colour -> label name`` of labels that are no class of the run.
        source: Where the colours come from (named in errors).
        names: ``class index -> label name``.

    """

    num_classes: int
    by_colour: Mapping[Colour, int]
    index_colour: Mapping[int, Colour]
    foreign: Mapping[Colour, str]
    source: str
    names: Mapping[int, str]

    def valid(self, index: int) -> bool:
        """Whether ``index`` is a class index or the ignore value."""
        return 0 <= index < self.num_classes or index == IGNORE_INDEX


def default_table(classes: Sequence[str]) -> ColourTable:
    """The colours of segmend's own export (no ``labelmap.txt`` returned)."""
    return _table(classes, default_colours(classes), "the VOC colour map (no labelmap.txt)")


def read_labelmap(path: Path, classes: Sequence[str]) -> ColourTable:
    """Read a returned ``labelmap.txt`` (``name:r,g,b[:parts[:actions]]``) against the run's classes.

    Labels are matched to classes by name; the ignore label (:func:`ignore_name`) is 255. Labels
    of other names are kept aside (a mask using their colour is refused, naming them).

    Raises:
        MADFileError: For an unreadable file, a malformed line (line number named), a label given
            twice, or one colour for two different classes.

    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MADFileError(f"{path} cannot be read ({err}); expected a labelmap.txt of 'name:r,g,b::' lines.") from err
    colours: dict[str, Colour | None] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if not 2 <= len(fields) <= 4:
            raise MADFileError(
                f"{path}, line {number}: {raw!r} has {len(fields)} ':'-separated fields; expected "
                "'name:r,g,b:parts:actions' (4 fields, parts and actions may be empty)."
            )
        name = fields[0]
        if name in colours:
            raise MADFileError(f"{path}, line {number}: the label {name!r} is listed twice.")
        colours[name] = _parse_colour(fields[1], path, number) if fields[1].strip() else None
    known = {name: colour for name, colour in colours.items() if colour is not None}
    return _table(classes, known, str(path))


def _parse_colour(text: str, path: Path, number: int) -> Colour:
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise MADFileError(f"{path}, line {number}: colour {text!r}; expected 'r,g,b' with values 0..255.")
    return values  # type: ignore[return-value]


def _table(classes: Sequence[str], colours: Mapping[str, Colour], source: str) -> ColourTable:
    index_of = {name: k for k, name in enumerate(classes)}
    index_of[ignore_name(classes)] = IGNORE_INDEX
    by_colour: dict[Colour, int] = {}
    foreign: dict[Colour, str] = {}
    for name, colour in colours.items():
        if name not in index_of:
            foreign.setdefault(colour, name)
            continue
        index = index_of[name]
        if by_colour.get(colour, index) != index:
            other = next(n for n, c in colours.items() if c == colour and n != name)
            raise MADFileError(
                f"{source}: the labels {other!r} and {name!r} have the same colour {colour}; give each class "
                "its own colour."
            )
        by_colour[colour] = index
    palette = voc_palette()
    index_colour = {index: colour for colour, index in by_colour.items()}
    for k in [*range(len(classes)), IGNORE_INDEX]:
        index_colour.setdefault(k, tuple(int(c) for c in palette[k]))
    names = {index: name for name, index in index_of.items()}
    return ColourTable(len(classes), by_colour, index_colour, foreign, source, names)


def decode_mask(path: Path, table: ColourTable) -> np.ndarray:
    """A returned mask as (H, W) uint8 class indices (255 = ignore); see the module docstring.

    Raises:
        MaskError: Naming the file: not a PNG image, an unsupported mode, transparent pixels, or
            values / colours that are no class (listed with their pixel counts).

    """
    try:
        with Image.open(path) as img:
            img.load()
            mode, image_format = img.mode, img.format
            pixels = np.asarray(img)
            palette = img.getpalette() if mode == "P" else None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise MaskError(f"{path} cannot be read as an image ({err}); expected a PNG mask.") from err
    if image_format != "PNG":
        raise MaskError(f"{path} is a {image_format} image; expected a PNG (lossy formats change the colours).")
    if mode == "P":
        return _decode_palette(path, pixels, np.asarray(palette or [], dtype=np.int64).reshape(-1, 3), table)
    if mode in ("L", "I;16", "I;16B", "I;16L", "I"):
        return _by_index(path, pixels.astype(np.int64), table, None)
    if mode == "RGBA":
        transparent = int((pixels[..., 3] != 255).sum())
        if transparent:
            raise MaskError(
                f"{path} has {transparent} transparent pixels; expected an opaque mask (paint every pixel with a "
                "class colour, or the ignore colour for pixels you are unsure of)."
            )
        pixels, mode = pixels[..., :3], "RGB"
    if mode == "RGB":
        return _by_colour(path, pixels, table)
    raise MaskError(f"{path} has mode {mode!r}; expected a palette ('P'), greyscale ('L') or RGB PNG.")


def _decode_palette(path: Path, indices: np.ndarray, palette: np.ndarray, table: ColourTable) -> np.ndarray:
    used = np.unique(indices)
    colours = {int(i): tuple(int(c) for c in palette[i]) if i < len(palette) else None for i in used}
    as_expected = all(table.valid(i) and colours[i] == table.index_colour[i] for i in colours)
    if not as_expected and all(colour in table.by_colour for colour in colours.values()):
        lookup = np.zeros(256, dtype=np.uint8)
        for i, colour in colours.items():
            lookup[i] = table.by_colour[colour]
        return lookup[indices]  # a reordered palette: the colours are what the person saw
    return _by_index(path, indices.astype(np.int64), table, colours)


def _by_index(
    path: Path, values: np.ndarray, table: ColourTable, colours: Mapping[int, Colour | None] | None
) -> np.ndarray:
    found, counts = np.unique(values, return_counts=True)
    bad = [(int(v), int(c)) for v, c in zip(found, counts, strict=True) if not table.valid(int(v))]
    if bad:
        listed = ", ".join(
            f"{v}{'' if colours is None or colours.get(v) is None else f' (colour {colours[v]})'}: {c} px"
            for v, c in bad[:10]
        )
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise MaskError(
            f"{path} holds pixel values that are no class: {listed}{more}; expected class indices "
            f"0..{table.num_classes - 1} or {IGNORE_INDEX} (ignore)."
        )
    return values.astype(np.uint8)


def _by_colour(path: Path, rgb: np.ndarray, table: ColourTable) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    found, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    colours = [((int(v) >> 16) & 255, (int(v) >> 8) & 255, int(v) & 255) for v in found]
    bad = [(colour, int(c)) for colour, c in zip(colours, counts, strict=True) if colour not in table.by_colour]
    if bad:
        listed = ", ".join(f"{_describe(colour, table)}: {c} px" for colour, c in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        known = ", ".join(f"{table.names[k]} {c}" for c, k in sorted(table.by_colour.items(), key=lambda e: e[1]))
        raise MaskError(
            f"{path} holds colours that are no class of {table.source}: {listed}{more}. Expected the colours of "
            f"the labels: {known}."
        )
    lookup = np.array([table.by_colour[colour] for colour in colours], dtype=np.uint8)
    return lookup[inverse].reshape(packed.shape)


def _describe(colour: Colour, table: ColourTable) -> str:
    if colour in table.foreign:
        return f"{colour} (label {table.foreign[colour]!r}, not a class of this run)"
    if colour == (0, 0, 0):
        return f"{colour} (CVAT paints unannotated pixels black)"
    return str(colour)
