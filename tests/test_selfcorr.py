"""Self-correcting networks: box attention, the losses of Eqs. 2/5/6, freezing, and the stage runner."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch.utils.data import DataLoader, Dataset

from segmend.datamodules.voc_format import BoxAnnotation, box_mask
from segmend.modules import AncillaryModule, SelfCorrectionModule
from segmend.modules.stages import (
    TRAIN_SETS,
    plan_stages,
    run_self_correction,
    self_correction_stages,
    stage_train_set,
)
from segmend.nets.box_attention import BoxAttentionNet, decoder_stages
from segmend.nets.self_correction import alpha_schedule, em_fixed_labels, linear_self_correction
from tests.fixtures.batches import make_batch

C = 4
SIZE = 32
NET = {"net_kwargs": {"decoder_channels": 16}, "encoder_name": "tu-mobilenetv3_small_050"}
#: Fake batches of F (with masks) and W (without) samples, all with box masks: ``box_batch(full=, weak=, seed=)``.
box_batch = partial(make_batch, num_classes=C, size=SIZE, boxes=True)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny nets run ~10x faster than with threads fighting over 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def selfcorr(correction: str = "linear", **kwargs) -> SelfCorrectionModule:
    torch.manual_seed(0)
    module = SelfCorrectionModule(num_classes=C, correction=correction, **NET, **kwargs)
    if module.ancillary is not None:
        module.set_ancillary(module.build_ancillary_module())
    return module


# ---------------------------------------------------------------- box mask and attention
def test_box_mask_channels_for_overlapping_boxes_of_different_classes():
    boxes = [BoxAnnotation(1, 2, 2, 9, 9), BoxAnnotation(3, 6, 6, 13, 13)]  # label, xmin, ymin, xmax, ymax
    mask = box_mask(boxes, num_classes=C, height=16, width=16)
    assert mask.shape == (C, 16, 16)
    overlap = (slice(6, 10), slice(6, 10))
    assert (mask[1][overlap] == 1).all() and (mask[3][overlap] == 1).all()
    assert (mask[0][overlap] == 0).all() and (mask[2] == 0).all()
    covered = (mask[1:].sum(0) > 0).astype(np.uint8)
    np.testing.assert_array_equal(mask[0], 1 - covered)  # background channel: 1 exactly where no box


def test_box_attention_gates_the_features_deeplabv3plus_reads():
    net = BoxAttentionNet(C, "DeepLabV3Plus", "resnet18", decoder_channels=16)
    assert net.stages == (2, 5)  # stride-4 skip and the deep features (resnet18: 6 feature maps)
    assert decoder_stages("Unet", 6) == (1, 2, 3, 4, 5)
    assert decoder_stages("FPN", 6) == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="out of range"):
        decoder_stages("DeepLabV3Plus", 6, (0,))
    net.eval()
    batch = box_batch(full=2, weak=2)
    out = net(batch["image"], batch["boxes"])
    moved = batch["boxes"].roll(8, dims=-1)
    assert out.shape == (4, C, SIZE, SIZE)
    assert not torch.allclose(out, net(batch["image"], moved))  # the boxes steer the prediction
    out.sum().backward()
    assert all(p.grad is not None for p in net.box_encoder.parameters())


def test_ancillary_module_trains_on_boxes_and_rejects_batches_without():
    torch.manual_seed(0)
    module = AncillaryModule(num_classes=C, **NET)
    batch = box_batch(full=2, weak=2)
    loss = module.shared_step(batch, "train")
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in module.net.box_encoder.parameters())
    with pytest.raises(ValueError, match="with_boxes"):
        module.shared_step({k: v for k, v in batch.items() if k != "boxes"}, "train")
    with pytest.raises(ValueError, match="test-time augmentation"):
        AncillaryModule(num_classes=C, tta_flip=True, **NET)


# ---------------------------------------------------------------- linear self-correction
def test_linear_q_limits():
    g = torch.Generator().manual_seed(1)
    logits, anc = torch.randn(2, C, 5, 5, generator=g), torch.randn(2, C, 5, 5, generator=g)
    torch.testing.assert_close(linear_self_correction(logits, anc, 0.0), logits.softmax(1))
    torch.testing.assert_close(linear_self_correction(logits, anc, math.inf), anc.softmax(1))
    torch.testing.assert_close(linear_self_correction(logits, anc, 1e7), anc.softmax(1), atol=1e-5, rtol=0)
    mid = linear_self_correction(logits, anc, 1.0)
    torch.testing.assert_close(mid, ((logits + anc) / 2).softmax(1))
    with pytest.raises(ValueError):
        linear_self_correction(logits, anc, -1.0)


def test_alpha_schedule_geometric_30_to_half():
    assert alpha_schedule(0.0) == pytest.approx(30.0)
    assert alpha_schedule(1.0) == pytest.approx(0.5)
    assert alpha_schedule(0.5) == pytest.approx(math.sqrt(30 * 0.5))
    assert alpha_schedule(0.5, 10, 2, "linear") == pytest.approx(6.0)
    with pytest.raises(ValueError, match="positive"):
        SelfCorrectionModule(num_classes=C, alpha_end=0.0, **NET)


@pytest.mark.parametrize("correction", ["none", "linear", "conv", "em_fixed"])
def test_q_carries_no_gradient(correction: str):
    module = selfcorr(correction).train()
    batch = box_batch(full=0, weak=2)
    logits = torch.randn(2, C, SIZE, SIZE, requires_grad=True)
    anc = module.ancillary_logits(batch["image"], batch["boxes"]) if module.ancillary is not None else None
    q = module.soft_targets(logits, anc, batch["boxes"], alpha=2.0)
    assert not q.requires_grad
    if correction == "em_fixed":
        return
    # the W term's gradient is exactly (softmax(l) - q) / N: q is a constant target
    module.soft_targets = lambda *args, **kwargs: q  # fix alpha for the comparison
    loss = module.compute_loss(logits, batch)
    loss.backward()
    expected = (logits.detach().softmax(1) - q) / (2 * SIZE * SIZE)
    torch.testing.assert_close(logits.grad, expected, atol=1e-7, rtol=1e-4)


def test_em_fixed_labels_stay_inside_boxes():
    batch = box_batch(full=0, weak=1)
    logits = torch.zeros(1, C, SIZE, SIZE)
    logits[:, 3] = 10.0  # the model prefers class 3, which has no box
    labels = em_fixed_labels(logits, batch["boxes"])
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    assert (labels[0, :4] == 0).all()  # outside every box: background
    batch["boxes"][:, :, :, :2] = 0  # crop padding: no channel set
    assert (em_fixed_labels(logits, batch["boxes"])[0, :, :2] == 255).all()


# ---------------------------------------------------------------- conv self-correction
def _sc_grads(module: SelfCorrectionModule, batch: dict) -> list[torch.Tensor]:
    module.zero_grad(set_to_none=False)
    logits = module(batch["image"])
    module.compute_loss(logits, batch).backward()
    return [p.grad.clone() for p in module.sc_net.parameters()]


def test_conv_self_correction_gets_gradient_only_from_full_samples():
    module = selfcorr("conv").train()
    for m in module.modules():  # BN / dropout in eval: a sample's output must not depend on the others
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)):
            m.eval()
    batch = box_batch(full=2, weak=2, seed=0)
    grads = _sc_grads(module, batch)
    assert any(g.abs().sum() > 0 for g in grads)
    other = box_batch(full=2, weak=2, seed=5)
    changed = dict(batch, image=torch.cat([batch["image"][:2], other["image"][2:]]))
    changed["boxes"] = torch.cat([batch["boxes"][:2], other["boxes"][2:].roll(5, dims=-1)])
    for g, h in zip(grads, _sc_grads(module, changed), strict=True):
        torch.testing.assert_close(g, h)  # W samples do not touch the SC net's gradient
    weak_only = box_batch(full=0, weak=4)
    assert all(g.abs().sum() == 0 for g in _sc_grads(module, weak_only))
    assert [g["name"] for g in module.build_optimizer().param_groups] == ["primary", "self_correction"]


# ---------------------------------------------------------------- freezing over a real fit
class ListData(Dataset):
    def __init__(self, batches: list[dict]) -> None:
        self.samples = [{k: v[i] for k, v in b.items()} for b in batches for i in range(4)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


class TinySemiSup(LightningDataModule):
    """A stand-in semi-supervised DataModule over hand-made tensors (records use_train_set calls)."""

    num_classes = C
    class_names = tuple(map(str, range(C)))

    def __init__(self) -> None:
        super().__init__()
        self.used: list[str] = []
        self.train_set = "full+weak"

    def use_train_set(self, name: str) -> None:
        self.used.append(name)
        self.train_set = name

    def train_dataloader(self) -> DataLoader:
        weak = 0 if self.train_set in ("full", "half_full") else 2
        return DataLoader(ListData([box_batch(full=4 - weak, weak=weak, seed=i) for i in range(2)]), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ListData([box_batch(full=4, weak=0, seed=9)]), batch_size=4)


def tiny_trainer(root: Path, callbacks: list | None = None, max_epochs: int = 2):
    def factory(stage: str) -> Trainer:
        return Trainer(
            max_epochs=max_epochs,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(root / stage),
            callbacks=list(callbacks or []),
            accelerator="cpu",
        )

    return factory


def test_ancillary_parameters_and_bn_buffers_unchanged_after_fit(tmp_path: Path):
    module = selfcorr("linear")
    before = {k: v.clone() for k, v in module.ancillary.state_dict().items()}
    assert any("running_mean" in k for k in before)
    optimizer = module.build_optimizer()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.ancillary.parameters()}
    primary_before = [p.clone() for p in module.net.parameters()][:3]
    trainer = tiny_trainer(tmp_path, max_epochs=1)("main")
    trainer.fit(module, datamodule=TinySemiSup())
    for key, value in module.ancillary.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert not module.ancillary.training and module.net.training
    assert any(not torch.equal(a, b) for a, b in zip(primary_before, module.net.parameters(), strict=False))
    # 2 steps: alpha is 30 at the first and 0.5 at the last (logged value = last step's)
    assert float(trainer.callback_metrics["train/alpha"]) == pytest.approx(0.5)


def test_untrained_ancillary_is_refused():
    module = SelfCorrectionModule(num_classes=C, correction="none", **NET)
    trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="no trained ancillary"):
        trainer.fit(module, datamodule=TinySemiSup())


# ---------------------------------------------------------------- the stage runner
class KillAt(Callback):
    """Raise in ``stage``'s second epoch (after its first last.ckpt was written)."""

    def __init__(self, root: Path, stage: str) -> None:
        self.root, self.stage = root, stage

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if Path(trainer.default_root_dir).name == self.stage and trainer.current_epoch == 1:
            raise RuntimeError("killed")


