"""The Cityscapes reader on tiny seeded trees in the distributed layout, checked against torchvision."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import Cityscapes as TorchvisionCityscapes

from segmend.datamodules.cityscapes import CityscapesDataModule, CityscapesDataset
from segmend.datamodules.cityscapes_format import (
    LABELS,
    OBJECTS11_CLASSES,
    TRAINID19_CLASSES,
    ids_from_image,
    label_lut,
)
from segmend.datamodules.image_io import read_image
from segmend.datamodules.transforms import eval_transform, to_sample
from segmend.datamodules.voc_format import BoxAnnotation, DataFormatError, box_mask
from tests.fixtures.cityscapes import (
    CITIES,
    IMAGES_PER_CITY,
    make_cityscapes,
    rect,
    scene_image,
    write_annotation,
    write_image,
)
from tests.fixtures.cli import check_fit_metrics

EVAL = partial(to_sample, eval_transform())
N_PER_SPLIT = sum(IMAGES_PER_CITY)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tree shared by the tests that do not modify it."""
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture
def own_tree(tmp_path: Path) -> Path:
    """A tree a test may damage."""
    return make_cityscapes(tmp_path / "cityscapes")


# ---------------------------------------------------------------- label tables


def test_label_table_matches_torchvision():
    ours = {(lb.name, lb.id, lb.train_id if lb.train_id != 255 else -1, lb.has_instances, lb.color) for lb in LABELS}
    theirs = {
        (c.name, c.id, c.train_id if c.train_id not in (255, -1) else -1, c.has_instances, c.color)
        for c in TorchvisionCityscapes.classes
    }
    assert ours == theirs
    assert len(TRAINID19_CLASSES) == 19 and TRAINID19_CLASSES[0] == "road" and TRAINID19_CLASSES[18] == "bicycle"
    assert OBJECTS11_CLASSES == (
        "background", "pole", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle",
    )  # fmt: skip


def test_lookup_tables_by_hand():
    t19, o11 = label_lut("trainid19"), label_lut("objects11")
    # label id:  road 7, sidewalk 8, pole 17, polegroup 18, light 19, sign 20, sky 23, person 24, car 26,
    #            caravan 29, bicycle 33, unlabeled 0, ego vehicle 1, license plate -1 (255 in 8 bits)
    ids = [7, 8, 17, 18, 19, 20, 23, 24, 26, 29, 33, 0, 1, 255]
    assert t19[ids].tolist() == [0, 1, 5, 255, 6, 7, 10, 11, 13, 255, 18, 255, 255, 255]
    assert o11[ids].tolist() == [0, 0, 1, 255, 2, 3, 0, 4, 6, 255, 11, 255, 255, 255]
    assert (t19[34:255] == 255).all() and (t19[:34] != 255).sum() == 19
    assert sorted(set(o11[:34].tolist()) - {255}) == list(range(12))


# ---------------------------------------------------------------- peer parity with torchvision


@pytest.mark.parametrize(
    ("split", "mode"),
    [("train", "fine"), ("val", "fine"), ("test", "fine"), ("train", "coarse"), ("train_extra", "coarse")],
)
def test_parity_with_torchvision(tree: Path, split: str, mode: str):
    theirs = TorchvisionCityscapes(str(tree), split=split, mode=mode, target_type="semantic")
    ours = CityscapesDataset(tree, split, annotation=mode, transform=EVAL)
    to_train = np.full(256, 255, np.uint8)
    for c in TorchvisionCityscapes.classes:
        if c.id >= 0:
            to_train[c.id] = 255 if c.train_id in (-1, 255) else c.train_id
    stem_of = {Path(p).name.split("_leftImg8bit")[0]: i for i, p in enumerate(theirs.images)}
    assert sorted(stem_of) == sorted(ours.ids) and len(ours) == N_PER_SPLIT
    for index, stem in enumerate(ours.ids):
        image, target = theirs[stem_of[stem]]
        raw_image = read_image(ours.image_path(index))
        raw_ids = ours.load_label_ids(index, raw_image.shape[:2])
        np.testing.assert_array_equal(raw_image, np.asarray(image))
        np.testing.assert_array_equal(raw_ids, np.asarray(target))
        mapped_image, mask = ours.read_sample(index)
        np.testing.assert_array_equal(mapped_image, np.asarray(image))
        np.testing.assert_array_equal(mask, to_train[np.asarray(target)])
        sample = ours[index]  # through the transform: 64x32 needs no padding
        assert sample["id"] == stem and sample["has_mask"]
        np.testing.assert_array_equal(sample["mask"].numpy(), to_train[np.asarray(target)])
    assert len(np.unique(np.concatenate([ours.read_sample(i)[1].ravel() for i in range(len(ours))]))) > 5


