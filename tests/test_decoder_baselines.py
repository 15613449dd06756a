"""The error-pixel paper's Tab. 3 decoder baselines: GAU-decoder net, loss-rank hard mining, layer cascade."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from segmend.losses import loss_rank_cross_entropy
from segmend.modules import ErrorPixelModule, GAUDecoderModule, LayerCascadeModule
from segmend.modules.decoder_baselines import layer_cascade_losses
from segmend.nets.error_pixel import DetailBranch
from segmend.nets.factory import input_size_divisor
from segmend.nets.features import forward_features
from segmend.nets.gau_decoder import GAUDecoderNet, cascade_reach, cascade_select

SMALL = {"decoder_widths": (32, 32, 32)}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_gau_decoder_net_has_the_detail_branch_as_decoder_over_errorpixel_features():
    torch.manual_seed(0)
    net = GAUDecoderNet(4, "DeepLabV3Plus", "resnet18")
    torch.manual_seed(0)
    reference = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=4)  # the same initial weights
    errorpix = ErrorPixelModule(num_classes=4, arch="DeepLabV3Plus", encoder_name="resnet18")
    # skips and decoder as ErrorPixelModule's detail branch: same indices, same parameter count
    assert net.skip_indices == errorpix.skip_indices == (3, 2, 1)
    assert isinstance(net.decoder, DetailBranch)
    assert count(net.decoder) == count(errorpix.detail_branch)
    expected = DetailBranch(4, 256, [128, 64, 64], widths=(256, 128, 64))
    assert count(net.decoder) == count(expected)
    # only the encoder and the ASPP of the smp model are kept
    assert count(net) == count(reference.encoder) + count(reference.decoder.aspp) + count(expected)
    assert input_size_divisor(net) == 16
    net.eval(), reference.eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, ours = forward_features(reference, image), forward_features(net, image)
        logits = net(image)
    torch.testing.assert_close(ours.context, features.context)  # the ASPP output, as the semantic branch gives it
    assert all(torch.equal(a, b) for a, b in zip(ours.encoder, features.encoder, strict=True))
    assert logits.shape == (2, 4, 64, 64) and torch.equal(ours.logits, logits)
    assert ours.stage_logits == []
    with pytest.raises(ValueError, match="stage_heads=True"):
        net.stage_logits(image)


def test_stage_heads_other_context_architectures_and_encoder_high_level():
    torch.manual_seed(0)
    net = GAUDecoderNet(4, "PSPNet", "resnet18", widths=(32, 32, 32), stage_heads=True)
    assert len(net.decoder.blocks) == 2  # PSPNet's stride-8 context leaves two finer encoder maps
    stages = net.stage_logits(torch.randn(2, 3, 64, 64))
    assert [tuple(s.shape) for s in stages] == [(2, 4, 64, 64)] * 2
    assert count(net) == count(GAUDecoderNet(4, "PSPNet", "resnet18", widths=(32, 32, 32))) + 32 * 4 + 4
    unet = GAUDecoderNet(4, "Unet", "resnet18", widths=(32, 32, 32), high_level="encoder")
    assert unet(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64) and unet.skip_indices == (4, 3, 2)
    with pytest.raises(ValueError, match="set high_level: encoder"):
        GAUDecoderNet(4, "Unet", "resnet18")


@pytest.mark.parametrize("module_type", [GAUDecoderModule, LayerCascadeModule])
def test_every_parameter_gets_a_gradient(module_type: type[GAUDecoderModule]):
    torch.manual_seed(0)
    module = module_type(num_classes=4, aux_weight=0.4, **SMALL)
    module.train()
    image, mask = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    batch = {"image": image, "mask": mask}
    features = module.batch_features(batch)
    if isinstance(module, LayerCascadeModule):
        stages = module.stage_output_logits(features, image)
        loss = sum(layer_cascade_losses(stages, mask, cascade_reach(stages, module.hparams.rho)))
    else:
        loss = module.compute_loss(module.output_logits(features, image), batch)
    (loss + module.aux_loss(batch, features)).backward()
    missing = [name for name, p in module.named_parameters() if p.grad is None]
    assert not missing


def test_loss_rank_cross_entropy_is_the_mean_of_the_hardest_labelled_pixels():
    # two classes, target 0: a pixel's cross-entropy is softplus(x) for logits (0, x)
    x = torch.arange(15, dtype=torch.float32).reshape(1, 3, 5) - 7.0
    logits = torch.stack([torch.zeros_like(x), x], dim=1).requires_grad_()  # (1, 2, 3, 5)
    target = torch.zeros(1, 3, 5, dtype=torch.long)
    target[0, 2] = 255  # the last row (the five largest x) is unlabeled: 10 labelled pixels
    loss = loss_rank_cross_entropy(logits, target, fraction=0.2)
    expected = F.softplus(torch.tensor([1.0, 2.0])).mean()  # the top 2 of the labelled x = -7..2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert int((logits.grad.abs().sum(dim=1) > 0).sum()) == 2  # only those two pixels get a gradient
    plain = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(loss_rank_cross_entropy(logits, target, fraction=1.0), plain)
    empty = loss_rank_cross_entropy(logits, torch.full_like(target, 255))
    assert float(empty) == 0.0 and empty.requires_grad
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction must be in \\(0, 1\\]"):
            loss_rank_cross_entropy(logits, target, fraction=fraction)


def three_stages() -> list[torch.Tensor]:
    """Logits of 3 stages over 4 pixels (1, 2, 1, 4): stage 1 is sure of pixels 0-1, stage 2 of pixel 2."""
    sure, unsure = [8.0, 0.0], [0.1, 0.0]  # softmax max 0.9997 >= 0.95, 0.525 < 0.95
    stage1 = torch.tensor([sure, sure, unsure, unsure]).T
    stage2 = torch.tensor([unsure, unsure, [0.0, 8.0], unsure]).T
    stage3 = torch.tensor([unsure, unsure, unsure, [0.0, 0.2]]).T
    return [s.reshape(1, 2, 1, 4).clone().requires_grad_() for s in (stage1, stage2, stage3)]


def test_layer_cascade_trains_each_stage_on_the_pixels_earlier_stages_left_unconfident():
    stages = three_stages()
    reach = cascade_reach(stages, rho=0.95)
    assert [r.flatten().tolist() for r in reach] == [
        [True, True, True, True],
        [False, False, True, True],
        [False, False, False, True],
    ]
    target = torch.tensor([[[0, 1, 1, 255]]])  # pixel 3 unlabeled
    losses = layer_cascade_losses(stages, target, reach)
    ce = [F.cross_entropy(s.detach(), target, ignore_index=255, reduction="none")[0, 0] for s in stages]
    torch.testing.assert_close(losses[0], ce[0][:3].mean())
    torch.testing.assert_close(losses[1], ce[1][2])  # stage 2: only pixel 2 (pixel 3 is unlabeled)
    assert float(losses[2]) == 0.0 and losses[2].requires_grad  # stage 3 reached only by the unlabeled pixel
    sum(losses).backward()
    assert stages[1].grad[0, :, 0, :2].abs().sum() == 0 and stages[1].grad[0, :, 0, 2].abs().sum() > 0


def test_layer_cascade_labels_each_pixel_by_its_first_confident_stage():
    stages = three_stages()
    selected = cascade_select(stages, rho=0.95)
    for pixel, stage in enumerate([0, 0, 1, 2]):  # pixel 3: no stage is sure, the last one labels it
        assert torch.equal(selected[..., pixel], stages[stage][..., pixel])
    assert selected.argmax(dim=1).flatten().tolist() == [0, 0, 1, 1]
    assert cascade_select(stages, rho=1.0).argmax(dim=1).flatten().tolist() == [0, 0, 0, 1]  # all to stage 3
    with pytest.raises(ValueError, match="rho must be in \\(0, 1\\]"):
        cascade_select(stages, rho=0.0)


def test_layer_cascade_module_forward_is_the_cascade_of_its_stages_at_any_size():
    torch.manual_seed(0)
    module = LayerCascadeModule(num_classes=4, rho=0.3, **SMALL).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = module.net.stage_logits(image)
        torch.testing.assert_close(module(image), cascade_select(stages, 0.3))
        assert module(torch.randn(1, 3, 70, 50)).shape == (1, 4, 70, 50)  # padded to the divisor, cropped back


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="hard_fraction must be in"):
        GAUDecoderModule(num_classes=4, hard_fraction=0.0)
    with pytest.raises(ValueError, match="Remove hard_fraction"):
        LayerCascadeModule(num_classes=4, hard_fraction=0.2)
    with pytest.raises(ValueError, match="rho must be in"):
        LayerCascadeModule(num_classes=4, rho=1.5)
    with pytest.raises(ValueError, match="remove net"):
        GAUDecoderModule(num_classes=4, net=torch.nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match="high_level must be one of"):
        GAUDecoderModule(num_classes=4, high_level="aspp")
    with pytest.raises(ValueError, match="set high_level: encoder"):
        GAUDecoderModule(num_classes=4, arch="FPN")


@pytest.mark.parametrize(
    ("module_type", "kwargs", "logged"),
    [
        (GAUDecoderModule, {}, "train/loss"),
        (GAUDecoderModule, {"hard_fraction": 0.2}, "train/loss"),
        (LayerCascadeModule, {}, "train/stage3_pixel_share"),
    ],
)
def test_fast_dev_run_fits_validates_and_reloads(module_type, kwargs, logged, tiny_synthetic, tmp_path):  # noqa: ANN001
    torch.manual_seed(0)
    module = module_type(num_classes=tiny_synthetic.num_classes, **SMALL, **kwargs)
    options = {"fast_dev_run": True, "accelerator": "cpu", "logger": False, "enable_checkpointing": False}
    trainer = Trainer(enable_progress_bar=False, enable_model_summary=False, **options)
    trainer.fit(module, datamodule=tiny_synthetic)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert logged in trainer.callback_metrics
    results = trainer.validate(module, datamodule=tiny_synthetic, verbose=False)[0]
    assert math.isfinite(results["val/loss"]) and 0.0 <= results["val/mIoU"] <= 1.0
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    restored = module_type.load_from_checkpoint(tmp_path / "last.ckpt", map_location="cpu").eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(restored(image), module.eval()(image))


def test_hard_mining_module_trains_with_the_loss_rank_loss():
    torch.manual_seed(0)
    module = GAUDecoderModule(num_classes=4, hard_fraction=0.2, **SMALL)
    logits, mask = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    expected = loss_rank_cross_entropy(logits, mask, fraction=0.2)
    torch.testing.assert_close(module.compute_loss(logits, {"mask": mask}), expected)
    assert float(expected) > float(GAUDecoderModule(num_classes=4, **SMALL).compute_loss(logits, {"mask": mask}))
