"""ARM: 53 parameters, negative learning rate, detached confidence, normalised weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from segmend.losses import confidence_map, holder_optimal_weights, normalise_weights, weighted_sum
from segmend.modules import ARMModule
from segmend.nets.arm import ARM, LinearARM
from tests.fixtures.batches import make_batch


def arm_module(**kwargs) -> ARMModule:
    torch.manual_seed(0)
    module = ARMModule(num_classes=4, net=nn.Conv2d(3, 4, 3, padding=1), **kwargs)
    module.trainer = Trainer(max_steps=100, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return module


def test_arm_has_exactly_53_parameters():
    assert sum(p.numel() for p in ARM().parameters()) == 53


def test_linear_arm_suppresses_or_focuses():
    v = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    assert LinearARM(-0.5, 0.5)(v).flatten().tolist() == [1.0, 0.5, 0.0]
    assert LinearARM(0.5, 0.5)(v).flatten().tolist() == [0.0, 0.5, 1.0]


def test_confidence_range_and_extremes():
    uniform = torch.full((1, 5, 1, 1), 0.2)
    certain = torch.zeros(1, 5, 1, 1)
    certain[0, 2] = 1.0
    for kind in ("var", "std", "entropy"):
        assert confidence_map(uniform, kind).item() == pytest.approx(-1.0, abs=1e-5)
        assert confidence_map(certain, kind).item() == pytest.approx(1.0, abs=1e-5)
    assert confidence_map(certain, "logvar").item() == pytest.approx(1.0, abs=1e-5)
    probs = torch.randn(2, 5, 4, 4).softmax(1)
    var = (probs - 0.2).pow(2).mean(1, keepdim=True)
    assert torch.allclose(confidence_map(probs, "var"), 2 * 25 / 4 * var - 1, atol=1e-5)


def test_weights_sum_to_one_and_skip_ignored_pixels():
    weights = torch.rand(2, 1, 8, 8)
    valid = torch.rand(2, 8, 8) > 0.3
    normalised = normalise_weights(weights, valid, p=2.0)
    assert normalised.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (normalised[~valid] == 0).all()


def test_l1_rescale_is_detached_so_gradient_follows_the_l2_constraint():
    raw = torch.rand(1, 1, 4, 4, requires_grad=True)
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    loss = torch.rand(1, 4, 4)
    weighted_sum(normalise_weights(raw, valid, 2.0), loss).backward()
    # reference: gradient of sum(l * w / ||w||_2) / c with c = sum(w / ||w||_2) held constant
    w = raw.detach().clone().requires_grad_(True)
    l2 = w / w.norm()
    const = l2.sum().detach()
    ((l2 / const).reshape(1, 4, 4) * loss).sum().backward()
    assert torch.allclose(raw.grad, w.grad, atol=1e-6)


def test_negative_lr_group_holds_exactly_arms_parameters_and_ascends():
    module = arm_module(isolation_fraction=0.0)
    optimizer = module.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["arm"]["lr"] == pytest.approx(-groups["net"]["lr"]) and groups["arm"]["lr"] < 0
    assert groups["arm"]["weight_decay"] == 0.0
    assert {id(p) for p in groups["arm"]["params"]} == {id(p) for p in module.weight_map.parameters()}
    assert not {id(p) for p in groups["net"]["params"]} & {id(p) for p in groups["arm"]["params"]}

    module.train()
    data = make_batch(ignore_rows=2)
    for group in optimizer.param_groups:  # a larger step makes the change unmistakable
        group["lr"] = 50.0 * math.copysign(1.0, group["lr"])
    groups["net"]["lr"] = 0.0  # move ARM only, so the losses stay fixed
    logits = module(data["image"])
    before = module.compute_loss(logits, data)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = module.compute_loss(module(data["image"]), data)
    assert after.item() > before.item()


@pytest.mark.parametrize("detach", [True, False])
def test_detached_confidence_sends_no_gradient_through_the_weights(detach: bool):
    module = arm_module(detach_confidence=detach, isolation_fraction=0.0)
    module.train()
    data = make_batch(ignore_rows=2)
    logits = module(data["image"]).detach().requires_grad_(True)
    valid = data["mask"] != 255
    pixel = module.pixel_losses(logits, data["mask"]).detach()  # gradient only via the weights
    weighted_sum(module.pixel_weights(module.confidence(logits), valid), pixel).backward()
    reached = logits.grad is not None and logits.grad.abs().sum().item() > 0
    assert reached is (not detach)


def test_isolation_phase_trains_the_net_on_the_plain_loss():
    module = arm_module(isolation_fraction=0.5)
    module.train()
    data = make_batch(ignore_rows=2)
    logits = module(data["image"])
    loss = module.compute_loss(logits, data)
    plain = nn.functional.cross_entropy(logits, data["mask"], ignore_index=255)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.weight_map.parameters())


def test_arm_fit_through_trainer(tiny_synthetic, tmp_path):
    module = ARMModule(num_classes=6, net=nn.Conv2d(3, 6, 3, padding=1), pixel_loss="gce")
    before = [p.detach().clone() for p in module.weight_map.parameters()]
    trainer = Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule=tiny_synthetic)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.weight_map.parameters(), strict=True))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().float()
    rb = b.argsort().argsort().float()
    return torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()


@pytest.mark.parametrize("profile", ["decreasing", "bump"])
def test_arm_alone_converges_to_the_hoelder_closed_form(profile: str):
    """Train ARM by gradient ascent on a fixed loss-by-confidence profile; compare with the closed form."""
    torch.manual_seed(0)
    bins = torch.linspace(-1, 1, 21)
    centres = (bins[:-1] + bins[1:]) / 2
    if profile == "decreasing":
        loss_of = lambda v: 2.0 * torch.exp(-1.5 * (v + 1)) + 0.05  # noqa: E731
    else:
        loss_of = lambda v: 0.2 + torch.exp(-8 * (v + 0.3) ** 2)  # noqa: E731
    arm = ARM()
    # negative lr: ascent. SGD as in the paper; Adam's normalised steps drive the sigmoid into saturation
    optimizer = torch.optim.SGD([{"params": arm.parameters(), "lr": -1.0}])
    for _ in range(600):
        v = torch.rand(1, 1, 32, 32) * 2 - 1
        weights = normalise_weights(arm(v), torch.ones(1, 32, 32, dtype=torch.bool), p=2.0)
        objective = weighted_sum(weights, loss_of(v).reshape(1, 32, 32))
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
    with torch.no_grad():
        learned = arm(centres.view(1, 1, 1, -1)).flatten()
    optimal = holder_optimal_weights(loss_of(centres), torch.ones_like(centres), p=2.0)
    assert spearman(learned, optimal) >= 0.95


def test_warmup_step_schedule_follows_the_paper():
    from segmend.optim import WarmupStepLR

    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD(
        [{"params": [param], "lr": 1.0}, {"params": [nn.Parameter(torch.zeros(1))], "lr": -1.0}]
    )
    scheduler = WarmupStepLR(optimizer, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx([0.01, -0.01])
    assert lrs[5] == pytest.approx([1.0, -1.0]) and lrs[59] == pytest.approx([1.0, -1.0])
    assert lrs[60] == pytest.approx([0.1, -0.1]) and lrs[90] == pytest.approx([0.01, -0.01])


def test_arm_curve_logger_writes_plots(tiny_synthetic, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from segmend.callbacks import ARMCurveLogger

    module = ARMModule(num_classes=6, net=nn.Conv2d(3, 6, 3, padding=1), isolation_fraction=0.0)
    logger = CSVLogger(tmp_path)
    trainer = Trainer(
        max_epochs=2,
        logger=logger,
        callbacks=[ARMCurveLogger(every_n_steps=1)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=tiny_synthetic)
    plots = sorted(Path(logger.log_dir).glob("arm/step*.png"))
    assert len(plots) >= 2
    assert "arm/closed_form_rank_corr" in trainer.callback_metrics


def test_ohem_keeps_the_hard_pixels():
    module = arm_module(reweighting="ohem", ohem_threshold=0.7, ohem_min_kept=10)
    module.train()
    data = make_batch(ignore_rows=2)
    logits = module(data["image"])
    loss = module.compute_loss(logits, data)
    valid = data["mask"] != 255
    probs = logits.softmax(1).gather(1, data["mask"].clamp(max=3).unsqueeze(1)).squeeze(1)[valid]
    ce = nn.functional.cross_entropy(logits, data["mask"], ignore_index=255, reduction="none")[valid]
    threshold = max(0.7, probs.kthvalue(10).values.item())
    assert loss.item() == pytest.approx(ce[probs <= threshold].mean().item(), rel=1e-5)


def test_table_evaluation_matches_per_pixel_evaluation():
    from segmend.nets.arm import evaluate_by_table

    torch.manual_seed(0)
    arm = ARM()
    confidence = torch.rand(2, 1, 16, 16) * 2 - 1
    direct = arm(confidence)
    table = evaluate_by_table(arm, confidence, 1025)
    assert torch.allclose(direct, table, atol=1e-4)
    loss = torch.rand(2, 1, 16, 16)
    grads = []
    for weights in (arm(confidence), evaluate_by_table(arm, confidence, 1025)):
        arm.zero_grad()
        (weights * loss).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in arm.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)
