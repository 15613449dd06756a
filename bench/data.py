"""Decode + augment throughput per DataLoader worker on Cityscapes- and VOC-sized images.

Writes seeded fixture images (2048x1024 PNG image + 8-bit label PNG like Cityscapes'
leftImg8bit/labelIds; 500x375 JPEG + palette PNG like VOC), then times, in one process (= one
worker) and side by side:

* decode only (image + mask through segmend's readers);
* decode + segmend's training augmentation (``RandomScaleCrop``: scale and crop in one warp,
  then flip, colour jitter, rotation, normalisation);
* decode + the same augmentation written the common way (``RandomScale`` of the whole image,
  then pad and crop), to show what cropping before the expensive work saves;

in ``--rounds`` rounds, the three taking turns image by image (order cycling through all
permutations) and every random draw reseeded per round. Each round gives paired ratios (speed-up segmend / common, decode share);
the report gives their 95% t intervals and the verdicts computed from them (``bench/verdicts.py``).
Each augmentation step is also timed alone per round (over segmend's own random scales) to show
where the time goes. Every per-round number goes to ``docs/results/data_runs.json``;
``--report-only`` re-renders the report from it.

    .venv/bin/python bench/data.py          # writes docs/results/data.md and data_runs.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import provenance
from albumentations.augmentations.geometric import functional as fgeometric
from PIL import Image
from verdicts import comparison, difference_interval, ratio_interval

from segmend.datamodules.image_io import read_image
from segmend.datamodules.label_files import IGNORE_INDEX
from segmend.datamodules.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomScaleCrop,
    to_sample,
    train_transform,
)
from segmend.datamodules.voc_format import read_index_mask, write_palette_mask

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "data.md"
JSON = RESULTS.with_name("data_runs.json")
SCALE_RANGE, ROTATION, JITTER = (0.5, 2.0), 10.0, 0.2
ORDERS = list(itertools.permutations(("decode", "segmend", "common")))
SIZES = {"Cityscapes 2048x1024 (PNG)": (1024, 2048, "png", 512), "VOC 500x375 (JPEG)": (375, 500, "jpg", 512)}


def write_fixture(folder: Path, height: int, width: int, ext: str, count: int, seed: int) -> list[tuple[Path, Path]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        # smooth colour fields plus noise: compresses like a photo, not like flat colour
        low = rng.integers(0, 255, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        image = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        mask = cv2.resize(
            rng.integers(0, 19, (height // 64 + 1, width // 64 + 1), dtype=np.uint8),
            (width, height),
            interpolation=cv2.INTER_NEAREST,
        )
        image_path, mask_path = folder / f"img{i}.{ext}", folder / f"mask{i}.png"
        Image.fromarray(image).save(image_path, **({"quality": 90} if ext == "jpg" else {}))
        write_palette_mask(mask_path, mask)
        pairs.append((image_path, mask_path))
    return pairs


def naive_transform(crop_size: int, scale_range=(0.5, 2.0), rotation: float = 10.0, jitter: float = 0.2) -> A.Compose:
    low, high = scale_range
    return A.Compose(
        [
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
            A.PadIfNeeded(crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
            A.RandomCrop(crop_size, crop_size),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(jitter, jitter, jitter, hue=0.0, p=0.8),
            A.Rotate(limit=rotation, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=1.0),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


def images_per_s(pairs, transform, repeats: int) -> float:
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for image_path, mask_path in pairs:
            image, mask = read_image(image_path), read_index_mask(mask_path)
            if transform is not None:
                to_sample(transform, image, mask, None, "x")
            n += 1
    return n / (time.perf_counter() - start)


def interleaved_images_per_s(pairs, pipelines: dict, repeats: int, start: int) -> dict[str, float]:
    """Images per second of each pipeline (None = decode only), taking turns image by image.

    For every image the pipelines run back to back in an order that cycles through all
    permutations (from ``start``), so load from other processes hits all of them alike.
    """
    seconds = dict.fromkeys(pipelines, 0.0)
    turn = start
    for _ in range(repeats):
        for image_path, mask_path in pairs:
            for key in ORDERS[turn % len(ORDERS)]:
                begin = time.perf_counter()
                image, mask = read_image(image_path), read_index_mask(mask_path)
                if pipelines[key] is not None:
                    to_sample(pipelines[key], image, mask, None, "x")
                seconds[key] += time.perf_counter() - begin
            turn += 1
    return {key: repeats * len(pairs) / total for key, total in seconds.items()}


def scale_pad_crop(array: np.ndarray, scale: float, interpolation: int, crop: int, fill: int) -> np.ndarray:
    """The common pipeline's geometry: ``RandomScale``'s resize, ``PadIfNeeded``'s border, ``RandomCrop``'s slice."""
    scaled = fgeometric.scale(array, scale, interpolation)
    bottom, right = max(crop - scaled.shape[0], 0), max(crop - scaled.shape[1], 0)
    if bottom or right:
        scaled = cv2.copyMakeBorder(scaled, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=fill)
    return scaled[:crop, :crop]


def step_ms(image: np.ndarray, mask: np.ndarray, crop: int, draws: int, seed: int, order: int) -> dict[str, float]:
    """Mean ms per call of each augmentation step over ``draws`` random scales (segmend's own draws)."""
    warp = RandomScaleCrop(crop, SCALE_RANGE)
    warp.set_random_seed(seed)
    matrices = [warp.get_params_dependent_on_data({"shape": image.shape}, {})["matrix"] for _ in range(draws)]
    scales = [float(m[0, 0]) for m in matrices]
    crops = [(warp.apply(image, m), warp.apply_to_mask(mask, m)) for m in matrices]
    shared = {
        "rotation": A.Rotate(limit=ROTATION, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=1.0),
        "flip": A.HorizontalFlip(p=1.0),
        "colour jitter": A.ColorJitter(JITTER, JITTER, JITTER, hue=0.0, p=1.0),
        "normalise": A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    }
    for transform in shared.values():
        transform.set_random_seed(seed)
    calls = {
        "segmend image (warpAffine)": [lambda m=m: warp.apply(image, m) for m in matrices],
        "segmend mask (index sampling)": [lambda m=m: warp.apply_to_mask(mask, m) for m in matrices],
        "common image (resize+pad+crop)": [
            lambda s=s: scale_pad_crop(image, s, cv2.INTER_LINEAR, crop, 0) for s in scales
        ],
        "common mask (resize+pad+crop)": [
            lambda s=s: scale_pad_crop(mask, s, cv2.INTER_NEAREST, crop, IGNORE_INDEX) for s in scales
        ],
    }
    for name, transform in shared.items():
        calls[name] = [lambda t=transform, c=c: t(image=c[0], mask=c[1]) for c in crops]
    names = list(calls)
    totals = dict.fromkeys(names, 0.0)
    for draw in range(draws):  # the steps take turns draw by draw, in a rotating order
        shift = (order + draw) % len(names)
        for name in names[shift:] + names[:shift]:
            begin = time.perf_counter()
            calls[name][draw]()
            totals[name] += time.perf_counter() - begin
    return {name: 1000 * total / draws for name, total in totals.items()}


def measure(args: argparse.Namespace) -> dict:
    """Time the three pipelines and the steps per round, interleaved; every number goes into the record."""
    record = {
        "command": provenance.command_line("bench/data.py"),
        "machine": f"{provenance.machine()}, OpenCV {cv2.__version__}, albumentations {A.__version__}; "
        "OpenCV limited to 1 thread",
        "code": provenance.code_state(),
        "seed": args.seed,
        "images": args.images,
        "repeats": args.repeats,
        "draws": args.draws,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        setups = {}
        for name, (height, width, ext, crop) in SIZES.items():
            folder = Path(tmp) / ext
            folder.mkdir()
            pairs = write_fixture(folder, height, width, ext, args.images, args.seed)
            pipelines = {
                "segmend": train_transform(
                    crop_size=crop, scale_range=SCALE_RANGE, hflip=True, color_jitter=JITTER, rotation=ROTATION
                ),
                "common": naive_transform(crop, SCALE_RANGE, ROTATION, JITTER),
                "decode": None,
            }
            for transform in pipelines.values():  # warm-up
                images_per_s(pairs[:1], transform, 1)
            step_ms(read_image(pairs[0][0]), read_index_mask(pairs[0][1]), crop, 2, args.seed, 0)
            setups[name] = (pairs, pipelines, crop)
            record["sizes"][name] = {"crop": crop, "rounds": []}
        for round_index in range(args.rounds):
            seed = args.seed + round_index
            for name, (pairs, pipelines, crop) in setups.items():
                for transform in pipelines.values():
                    if transform is not None:
                        transform.set_random_seed(seed)
                rates = interleaved_images_per_s(pairs, pipelines, args.repeats, round_index)
                image, mask = read_image(pairs[0][0]), read_index_mask(pairs[0][1])
                steps = step_ms(image, mask, crop, args.draws, seed, round_index)
                record["sizes"][name]["rounds"].append({"round": round_index, **rates, "steps_ms": steps})
                print(
                    f"round {round_index} {name}: decode {rates['decode']:.1f}/s, segmend {rates['segmend']:.1f}/s, "
                    f"common {rates['common']:.1f}/s, speed-up {rates['segmend'] / rates['common']:.3f}",
                    flush=True,
                )
    return record


def render(record: dict) -> str:
    """The markdown report; every conclusion in it is computed from ``record``."""
    sizes = record["sizes"]
    n_rounds = len(next(iter(sizes.values()))["rounds"])
    lines = [
        "# Data pipeline throughput (one worker)",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']}  ",
        f"Code: {record['code']}  ",
        f"Seed: {record['seed']} (round r reseeds every random draw with seed + r); {record['images']} seeded images "
        f"per size, {n_rounds} rounds, each timing every pipeline over {record['repeats']} pass(es) of the images, "
        "the three taking turns image by image in an order cycling through all 6 permutations (load from other "
        "processes hits all three alike). Augmentation: random scale "
        f"{SCALE_RANGE[0]}-{SCALE_RANGE[1]}, padded random crop, flip, colour jitter {JITTER}, rotation "
        f"+-{ROTATION:g} deg, normalise. *segmend*: `train_transform` (`RandomScaleCrop`: scale and crop in one "
        "warp); *common*: `RandomScale` of the whole image, then pad and crop, then the same steps. "
        f"Every per-round number is in `{JSON.name}`. Intervals: 95% t intervals over rounds, on the log of "
        "per-round ratios (speed-up, decode share) or on per-round values (ms); computed by `bench/verdicts.py`.",
        "",
        "| round | images | decode only (img/s) | decode + segmend (img/s) | decode + common (img/s) | speed-up "
        "segmend / common | decode share of segmend's time |",
        "|---|---|---|---|---|---|---|",
    ]
    for index in range(n_rounds):
        for name, size in sizes.items():
            r = size["rounds"][index]
            lines.append(
                f"| {index} | {name} | {r['decode']:.1f} | {r['segmend']:.1f} | {r['common']:.1f} | "
                f"{r['segmend'] / r['common']:.3f} | {100 * r['segmend'] / r['decode']:.0f}% |"
            )
    lines += ["", "## Verdicts", ""]
    for name, size in sizes.items():
        rounds = size["rounds"]
        speedup = ratio_interval([r["segmend"] / r["common"] for r in rounds])
        share = ratio_interval([r["segmend"] / r["decode"] for r in rounds])
        side = {1: "the larger share", -1: "the smaller share", 0: "about half (not resolved which is larger)"}
        share_text = (
            f"{100 * share.estimate:.0f}% (95% CI {100 * share.low:.0f}% to {100 * share.high:.0f}%), "
            f"{side[share.side(0.5)]}"
        )
        lines += [
            f"- **{name}, crop {size['crop']}**: "
            + comparison(
                speedup, "segmend's pipeline", "the common one", higher="faster", lower="slower", label="speed ratio"
            )
            + f". Decoding takes {share_text} of segmend's time per image.",
        ]
    lines += ["", "## Where the time goes", ""]
    lines += [
        f"Each step timed alone per round, mean over {record['draws']} random scales drawn by `RandomScaleCrop`, "
        "the steps taking turns draw by draw "
        "(the common path resizes by the same scales), on the first image of each size; the shared steps run on "
        "segmend's crops with p = 1 (in the pipelines flip runs half the time and jitter 80%). "
        "Mean ms per call over rounds, with its 95% CI:",
        "",
    ]
    step_names = list(next(iter(sizes.values()))["rounds"][0]["steps_ms"])
    lines += [
        "| step | " + " | ".join(f"{name} (ms)" for name in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for step in step_names:
        cells = [
            _mean_ci(difference_interval([r["steps_ms"][step] for r in size["rounds"]])) for size in sizes.values()
        ]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, size in sizes.items():
        rounds = size["rounds"]
        geometry = [
            r["steps_ms"]["segmend image (warpAffine)"]
            + r["steps_ms"]["segmend mask (index sampling)"]
            - r["steps_ms"]["common image (resize+pad+crop)"]
            - r["steps_ms"]["common mask (resize+pad+crop)"]
            for r in rounds
        ]
        gap = [1000 / r["segmend"] - 1000 / r["common"] for r in rounds]
        rest = [g - x for g, x in zip(gap, geometry, strict=True)]
        geometry_i, gap_i, rest_i = (difference_interval(v) for v in (geometry, gap, rest))
        ranked = sorted(step_names, key=lambda s: statistics.fmean(r["steps_ms"][s] for r in rounds), reverse=True)
        top = ratio_interval([r["steps_ms"][ranked[0]] / r["steps_ms"][ranked[1]] for r in rounds])
        rest_text = {
            0: "not distinguishable from zero (no time lost or gained outside the geometric step is measured)",
            1: "more than zero: segmend's pipeline also loses time outside the geometric step",
            -1: "less than zero: segmend's pipeline gains time back outside the geometric step",
        }[rest_i.side(0.0)]
        largest = (
            f"`{ranked[0]}` is the largest single step, {top.format(2)} times the next largest (`{ranked[1]}`)"
            if top.side(1.0) == 1
            else f"`{ranked[0]}` and `{ranked[1]}` are the two largest steps; which is larger is not resolved "
            f"(ratio {top.format(2)})"
        )
        lines += [
            f"- **{name}**: segmend's geometric step (image + mask) minus the common one: "
            f"{_signed(geometry_i)} ms per image; the whole pipeline's gap (segmend minus common, ms per image from "
            f"the throughput rounds): {_signed(gap_i)} ms. The remainder, gap minus geometric difference, is "
            f"{_signed(rest_i)} ms: {rest_text}. {largest}.",
        ]
    names = list(sizes)
    if len(names) == 2:  # docs/datasets.md: a large image "costs no more to augment than a small one"
        geometric = ("segmend image (warpAffine)", "segmend mask (index sampling)")
        big, small = (sizes[n]["rounds"] for n in names)
        cost = ratio_interval(
            [
                sum(a["steps_ms"][k] for k in geometric) / sum(b["steps_ms"][k] for k in geometric)
                for a, b in zip(big, small, strict=True)
            ]
        )
        outcome = {
            1: f"costs more on {names[0]} than on {names[1]}",
            -1: f"costs less on {names[0]} than on {names[1]}",
            0: f"shows no measurable difference in cost between {names[0]} and {names[1]}",
        }[cost.side(1.0)]
        lines += [
            f"- segmend's geometric step (`RandomScaleCrop`, image + mask, the same {sizes[names[0]]['crop']} crop "
            f"out, over the same random scales) {outcome}: ratio of ms per image {cost.format(2)}.",
        ]
    lines.append("")
    return "\n".join(lines)


def _mean_ci(interval) -> str:
    return f"{interval.estimate:.2f} ({interval.low:.2f} to {interval.high:.2f})"


def _signed(interval) -> str:
    return f"{interval.estimate:+.2f} (95% CI {interval.low:+.2f} to {interval.high:+.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=12, help="paired rounds (at least 2; the intervals need several)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the images per pipeline and round")
    parser.add_argument("--draws", type=int, default=20, help="random scales per round in the step breakdown")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--json", type=Path, default=JSON, help="every per-round number (written, or read back)")
    parser.add_argument("--report-only", action="store_true", help="re-render the report from --json, no timing")
    args = parser.parse_args()
    if args.report_only:
        record = json.loads(args.json.read_text())
    else:
        if args.rounds < 2:
            parser.error("--rounds must be at least 2 for an interval")
        cv2.setNumThreads(1)  # one worker = one core
        record = measure(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(record))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
