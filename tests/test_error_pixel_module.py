"""ErrorPixelModule: frozen semantic branch, error target, Eq. 5 fusion, per-phase optimizer, error mass, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from segmend.checkpoints import read_weights
from segmend.loggers import WandbLogger
from segmend.losses.error_pixel import balanced_error_loss
from segmend.modules import ErrorPixelModule, SegmentationModule
from segmend.runs import fit
from tests.fixtures.data import TINY_SYNTHETIC

NET = {"arch": "DeepLabV3Plus", "encoder_name": "tu-mobilenetv3_small_050", "net_kwargs": {"decoder_channels": 16}}
BRANCHES = {"error_width": 32, "error_prob_channels": 32, "error_image_channels": 32, "detail_widths": (32, 32, 32)}
QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def synthetic(data_cache: Path):  # noqa: ANN201
    from segmend.datamodules import SyntheticDataModule

    return SyntheticDataModule(cache_dir=str(data_cache), **TINY_SYNTHETIC)


@pytest.fixture(scope="module")
def semantic_checkpoint(data_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained SegmentationModule's weights-only final checkpoint (BatchNorm statistics no longer the defaults)."""
    data = synthetic(data_cache)
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=data.num_classes, **NET)
    run = tmp_path_factory.mktemp("semantic")
    fit(module, data, run, max_steps=3, limit_val_batches=1, logger=False, **QUIET)
    return run / "fit" / "final.ckpt"


def build(checkpoint: Path | None = None, **kwargs: Any) -> ErrorPixelModule:
    torch.manual_seed(0)
    semantic = {"semantic_checkpoint": str(checkpoint)} if checkpoint is not None else {}
    return ErrorPixelModule(num_classes=6, **NET, **BRANCHES, **semantic, **kwargs)


def images(size: tuple[int, int] = (64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, *size, generator=generator)
    mask = torch.randint(0, 6, (2, *size), generator=generator)
    mask[:, :8] = 255  # an unlabeled band
    return image, mask


def test_fit_leaves_the_semantic_branch_unchanged_and_trains_one_branch_per_stage(
    semantic_checkpoint: Path, data_cache: Path, tmp_path: Path
):
    model = build(semantic_checkpoint)
    semantic_before = {key: value.clone() for key, value in model.net.state_dict().items()}
    assert any(key.endswith("running_mean") for key in semantic_before)  # BatchNorm statistics are compared too
    trained = read_weights(semantic_checkpoint).state_dict  # the net of the semantic checkpoint
    assert all(torch.equal(semantic_before[f"module.{key}"], value) for key, value in trained.items())
    branches_before = {key: value.clone() for key, value in model.state_dict().items() if "_branch." in key}
    model.train()  # Lightning keeps the modules' modes; a user (or another Trainer) may switch everything on
    modes = SemanticModes()
    kwargs = {"max_steps": 3, "limit_val_batches": 1, "logger": False, "callbacks": [modes], **QUIET}
    run = fit(model, synthetic(data_cache), tmp_path, **kwargs)
    assert modes.seen == {False} and len(modes.steps) == 6  # 3 steps per stage, semantic branch in eval at each
    assert [stage.name for stage in run.stages] == ["error", "detail"]  # a semantic checkpoint: no semantic stage
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, semantic_before[key]), key  # weights, BatchNorm running stats and counts
    error, detail = (read_weights(tmp_path / name / "final.ckpt", prefix="").state_dict for name in ("error", "detail"))
    for key in branches_before:
        if key.startswith("error_branch."):
            assert torch.equal(error[key], detail[key]), key  # the error branch is frozen in the detail stage
    assert any(not torch.equal(error[k], v) for k, v in branches_before.items() if k.startswith("error_branch."))
    assert all(torch.equal(error[k], v) for k, v in branches_before.items() if k.startswith("detail_branch."))
    assert any(not torch.equal(detail[k], v) for k, v in branches_before.items() if k.startswith("detail_branch."))
    optimised = {id(p) for group in run.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.detail_branch.parameters()}  # the detail stage's optimizer
    metrics = run.stages[-1].metrics
    for key in ("val/mIoU", "val/semantic_mIoU", "val/error_IoU", "val/error_hard_recall", "val/loss", "train/loss"):
        assert key in metrics, key
    assert (tmp_path / "detail" / "error_sweep" / "val.md").read_text().startswith("| threshold t |")
    assert (tmp_path / "error" / "error_sweep" / "val.png").stat().st_size > 0


class SemanticModes(Callback):
    """Records whether any module of the semantic branch is in training mode at each training step."""

    def __init__(self) -> None:
        self.seen: set[bool] = set()
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:  # noqa: D102
        assert pl_module.training
        self.seen.add(any(module.training for module in pl_module.net.modules()))
        self.steps.append(trainer.global_step)