# ---------------------------------------------------------------- one hand-made image

H, W = 32, 64
HAND_OBJECTS = [
    {"label": "sky", "polygon": rect(0, 0, 63, 15)},
    {"label": "road", "polygon": rect(0, 16, 63, 31)},
    {"label": "static", "polygon": rect(0, 28, 3, 31)},
    {"label": "car", "polygon": rect(5, 18, 20, 26)},  # 26000
    {"label": "car", "polygon": rect(30, 20, 40, 28)},  # 26001, right part hidden by the person
    {"label": "person", "polygon": rect(36, 10, 42, 29)},  # 24000
    {"label": "persongroup", "polygon": rect(50, 5, 60, 14)},  # crowd: value 24, no box
    {"label": "caravan", "polygon": rect(44, 18, 48, 22)},  # 29000: void class, box dropped
    {"label": "license plate", "polygon": rect(8, 22, 12, 24)},  # id -1: never drawn
    {"label": "pole", "polygon": rect(25, -5, 27, 20)},  # sticks out at the top
    {"label": "traffic sign", "polygon": rect(22, 2, 28, 6)},
    {"label": "traffic light", "polygon": rect(62, 3, 66, 9)},  # sticks out at the right
    {"label": "polegroup", "polygon": rect(10, 0, 11, 8)},  # void, no box
    {"label": "traffic sign", "polygon": rect(70, 0, 75, 5), "deleted": 1},
]
# (trainId, objects11 index, xmin, ymin, xmax, ymax): instances in id order, then polygons in file order
HAND_BOXES = [
    (11, 4, 36, 10, 42, 29),  # person 24000
    (13, 6, 5, 18, 20, 26),  # car 26000
    (13, 6, 30, 20, 35, 28),  # car 26001, only its visible pixels
    (5, 1, 25, 0, 27, 20),  # pole polygon, clipped at y=0
    (7, 3, 22, 2, 28, 6),  # traffic sign
    (6, 2, 62, 3, 63, 9),  # traffic light, clipped at x=63
]


@pytest.fixture
def hand_tree(tmp_path: Path) -> Path:
    root = tmp_path / "cs"
    rng = np.random.default_rng(1)
    for split, city in (("train", "aachen"), ("val", "lindau")):
        stem = f"{city}_000000_000019"
        write_image(root, split, city, stem, scene_image(HAND_OBJECTS, (H, W), rng))
        write_annotation(root, "gtFine", split, city, stem, HAND_OBJECTS, (H, W))
    return root


@pytest.mark.parametrize("classes", ["trainid19", "objects11"])
def test_mask_pixels_by_hand(hand_tree: Path, classes: str):
    ds = CityscapesDataset(hand_tree, "train", classes=classes, transform=EVAL)
    mask = ds.read_sample(0)[1]
    t19 = classes == "trainid19"
    expected = {
        (12, 5): 10 if t19 else 0,  # sky
        (30, 30): 0,  # road (trainId 0 / background 0)
        (30, 1): 255,  # static: void
        (20, 10): 13 if t19 else 6,  # car
        (23, 10): 13 if t19 else 6,  # under the license plate, which is not drawn
        (20, 46): 255,  # caravan: void in both modes
        (10, 55): 11 if t19 else 4,  # crowd of persons keeps the person class
        (15, 26): 5 if t19 else 1,  # pole
        (4, 25): 7 if t19 else 3,  # sign drawn over the pole
        (5, 63): 6 if t19 else 2,  # traffic light
        (4, 10): 255,  # polegroup: void
    }
    assert {yx: int(mask[yx]) for yx in expected} == expected


