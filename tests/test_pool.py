"""Unlabeled image pools: scanning, ids, the skip report, loaders and `segmend predict`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmend.datamodules.pool import (
    LOAD_FAILURE,
    ImageFolderPool,
    ImageFolderPoolDataModule,
    SkipNoneDataLoader,
    collate_skip_none,
)
from segmend.datamodules.voc_format import DataFormatError
from tests.fixtures.pool import BAD, GOOD, make_pool


@pytest.fixture
def pool_root(tmp_path: Path) -> Path:
    return make_pool(tmp_path / "pool")


def test_ids_sorted_stable_and_location_independent(pool_root: Path, tmp_path: Path):
    pool = ImageFolderPool(pool_root)
    assert pool.ids == GOOD  # relative POSIX paths with their extension: a.jpg and a.png both kept
    moved = shutil.copytree(pool_root, tmp_path / "elsewhere" / "copy")
    assert ImageFolderPool(moved).ids == GOOD
    assert ImageFolderPool(pool_root).ids == pool.ids


def test_report_lists_exactly_the_bad_files(pool_root: Path, tmp_path: Path):
    pool = ImageFolderPool(pool_root)
    report = pool.report
    assert (report.num_images, report.num_skipped) == (6, 4)
    skipped = dict(report.skipped)
    assert sorted(skipped) == sorted(BAD)  # the .txt and .json files are neither served nor counted
    for path, reason in BAD.items():
        assert skipped[path].startswith(reason), (path, skipped[path])
    written = json.loads(pool.write_report(tmp_path / "out" / "report.json").read_text())
    assert written["num_images"] == 6 and written["num_skipped"] == 4 and written["verify"] == "decode"
    assert {s["path"] for s in written["skipped"]} == set(BAD)


def test_header_scan_lets_pixel_damage_through_to_loading(pool_root: Path):
    pool = ImageFolderPool(pool_root, verify="header")
    assert sorted(dict(pool.report.skipped)) == ["bad/empty.png", "sub/fake.jpg"]
    assert "bad/truncated.jpg" in pool.ids and "bad/corrupt.png" in pool.ids
    assert pool[pool.ids.index("bad/truncated.jpg")] is None
    pool[pool.ids.index("bad/truncated.jpg")]  # a second failure is recorded once
    skipped = dict(pool.report.skipped)
    assert skipped["bad/truncated.jpg"].startswith(LOAD_FAILURE)
    assert (pool.report.num_images, pool.report.num_skipped) == (7, 3)


def test_samples_follow_the_batch_contract(pool_root: Path):
    pool = ImageFolderPool(pool_root)
    sample = pool[pool.ids.index("sub/e.jpeg")]  # a 40x56 image, padded to 64x64
    assert sample["id"] == "sub/e.jpeg" and sample["has_mask"] is False
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["mask"].dtype == torch.long and (sample["mask"] == 255).all()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_never_yields_a_bad_sample(pool_root: Path, num_workers: int):
    dm = ImageFolderPoolDataModule(
        root=str(pool_root),
        class_names=["x", "y"],
        image_size=40,
        batch_size=2,
        num_workers=num_workers,
        verify="header",
    )
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    ids = [i for batch in batches for i in batch["id"]]
    assert ids == GOOD  # corrupt.png and truncated.jpg passed the header scan but were dropped at load
    for batch in batches:
        assert batch["image"].shape[1:] == (3, 64, 64)  # longer side 40, padded to 64 (a multiple of 32)
        assert torch.isfinite(batch["image"]).all()
        assert not batch["has_mask"].any() and (batch["mask"] == 255).all()
    if num_workers == 0:  # failures recorded in workers stay in the workers (documented)
        assert {p for p, r in dm.pool.report.skipped if r.startswith(LOAD_FAILURE)} == {
            "bad/corrupt.png",
            "bad/truncated.jpg",
        }


def test_file_broken_after_the_scan(pool_root: Path):
    pool = ImageFolderPool(pool_root)
    (pool_root / "b.png").write_bytes(b"")
    loader = SkipNoneDataLoader(pool, batch_size=1, collate_fn=collate_skip_none)
    ids = [batch["id"][0] for batch in loader]  # the batch holding only b.png is skipped, not None
    assert ids == [i for i in GOOD if i != "b.png"]
    assert dict(pool.report.skipped)["b.png"].startswith(LOAD_FAILURE)
    assert pool.report.num_images == 5


def test_collate_pads_mixed_sizes_and_drops_none(pool_root: Path):
    pool = ImageFolderPool(pool_root)
    small, large = pool[0], {**pool[0], "image": torch.zeros(3, 96, 64), "mask": torch.zeros(96, 64).long()}
    batch = collate_skip_none([small, None, large])
    assert batch["image"].shape == (2, 3, 96, 64)
    assert (batch["mask"][0, 64:] == 255).all()
    black = (0.0 - 0.485) / 0.229
    assert torch.allclose(batch["image"][0, 0, 64:], torch.full((32, 64), black))
    assert collate_skip_none([None, None]) is None


def test_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(
        FileNotFoundError, match=r"looked at .*nowhere, expected a folder tree of images.*Unlabeled image pools"
    ):
        ImageFolderPool(tmp_path / "nowhere")
    (tmp_path / "empty/sub").mkdir(parents=True)
    (tmp_path / "empty/sub/readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"looked at .*empty, expected .*\.jpg.*the folder holds none"):
        ImageFolderPool(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"Unlabeled image pools"):
        ImageFolderPoolDataModule(root=str(tmp_path / "empty"), class_names=["a", "b"]).setup("predict")


def test_only_unreadable_files(tmp_path: Path):
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "y.png").write_text("nope")
    with pytest.raises(DataFormatError, match=r"None of the 2 image files .*x.jpg: empty file.*y.png: not an image"):
        ImageFolderPool(tmp_path)


def test_datamodule_arguments_and_unavailable_stages(pool_root: Path):
    dm = ImageFolderPoolDataModule(root=str(pool_root), class_names=["bg", "a", "b"])
    assert dm.num_classes == 3 and dm.class_names == ("bg", "a", "b")
    with pytest.raises(ValueError, match=r"serves only `predict`.*not the 'train' split.*labeled DataModule"):
        dm.setup("fit")
    with pytest.raises(ValueError, match=r"at least 2"):
        ImageFolderPoolDataModule(root=str(pool_root), class_names=["bg"])
    with pytest.raises(ValueError, match=r"repeats names"):
        ImageFolderPoolDataModule(root=str(pool_root), class_names=["a", "a"])
    with pytest.raises(ValueError, match=r"image_size must be a positive"):
        ImageFolderPoolDataModule(root=str(pool_root), class_names=["a", "b"], image_size=0)


def test_segmend_predict_on_the_pool(pool_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from segmend.cli import main
    from segmend.modules import SegmentationModule

    seen = []
    original = SegmentationModule.predict_step

    def spy(self, batch, batch_idx):
        out = original(self, batch, batch_idx)
        seen.append((self.num_classes, self.class_names, list(batch["id"]), tuple(out["probs"].shape)))
        return out

    monkeypatch.setattr(SegmentationModule, "predict_step", spy)
    report = tmp_path / "pool_report.json"
    main(
        [
            "predict",
            "--model=SegmentationModule",
            "--model.init_args.arch=Unet",
            "--model.init_args.encoder_name=resnet18",
            "--data=segmend.datamodules.pool.ImageFolderPoolDataModule",
            f"--data.init_args.root={pool_root}",
            "--data.init_args.class_names=[a,b,c]",
            "--data.init_args.image_size=64",
            "--data.init_args.batch_size=1",  # a batch holding only a file that fails at load must be skipped
            "--data.init_args.verify=header",
            f"--data.init_args.report_path={report}",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert [ids[0] for _, _, ids, _ in seen] == GOOD
    assert all(n == 3 and names == ("a", "b", "c") and shape == (1, 3, 64, 64) for n, names, _, shape in seen)
    written = json.loads(report.read_text())
    assert {s["path"] for s in written["skipped"]} == set(BAD)
    assert written["num_images"] == 6


# ---------------------------------------------------------------- people's photos


def make_photo_pool(root: Path) -> Path:
    """Files as people have them: a phone JPEG with EXIF orientation 6, 16-bit PNG, RGBA, TIFF, BMP, others."""
    root.mkdir(parents=True)
    upright = Image.new("RGB", (60, 40), (0, 0, 255))  # raw 60x40 (WxH); red top-left corner
    upright.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.save(root / "phone.JPG", exif=exif, quality=95)
    Image.fromarray(np.full((20, 30), 32768, dtype=np.uint16)).save(root / "grey16.png")
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(root / "clear.png")
    rgb = np.random.default_rng(3).integers(0, 256, (24, 36, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "scan.TIF", format="TIFF")
    Image.fromarray(rgb).save(root / "paint.bmp", format="BMP")
    for name in ("IMG_1.HEIC", "IMG_2.heic", "sub/IMG_3.heic", "sub/IMG_4.heic"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "notes.txt").write_text("sidecar")
    (root / "README").write_text("no extension")
    (root / "broken.tiff").write_bytes(b"II*\x00" + b"\xff" * 20)
    return root


def test_pool_reads_photos_as_people_see_them(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    pool = ImageFolderPool(make_photo_pool(tmp_path / "photos"))
    assert pool.ids == ["clear.png", "grey16.png", "paint.bmp", "phone.JPG", "scan.TIF"]
    report = pool.report
    assert report.num_images == 5 and [p for p, _ in report.skipped] == ["broken.tiff"]
    assert report.skipped[0][1].startswith(("corrupt or truncated", "not an image"))
    assert report.other_files == {
        "": (1, ["README"]),
        ".heic": (4, ["IMG_1.HEIC", "IMG_2.heic", "sub/IMG_3.heic"]),
        ".txt": (1, ["notes.txt"]),
    }
    assert report.to_dict()["other_files"][1] == {
        "extension": ".heic",
        "count": 4,
        "examples": ["IMG_1.HEIC", "IMG_2.heic", "sub/IMG_3.heic"],
    }
    (warning,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert "4 .heic (IMG_1.HEIC, IMG_2.heic, sub/IMG_3.heic, ...)" in warning  # image formats: also a warning
    assert "notes.txt" not in warning and "README" not in warning  # other files: only in the report

    phone = pool[pool.ids.index("phone.JPG")]
    assert phone["image_size"].tolist() == [60, 40]  # oriented (H, W): predictions are written back upright
    assert phone["content_size"].tolist() == [60, 40]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = phone["image"][:, :60, :40] * std[:, None, None] + mean[:, None, None]
    assert pixels[:, 4, 35].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.06)  # red corner now top-right
    assert pixels[:, 4, 4].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=0.06)
    grey = pool[pool.ids.index("grey16.png")]["image"][:, :20, :30] * std[:, None, None] + mean[:, None, None]
    assert grey.mean().item() * 255 == pytest.approx(128, abs=1)  # scaled by 16 bits, not clipped to white
    clear = pool[pool.ids.index("clear.png")]["image"][:, :16, :16] * std[:, None, None] + mean[:, None, None]
    assert clear.min().item() == pytest.approx(1.0, abs=1e-3)  # transparent pixels over white
    assert pool[pool.ids.index("scan.TIF")]["image_size"].tolist() == [24, 36]

    header = ImageFolderPool(tmp_path / "photos", verify="header")
    assert "phone.JPG" in header.ids


def test_pool_datamodule_reports_oriented_sizes_and_other_files(tmp_path: Path):
    root = make_photo_pool(tmp_path / "photos")
    report_path = tmp_path / "report.json"
    dm = ImageFolderPoolDataModule(root=str(root), class_names=["a", "b"], image_size=32, report_path=str(report_path))
    dm.setup("predict")
    sizes = {
        i: s.tolist()
        for batch in dm.predict_dataloader()
        for i, s in zip(batch["id"], batch["image_size"], strict=True)
    }
    assert sizes["phone.JPG"] == [60, 40]
    written = json.loads(report_path.read_text())
    assert [o["extension"] for o in written["other_files"]] == ["", ".heic", ".txt"]
    assert written["skipped"][0]["path"] == "broken.tiff"


def test_folder_of_unread_formats_says_what_it_holds(tmp_path: Path):
    (tmp_path / "heic").mkdir()
    (tmp_path / "heic/IMG_1.heic").write_bytes(b"\x00")
    with pytest.raises(FileNotFoundError, match=r"the folder holds none \(only 1 \.heic \(IMG_1\.heic\)\)"):
        ImageFolderPool(tmp_path / "heic")
