"""A user's mistakes stop early, with a message naming the argument, the expected and found values and the fix.

- Training sizes the net cannot take (crop or whole image not a multiple of the encoder's output
  stride) stop at ``setup`` / ``check_datamodule`` with the nearest valid sizes.
- Missing VOC / SBD data: one error naming every argument whose data is missing.
- ``encoder_weights`` not in the local cache: an immediate error, never a download.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import constants as hf_constants
from lightning.pytorch import Trainer
from safetensors.torch import save_file
from torch import nn

from segmend.datamodules import SyntheticDataModule, VOCDataModule
from segmend.datamodules.semisup import SemiSupervisedVOCDataModule
from segmend.modules import SegmentationModule
from segmend.nets.factory import build_smp_net, cached_encoder_weights, input_size_divisor
from tests.fixtures.voc import VOCSBDTree, make_voc_sbd

REPO = Path(__file__).resolve().parents[1]
RESNET18 = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]


# ---------------------------------------------------------------- training sizes vs the net's stride


def synthetic(tmp_path: Path, **kwargs) -> SyntheticDataModule:
    """A SyntheticDataModule that is never set up here (construction writes nothing)."""
    return SyntheticDataModule(cache_dir=str(tmp_path), num_train=4, num_val=2, num_wild=0, **kwargs)


def test_crop_size_not_divisible_names_nearest_valid_sizes(tmp_path: Path):
    model = SegmentationModule(num_classes=6, arch="DeepLabV3Plus", encoder_name="resnet18")
    assert input_size_divisor(model.net) == 16
    with pytest.raises(ValueError) as info:
        model.check_datamodule(synthetic(tmp_path, crop_size=100))
    message = str(info.value)
    assert "crop_size=100" in message and "SyntheticDataModule" in message
    assert "multiples of 16" in message
    assert "96 or 112" in message
    assert not list(tmp_path.iterdir()), "the check must not generate or read data"


def test_crop_size_divisible_passes(tmp_path: Path):
    model = SegmentationModule(num_classes=6, arch="DeepLabV3Plus", encoder_name="resnet18")
    model.check_datamodule(synthetic(tmp_path, crop_size=96))


def test_crop_size_checked_at_setup_before_the_first_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Plain Python Trainer users get the check from ``setup``, before any training step runs."""
    model = SegmentationModule(num_classes=6, arch="DeepLabV3Plus", encoder_name="resnet18")
    steps = []
    monkeypatch.setattr(SegmentationModule, "training_step", lambda self, batch, i: steps.append(i))
    data = synthetic(tmp_path, crop_size=100, image_size=64, batch_size=2)
    trainer = Trainer(fast_dev_run=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"crop_size=100 .*96 or 112"):
        trainer.fit(model, datamodule=data)
    assert steps == []


def test_synthetic_null_crop_is_checked_at_its_image_size(tmp_path: Path):
    model = SegmentationModule(num_classes=6, arch="DeepLabV3Plus", encoder_name="resnet18")
    data = synthetic(tmp_path, crop_size=None, scale_range=(1.0, 1.0), image_size=100)
    # SyntheticDataModule's null crop_size means "crop at image_size", so the crop is what is checked
    with pytest.raises(ValueError, match=r"crop_size=100 .*96 or 112"):
        model.check_datamodule(data)
    model.check_datamodule(synthetic(tmp_path, crop_size=None, scale_range=(1.0, 1.0), image_size=96))


def test_training_sizes_not_checked_for_evaluation_stages(tmp_path: Path):
    model = SegmentationModule(num_classes=6, arch="DeepLabV3Plus", encoder_name="resnet18")
    for stage in ("validate", "test", "predict"):
        model.check_datamodule(synthetic(tmp_path, crop_size=100), stage)


def test_non_smp_net_is_not_checked(tmp_path: Path):
    model = SegmentationModule(num_classes=6, net=nn.Conv2d(3, 6, 1))
    assert input_size_divisor(model.net) is None
    model.check_datamodule(synthetic(tmp_path, crop_size=100))


def test_unet_takes_any_size(tmp_path: Path):
    model = SegmentationModule(num_classes=6, arch="Unet", encoder_name="resnet18")
    assert input_size_divisor(model.net) is None  # smp's Unet sets requires_divisible_input_shape = False
    model.check_datamodule(synthetic(tmp_path, crop_size=100))


def test_num_classes_mismatch_is_part_of_the_check(tmp_path: Path):
    model = SegmentationModule(num_classes=3, arch="DeepLabV3Plus", encoder_name="resnet18")
    with pytest.raises(ValueError, match="num_classes mismatch: the data .* has 6 classes"):
        model.check_datamodule(synthetic(tmp_path, crop_size=96))


