"""Seeded procedural semantic-segmentation scenes (pure numpy + scipy.ndimage).

Every scene has a textured background and several occluding shapes whose colours
overlap between classes, so a model has to use shape, not colour. Each scene also
carries a simulated coarse annotation (Cityscapes gtCoarse style), the boxes of the
visible objects, and, for the "wild" and "ood" domains, the nuisances applied.
"""

from __future__ import annotations

import colorsys
import functools
import zlib
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

from segmend.datamodules.label_files import IGNORE_INDEX

_Rng = np.random.Generator

CLASS_NAMES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross")
DOMAINS: tuple[str, ...] = ("train", "wild", "ood")
WILD_NUISANCES: tuple[str, ...] = ("unseen_colour", "extreme_scale", "clutter", "low_contrast")

# ---- difficulty knobs (sizes are fractions of the image side unless noted) ----
OBJECT_COUNT_RANGE = (2, 6)  # objects per train scene, inclusive
OBJECT_SCALE_RANGE = (0.12, 0.45)  # object diameter
PLACEMENT_TRIES = 3  # candidate centres per object; the least overlapping one wins
TRAIN_HUE_ARC = 0.8  # train object hues stay in [0, 0.8); [0.8, 1) is reserved for "wild"
HUE_SPREAD = 0.05  # std of an object's hue around its class mean (fraction of the hue circle)
CLASS_HUE_MEANS = tuple((i + 0.5) * TRAIN_HUE_ARC / 5 for i in range(5))
UNSEEN_HUE_RANGE = (0.84, 0.96)
SATURATION_RANGE = (0.4, 1.0)
VALUE_RANGE = (0.45, 1.0)
# Texture probabilities per class (disc, square, triangle, ring, cross) for
# (flat, stripes, checker, speckle).
TEXTURE_PROBS = np.array(
    [
        [0.40, 0.20, 0.10, 0.30],
        [0.20, 0.20, 0.40, 0.20],
        [0.30, 0.40, 0.10, 0.20],
        [0.50, 0.20, 0.10, 0.20],
        [0.30, 0.20, 0.20, 0.30],
    ]
)
BG_NOISE_AMPLITUDE = 0.15  # low-frequency background colour noise
CONTRAST_JITTER = (0.75, 1.25)  # per-image contrast factor
BRIGHTNESS_JITTER = 0.08  # per-image additive brightness, +-
PIXEL_NOISE_STD = 0.03  # Gaussian pixel noise (image in [0, 1])
LOW_CONTRAST_FACTOR = 0.25  # "low_contrast" nuisance contrast factor
MIN_INSTANCE_PIXELS = 20  # at 128 px (scaled with area); smaller remnants are erased
COARSE_MIN_AREA = 0.015  # objects smaller than this fraction of the image are not annotated
COARSE_BAND_PX = 2.0  # half-width at 128 px of the ignore band along fine boundaries
COARSE_VERTEX_RANGE = (6, 10)  # polygon vertices per coarse object, inclusive
COARSE_RADIUS_JITTER = 0.25  # log-normal jitter of polygon vertex radii
COARSE_SHIFT_PX = 2.5  # std at 128 px of the whole-polygon offset


@dataclass(frozen=True)
class SceneInstance:
    """One visible object.

    Attributes:
        label: Class id in 1..5.
        box: (xmin, ymin, xmax, ymax), 0-based inclusive bounds of its visible pixels.

    """

    label: int
    box: tuple[int, int, int, int]


@dataclass
class Scene:
    """A rendered scene with its labels.

    Attributes:
        image: (H, W, 3) uint8 RGB image.
        mask: (H, W) uint8 fine labels in 0..5.
        coarse: (H, W) uint8 simulated coarse labels in 0..5 or IGNORE_INDEX.
        instances: Visible objects (after occlusion) in drawing order.
        domain: "train", "wild" or "ood".
        nuisances: Shifts applied to this scene; empty for "train".

    """

    image: np.ndarray
    mask: np.ndarray
    coarse: np.ndarray
    instances: list[SceneInstance]
    domain: str
    nuisances: tuple[str, ...]


