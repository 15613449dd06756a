"""`segmend predict` writes palette label maps (and optional overlays / probabilities) to disk."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmend.callbacks import SegmentationPredictionWriter
from segmend.cli import SegmendCLI, main
from segmend.datamodules import SyntheticDataModule
from segmend.datamodules.image_io import read_image
from segmend.datamodules.pool import ImageFolderPool
from segmend.datamodules.transforms import eval_transform, to_sample
from segmend.modules import SegmentationModule
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.data import TINY_SYNTHETIC
from tests.fixtures.pool import GOOD, make_pool

CONFIG = REPO / "configs" / "baseline_synthetic.yaml"
# 80-px images: not a multiple of 32, so the eval transform pads them to 96 and the writer crops back
PREDICT_DATA = {**TINY_SYNTHETIC, "image_size": 80}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> Path:
    """A checkpoint of the baseline config after one training step on the tiny synthetic data."""
    run = tmp_path_factory.mktemp("fit")
    args = [a for a in fast_cli_args(CONFIG, run, data_cache) if "fast_dev_run" not in a]
    args += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    main(["fit", *args])
    found = sorted(run.rglob("last.ckpt"))
    assert found, list(run.rglob("*"))
    return found[0]


def predict_args(run: Path, data_cache: Path, checkpoint: Path, data: dict | None = None) -> list[str]:
    """`segmend predict` arguments of the baseline config on tiny data, writing under ``run``."""
    args = [a for a in fast_cli_args(CONFIG, run, data_cache) if "fast_dev_run" not in a]
    args = [a for a in args if not a.startswith("--data.init_args.image_size")]
    size = (data or PREDICT_DATA)["image_size"]
    return [*args, f"--data.init_args.image_size={size}", f"--ckpt_path={checkpoint}", "--trainer.logger=false"]


def expected_labels(module: SegmentationModule, image: np.ndarray) -> np.ndarray:
    """The model's arg max on ``image`` (H, W, 3), through the eval transform, cropped to its size."""
    sample = to_sample(eval_transform(), image, None, None, "x")
    with torch.no_grad():
        probs = module.predict_probabilities(sample["image"][None])
    return probs.argmax(dim=1)[0, : image.shape[0], : image.shape[1]].numpy()


def relative_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_predict_writes_palette_label_maps_of_every_val_image(
    tmp_path: Path, data_cache: Path, checkpoint: Path, capsys: pytest.CaptureFixture
):
    cli = SegmendCLI(args=["predict", *predict_args(tmp_path, data_cache, checkpoint)])
    out = tmp_path / "predictions" / "val"  # <default_root_dir>/predictions/<predict_split>
    dm = SyntheticDataModule(cache_dir=str(data_cache), **PREDICT_DATA)
    ids = dm.dataset("val").ids
    assert len(ids) == 4
    assert relative_files(out) == {f"labels/{i}.png" for i in ids}  # no overlays or probabilities by default
    module = SegmentationModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    for sample_id in ids:
        with Image.open(out / "labels" / f"{sample_id}.png") as img:
            assert img.mode == "P"
            palette = np.asarray(img.getpalette()[: 3 * dm.num_classes], dtype=np.uint8).reshape(-1, 3)
            labels = np.asarray(img)
        np.testing.assert_array_equal(palette, dm.palette[: dm.num_classes])
        image = read_image(dm.root / "JPEGImages" / f"{sample_id}.jpg")
        assert labels.shape == image.shape[:2] == (80, 80)  # cropped back from the padded 96x96
        np.testing.assert_array_equal(labels, expected_labels(module, image))
    printed = capsys.readouterr().out
    assert f"Predictions written to {out}: 4 label maps (labels/)" in printed
    assert cli.trainer.predict_loop.predictions == []  # nothing kept in memory


def test_overlays_and_float16_probabilities_when_switched_on(tmp_path: Path, data_cache: Path, checkpoint: Path):
    out = tmp_path / "mine"
    writer = [
        "--trainer.callbacks+=SegmentationPredictionWriter",
        f"--trainer.callbacks.init_args.output_dir={out}",
        "--trainer.callbacks.init_args.overlays=true",
        "--trainer.callbacks.init_args.probabilities=true",
    ]
    main(["predict", *predict_args(tmp_path, data_cache, checkpoint), *writer])
    assert not (tmp_path / "predictions").exists()  # the configured writer replaces the default one
    dm = SyntheticDataModule(cache_dir=str(data_cache), **PREDICT_DATA)
    ids = dm.dataset("val").ids
    kinds = ("labels/{}.png", "overlays/{}.png", "probs/{}.npy")
    assert relative_files(out) == {kind.format(i) for i in ids for kind in kinds}
    for sample_id in ids:
        labels = np.asarray(Image.open(out / "labels" / f"{sample_id}.png"))
        probs = np.load(out / "probs" / f"{sample_id}.npy")
        assert probs.dtype == np.float16 and probs.shape == (dm.num_classes, 80, 80)
        np.testing.assert_allclose(probs.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)
        assert (probs.argmax(axis=0) == labels).mean() > 0.99  # float16 rounding may tie a few pixels
        with Image.open(out / "overlays" / f"{sample_id}.png") as img:
            assert img.mode == "RGB" and img.size == (80, 80)
            overlay = np.asarray(img).astype(int)
        image = read_image(dm.root / "JPEGImages" / f"{sample_id}.jpg").astype(int)
        colors = dm.palette[labels].astype(int)
        assert np.abs(overlay - (image + colors) / 2).max() <= 2  # image and colour map blended half and half