def test_three_stages_resume_at_first_unfinished_stage(tmp_path: Path):
    model = selfcorr("conv")
    model.ancillary_ready.fill_(False)
    assert plan_stages(model) == ("ancillary", "pretrain", "main")
    data = TinySemiSup()
    with pytest.raises(RuntimeError, match="killed"):
        run_self_correction(model, data, tmp_path, tiny_trainer(tmp_path, [KillAt(tmp_path, "pretrain")]))
    assert data.used == [stage_train_set(model, "ancillary"), TRAIN_SETS["pretrain"]] == ["half_full", "full"]
    assert (tmp_path / "ancillary" / "final.ckpt").is_file()
    assert not (tmp_path / "pretrain" / "final.ckpt").exists()
    assert (tmp_path / "pretrain" / "checkpoints" / "last.ckpt").is_file()

    built: list[str] = []
    factory = tiny_trainer(tmp_path)

    def recording(stage: str) -> Trainer:
        built.append(stage)
        return factory(stage)

    fresh = selfcorr("conv")
    fresh.ancillary_ready.fill_(False)
    data = TinySemiSup()
    run = run_self_correction(fresh, data, tmp_path, recording)
    assert built == ["pretrain", "main"]  # stage 1 skipped
    assert data.used == ["full", "full+weak"]
    status = {s.name: s.status for s in run.stages}
    assert status == {"ancillary": "skipped", "pretrain": "trained", "main": "trained"}
    assert run.stages[1].resumed_from == tmp_path / "pretrain" / "checkpoints" / "last.ckpt"
    assert bool(fresh.ancillary_ready)
    assert run.trainer.global_step == 4  # 2 epochs x 2 batches, the main stage from scratch
    pretrain = torch.load(tmp_path / "pretrain" / "final.ckpt", weights_only=False)
    assert pretrain["global_step"] == 4  # resumed at step 2, not restarted

    # the default factory: CSV logs and stage folders under run_dir
    em = run_self_correction(selfcorr("em_fixed"), TinySemiSup(), tmp_path / "em", trainer_kwargs={"max_steps": 1})
    assert em.trainer.global_step == 1 and (tmp_path / "em" / "main" / "final.ckpt").is_file()
    assert (tmp_path / "em" / "main" / "version_0" / "hparams.yaml").is_file()

    # a given ancillary checkpoint skips stage 1; everything done -> nothing is trained
    given = SelfCorrectionModule(
        num_classes=C, correction="linear", ancillary_checkpoint=str(tmp_path / "ancillary" / "final.ckpt"), **NET
    )
    assert plan_stages(given) == ("main",)
    again = run_self_correction(selfcorr("conv"), TinySemiSup(), tmp_path, recording)
    assert [s.status for s in again.stages] == ["skipped"] * 3 and built == ["pretrain", "main"]