class _Spec(NamedTuple):
    label: int
    cy: float
    cx: float
    radius: float
    theta: float
    aux: float  # ring: inner/outer radius ratio; cross: arm half-width / radius


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Return an independent random stream for one scene.

    Args:
        seed: Non-negative global seed.
        split: Split name, e.g. "train" or "val".
        index: Non-negative scene index within the split.

    Returns:
        A generator seeded from (seed, crc32(split), index).

    Raises:
        ValueError: If seed or index is negative or split is not a string.

    """
    if not isinstance(split, str) or seed < 0 or index < 0:
        raise ValueError(f"expected seed >= 0, split: str, index >= 0; got {seed}, {split!r}, {index}")
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def render_scene(
    rng: np.random.Generator,
    size: int = 128,
    domain: Literal["train", "wild", "ood"] = "train",
) -> Scene:
    """Render one scene.

    Args:
        rng: Random generator; the scene is a pure function of its state.
        size: Image side in pixels (at least 32).
        domain: "train" (in-distribution), "wild" (1-2 nuisances from WILD_NUISANCES)
            or "ood" (no known class, mask all background).

    Returns:
        The rendered Scene.

    Raises:
        TypeError: If rng is not a numpy Generator.
        ValueError: If size < 32 or the domain is unknown.

    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"expected rng to be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"expected an integer size >= 32, got {size!r}")
    if domain not in DOMAINS:
        raise ValueError(f"expected domain in {DOMAINS}, got {domain!r}")
    size = int(size)
    image = _background(rng, size)
    layer = np.zeros((size, size), np.intp)  # palette index per pixel, 0 = keep background
    palette = [np.zeros(3, np.float32)]
    zeros = np.zeros((size, size), np.uint8)
    if domain == "ood":
        _draw_distractors(rng, layer, palette, int(rng.integers(4, 13)), (0.1, 0.5))
        image = _finish(rng, image, layer, palette, low_contrast=False)
        return Scene(image, zeros, zeros.copy(), [], domain, ("out_of_domain",))
    nuisances: tuple[str, ...] = ()
    if domain == "wild":
        picked = rng.choice(len(WILD_NUISANCES), size=int(rng.integers(1, 3)), replace=False)
        nuisances = tuple(WILD_NUISANCES[i] for i in sorted(picked))
    if "clutter" in nuisances:
        _draw_distractors(rng, layer, palette, int(rng.integers(10, 25)), (0.05, 0.25))
    specs = _object_specs(rng, size, "extreme_scale" in nuisances)
    min_pixels = max(4, round(MIN_INSTANCE_PIXELS * (size / 128) ** 2))
    ids, alive = _visible_ids([_shape_mask(s, size) for s in specs], min_pixels)
    base = len(palette)  # object k uses palette[base + 2k], +1 for its texture colour
    for s in specs:
        palette.extend(_object_colours(rng, s.label, "unseen_colour" in nuisances))
    visible = ids >= 0
    layer[visible] = base + 2 * ids[visible]
    pixels = {k: np.nonzero(ids == k) for k in alive}
    for k in alive:
        texture = _texture(rng, specs[k].label, size)
        if texture is not None:
            ys, xs = pixels[k]
            on = texture[ys, xs]
            layer[ys[on], xs[on]] += 1
    image = _finish(rng, image, layer, palette, "low_contrast" in nuisances)
    labels = np.array([0] + [s.label for s in specs], np.uint8)
    instances = [
        SceneInstance(specs[k].label, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
        for k, (ys, xs) in pixels.items()
    ]
    coarse = _coarse_annotation(rng, ids, labels, pixels)
    return Scene(image, labels[ids + 1], coarse, instances, domain, nuisances)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 (row, column) coordinate grids."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _local(size: int, cy: float, cx: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) relative to (cy, cx), rotated by theta."""
    yy, xx = _grid(size)
    c, s = float(np.cos(theta)), float(np.sin(theta))
    dy, dx = yy - np.float32(cy), xx - np.float32(cx)
    return dx * c + dy * s, dy * c - dx * s


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 colour in [0, 1] from HSV components."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _reflect(x: float, lo: float, hi: float) -> float:
    """Fold x into [lo, hi] by mirroring at the bounds (triangle wave)."""
    span = hi - lo
    return lo + span - abs((x - lo) % (2 * span) - span)


def _smooth_noise(rng: _Rng, size: int, cells: int, channels: int) -> np.ndarray:
    """(size, size, channels) low-frequency noise: N(0, 1) knots bilinearly upsampled."""
    knots = rng.standard_normal((cells, cells, channels), dtype=np.float32)
    # Bilinear upsampling as two matrix products with hat-function weights.
    w = np.maximum(0, 1 - np.abs(np.linspace(0, cells - 1, size)[:, None] - np.arange(cells)))
    w = w.astype(np.float32)
    return np.matmul(w, np.tensordot(w, knots, axes=(1, 0)))


def _background(rng: _Rng, size: int) -> np.ndarray:
    """Float RGB background: two random tints blended by smooth noise, maybe stripes."""
    c1, c2 = (_hsv(rng.random(), rng.uniform(0, 0.8), rng.uniform(0.2, 0.95)) for _ in range(2))
    blend = np.clip(0.5 + 0.3 * _smooth_noise(rng, size, int(rng.integers(2, 5)), 1), 0, 1)
    image = np.multiply(blend, c2 - c1)
    image += c1
    image += BG_NOISE_AMPLITUDE * _smooth_noise(rng, size, int(rng.integers(4, 12)), 3)
    if rng.random() < 0.5:
        u, _ = _local(size, 0.0, 0.0, rng.uniform(0, np.pi))
        period = rng.uniform(0.03, 0.15) * size
        image += rng.uniform(0.02, 0.08) * np.sin(u * np.float32(2 * np.pi / period))[..., None]
    return image


def _draw_distractors(rng: _Rng, layer: np.ndarray, palette: list, count: int, scale: tuple) -> None:
    """Draw non-class shapes (strokes, thin ellipses, hexagons) into layer; label stays 0."""
    size = layer.shape[0]
    for _ in range(count):
        kind = int(rng.integers(4))
        r = rng.uniform(*scale) * size / 2
        u, v = _local(size, *rng.uniform(0, size, 2), rng.uniform(0, np.pi))
        if kind == 0:  # straight stroke
            m = (np.abs(u) <= r) & (np.abs(v) <= rng.uniform(0.5, 1.5) * size / 128 + 0.5)
        elif kind == 1:  # elongated blob
            m = (u / r) ** 2 + (v / (r * rng.uniform(0.15, 0.35))) ** 2 <= 1
        else:  # hexagon outline (kind 2) or filled hexagon (kind 3)
            au, sv = np.abs(0.5 * u), np.abs(0.866 * v)
            hexr = np.maximum(2 * au, au + sv)
            m = hexr <= r
            if kind == 2:
                m &= hexr > r * (1 - rng.uniform(0.15, 0.3))
        layer[m] = len(palette)
        palette.append(_hsv(rng.random(), rng.uniform(0.1, 1), rng.uniform(0.2, 1)))


def _object_specs(rng: _Rng, size: int, extreme: bool) -> list[_Spec]:
    """Sample class, placement, scale and shape parameters of the objects."""
    count, scale, centre = OBJECT_COUNT_RANGE, OBJECT_SCALE_RANGE, None
    if extreme and rng.random() < 0.5:
        count, scale = (4, 9), (0.04, 0.06)  # tiny
    elif extreme:
        count, scale, centre = (1, 2), (0.8, 1.2), (0.1 * size, 0.9 * size)  # huge, cut by frame
    specs: list[_Spec] = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        label = int(rng.integers(1, 6))
        r = rng.uniform(*scale) * size / 2
        lo, hi = centre or (0.6 * r, size - 0.6 * r)
        cands = rng.uniform(lo, hi, (PLACEMENT_TRIES, 2))
        if specs:  # keep the candidate with the largest clearance to earlier objects
            others = np.array([(s.cy, s.cx, s.radius) for s in specs])
            dist = np.hypot(cands[:, None, 0] - others[:, 0], cands[:, None, 1] - others[:, 1])
            cands = cands[[np.argmax((dist - others[:, 2] - r).min(axis=1))]]
        aux = {4: rng.uniform(0.45, 0.65), 5: rng.uniform(0.22, 0.34)}.get(label, 0.0)
        cy, cx = float(cands[0, 0]), float(cands[0, 1])
        specs.append(_Spec(label, cy, cx, r, rng.uniform(0, 2 * np.pi), aux))
    return specs


def _shape_mask(spec: _Spec, size: int) -> np.ndarray:
    """Boolean mask of one object's full (unoccluded) shape."""
    u, v = _local(size, spec.cy, spec.cx, spec.theta)
    r = spec.radius
    if spec.label in (1, 4):  # disc / ring (ring has aux > 0)
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (spec.aux * r) ** 2)
    if spec.label == 2:  # square
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if spec.label == 3:  # equilateral triangle with circumradius 1.2 r
        au, sv = 0.5 * u, 0.866 * v
        return (u <= 0.6 * r) & (sv - au <= 0.6 * r) & (-sv - au <= 0.6 * r)
    w = spec.aux * r  # cross (plus sign)
    au, av = np.abs(u), np.abs(v)
    return ((au <= r) & (av <= w)) | ((av <= r) & (au <= w))