def test_optimizer_holds_only_the_branch_of_the_phase():
    model = build()
    semantic = {id(p) for p in model.net.parameters()}
    for phase, branch in (("error", model.error_branch), ("detail", model.detail_branch)):
        model.set_phase(phase)
        optimizer = model.build_optimizer()
        optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert optimised == {id(p) for p in branch.parameters()}, phase
        assert not optimised & semantic
        assert {id(p) for p in model.parameters() if p.requires_grad} == optimised, phase
    with pytest.raises(ValueError, match="phase must be one of"):
        model.set_phase("semantic")


def test_error_target_is_the_semantic_branch_disagreement_with_ignored_pixels_excluded(semantic_checkpoint: Path):
    model = build(semantic_checkpoint).eval()
    image, mask = images()
    with torch.no_grad():
        outputs = model.cascade(image)
        semantic_logits = model.net.module(image)  # smp's own forward of the semantic net
    labels = semantic_logits.argmax(dim=1)
    expected = torch.where(mask == 255, torch.full_like(mask, 255), (labels != mask).long())
    target = model.error_targets(outputs, mask)
    assert torch.equal(target, expected)
    assert {0, 1, 255} <= set(target.unique().tolist())
    # and the error loss trains on that target, with the semantic probabilities at the image resolution
    loss = model.branch_losses(outputs, mask)["error"]
    assert torch.allclose(loss, balanced_error_loss(outputs.error_logits, semantic_logits.softmax(dim=1), mask))


def test_forward_is_eq5_fusion_once_the_detail_stage_started(semantic_checkpoint: Path):
    model = build(semantic_checkpoint).eval()
    image, _ = images((64, 80))
    with torch.no_grad():
        semantic = model.cascade(image, detail=False).semantic_logits
        assert torch.equal(model(image), semantic)  # before the detail stage: no trained detail branch
        model.set_phase("detail")
        outputs = model.cascade(image)
        p_ep = outputs.error_prob  # (B, 1, H, W)
        model.hparams.threshold = float(p_ep.median())  # some pixels on each side of t
        on = (p_ep > model.hparams.threshold).float()
        assert 0 < float(on.mean()) < 1
        expected = on * outputs.detail_logits.softmax(dim=1) + (1 - on) * outputs.semantic_logits.softmax(dim=1)
        assert torch.allclose(model(image).softmax(dim=1), expected, atol=1e-6)
        predicted = model.predict_step({"image": image, "id": ["a", "b"]}, 0)
    assert torch.equal(predicted["labels"], expected.argmax(dim=1))


def test_average_fusion_is_the_mean_of_both_branches_probabilities(semantic_checkpoint: Path):
    """The bagging baseline of Tab. 3: detail branch on every pixel, averaged with the semantic branch."""
    model = build(semantic_checkpoint, fusion="average", detail_pixels="all").eval()
    image, mask = images((64, 80))
    with torch.no_grad():
        model.set_phase("detail")
        outputs = model.cascade(image)
        expected = (outputs.detail_logits.softmax(dim=1) + outputs.semantic_logits.softmax(dim=1)) / 2
        assert torch.allclose(model(image).softmax(dim=1), expected, atol=1e-6)
        assert model.detail_weighting(outputs) is None  # the detail loss counts every labelled pixel
    with pytest.raises(ValueError, match="fusion must be one of"):
        build(semantic_checkpoint, fusion="mean")


def test_error_mass_is_the_mean_error_probability_and_mask_area(semantic_checkpoint: Path):
    model = build(semantic_checkpoint).eval()
    image, _ = images((70, 90))  # padded for the net, cropped back
    with torch.no_grad():
        p_ep = torch.sigmoid(model.cascade(image, detail=False).error_logits)  # (B, 1, 70, 90)
        mass = model.error_mass(image)
        model.hparams.threshold = float(p_ep.median())
        halved = model.error_mass(image)
        predicted = model.predict_step({"image": image, "id": ["a", "b"]}, 0)
    assert p_ep.shape == (2, 1, 70, 90) and mass.mean.shape == mass.area.shape == (2,)
    assert torch.allclose(mass.mean, p_ep.mean(dim=(1, 2, 3)))
    assert torch.allclose(mass.area, (p_ep > 0.7).float().mean(dim=(1, 2, 3)))
    assert torch.allclose(halved.area.mean(), torch.tensor(0.5), atol=0.01)
    assert torch.equal(predicted["error_mean"], halved.mean) and torch.equal(predicted["error_area"], halved.area)


