"""Decode + augment throughput per DataLoader worker on Cityscapes- and VOC-sized images.

Writes seeded fixture images (2048x1024 PNG image + 8-bit label PNG like Cityscapes'
leftImg8bit/labelIds; 500x375 JPEG + palette PNG like VOC), then times, in one process (= one
worker) and side by side:

* decode only (image + mask through segmend's readers);
* decode + segmend's training augmentation (``RandomScaleCrop``: scale and crop in one warp,
  then flip, colour jitter, rotation, normalisation);
* decode + the same augmentation written the common way (``RandomScale`` of the whole image,
  then pad and crop), to show what cropping before the expensive work saves.

    .venv/bin/python bench/data.py          # writes docs/results/data.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from PIL import Image
from segmend.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, to_sample, train_transform
from segmend.datamodules.voc_format import IGNORE_INDEX, read_image, read_index_mask, write_palette_mask

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "data.md"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one worker = one core

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (height, width, ext, crop) in SIZES.items():
            folder = Path(tmp) / ext
            folder.mkdir()
            pairs = write_fixture(folder, height, width, ext, args.images, args.seed)
            ours = train_transform(crop_size=crop, scale_range=(0.5, 2.0), hflip=True, color_jitter=0.2, rotation=10)
            naive = naive_transform(crop)
            for transform in (ours, naive):
                transform.set_random_seed(args.seed)
            images_per_s(pairs[:1], ours, 1)  # warm-up
            decode = images_per_s(pairs, None, args.repeats)
            fast = images_per_s(pairs, ours, args.repeats)
            slow = images_per_s(pairs, naive, args.repeats)
            rows.append((name, crop, decode, fast, slow))
            print(
                f"{name}: decode {decode:.1f}/s, decode+segmend aug {fast:.1f}/s, decode+scale-then-crop {slow:.1f}/s",
                flush=True,
            )

    command = "python bench/data.py " + " ".join(sys.argv[1:])
    lines = [
        "# Data pipeline throughput (one worker)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, OpenCV {cv2.__version__}, "
        f"albumentations {A.__version__}, Python {platform.python_version()}; OpenCV limited to 1 thread.  ",
        f"Seed: {args.seed}; {args.images} seeded images per size, each read {args.repeats} times. "
        "Augmentation: random scale 0.5-2.0, padded random crop, flip, colour jitter 0.2, rotation +-10 deg, normalise.",
        "",
        "| images | crop | decode only (img/s) | decode + segmend augmentation (img/s) | decode + scale-then-crop (img/s) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, crop, decode, fast, slow in rows:
        lines.append(f"| {name} | {crop} | {decode:.1f} | {fast:.1f} | {slow:.1f} | {fast / slow:.2f}x |")
    lines += [
        "",
        "segmend's `RandomScaleCrop` computes only the crop's pixels (one affine warp from the source image), so "
        "augmenting a large image no longer costs its size times the scale factor. Where the source is smaller than "
        "the crop (VOC-sized images with a 512 crop) the warp saves nothing: there segmend's pipeline measured "
        f"{rows[-1][3] / rows[-1][4]:.2f}x the speed of the common one in this run, and the per-pixel work on the "
        "padded 512x512 crop (jitter, rotation, normalisation) costs more "
        "than decoding. For Cityscapes-sized PNGs decoding is the larger share, which no crop can avoid: "
        + "; ".join(
            f"{name}: decoding takes {100 * fast / decode:.0f}% of the time per image with segmend's pipeline"
            for name, crop, decode, fast, slow in rows
        )
        + ".",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