def test_eval_inputs_of_any_size_are_padded_for_the_net():
    """The DataModules pad eval images to a multiple of 32; inputs that are not padded still work."""
    torch.manual_seed(0)
    model = SegmentationModule(num_classes=3, arch="DeepLabV3Plus", encoder_name="resnet18").eval()
    image = torch.randn(1, 3, 100, 90)
    with torch.no_grad():
        logits = model(image)
        padded = model(nn.functional.pad(image, (0, 6, 0, 12)))  # 112 x 96: multiples of 16
    assert logits.shape == (1, 3, 100, 90)
    torch.testing.assert_close(logits, padded[..., :100, :90])
    model.train()
    with pytest.raises(ValueError, match=r"Training batch of 100x90 .*multiples of 16.*96 or 112"):
        model(image)


def test_every_smp_encoder_stride_divides_the_eval_padding():
    """Eval padding is 32: every smp 0.6 CNN encoder's output stride is 2**depth with depth <= 5."""
    for arch in ("DeepLabV3", "DeepLabV3Plus", "FPN", "PSPNet", "PAN", "UnetPlusPlus", "Segformer"):
        assert 32 % input_size_divisor(build_smp_net(arch, "resnet18", 2)) == 0
    with pytest.raises(ValueError, match="depth"):  # no stride 64: smp refuses deeper encoders
        build_smp_net("FPN", "resnet18", 2, encoder_depth=6)


# ---------------------------------------------------------------- missing VOC / SBD data


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> VOCSBDTree:
    """A complete tiny VOC 2012 + SBD tree (from tests/fixtures/voc.py)."""
    return make_voc_sbd(tmp_path_factory.mktemp("vocsbd"))


def root_argument_named(message: str) -> bool:
    """Whether ``message`` names the argument ``root`` itself (not ``sbd_root``)."""
    return re.search(r"(?<![a-z_])root=", message) is not None


def test_voc_both_roots_missing_reported_at_once(tmp_path: Path):
    root, sbd_root = tmp_path / "VOCdevkit" / "VOC2012", tmp_path / "benchmark_RELEASE" / "dataset"
    data = VOCDataModule(root=str(root), train_split="train_aug", sbd_root=str(sbd_root))
    with pytest.raises(FileNotFoundError) as info:
        data.setup("fit")
    message = str(info.value)
    assert f"root={root}" in message and root_argument_named(message)
    assert f"sbd_root={sbd_root}" in message
    assert "VOCtrainval_11-May-2012.tar" in message and "benchmark.tgz" in message
    assert "docs/datasets.md (PASCAL VOC and SBD)" in message


def test_only_sbd_missing_names_sbd_root_not_root(tree: VOCSBDTree, tmp_path: Path):
    sbd_root = tmp_path / "elsewhere" / "dataset"
    data = VOCDataModule(root=str(tree.voc_root), train_split="train_aug", sbd_root=str(sbd_root))
    with pytest.raises(FileNotFoundError) as info:
        data.setup("fit")
    message = str(info.value)
    assert f"sbd_root={sbd_root}" in message
    assert "Set sbd_root to" in message
    assert not root_argument_named(message), message


def test_incomplete_sbd_root_lists_each_missing_path(tree: VOCSBDTree, tmp_path: Path):
    sbd_root = tmp_path / "dataset"
    (sbd_root / "inst").mkdir(parents=True)
    (sbd_root / "train.txt").write_text("2008_000002\n")
    data = VOCDataModule(root=str(tree.voc_root), train_split="train_aug", sbd_root=str(sbd_root))
    with pytest.raises(FileNotFoundError) as info:
        data.check_data("fit")
    message = str(info.value)
    assert str(sbd_root / "cls") in message and str(sbd_root / "val.txt") in message
    assert str(sbd_root / "train.txt") not in message


def test_validation_does_not_need_sbd(tree: VOCSBDTree, tmp_path: Path):
    data = VOCDataModule(root=str(tree.voc_root), train_split="train_aug", sbd_root=str(tmp_path / "nowhere"))
    data.setup("validate")
    assert len(data.dataset("val")) == 2


def test_png_aug_dir_missing_names_aug_dir(tree: VOCSBDTree):
    data = VOCDataModule(root=str(tree.voc_root), train_split="train_aug", aug_source="png", aug_dir="Missing")
    with pytest.raises(FileNotFoundError, match=r"aug_dir=Missing:\n .*VOC2012/Missing is missing") as info:
        data.setup("fit")
    assert not root_argument_named(str(info.value))


def test_semisupervised_voc_reports_both_roots(tmp_path: Path):
    root, sbd_root = tmp_path / "VOC2012", tmp_path / "sbd"
    data = SemiSupervisedVOCDataModule(root=str(root), sbd_root=str(sbd_root), num_full=2, batch_size=2)
    for attempt in (lambda: data.setup("fit"), data.semisup_split):
        with pytest.raises(FileNotFoundError) as info:
            attempt()
        message = str(info.value)
        assert f"root={root}" in message and f"sbd_root={sbd_root}" in message


