"""ARM's KL (uncertainty) loss variant: the loss, the uncertainty head, and s as ARM's input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from segmend.cli import SegmendCLI
from segmend.losses.confidence import uncertainty_confidence
from segmend.losses.pixel import cross_entropy_map, kl_uncertainty_map
from segmend.modules import ARMModule
from segmend.nets.uncertainty import UncertaintyHead
from tests.fixtures.batches import make_batch
from tests.fixtures.cli import REPO, check_fit_metrics, fast_cli_args


def kl_module(**kwargs) -> ARMModule:
    torch.manual_seed(0)
    kwargs.setdefault("net", nn.Conv2d(3, 4, 3, padding=1))
    module = ARMModule(num_classes=4, pixel_loss="kl", **kwargs)
    module.trainer = Trainer(max_steps=100, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return module


def test_kl_loss_is_ce_at_s_one_and_minimal_at_twice_the_ce():
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0] = 255
    ce = cross_entropy_map(logits, target)
    at_one = kl_uncertainty_map(logits, torch.zeros(2, 1, 8, 8), target)
    assert at_one.shape == (2, 8, 8)
    assert torch.allclose(at_one, ce) and (at_one[0, 0] == 0).all()
    log_s = (2 * ce).clamp_min(1e-6).log().requires_grad_(True)  # s = 2 CE is the minimiser
    kl_uncertainty_map(logits, log_s, target).sum().backward()
    assert log_s.grad[target != 255].abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="resize the uncertainty map"):
        kl_uncertainty_map(logits, torch.zeros(2, 1, 4, 4), target)


def test_uncertainty_confidence_is_twice_the_implied_probability_minus_one():
    p_gt = torch.tensor([0.999, 0.5, 0.01]).view(1, 1, 1, 3)
    log_s = (-2 * p_gt.log()).log()  # the KL optimum s = -2 log p_gt
    assert torch.allclose(uncertainty_confidence(log_s), 2 * p_gt - 1, atol=1e-5)
    extremes = uncertainty_confidence(torch.tensor([-30.0, 30.0]).view(1, 1, 1, 2)).flatten()
    assert extremes.tolist() == pytest.approx([1.0, -1.0], abs=1e-6)


def test_uncertainty_head_starts_at_s_one():
    head = UncertaintyHead(6, hidden=8)
    assert torch.equal(head(torch.randn(2, 6, 5, 5)), torch.zeros(2, 1, 5, 5))
    with pytest.raises(ValueError, match="in_channels"):
        UncertaintyHead(0)


def test_head_on_logits_shapes_groups_and_gradients():
    module = kl_module(reweighting="none")
    module.train()
    data = make_batch(ignore_rows=2)
    logits = module(data["image"])
    assert module.log_uncertainty(logits).shape == (2, 1, 16, 16)
    groups = {g["name"]: g for g in module.parameter_groups()}
    head_ids = {id(p) for p in module.uncertainty_head.parameters()}
    assert head_ids <= {id(p) for p in groups["net"]["params"]}
    module.compute_loss(logits, data).backward()
    # the head's last layer starts at zero, so at the first step only it receives gradient
    assert all(p.grad.abs().sum() > 0 for p in module.uncertainty_head[-1].parameters())
    assert module.net.weight.grad.abs().sum() > 0


def test_head_reads_the_decoder_features_of_an_smp_net():
    torch.manual_seed(0)
    module = ARMModule(
        num_classes=4,
        arch="FPN",
        encoder_name="resnet18",
        net_kwargs={"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
        pixel_loss="kl",
        reweighting="none",
    )
    assert module.uncertainty_head[0].in_channels == 32
    data = make_batch(ignore_rows=2, size=32)
    logits = module(data["image"])
    log_s = module.log_uncertainty(logits)
    assert log_s.shape == (2, 1, 32, 32)
    assert module._uncertainty_tap.features.shape[1] == 32


@pytest.mark.parametrize("detach", [True, False])
def test_predicted_s_is_what_arm_sees(detach: bool):
    module = kl_module(
        confidence="uncertainty", weight_table_size=None, isolation_fraction=0.0, detach_confidence=detach
    )
    module.train()
    with torch.no_grad():  # a non-constant s
        module.uncertainty_head[-1].weight.normal_(0, 0.5)
    seen = []
    module.weight_map.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0]))
    data = make_batch(ignore_rows=2)
    logits = module(data["image"])
    log_s = module.log_uncertainty(logits)
    valid = data["mask"] != 255
    weights = module.pixel_weights(module.confidence(logits, log_s), valid)
    assert torch.allclose(seen[-1], 2 * torch.exp(-0.5 * log_s.exp()) - 1)
    assert seen[-1].std() > 0
    # gradient of the weighting alone: reaches the head only when the confidence is not detached
    pixel = module.pixel_losses(logits, data["mask"], log_s).detach()
    (weights * pixel).sum().backward()
    head_grad = module.uncertainty_head[-1].weight.grad
    reached = head_grad is not None and head_grad.abs().sum().item() > 0
    assert reached is (not detach)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.weight_map.parameters())


def test_kl_arm_full_loss_is_finite_and_trains_both():
    module = kl_module(confidence="uncertainty", isolation_fraction=0.0)
    module.train()
    data = make_batch(ignore_rows=2)
    loss = module.compute_loss(module(data["image"]), data)
    assert math.isfinite(loss.item())
    loss.backward()
    assert module.uncertainty_head[-1].bias.grad.abs().item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.weight_map.parameters())


def test_uncertainty_input_needs_the_kl_loss():
    with pytest.raises(ValueError, match="needs pixel_loss='kl'"):
        ARMModule(num_classes=4, net=nn.Conv2d(3, 4, 1), confidence="uncertainty")


def test_kl_arm_through_the_cli(tmp_path: Path, data_cache: Path):
    config = REPO / "configs" / "arm_synthetic_coarse.yaml"
    overrides = ["--model.init_args.pixel_loss=kl", "--model.init_args.confidence=uncertainty"]
    cli = SegmendCLI(args=["fit", *fast_cli_args(config, tmp_path, data_cache), *overrides])
    module = cli.model
    assert (module.hparams.pixel_loss, module.hparams.confidence) == ("kl", "uncertainty")
    check_fit_metrics(cli.trainer.callback_metrics, cli.datamodule.class_names)
    # the uncertainty head's last layer starts at zero (s = 1): the fit's one step moved it
    assert module.uncertainty_head[-1].weight.abs().sum() > 0
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 1 and saved["hyper_parameters"]["pixel_loss"] == "kl"
    head = {key for key in saved["state_dict"] if key.startswith("uncertainty_head.")}
    assert head == {f"uncertainty_head.{key}" for key in module.uncertainty_head.state_dict()}
