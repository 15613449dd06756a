"""Bad input stops with an error naming the file, what was expected and what was found."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmend.datamodules.transforms import eval_transform, to_sample
from segmend.datamodules.voc import VOCSegmentationDataset
from segmend.datamodules.voc_format import DataFormatError, write_palette_mask

CLASSES = ("background", "a", "b")


def make_voc(root: Path, ids=("x0", "x1"), size=(24, 32)) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sample_id in ids:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{sample_id}.jpg")
        write_palette_mask(
            root / "SegmentationClass" / f"{sample_id}.png",
            rng.integers(0, 3, size).astype(np.uint8),
        )
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    return root


def dataset(root: Path) -> VOCSegmentationDataset:
    from functools import partial

    return VOCSegmentationDataset(root, "train", CLASSES, transform=partial(to_sample, eval_transform()))


def test_good_tree_reads(tmp_path: Path):
    sample = dataset(make_voc(tmp_path))[0]
    assert sample["mask"].shape == (32, 32)  # padded to a multiple of 32 with 255


def test_missing_data_directory(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"looked at .*nowhere/JPEGImages.*docs/datasets.md"):
        dataset(tmp_path / "nowhere")


def test_missing_split_list(tmp_path: Path):
    root = make_voc(tmp_path)
    (root / "ImageSets/Segmentation/train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt.*list of image ids"):
        dataset(root)


def test_image_without_mask(tmp_path: Path):
    root = make_voc(tmp_path)
    (root / "SegmentationClass/x1.png").unlink()
    with pytest.raises(DataFormatError, match=r"x1.jpg has no mask: expected .*x1.png"):
        dataset(root)[1]


def test_mask_of_another_size(tmp_path: Path):
    root = make_voc(tmp_path)
    write_palette_mask(root / "SegmentationClass/x0.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataFormatError, match=r"x0.png is 10x10 .* image is 32x24"):
        dataset(root)[0]


def test_label_values_outside_classes(tmp_path: Path):
    root = make_voc(tmp_path)
    mask = np.zeros((24, 32), np.uint8)
    mask[0, 0] = 7
    mask[0, 1] = 255  # the ignore label is fine
    write_palette_mask(root / "SegmentationClass/x0.png", mask)
    with pytest.raises(DataFormatError, match=r"x0.png holds label values \[7\]"):
        dataset(root)[0]


def test_rgb_converted_mask(tmp_path: Path):
    root = make_voc(tmp_path)
    path = root / "SegmentationClass/x0.png"
    with Image.open(path) as img:
        img.convert("RGB").save(path)
    with pytest.raises(DataFormatError, match=r"x0.png is an RGB image; expected a palette"):
        dataset(root)[0]


def test_truncated_image(tmp_path: Path):
    root = make_voc(tmp_path)
    path = root / "JPEGImages/x1.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFormatError, match=r"Cannot decode image .*x1.jpg"):
        dataset(root)[1]


def test_crop_required_with_rescaling(tmp_path: Path):
    from segmend.datamodules import VOCDataModule

    with pytest.raises(ValueError, match="crop_size must be set"):
        VOCDataModule(root=str(tmp_path), crop_size=None, scale_range=(0.5, 2.0))


def test_missing_dataset_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    from segmend.cli import main

    args = [
        "fit",
        "--model=SegmentationModule",
        "--data=VOCDataModule",
        f"--data.root={tmp_path / 'VOC2012'}",
        "--trainer.fast_dev_run=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    with pytest.raises(SystemExit) as exit_info:  # the CLI prints user errors as a message
        main(args)
    assert exit_info.value.code == 2
    assert re.search(r"root=.*VOC2012:\n +.*VOC2012 is missing; expected the VOC2012", capsys.readouterr().err)


def test_voc_datamodule_reads_a_voc_tree(tmp_path: Path):
    from segmend.datamodules import VOCDataModule

    make_voc(tmp_path)
    dm = VOCDataModule(root=str(tmp_path), train_split="train", val_split="train", crop_size=32, batch_size=2)
    assert dm.num_classes == 21
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32)