def test_any_smp_architecture_from_its_checkpoint_and_clear_errors(tmp_path: Path):
    torch.manual_seed(0)
    psp = SegmentationModule(num_classes=6, arch="PSPNet", encoder_name="resnet18")
    path = tmp_path / "psp.ckpt"
    torch.save({"state_dict": psp.state_dict(), "hyper_parameters": dict(psp.hparams)}, path)
    model = build(path)  # arch / encoder_name of the module are not used: the checkpoint's are
    assert model.semantic_architecture == "PSPNet" and len(model.skip_indices) == 2  # two maps finer than the PPM
    for key, value in model.net.module.state_dict().items():
        assert torch.equal(value, psp.net.state_dict()[key]), key
    with pytest.raises(ValueError, match=r"predicts 6 classes but the data has num_classes=4"):
        ErrorPixelModule(num_classes=4, semantic_checkpoint=str(path), **BRANCHES)
    with pytest.raises(ValueError, match=r"\(Unet\) has no high-level context.*DeepLabV3Plus.*high_level: encoder"):
        ErrorPixelModule(num_classes=6, arch="Unet", encoder_name="resnet18", **BRANCHES)
    fpn = ErrorPixelModule(num_classes=6, arch="FPN", encoder_name="resnet18", high_level="encoder", **BRANCHES)
    assert len(fpn.skip_indices) == 3
    with pytest.raises(ValueError, match="error_steps=5 and error_epochs=2"):
        build(error_steps=5, error_epochs=2)
    with pytest.raises(ValueError, match="remove net"):
        build(net=torch.nn.Conv2d(3, 6, 1))


def test_training_without_a_trained_semantic_branch_is_refused(data_cache: Path):
    model = build()  # no checkpoint, no semantic stage
    trainer = Trainer(max_steps=1, logger=False, limit_val_batches=0, **QUIET)
    with pytest.raises(ValueError, match="no trained semantic branch"):
        trainer.fit(model, synthetic(data_cache))


class RecordingWandbLogger(WandbLogger):
    """segmend's WandbLogger (disabled by the test environment) that records images and tables."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logged: list[tuple[str, str, int | None]] = []

    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:  # noqa: D102
        self.logged.append(("image", key, step))
        assert Path(images[0]).suffix == ".png"

    def log_table(self, key: str, columns: Any = None, data: Any = None, **kwargs: Any) -> None:  # noqa: D102
        step = kwargs.get("step")
        self.logged.append(("table", key, step))
        assert columns[:3] == ["threshold", "error_pixel_IoU", "hard_recall"] and len(data) == 9


def test_sweep_goes_to_wandb_as_image_and_table(semantic_checkpoint: Path, data_cache: Path, tmp_path: Path):
    model = build(semantic_checkpoint)
    logger = RecordingWandbLogger(save_dir=str(tmp_path), offline=True)
    trainer = Trainer(
        max_steps=2, val_check_interval=1, limit_val_batches=1, logger=logger, default_root_dir=tmp_path, **QUIET
    )
    trainer.fit(model, synthetic(data_cache))
    logged = {(kind, key) for kind, key, _ in logger.logged}
    assert logged == {("image", "val/error_sweep"), ("table", "val/error_sweep_table")}  # not in the sanity check
    assert len(logger.logged) == 4  # at both validations (after steps 1 and 2)
    assert (tmp_path / "error_sweep" / "val.md").is_file()


def test_mad_pool_statistics_carry_the_error_mass_of_an_error_stage_checkpoint(
    semantic_checkpoint: Path, data_cache: Path, tmp_path: Path
):
    from segmend.callbacks.mad_pool import ErrorMassScorer, PoolSource, pool_statistics

    model = build(semantic_checkpoint, error_steps=2, detail_steps=1)
    fit(model, synthetic(data_cache), tmp_path, limit_val_batches=1, logger=False, **QUIET)
    scorer = ErrorMassScorer(tmp_path / "error" / "final.ckpt")
    data = synthetic(data_cache)
    source = PoolSource(data.dataset("wild", False))
    target = SegmentationModule(num_classes=data.num_classes, **NET).eval()
    device = torch.device("cpu")
    records = pool_statistics(target, [], source, 1, 0, data.num_classes, device, batch_size=3, scorers=[scorer])
    assert [r.id for r in records] == source.ids
    loaded = scorer.model(device)
    for record in records[:4]:
        image = source.dataset[source.index(record.id)]["image"][None]
        expected = loaded.error_mass(image)
        assert record.scalars["error_mass"] == pytest.approx(float(expected.mean[0]), abs=1e-5)
        assert record.scalars["error_area"] == pytest.approx(float(expected.area[0]), abs=1e-5)
    with pytest.raises(ValueError, match="not a ErrorPixelModule checkpoint"):
        ErrorMassScorer(semantic_checkpoint).model(device)