def _object_colours(rng: _Rng, label: int, unseen: bool) -> tuple[np.ndarray, np.ndarray]:
    """Primary and texture colours; class-typical hues with an overlapping spread."""
    s, v = rng.uniform(*SATURATION_RANGE), rng.uniform(*VALUE_RANGE)
    if unseen and rng.random() < 0.5:  # greyscale: train saturation is never this low
        h, s = 0.0, rng.uniform(0.0, 0.08)
    elif unseen:
        h = rng.uniform(*UNSEEN_HUE_RANGE)
    else:
        h = _reflect(CLASS_HUE_MEANS[label - 1] + rng.normal(0, HUE_SPREAD), 0.0, TRAIN_HUE_ARC)
    h2 = h if unseen else _reflect(h + rng.normal(0, 0.02), 0.0, TRAIN_HUE_ARC)
    second = _hsv(h2, min(1.0, s * rng.uniform(0.5, 1.1)), v * rng.uniform(0.35, 0.7))
    return _hsv(h, s, v), second


def _texture(rng: _Rng, label: int, size: int) -> np.ndarray | None:
    """Boolean pattern marking the texture's second colour, or None for flat objects."""
    kind = int(rng.choice(4, p=TEXTURE_PROBS[label - 1]))
    if kind == 0:
        return None
    if kind == 3:  # speckle
        return rng.random((size, size), dtype=np.float32) < rng.uniform(0.2, 0.5)
    u, v = _local(size, 0.0, 0.0, rng.uniform(0, np.pi))
    period = np.float32(rng.uniform(0.04, 0.12) * size)
    if kind == 1:  # stripes
        return np.sin(u * (2 * np.pi / period)) > 0
    return (np.floor(u / period) + np.floor(v / period)) % 2 == 1  # checker