def test_pool_nested_ids_skipped_files_and_original_sizes(tmp_path: Path, checkpoint: Path):
    pool_root = make_pool(tmp_path / "pool")
    class_names = SyntheticDataModule.class_names
    args = [
        "predict",
        "--model=SegmentationModule",
        "--model.init_args.net_kwargs={decoder_channels: 128}",
        "--data=ImageFolderPoolDataModule",
        f"--data.init_args.root={pool_root}",
        f"--data.init_args.class_names=[{','.join(class_names)}]",
        "--data.init_args.batch_size=4",  # a batch mixing sizes (padded to the largest) and files failing at load
        "--data.init_args.verify=header",  # corrupt.png and truncated.jpg pass the scan and fail when loaded
        f"--ckpt_path={checkpoint}",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.precision=32-true",  # label maps are compared pixel for pixel with an fp32 forward
    ]
    main([*args, "--data.init_args.image_size=null"])  # sizes kept, padded to multiples of 32
    out = tmp_path / "run" / "predictions" / "pool" / "labels"
    # a.jpg and a.png differ only in extension, so both keep it; other ids lose it; folders kept
    names = {"a.jpg": "a.jpg.png", "a.png": "a.png.png", "b.png": "b.png"}
    names.update({i: i.rsplit(".", 1)[0] + ".png" for i in GOOD if "/" in i})
    assert relative_files(out) == set(names.values())  # nothing for the unreadable files
    module = SegmentationModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    pool = ImageFolderPool(pool_root)
    for sample_id, name in names.items():
        image = read_image(pool.image_path(sample_id))
        labels = np.asarray(Image.open(out / name))
        assert labels.shape == image.shape[:2]  # 40x56 included: not multiples of 32
        np.testing.assert_array_equal(labels, expected_labels(module, image))

    # resized by the DataModule (longer side 100): label maps still come back at the original size
    resized = tmp_path / "resized"
    main([*args, "--data.init_args.image_size=100", f"--trainer.default_root_dir={resized}"])
    for sample_id, name in names.items():
        labels = np.asarray(Image.open(resized / "predictions" / "pool" / "labels" / name))
        assert labels.shape == read_image(pool.image_path(sample_id)).shape[:2]


def test_ddp_two_processes_write_each_image_once(tmp_path: Path, data_cache: Path, checkpoint: Path):
    data = {**TINY_SYNTHETIC, "num_val": 5, "image_size": 64}  # odd: the shards are 3 and 2 images
    args = predict_args(tmp_path, data_cache, checkpoint, data)
    args = [a for a in args if not a.startswith(("--trainer.devices", "--trainer.strategy"))]
    args += ["--data.init_args.num_val=5", "--trainer.devices=2", "--trainer.strategy=ddp"]
    script = Path(sys.executable).parent / "segmend"
    result = subprocess.run([str(script), "predict", *args], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    found = re.search(
        r"Predictions written to (\S+): (\d+) label maps .*label maps per rank: (\d+) \+ (\d+)", result.stdout
    )
    assert found, result.stdout[-2000:]
    assert int(found.group(2)) == 5 and (int(found.group(3)), int(found.group(4))) == (3, 2)
    assert "repeated" not in result.stdout  # no sample reached a rank twice
    ids = SyntheticDataModule(cache_dir=str(data_cache), **data).dataset("val").ids
    assert relative_files(Path(found.group(1))) == {f"labels/{i}.png" for i in ids}


def test_writer_refuses_bad_ids_and_output_dirs(tmp_path: Path):
    writer = SegmentationPredictionWriter()
    assert str(writer.file_name("street/0001.jpg")) == "street/0001"
    assert str(writer.file_name("2007_000032")) == "2007_000032"
    for bad in ("../escape.jpg", "/abs/path.png", "a/../../b", ""):
        with pytest.raises(ValueError, match=r"cannot name a file inside the prediction folder: expected a relative"):
            writer.file_name(bad)
    afile = tmp_path / "taken"
    afile.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"output_dir {afile} is a file; expected a folder"):
        SegmentationPredictionWriter(output_dir=str(afile))
    with pytest.raises(ValueError, match=r"overlay_alpha must be in \[0, 1\]"):
        SegmentationPredictionWriter(overlay_alpha=1.5)


def test_duplicate_ids_on_a_rank_are_written_once(tmp_path: Path):
    writer = SegmentationPredictionWriter(output_dir=str(tmp_path))
    writer.resolved_dir = tmp_path
    probs = torch.softmax(torch.randn(3, 2, 32, 32), dim=1)
    batch = {
        "image": torch.zeros(3, 3, 32, 32),
        "id": ["x", "y", "x"],
        "image_size": torch.tensor([[20, 30]] * 3),
        "content_size": torch.tensor([[20, 30]] * 3),
    }
    writer.write_on_batch_end(None, None, {"probs": probs, "labels": probs.argmax(1)}, None, batch, 0, 0)
    assert relative_files(tmp_path) == {"labels/x.png", "labels/y.png"}
    assert writer.counts["labels"] == 2 and writer.duplicates == 1
    assert np.asarray(Image.open(tmp_path / "labels/x.png")).shape == (20, 30)
