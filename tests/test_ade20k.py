"""ADE20K (ADEChallengeData2016) reader and DataModule on a seeded tree in the real layout."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segmend.datamodules.ade20k as ade20k
from segmend.datamodules.ade20k import ADE20K_CLASSES, ADE20KDataModule, ADE20KDataset
from segmend.datamodules.transforms import eval_transform, to_sample
from segmend.datamodules.voc_format import DataFormatError
from tests.fixtures.ade20k import H, W, make_ade


def raw_mask(root: Path, split: str, stem: str) -> np.ndarray:
    with Image.open(root / "annotations" / split / f"{stem}.png") as img:
        return np.asarray(img).copy()


def eval_dataset(root: Path, split: str = "validation") -> ADE20KDataset:
    return ADE20KDataset(root, split, partial(to_sample, eval_transform()))


def hand_reduced(stored: np.ndarray) -> np.ndarray:
    """reduce_zero_label written out pixel by pixel."""
    out = np.empty(stored.shape, dtype=np.int64)
    for y in range(stored.shape[0]):
        for x in range(stored.shape[1]):
            v = int(stored[y, x])
            out[y, x] = 255 if v in (0, 255) else v - 1
    return out


@pytest.fixture
def ade_root(tmp_path: Path) -> Path:
    return make_ade(tmp_path / "ADEChallengeData2016")


def test_150_classes_in_benchmark_order():
    assert len(ADE20K_CLASSES) == 150 == len(set(ADE20K_CLASSES))
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky")
    assert ADE20K_CLASSES[44] == "chest of drawers"
    assert ADE20K_CLASSES[-1] == "flag"
    assert ADE20KDataModule(root="unused").num_classes == 150


def test_reduce_zero_label_pixel_by_pixel(ade_root: Path):
    stored = np.zeros((H, W), np.uint8)
    stored[0, :8] = [0, 1, 2, 75, 149, 150, 255, 0]  # the edges of the mapping in one row
    stored[1:] = np.random.default_rng(1).integers(0, 151, (H - 1, W))
    stored[5, 5] = 255
    Image.fromarray(stored, mode="L").save(ade_root / "annotations/validation/ADE_val_00000001.png")
    sample = eval_dataset(ade_root)[0]
    assert sample["id"] == "ADE_val_00000001"
    assert sample["has_mask"] is True
    mask = sample["mask"].numpy()
    assert mask.shape == (64, 64)  # 48 rows padded to 64 with the ignore label
    assert mask[0, :8].tolist() == [255, 0, 1, 74, 148, 149, 255, 255]
    np.testing.assert_array_equal(mask[:H], hand_reduced(stored))
    assert (mask[H:] == 255).all()
    assert mask[:H].max() <= 255 and set(np.unique(mask[:H])) <= set(range(150)) | {255}


def test_reduction_applied_exactly_once(ade_root: Path, monkeypatch: pytest.MonkeyPatch):
    dataset = eval_dataset(ade_root)
    first, second = dataset[1]["mask"], dataset[1]["mask"]
    torch.testing.assert_close(first, second)
    expected = hand_reduced(raw_mask(ade_root, "validation", "ADE_val_00000002"))
    np.testing.assert_array_equal(first.numpy()[:H], expected)
    assert (raw_mask(ade_root, "validation", "ADE_val_00000002") == 0).any()  # disk untouched, zeros still there

    calls = []
    original = ade20k.reduce_zero_label
    monkeypatch.setattr(ade20k, "reduce_zero_label", lambda m: calls.append(1) or original(m))
    dm = ADE20KDataModule(root=str(ade_root), batch_size=2, crop_size=64)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert len(calls) == 2  # once per sample, nowhere else (not in transforms, collate or the DataModule)
    assert batch["id"] == ["ADE_val_00000001", "ADE_val_00000002"]
    torch.testing.assert_close(batch["mask"][1], first)


def test_splits_and_train_batches(ade_root: Path):
    dm = ADE20KDataModule(root=str(ade_root), batch_size=2, crop_size=32, scale_range=(1.0, 1.0))
    dm.setup("fit")
    assert dm.dataset("train", True).ids == [f"ADE_train_{i:08d}" for i in (1, 2, 3)]
    assert dm.dataset("val").ids == ["ADE_val_00000001", "ADE_val_00000002"]
    dm.setup("test")
    assert dm.dataset("test").root / "images" / "validation" == ade_root / "images" / "validation"
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32)
    assert set(batch["mask"].unique().tolist()) <= set(range(150)) | {255}


def test_missing_folders(tmp_path: Path, ade_root: Path):
    with pytest.raises(FileNotFoundError, match=r"looked at .*nowhere/images/training.*docs/datasets.md \(ADE20K\)"):
        ADE20KDataModule(root=str(tmp_path / "nowhere")).setup("fit")
    for path in (ade_root / "annotations/validation").iterdir():
        path.unlink()
    (ade_root / "annotations/validation").rmdir()
    with pytest.raises(FileNotFoundError, match=r"looked at .*annotations/validation, expected a folder of ADE_\*.png"):
        eval_dataset(ade_root)


def test_empty_image_folder(tmp_path: Path):
    (tmp_path / "images/validation").mkdir(parents=True)
    (tmp_path / "annotations/validation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"images/validation.*folder is empty.*ADE20K"):
        eval_dataset(tmp_path)


def test_image_without_annotation(ade_root: Path):
    (ade_root / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(
        DataFormatError, match=r"ADE_val_00000002.jpg has no annotation: expected .*ADE_val_00000002.png"
    ):
        eval_dataset(ade_root)


def test_annotation_removed_after_scan(ade_root: Path):
    dataset = eval_dataset(ade_root)
    (ade_root / "annotations/validation/ADE_val_00000001.png").unlink()
    with pytest.raises(DataFormatError, match=r"ADE_val_00000001.jpg has no annotation"):
        dataset[0]


def test_annotation_of_another_size(ade_root: Path):
    Image.fromarray(np.ones((10, 20), np.uint8), mode="L").save(
        ade_root / "annotations/validation/ADE_val_00000001.png"
    )
    with pytest.raises(DataFormatError, match=r"ADE_val_00000001.png is 20x10 \(WxH\) but its image is 64x48"):
        eval_dataset(ade_root)[0]


def test_values_above_150(ade_root: Path):
    stored = np.ones((H, W), np.uint8)
    stored[0, 0], stored[3, 3], stored[4, 4] = 151, 200, 255  # 255 is allowed, 151 and 200 are not
    Image.fromarray(stored, mode="L").save(ade_root / "annotations/validation/ADE_val_00000002.png")
    with pytest.raises(DataFormatError, match=r"ADE_val_00000002.png holds values \[151, 200\]"):
        eval_dataset(ade_root)[1]


def test_rgb_annotation(ade_root: Path):
    path = ade_root / "annotations/validation/ADE_val_00000001.png"
    with Image.open(path) as img:
        img.convert("RGB").save(path)
    with pytest.raises(DataFormatError, match=r"ADE_val_00000001.png is an RGB image"):
        eval_dataset(ade_root)[0]


def test_unreadable_image(ade_root: Path):
    path = ade_root / "images/validation/ADE_val_00000002.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataFormatError, match=r"Cannot decode image .*ADE_val_00000002.jpg"):
        eval_dataset(ade_root)[1]


def test_boxes_are_refused():
    with pytest.raises(ValueError, match="no object box annotations; set with_boxes to false"):
        ADE20KDataModule(root="unused", with_boxes=True)


def test_cli_fit(ade_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from segmend.cli import main
    from segmend.modules import SegmentationModule

    seen = []
    original = SegmentationModule.training_step

    def spy(self, batch, batch_idx):
        seen.append((self.num_classes, self.class_names[0], batch["mask"].clone()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "training_step", spy)
    main(
        [
            "fit",
            "--model=SegmentationModule",
            "--model.init_args.arch=Unet",
            "--model.init_args.encoder_name=resnet18",
            "--data=segmend.datamodules.ade20k.ADE20KDataModule",
            f"--data.init_args.root={ade_root}",
            "--data.init_args.crop_size=64",
            "--data.init_args.batch_size=2",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert len(seen) == 1
    num_classes, first_name, mask = seen[0]
    assert (num_classes, first_name) == (150, "wall")
    assert mask.shape == (2, 64, 64)
    assert set(mask.unique().tolist()) <= set(range(150)) | {255}