def _visible_ids(masks: list[np.ndarray], min_pixels: int) -> tuple[np.ndarray, list[int]]:
    """Per-pixel index of the visible object (-1 = none) and the surviving objects.

    Objects with fewer than `min_pixels` visible pixels are erased from the scene;
    erasing only uncovers pixels of the others, so this settles after two passes.
    """
    alive = list(range(len(masks)))
    while True:
        ids = np.full(masks[0].shape, -1, np.intp)
        for k in alive:
            ids[masks[k]] = k
        counts = np.bincount(ids.ravel() + 1, minlength=len(masks) + 1)[1:]
        keep = [k for k in alive if counts[k] >= min_pixels]
        if keep == alive:
            return ids, alive
        alive = keep


def _finish(rng: _Rng, image: np.ndarray, layer: np.ndarray, palette: list, low_contrast: bool) -> np.ndarray:
    """Paint the palette layer, jitter contrast/brightness, add noise; returns uint8 RGB."""
    painted = layer > 0
    image[painted] = np.take(np.stack(palette), layer[painted], axis=0)
    mean = image[::4, ::4].reshape(-1, 3).mean(axis=0)
    contrast = rng.uniform(*CONTRAST_JITTER) * (LOW_CONTRAST_FACTOR if low_contrast else 1.0)
    image -= mean  # in-place arithmetic: large temporaries are slow at this scale
    image *= np.float32(contrast)
    image += mean + np.float32(rng.uniform(-1, 1) * BRIGHTNESS_JITTER)
    noise = rng.standard_normal((*image.shape[:2], 1), dtype=np.float32)  # luminance noise
    image += noise * np.float32(PIXEL_NOISE_STD + (0.02 if low_contrast else 0.0))
    np.clip(image, 0, 1, out=image)
    image *= 255
    image += 0.5
    return image.astype(np.uint8)