def test_stage_runner_errors(tmp_path: Path):
    assert plan_stages(selfcorr("em_fixed")) == ("main",)  # EM-fixed needs no ancillary model
    assert plan_stages(selfcorr("linear")) == ("ancillary", "main")
    with pytest.raises(ValueError, match="does not exist"):
        SelfCorrectionModule(num_classes=C, ancillary_checkpoint=str(tmp_path / "nope.ckpt"), **NET)
    with pytest.raises(ValueError, match="use_train_set"):
        run_self_correction(selfcorr("none"), LightningDataModule(), tmp_path)
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(1)}, "hyper_parameters": {"arch": "Unet"}}, bad)
    with pytest.raises(ValueError, match="Unet"):
        SelfCorrectionModule(num_classes=C, ancillary_checkpoint=str(bad), **NET)


@pytest.mark.parametrize(("correction", "train_set"), [("none", "full"), ("linear", "full"), ("conv", "half_full")])
def test_the_ancillary_trains_on_all_of_f_except_for_conv(correction: str, train_set: str):
    """As in the paper: Eq. 3 trains the ancillary on F; conv holds half of F out for its stage 2 (Sec. 3.4)."""
    model = selfcorr(correction)
    model.ancillary_ready.fill_(False)
    stages = list(self_correction_stages(model, TinySemiSup()))
    assert stages[0].name == "ancillary" and stages[0].description == f"train set '{train_set}'"
    data = TinySemiSup()
    stages[0].prepare(data)
    assert data.used == [train_set]
