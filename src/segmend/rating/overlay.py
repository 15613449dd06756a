"""What the page shows of a candidate: the target's prediction blended over the upright image, and its legend.

Both come from the run folder only: the image people see (``images/<id>.jpg``, written upright by
the loop) and the target's predicted map (``predictions/<id>.png``), coloured in the VOC palette
(:func:`segmend.viz.colorize`, :func:`segmend.viz.blend`) as the loop's report grids are.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segmend.datamodules.image_io import read_image
from segmend.datamodules.voc_format import voc_palette
from segmend.mad.human_files import read_label_mask
from segmend.viz import blend, colorize
from segmend.viz.overlay import legend_entries

OVERLAY_ALPHA = 0.5
"""Weight of the class colours over the image."""


def read_prediction(path: Path, num_classes: int) -> np.ndarray:
    """The target's (H, W) uint8 map of a candidate (checked: an index PNG of known classes or 255)."""
    return read_label_mask(path, num_classes)


def overlay_png(image_path: Path | None, prediction: np.ndarray, alpha: float = OVERLAY_ALPHA) -> bytes:
    """The prediction's VOC colours blended over the image, as PNG bytes.

    Args:
        image_path: The upright image (``images/<id>.jpg``), or ``None`` when it is not in the run
            folder (the colours are shown alone then).
        prediction: (H, W) class indices (255 = ignore, white); resized (nearest) to the image if
            their sizes differ.
        alpha: Weight of the colours.

    """
    colours = colorize(prediction, voc_palette())
    if image_path is None:
        picture = colours
    else:
        image = read_image(image_path)
        height, width = image.shape[:2]
        if prediction.shape != (height, width):
            resized = Image.fromarray(prediction).resize((width, height), Image.Resampling.NEAREST)
            colours = colorize(np.asarray(resized), voc_palette())
        picture = blend(image, colours, alpha)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def legend(prediction: np.ndarray, class_names: Sequence[str] | None) -> list[dict[str, object]]:
    """``[{"name", "color": "#rrggbb"}]`` of the classes in the prediction (class order, then ``ignore``)."""
    entries = legend_entries([prediction], voc_palette(), class_names=class_names)
    return [{"name": name, "color": "#{:02x}{:02x}{:02x}".format(*color)} for name, color in entries]