def _coarse_polygon(rng: _Rng, ys: np.ndarray, xs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Jittered few-vertex polygon (rows, cols) around a region's pixels."""
    cy, cx = ys.mean(), xs.mean()
    k = int(rng.integers(COARSE_VERTEX_RANGE[0], COARSE_VERTEX_RANGE[1] + 1))
    step = 2 * np.pi / k
    phase = rng.uniform(0, step)
    sector = (((np.arctan2(ys - cy, xs - cx) - phase) % (2 * np.pi)) // step).astype(np.intp) % k
    reach = np.zeros(k)  # farthest pixel per angular sector
    np.maximum.at(reach, sector, np.hypot(ys - cy, xs - cx) + 0.5)
    angle = phase + (np.arange(k) + 0.5) * step + rng.normal(0, 0.15 * step, k)
    radius = reach * np.exp(rng.normal(0, COARSE_RADIUS_JITTER, k))
    dy, dx = rng.normal(0, COARSE_SHIFT_PX * size / 128, 2)
    return cy + dy + radius * np.sin(angle), cx + dx + radius * np.cos(angle)


def _fill_polygon(target: np.ndarray, py: np.ndarray, px: np.ndarray, value: int) -> None:
    """Set pixels whose centres lie inside the polygon (even-odd rule) to value, in place."""
    h, w = target.shape
    y0, y1 = max(int(np.floor(py.min())), 0), min(int(np.ceil(py.max())) + 1, h)
    x0, x1 = max(int(np.floor(px.min())), 0), min(int(np.ceil(px.max())) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    gy = np.arange(y0, y1, dtype=np.float64)[None, :]
    ay, ax, by, bx = py[:, None], px[:, None], np.roll(py, -1)[:, None], np.roll(px, -1)[:, None]
    crossing = (ay > gy) != (by > gy)  # (edges, rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = np.where(crossing, ax + (gy - ay) * (bx - ax) / (by - ay), -np.inf)
    gx = np.arange(x0, x1, dtype=np.float64)
    inside = (gx[None, None, :] < x_cross[:, :, None]).sum(axis=0) % 2 == 1
    target[y0:y1, x0:x1][inside] = value


def _coarse_annotation(rng: _Rng, ids: np.ndarray, labels: np.ndarray, pixels: dict) -> np.ndarray:
    """Polygon labels for the larger objects, ignore band along their fine boundaries."""
    size = ids.shape[0]
    coarse = np.zeros(ids.shape, np.uint8)
    annotated = np.zeros(ids.shape, np.uint8)  # fine mask restricted to annotated objects
    for k, (ys, xs) in pixels.items():
        if ys.size < COARSE_MIN_AREA * ids.size:
            continue  # too small: left unannotated, i.e. labelled background, on purpose
        annotated[ys, xs] = labels[k + 1]
        _fill_polygon(coarse, *_coarse_polygon(rng, ys, xs, size), int(labels[k + 1]))
    width = 2 * max(1, round(COARSE_BAND_PX * size / 128)) + 1
    band = ndimage.maximum_filter(annotated, width) != ndimage.minimum_filter(annotated, width)
    coarse[band] = IGNORE_INDEX
    return coarse
