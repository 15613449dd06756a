"""The shared pieces of the data side: the error type, the reader base, argument checks, mixed batches."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmend.datamodules.base import SegmentationDataModule, batch_split
from segmend.datamodules.errors import DataFormatError, DatasetNotFoundError, missing_data_error
from segmend.datamodules.extra_labels import LabelledFilesDataset
from segmend.datamodules.label_files import check_label_size, read_label_png
from segmend.datamodules.pool import check_verify
from segmend.datamodules.sbd import check_aug_source
from segmend.datamodules.transforms import eval_transform, to_sample
from segmend.datamodules.voc_format import write_palette_mask
from segmend.modules import SegmentationModule


def test_missing_data_is_a_data_error_and_a_missing_file(tmp_path: Path):
    error = missing_data_error(tmp_path / "VOC2012", "the VOC2012 folder", "PASCAL VOC and SBD")
    assert isinstance(error, DatasetNotFoundError)
    assert isinstance(error, DataFormatError) and isinstance(error, FileNotFoundError)
    assert str(tmp_path / "VOC2012") in str(error) and "Set `root`" in str(error)


def test_label_png_errors_name_the_file(tmp_path: Path):
    rgb = tmp_path / "mask.png"
    Image.new("RGB", (4, 3)).save(rgb)
    with pytest.raises(DataFormatError, match=rf"Mask {rgb} is an RGB image"):
        read_label_png(rgb)
    with pytest.raises(DataFormatError, match=rf"Mask file not found: {tmp_path / 'none.png'}"):
        read_label_png(tmp_path / "none.png")
    with pytest.raises(DataFormatError, match=r"Annotation .*a.png is 4x3 \(WxH\) but its image is 3x4"):
        check_label_size(tmp_path / "a.png", (3, 4), (4, 3), what="Annotation")
    check_label_size(tmp_path / "a.png", (3, 4), (3, 4))  # equal sizes pass


def test_labelled_files_reader_assembles_checked_samples(tmp_path: Path):
    image, label = tmp_path / "a.png", tmp_path / "a_mask.png"
    Image.fromarray(np.full((8, 6, 3), 90, dtype=np.uint8)).save(image)
    mask = np.zeros((8, 6), dtype=np.uint8)
    mask[2:4, 1:3] = 2
    mask[0, 0] = 255
    write_palette_mask(label, mask)
    reader = LabelledFilesDataset({"a": (str(image), str(label))}, ("bg", "x", "y"), None)
    with pytest.raises(ValueError, match="LabelledFilesDataset needs a transform"):
        reader[0]
    raw_image, raw_mask = reader.read_sample(0)
    assert raw_image.shape == (8, 6, 3)
    np.testing.assert_array_equal(raw_mask, mask)
    reader.transform = lambda *args: to_sample(eval_transform(), *args)
    sample = reader[0]
    assert sample["id"] == "a" and bool(sample["has_mask"])
    assert torch.equal(sample["mask"][:8, :6], torch.from_numpy(mask).long())
    with pytest.raises(DataFormatError, match="LabelledFilesDataset has no object box annotations"):
        reader.boxes("a")
    two_classes = LabelledFilesDataset({"a": (str(image), str(label))}, ("bg", "x"), None)
    with pytest.raises(DataFormatError, match=r"holds label values \[2\]"):
        two_classes.read_sample(0)


def test_argument_checks_live_in_one_place():
    with pytest.raises(ValueError, match="aug_source must be 'sbd' or 'png'"):
        check_aug_source("mat", None)
    with pytest.raises(ValueError, match="train_aug with aug_source 'sbd' needs sbd_root"):
        check_aug_source("sbd", None)
    check_aug_source("sbd", None, reads_train_aug=False)  # no train_aug: no SBD needed
    with pytest.raises(ValueError, match="verify must be 'decode' or 'header'"):
        check_verify("full")
    check_verify("header")


@pytest.mark.parametrize(
    ("batch_size", "rest", "part", "per_batch", "expected"),
    [(4, 8, 4, (None), (3, 1)), (4, 2, 10, None, (1, 3)), (8, 100, 1, None, (7, 1)), (4, 5, 5, 2, (2, 2))],
)
def test_batch_split(batch_size: int, rest: int, part: int, per_batch: int | None, expected: tuple[int, int]):
    assert batch_split(batch_size, rest, part, per_batch) == expected


def test_batch_split_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match=r"full_per_batch=4 must be in \[1, batch_size - 1\] = \[1, 3\]"):
        batch_split(4, 1, 1, 4, "full_per_batch")
    with pytest.raises(ValueError, match="needs batch_size >= 2"):
        batch_split(1, 1, 1, None)


def test_model_refuses_data_with_another_ignore_label():
    class Data(SegmentationDataModule):
        class_names = ("background", "thing")

        def build_dataset(self, split: str, train: bool):  # pragma: no cover - never built
            raise AssertionError

    net = {"num_classes": 2, "arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None}
    with pytest.raises(ValueError, match="ignore_index mismatch: the data .* marks unlabeled pixels with 255"):
        SegmentationModule(**net, ignore_index=0).check_datamodule(Data(crop_size=64))
    SegmentationModule(**net).check_datamodule(Data(crop_size=64))  # the default, 255, is the data's


def test_datamodules_import_each_other_at_module_level_without_cycles():
    """A function-local import is how a cycle hides; the modules form a graph without cycles."""
    folder = Path(__file__).resolve().parents[1] / "datamodules"
    graph: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        graph[path.stem] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segmend.datamodules."):
                assert id(node) in top_level, f"{path.name}:{node.lineno} imports {node.module} inside a function"
                graph[path.stem].add(node.module.rsplit(".", 1)[1])

    def visit(module: str, path: tuple[str, ...]) -> None:
        for imported in graph.get(module, ()):
            assert imported not in path, f"import cycle: {' -> '.join((*path, imported))}"
            visit(imported, (*path, imported))

    for module in graph:
        visit(module, (module,))