@pytest.mark.parametrize("classes", ["trainid19", "objects11"])
def test_boxes_by_hand(hand_tree: Path, classes: str):
    ds = CityscapesDataset(hand_tree, "train", classes=classes, transform=EVAL, with_boxes=True)
    column = 0 if classes == "trainid19" else 1
    expected = [BoxAnnotation(row[column], *row[2:]) for row in HAND_BOXES]
    assert ds.boxes("aachen_000000_000019") == expected
    assert ds.boxes(0) == expected
    sample = ds[0]
    assert sample["boxes"].shape == (ds.num_classes, H, W)
    np.testing.assert_array_equal(sample["boxes"].numpy(), box_mask(expected, ds.num_classes, H, W))
    # the instanceIds file really holds the crowd as a plain label id and the caravan as an instance
    instances = np.asarray(Image.open(ds.label_path(0, "instanceIds.png")))
    assert instances[10, 55] == 24 and instances[20, 46] == 29000 and instances[20, 33] == 26001


def test_instance_ids_of_pillow_mode_I(hand_tree: Path):
    path = hand_tree / "gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds.png"
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # Pillow 10.0 opens 16-bit PNGs as 'I', recent versions as 'I;16'
        as_opened = ids_from_image(img, path)
        as_32 = ids_from_image(img.convert("I"), path)
    as_16 = ids_from_image(Image.fromarray(as_32.astype(np.uint16)), path)  # mode 'I;16' with any Pillow
    assert as_32.dtype == np.int32
    np.testing.assert_array_equal(as_opened, as_32)
    np.testing.assert_array_equal(as_16, as_32)
    assert as_16.max() == 29000


def test_license_plate_value_maps_to_void(hand_tree: Path):
    path = hand_tree / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    ids = np.asarray(Image.open(path)).copy()
    ids[0, :4] = 255  # -1 stored in 8 bits
    Image.fromarray(ids, mode="L").save(path)
    mask = CityscapesDataset(hand_tree, "train").read_sample(0)[1]
    assert mask[0, :4].tolist() == [255] * 4 and mask[0, 5] == 10


# ---------------------------------------------------------------- DataModule


