"""PASCAL VOC 2012 + SBD: peer parity with torchvision, train_aug ids and precedence, boxes, bad input, CLI fit."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision
from PIL import Image

from segmend.datamodules import voc_reader  # where VOC and SBD readers look check_mask up
from segmend.datamodules.sbd import SBDDataset, VOCAugDataset, read_sbd_segmentation, train_aug_ids
from segmend.datamodules.transforms import eval_transform, to_sample
from segmend.datamodules.voc import VOC_CLASSES, VOCDataModule, VOCSegmentationDataset
from segmend.datamodules.voc_format import BoxAnnotation, DataFormatError, box_mask, read_index_mask
from tests.fixtures.voc import (
    P_MODE_AUG_ID,
    SBD_TRAIN,
    SBD_VAL,
    SIZE,
    TRAIN_AUG,
    VOC_TRAIN,
    VOC_VAL,
    VOCSBDTree,
    make_voc_sbd,
    write_sbd_mats,
)

EVAL = partial(to_sample, eval_transform())
IGNORE = 255
PERSON, BOTTLE, DOG, CAR = (VOC_CLASSES.index(n) for n in ("person", "bottle", "dog", "car"))
A1 = "2007_000032"  # VOC train and SBD val; XML with a person (parts) and a difficult bottle
A3 = "2008_000002"  # VOC train and SBD train: VOC's mask must win
V2 = "2008_000003"  # SBD train but VOC val: must not be in train_aug
S1 = "2008_000008"  # SBD only
S3 = "2010_000015"  # SBD only, no XML: boxes from inst/<id>.mat


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> VOCSBDTree:
    return make_voc_sbd(tmp_path_factory.mktemp("vocsbd"), aug_png=True)


@pytest.fixture
def fresh(tmp_path: Path) -> VOCSBDTree:
    """A tree of its own, for tests that damage files."""
    return make_voc_sbd(tmp_path, aug_png=True)


def aug_dataset(tree: VOCSBDTree, source: str = "sbd", **kwargs) -> VOCAugDataset:
    sbd_root = tree.sbd_root if source == "sbd" else kwargs.pop("sbd_root", None)
    return VOCAugDataset(
        tree.voc_root, "train_aug", VOC_CLASSES, EVAL, ids=TRAIN_AUG, aug_source=source, sbd_root=sbd_root, **kwargs
    )


def sample_of(ds, sample_id: str):
    return ds[ds.ids.index(sample_id)]


# ---------------------------------------------------------------- peer parity (raw arrays, before augmentation)


@pytest.mark.parametrize("split", ["train", "val", "trainval"])
def test_voc_matches_torchvision(tree: VOCSBDTree, split: str):
    peer = torchvision.datasets.VOCSegmentation(root=str(tree.base), year="2012", image_set=split, download=False)
    ours = VOCSegmentationDataset(tree.voc_root, split, VOC_CLASSES, EVAL)
    assert len(ours) == len(peer) > 0
    for index in range(len(ours)):
        image, mask = ours.read_sample(index)
        peer_image, peer_mask = peer[index]
        assert Path(peer.images[index]).stem == ours.ids[index]
        np.testing.assert_array_equal(image, np.asarray(peer_image))
        np.testing.assert_array_equal(mask, np.asarray(peer_mask))
        assert IGNORE in mask  # VOC's band survives (no palette expansion)


@pytest.mark.parametrize("split", ["train", "val"])
def test_sbd_matches_torchvision(tree: VOCSBDTree, split: str):
    peer = torchvision.datasets.SBDataset(str(tree.sbd_root), image_set=split, mode="segmentation", download=False)
    ours = SBDDataset(tree.sbd_root, split, transform=EVAL)
    assert ours.ids == list(SBD_TRAIN if split == "train" else SBD_VAL)
    assert len(ours) == len(peer)
    for index in range(len(ours)):
        image, mask = ours.read_sample(index)
        peer_image, peer_mask = peer[index]
        np.testing.assert_array_equal(image, np.asarray(peer_image))
        np.testing.assert_array_equal(mask, np.asarray(peer_mask))
        assert IGNORE not in mask  # SBD has no 255 band


def test_train_aug_sbd_only_ids_match_torchvision_sbd(tree: VOCSBDTree):
    peers = {
        Path(p.images[i]).stem: p[i]
        for p in (
            torchvision.datasets.SBDataset(str(tree.sbd_root), image_set=s, mode="segmentation", download=False)
            for s in ("train", "val")
        )
        for i in range(len(p))
    }
    ours = aug_dataset(tree)
    sbd_only = [i for i in TRAIN_AUG if i not in VOC_TRAIN]
    assert sbd_only == ["2008_000008", "2009_000012", S3]
    for sample_id in sbd_only:
        image, mask = ours.read_sample(ours.ids.index(sample_id))
        np.testing.assert_array_equal(image, np.asarray(peers[sample_id][0]))  # VOC JPEGImages == SBD img
        np.testing.assert_array_equal(mask, np.asarray(peers[sample_id][1]))


# ---------------------------------------------------------------- train_aug ids and precedence


@pytest.mark.parametrize("source", ["sbd", "png"])
def test_train_aug_ids(tree: VOCSBDTree, source: str):
    expected = (set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL)
    ids = train_aug_ids(tree.voc_root, source, tree.sbd_root if source == "sbd" else None)
    assert ids == sorted(expected) == list(TRAIN_AUG)
    assert V2 in SBD_TRAIN and V2 not in ids  # an SBD train image that is VOC val is excluded
    dm = VOCDataModule(root=str(tree.voc_root), train_split="train_aug", aug_source=source, sbd_root=str(tree.sbd_root))
    assert dm.dataset("train").ids == list(TRAIN_AUG)


def test_voc_mask_wins_over_sbd(tree: VOCSBDTree):
    ds = aug_dataset(tree)
    voc_png = tree.voc_root / "SegmentationClass" / f"{A3}.png"
    sbd_mat = tree.sbd_root / "cls" / f"{A3}.mat"
    assert voc_png.is_file() and sbd_mat.is_file()
    _, mask = ds.read_sample(ds.ids.index(A3))
    raw, source = ds.read_mask(A3)
    assert source == voc_png
    np.testing.assert_array_equal(raw, read_index_mask(voc_png))
    np.testing.assert_array_equal(mask, read_index_mask(voc_png))
    assert IGNORE in mask and not np.array_equal(mask, read_sbd_segmentation(sbd_mat))
    # an id VOC did not segment takes SBD's mask
    _, mask = ds.read_sample(ds.ids.index(S1))
    raw, source = ds.read_mask(S1)
    assert source == tree.sbd_root / "cls" / f"{S1}.mat"
    np.testing.assert_array_equal(raw, read_sbd_segmentation(source))
    np.testing.assert_array_equal(mask, read_sbd_segmentation(tree.sbd_root / "cls" / f"{S1}.mat"))


def test_png_source_precedence_and_modes(tree: VOCSBDTree):
    ds = aug_dataset(tree, "png")
    aug = tree.voc_root / "SegmentationClassAug"
    raw, source = ds.read_mask(A3)
    assert source == tree.voc_root / "SegmentationClass" / f"{A3}.png"
    np.testing.assert_array_equal(raw, read_index_mask(source))
    _, mask = ds.read_sample(ds.ids.index(A3))
    assert IGNORE in mask  # VOC's mask, not the band-free Aug PNG
    assert P_MODE_AUG_ID == S1
    for sample_id, mode in ((S1, "P"), (S3, "L")):
        with Image.open(aug / f"{sample_id}.png") as img:
            assert img.mode == mode
        _, mask = ds.read_sample(ds.ids.index(sample_id))
        np.testing.assert_array_equal(mask, read_sbd_segmentation(tree.sbd_root / "cls" / f"{sample_id}.mat"))


def test_voc_palette_and_classes(tree: VOCSBDTree):
    dm = VOCDataModule(root=str(tree.voc_root))
    assert dm.num_classes == 21 and dm.class_names[0] == "background" and dm.class_names[20] == "tvmonitor"
    with Image.open(tree.voc_root / "SegmentationClass" / f"{A1}.png") as img:
        palette = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(dm.palette[:21], palette[:21])
    assert tuple(dm.palette[15]) == (192, 128, 128)  # person in the VOC colour map


# ---------------------------------------------------------------- boxes


def test_xml_boxes_one_based_to_zero_based_parts_ignored(tree: VOCSBDTree):
    ds = aug_dataset(tree)
    assert ds.boxes(A1) == [
        BoxAnnotation(PERSON, 10, 5, 19, 39),  # XML 11,6,20,40; the head part (written first) is not the box
        BoxAnnotation(BOTTLE, 40, 20, 54, 34, difficult=True),
    ]
    no_difficult = aug_dataset(tree, keep_difficult=False)
    assert no_difficult.boxes(A1) == [BoxAnnotation(PERSON, 10, 5, 19, 39)]
    dm = VOCDataModule(root=str(tree.voc_root), keep_difficult=False)
    assert dm.dataset("train").boxes(A1) == [BoxAnnotation(PERSON, 10, 5, 19, 39)]


def test_boxes_from_sbd_instances_without_xml(tree: VOCSBDTree):
    assert not (tree.voc_root / "Annotations" / f"{S3}.xml").exists()
    expected = [
        BoxAnnotation(DOG, 3, 10, 18, 30),
        BoxAnnotation(CAR, 25, 2, 41, 20),
        BoxAnnotation(DOG, 46, 30, 60, 44),
    ]
    assert aug_dataset(tree).boxes(S3) == expected
    assert aug_dataset(tree, "png", sbd_root=tree.sbd_root).boxes(S3) == expected
    assert SBDDataset(tree.sbd_root, "val", transform=EVAL).boxes(S3) == expected
    # and as the box mask of a batch sample
    sample = sample_of(aug_dataset(tree, with_boxes=True), S3)
    np.testing.assert_array_equal(sample["boxes"][:, : SIZE[0], : SIZE[1]].numpy(), box_mask(expected, 21, *SIZE))
    assert sample["boxes"].shape == (21, 64, 64)


def test_box_mask_in_batches(tree: VOCSBDTree):
    dm = VOCDataModule(
        root=str(tree.voc_root), train_split="train_aug", sbd_root=str(tree.sbd_root), with_boxes=True, batch_size=6
    )
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["boxes"].shape == (2, 21, 64, 64)
    for b, sample_id in enumerate(batch["id"]):
        expected = box_mask(dm.dataset("val").boxes(sample_id), 21, *SIZE)
        np.testing.assert_array_equal(batch["boxes"][b, :, : SIZE[0], : SIZE[1]].numpy(), expected)


def test_no_box_source_names_the_expected_files(fresh: VOCSBDTree):
    (fresh.sbd_root / "inst" / f"{S3}.mat").unlink()
    with pytest.raises(
        DataFormatError, match=rf"{S3}.jpg has no box annotation: expected .*Annotations/{S3}.xml or .*inst/{S3}.mat"
    ):
        aug_dataset(fresh).boxes(S3)
    with pytest.raises(DataFormatError, match=rf"expected .*Annotations/{S3}.xml \(set sbd_root"):
        aug_dataset(fresh, "png").boxes(S3)


# ---------------------------------------------------------------- bad input


def test_check_mask_is_shared_by_voc_and_sbd(tree: VOCSBDTree, monkeypatch: pytest.MonkeyPatch):
    seen = []
    original = voc_reader.check_mask

    def spy(mask, path, *args):
        seen.append(Path(path).name)
        return original(mask, path, *args)

    monkeypatch.setattr(voc_reader, "check_mask", spy)
    ds = aug_dataset(tree)
    for sample_id in (A3, S1):
        ds.read_sample(ds.ids.index(sample_id))
    SBDDataset(tree.sbd_root, "val", transform=EVAL).read_sample(1)
    assert seen == [f"{A3}.png", f"{S1}.mat", f"{S3}.mat"]


def test_sbd_image_without_mask(fresh: VOCSBDTree):
    (fresh.sbd_root / "cls" / f"{S1}.mat").unlink()
    with pytest.raises(
        DataFormatError, match=rf"{S1}.jpg has no mask: expected .*SegmentationClass/{S1}.png or .*cls/{S1}.mat"
    ):
        sample_of(aug_dataset(fresh), S1)


def test_sbd_mask_of_another_size(fresh: VOCSBDTree):
    write_sbd_mats(fresh.sbd_root, S1, np.zeros((10, 12), np.uint8), np.zeros((10, 12), np.uint8), [])
    with pytest.raises(DataFormatError, match=rf"{S1}.mat is 12x10 \(WxH\) but its image is 64x48"):
        sample_of(aug_dataset(fresh), S1)


def test_sbd_label_values_outside_classes(fresh: VOCSBDTree):
    cls = np.zeros(SIZE, np.uint8)
    cls[0, :3] = (21, 30, 255)  # 255 would be fine; 21 and 30 are not classes
    write_sbd_mats(fresh.sbd_root, S1, cls, np.zeros(SIZE, np.uint8), [])
    with pytest.raises(DataFormatError, match=rf"{S1}.mat holds label values \[21, 30\], outside 0..20"):
        sample_of(aug_dataset(fresh), S1)


def test_sbd_mat_without_gtcls(fresh: VOCSBDTree):
    scipy.io.savemat(fresh.sbd_root / "cls" / f"{S1}.mat", {"GTinst": {"Segmentation": np.zeros(SIZE, np.uint8)}})
    with pytest.raises(DataFormatError, match=rf"{S1}.mat has no struct 'GTcls' \(found variables \['GTinst'\]\)"):
        sample_of(aug_dataset(fresh), S1)


def test_sbd_gtcls_without_segmentation(fresh: VOCSBDTree):
    scipy.io.savemat(fresh.sbd_root / "cls" / f"{S1}.mat", {"GTcls": {"Boundaries": np.zeros((1, 1))}})
    with pytest.raises(DataFormatError, match=rf"{S1}.mat: struct GTcls has fields \['Boundaries'\].*'Segmentation'"):
        sample_of(aug_dataset(fresh), S1)


def test_truncated_sbd_mat(fresh: VOCSBDTree):
    path = fresh.sbd_root / "cls" / f"{S1}.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataFormatError, match=rf"Cannot read MATLAB file .*{S1}.mat.*corrupt or truncated"):
        sample_of(aug_dataset(fresh), S1)


def test_sbd_instance_numbers_beyond_categories(fresh: VOCSBDTree):
    cls, inst = np.zeros(SIZE, np.uint8), np.zeros(SIZE, np.uint8)
    inst[5:9, 5:9] = 3
    write_sbd_mats(fresh.sbd_root, S3, cls, inst, [DOG])
    with pytest.raises(DataFormatError, match=rf"{S3}.mat: GTinst.Segmentation holds instance numbers \[3\]"):
        aug_dataset(fresh).boxes(S3)


def test_truncated_image_in_train_aug(fresh: VOCSBDTree):
    path = fresh.voc_root / "JPEGImages" / f"{S1}.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFormatError, match=rf"Cannot decode image .*{S1}.jpg"):
        sample_of(aug_dataset(fresh), S1)


@pytest.mark.parametrize(
    ("source", "folder", "sample_id"), [("sbd", "SegmentationClass", A1), ("png", "SegmentationClassAug", S1)]
)
def test_rgb_converted_masks(fresh: VOCSBDTree, source: str, folder: str, sample_id: str):
    path = fresh.voc_root / folder / f"{sample_id}.png"
    with Image.open(path) as img:
        img.convert("RGB").save(path)
    with pytest.raises(DataFormatError, match=rf"{sample_id}.png is an RGB image; expected a palette"):
        sample_of(aug_dataset(fresh, source), sample_id)


def test_voc_mask_of_another_size_in_train_aug(fresh: VOCSBDTree):
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(fresh.voc_root / "SegmentationClass" / f"{A3}.png")
    with pytest.raises(DataFormatError, match=rf"{A3}.png is 20x20 \(WxH\) but its image is 64x48"):
        sample_of(aug_dataset(fresh), A3)


def test_arguments_checked(tree: VOCSBDTree):
    with pytest.raises(ValueError, match="train_aug with aug_source 'sbd' needs sbd_root"):
        VOCDataModule(root=str(tree.voc_root), train_split="train_aug")
    with pytest.raises(ValueError, match="aug_source must be 'sbd' or 'png'"):
        VOCDataModule(root=str(tree.voc_root), aug_source="mat")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"looked at .*nowhere/train.txt, expected SBD's list"):
        train_aug_ids(tree.voc_root, "sbd", tree.base / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"looked at .*VOC2012/Missing, expected the pre-converted SBD masks"):
        train_aug_ids(tree.voc_root, "png", aug_dir="Missing")


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("train_split", ["train", "train_aug"])
def test_fit_through_the_cli(tree: VOCSBDTree, tmp_path: Path, train_split: str, monkeypatch: pytest.MonkeyPatch):
    from segmend.cli import main
    from segmend.modules import SegmentationModule

    seen = []
    original = SegmentationModule.training_step

    def spy(self, batch, batch_idx):
        seen.append((self.num_classes, list(batch["id"]), batch["mask"].clone()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "training_step", spy)
    main(
        [
            "fit",
            "--model=SegmentationModule",
            "--model.init_args.arch=Unet",
            "--model.init_args.encoder_name=resnet18",
            "--data=segmend.datamodules.voc.VOCDataModule",
            f"--data.init_args.root={tree.voc_root}",
            f"--data.init_args.train_split={train_split}",
            f"--data.init_args.sbd_root={tree.sbd_root}",
            "--data.init_args.crop_size=64",
            "--data.init_args.batch_size=2",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert len(seen) == 1
    num_classes, ids, mask = seen[0]
    assert num_classes == 21 and set(ids) <= set(TRAIN_AUG if train_split == "train_aug" else VOC_TRAIN)
    assert mask.shape == (2, 64, 64) and set(mask.unique().tolist()) <= set(range(21)) | {255}