def test_readers_name_the_argument_to_fix(tree: VOCSBDTree, tmp_path: Path):
    from segmend.datamodules import ADE20KDataModule, CityscapesDataModule
    from segmend.datamodules.sbd import read_sbd_ids, train_aug_ids

    with pytest.raises(FileNotFoundError, match=r"Set `sbd_root`"):
        read_sbd_ids(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"Set `aug_dir`"):
        train_aug_ids(tree.voc_root, "png", aug_dir="Missing")
    for module, section in ((ADE20KDataModule, "ADE20K"), (CityscapesDataModule, "Cityscapes")):
        with pytest.raises(FileNotFoundError, match=rf"Set `root` .*docs/datasets.md \({section}\)"):
            module(root=str(tmp_path / "nowhere")).setup("fit")


def test_every_docs_reference_points_at_a_section_with_the_official_pages():
    from segmend.datamodules import ade20k, cityscapes, pool, voc
    from segmend.datamodules.errors import DOWNLOAD_SECTIONS

    doc = (REPO / "docs" / "datasets.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", doc, flags=re.MULTILINE))
    referenced = {module.SECTION for module in (voc, cityscapes, ade20k, pool)}
    for path in [*REPO.glob("src/segmend/**/*.py"), *REPO.glob("datamodules/*.py"), *REPO.glob("callbacks/*.py")]:
        referenced |= set(re.findall(r"docs/datasets\.md \(([^){]+)\)", path.read_text()))
    assert referenced <= headings, referenced - headings
    for url in (
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/",
        "https://www.cityscapes-dataset.com/downloads/",
        "http://sceneparsing.csail.mit.edu/",
    ):
        assert url in doc
    for section in DOWNLOAD_SECTIONS:
        body = doc.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert "](http" in body or "<http" in body, f"section {section} has no download page"


# ---------------------------------------------------------------- encoder weights never downloaded


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face and torch hub cache under tmp_path, and any network access made an error."""
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))  # read at import from $HF_HUB_CACHE
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return hub


def test_missing_weights_fail_fast_without_network(offline: Path):
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        SegmentationModule(num_classes=3, encoder_name="resnet18", encoder_weights="imagenet")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    expected = offline / "models--smp-hub--resnet18.imagenet" / "snapshots" / RESNET18["revision"]
    assert str(expected / "model.safetensors") in message and str(expected / "config.json") in message
    assert "segmend never downloads" in message
    assert "HF_HUB_CACHE" in message and "encoder_weights: null" in message and "docs/weights.md" in message


def test_unknown_weight_name_lists_the_known_ones(offline: Path):
    with pytest.raises(ValueError, match=r"encoder_weights='imagenet21k' is not a weight name.*'imagenet'"):
        build_smp_net("DeepLabV3Plus", "resnet18", 3, encoder_weights="imagenet21k")


def test_cached_smp_weights_are_loaded_offline(offline: Path):
    torch.manual_seed(0)
    state = smp.encoders.get_encoder("resnet18").state_dict()
    snapshot = offline / "models--smp-hub--resnet18.imagenet" / "snapshots" / RESNET18["revision"]
    snapshot.mkdir(parents=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    assert cached_encoder_weights("resnet18", "imagenet") == snapshot / "model.safetensors"
    model = SegmentationModule(num_classes=3, encoder_name="resnet18", encoder_weights="imagenet")
    loaded = model.net.encoder.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value)


def test_timm_encoder_weights_from_the_torch_hub_cache(offline: Path, tmp_path: Path):
    import timm

    with pytest.raises(ValueError, match=r"models--timm--resnet18\.a1_in1k.*resnet18_a1_0-d63eafa0\.pth"):
        build_smp_net("FPN", "tu-resnet18", 3, encoder_weights="imagenet")
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "resnet18_a1_0-d63eafa0.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # smp >= 0.6 advises encoder_weights=True for tu- encoders
        net = build_smp_net("FPN", "tu-resnet18", 3, encoder_weights="imagenet")
    torch.testing.assert_close(net.encoder.model.conv1.weight, state["conv1.weight"])


def test_missing_weights_through_the_cli_fail_in_seconds(tmp_path: Path):
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "WANDB_MODE": "disabled",
    }
    command = [
        str(Path(sys.executable).with_name("segmend")),
        "fit",
        "-c",
        str(REPO / "configs" / "baseline_synthetic.yaml"),
        "--model.init_args.encoder_weights=imagenet",
        "--trainer.fast_dev_run=1",
        "--trainer.logger=false",
        f"--data.init_args.cache_dir={tmp_path / 'data'}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    assert "segmend never downloads" in result.stderr
    assert "models--smp-hub--resnet18.imagenet" in result.stderr
    assert "Does not validate against any of the Union subtypes" not in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert not (tmp_path / "data").exists(), "no data is generated before the model is built"