def test_train_extra_only_on_request(tree: Path):
    plain = CityscapesDataModule(root=str(tree), annotation="coarse", crop_size=32, batch_size=2)
    extra = CityscapesDataModule(root=str(tree), annotation="coarse", use_train_extra=True, crop_size=32, batch_size=2)
    plain.setup("fit")
    extra.setup("fit")
    plain_ids, extra_ids = plain.dataset("train", True).ids, extra.dataset("train", True).ids
    assert len(plain_ids) == N_PER_SPLIT and not any(i.startswith(CITIES["train_extra"]) for i in plain_ids)
    assert len(extra_ids) == 2 * N_PER_SPLIT and extra_ids[:N_PER_SPLIT] == plain_ids
    assert all(i.startswith(CITIES["train_extra"]) for i in extra_ids[N_PER_SPLIT:])
    assert extra.dataset("train", True).annotation == "coarse"
    assert extra.dataset("val").annotation == "fine"  # coarse training is evaluated on fine labels
    batch = next(iter(extra.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.long


def test_fine_with_train_extra_is_refused(tree: Path):
    with pytest.raises(ValueError, match="train_extra.*only coarse labels.*annotation: coarse"):
        CityscapesDataModule(root=str(tree), annotation="fine", use_train_extra=True)
    with pytest.raises(ValueError, match="no fine labels .* for split 'train_extra'"):
        CityscapesDataset(tree, "train_extra", annotation="fine")
    with pytest.raises(ValueError, match="test_split='test' has no coarse labels"):
        CityscapesDataModule(root=str(tree), eval_annotation="coarse", test_split="test")
    with pytest.raises(ValueError, match="classes must be"):
        CityscapesDataModule(root=str(tree), classes="objects10")


@pytest.mark.parametrize("classes", ["trainid19", "objects11"])
def test_datamodule_batches_with_boxes(tree: Path, classes: str):
    dm = CityscapesDataModule(root=str(tree), classes=classes, with_boxes=True, crop_size=32, batch_size=2)
    assert dm.num_classes == (19 if classes == "trainid19" else 12) and len(dm.class_names) == dm.num_classes
    assert dm.palette.shape == (256, 3)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 64) and batch["boxes"].shape == (2, dm.num_classes, 32, 64)
    mask = batch["mask"]
    assert set(mask.unique().tolist()) <= set(range(dm.num_classes)) | {255}
    boxes = batch["boxes"]
    assert boxes[:, 1:].sum() > 0 and ((boxes[:, 0] == 1) == (boxes[:, 1:].sum(1) == 0)).all()


# ---------------------------------------------------------------- bad input


def test_missing_root(tmp_path: Path):
    with pytest.raises(
        FileNotFoundError, match=r"looked at .*nowhere/leftImg8bit/train.*docs/datasets.md \(Cityscapes\)"
    ):
        CityscapesDataset(tmp_path / "nowhere", "train")


def test_missing_label_split_folder(own_tree: Path):
    shutil.rmtree(own_tree / "gtCoarse" / "val")
    with pytest.raises(FileNotFoundError, match=r"looked at .*gtCoarse/val, expected the Cityscapes coarse labels"):
        CityscapesDataset(own_tree, "val", annotation="coarse")


def test_image_without_label(own_tree: Path):
    victim = next((own_tree / "gtFine/train/bochum").glob("*_gtFine_labelIds.png"))
    stem = victim.name.replace("_gtFine_labelIds.png", "")
    victim.unlink()
    with pytest.raises(DataFormatError, match=rf"{stem}_leftImg8bit.png has no fine label: expected .*{victim.name}"):
        CityscapesDataset(own_tree, "train")


def test_label_of_another_size(own_tree: Path):
    ds = CityscapesDataset(own_tree, "train", transform=EVAL)
    Image.fromarray(np.full((16, 16), 7, np.uint8), mode="L").save(ds.label_path(1))
    with pytest.raises(DataFormatError, match=rf"{ds.ids[1]}_gtFine_labelIds.png is 16x16 .* image is 64x32"):
        ds[1]


def test_label_values_outside_label_ids(own_tree: Path):
    ds = CityscapesDataset(own_tree, "train", transform=EVAL)
    ids = np.asarray(Image.open(ds.label_path(0))).copy()
    ids[0, 0], ids[0, 1] = 40, 34
    Image.fromarray(ids, mode="L").save(ds.label_path(0))
    with pytest.raises(DataFormatError, match=r"labelIds.png holds values \[34, 40\], which are not Cityscapes"):
        ds[0]


def test_colour_png_as_label(own_tree: Path):
    ds = CityscapesDataset(own_tree, "train", transform=EVAL)
    shutil.copy(ds.label_path(0, "color.png"), ds.label_path(0))
    with pytest.raises(DataFormatError, match=r"labelIds.png is an RGBA image.*_color.png files are for viewing"):
        ds[0]


def test_truncated_image(own_tree: Path):
    ds = CityscapesDataset(own_tree, "val", transform=EVAL)
    path = ds.image_path(2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataFormatError, match=rf"Cannot decode image .*{path.name}"):
        ds[2]


def test_bad_instance_ids_and_polygons(own_tree: Path):
    ds = CityscapesDataset(own_tree, "train", transform=EVAL, with_boxes=True)
    inst = np.asarray(Image.open(ds.label_path(0, "instanceIds.png"))).copy()
    inst[0, 0] = 500
    Image.fromarray(inst).save(ds.label_path(0, "instanceIds.png"))
    with pytest.raises(DataFormatError, match=r"instanceIds.png holds values \[500\]"):
        ds[0]
    ds.label_path(1, "polygons.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"Cannot read Cityscapes polygons .*polygons.json"):
        ds[1]
    data = json.loads(ds.label_path(2, "polygons.json").read_text())
    data["imgWidth"] = 128
    ds.label_path(2, "polygons.json").write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"polygons.json describes a 128x32 .* image is 64x32"):
        ds[2]


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(("classes", "annotation"), [("trainid19", "fine"), ("objects11", "coarse")])
def test_fit_through_the_cli(tree: Path, tmp_path: Path, classes: str, annotation: str):
    from segmend.cli import SegmendCLI

    cli = SegmendCLI(
        args=[
            "fit",
            "--model=SegmentationModule",
            "--model.init_args.arch=Unet",
            "--model.init_args.encoder_name=resnet18",
            "--data=segmend.datamodules.cityscapes.CityscapesDataModule",
            f"--data.init_args.root={tree}",
            f"--data.init_args.classes={classes}",
            f"--data.init_args.annotation={annotation}",
            f"--data.init_args.use_train_extra={annotation == 'coarse'}",
            "--data.init_args.crop_size=64",
            "--data.init_args.batch_size=2",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    names = {"trainid19": TRAINID19_CLASSES, "objects11": OBJECTS11_CLASSES}[classes]
    assert tuple(cli.datamodule.class_names) == names and cli.model.num_classes == len(names)
    assert cli.trainer.global_step == 1
    check_fit_metrics(cli.trainer.callback_metrics, names)
