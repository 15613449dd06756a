"""SegmentationModule: steps, losses, optimizer injection, TTA and predict."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from segmend.modules import SegmentationModule
from segmend.nets.tta import tta_probabilities
from segmend.optim import PolyLR


def tiny_module(**kwargs) -> SegmentationModule:
    kwargs.setdefault("net", nn.Conv2d(3, 6, kernel_size=1))
    return SegmentationModule(num_classes=6, **kwargs)


def test_num_classes_is_required_outside_the_cli():
    with pytest.raises(ValueError, match="num_classes is required"):
        SegmentationModule(net=nn.Conv2d(3, 6, 1))


def test_smp_net_built_by_name_without_download():
    module = SegmentationModule(
        num_classes=6,
        arch="Unet",
        encoder_name="resnet18",
        net_kwargs={"decoder_channels": (32, 16, 16, 8, 8)},
    )
    out = module(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 6, 64, 64)


def test_unknown_arch_and_encoder_names_are_reported():
    with pytest.raises(ValueError, match="Unknown segmentation-models-pytorch architecture"):
        SegmentationModule(num_classes=6, arch="DeepLabV9")
    with pytest.raises(ValueError, match="Unknown encoder_name"):
        SegmentationModule(num_classes=6, encoder_name="resnet9000")


def test_net_with_wrong_output_channels_is_reported():
    module = SegmentationModule(num_classes=6, net=nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match=r"expected \(B, 6, H, W\)"):
        module(torch.randn(1, 3, 8, 8))


def test_dict_output_and_low_resolution_logits_are_handled():
    class HalfRes(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}

    module = SegmentationModule(num_classes=6, net=HalfRes())
    assert module(torch.randn(2, 3, 16, 16)).shape == (2, 6, 16, 16)


def test_samples_without_masks_do_not_contribute_to_the_loss():
    module = tiny_module()
    image = torch.randn(2, 3, 8, 8)
    mask = torch.randint(0, 6, (2, 8, 8))
    logits = module(image)
    both = module.compute_loss(logits, {"mask": mask, "has_mask": torch.tensor([True, True])})
    first = module.compute_loss(logits, {"mask": mask, "has_mask": torch.tensor([True, False])})
    expected = nn.functional.cross_entropy(logits[:1], mask[:1])
    assert first.item() == pytest.approx(expected.item(), rel=1e-5)
    assert both.item() != pytest.approx(first.item())
    none = module.compute_loss(logits, {"mask": mask, "has_mask": torch.tensor([False, False])})
    assert none.item() == 0.0 and none.requires_grad


def test_default_optimizer_and_poly_schedule_bound_to_the_fit():
    module = tiny_module()
    trainer = Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.trainer = trainer
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert isinstance(scheduler, PolyLR) and scheduler.total_steps == 10
    assert config["lr_scheduler"]["interval"] == "step"


def test_poly_schedule_decays_to_zero():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = PolyLR(optimizer, total_steps=4, power=1.0)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_injected_optimizer_callable_is_used():
    module = tiny_module(optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    module.trainer = Trainer(max_steps=3, logger=False, enable_checkpointing=False)
    assert isinstance(module.configure_optimizers()["optimizer"], torch.optim.AdamW)


def test_tta_flip_of_a_pointwise_net_equals_plain_prediction():
    net = nn.Conv2d(3, 6, 1)
    image = torch.randn(2, 3, 32, 32)
    plain = net(image).softmax(1)
    flipped = tta_probabilities(net, image, scales=(1.0,), flip=True)
    assert torch.allclose(plain, flipped, atol=1e-6)
    multi = tta_probabilities(net, image, scales=(0.5, 1.0, 1.5), flip=True)
    assert multi.shape == plain.shape
    assert torch.allclose(multi.sum(1), torch.ones(2, 32, 32), atol=1e-5)


def test_predict_step_returns_labels_and_probabilities():
    module = tiny_module(tta_scales=(0.75, 1.0), tta_flip=True)
    batch = {"image": torch.randn(2, 3, 32, 32), "id": ["a", "b"]}
    out = module.predict_step(batch, 0)
    assert out["id"] == ["a", "b"]
    assert out["labels"].shape == (2, 32, 32) and out["labels"].dtype == torch.long
    assert out["probs"].shape == (2, 6, 32, 32)
    assert torch.equal(out["labels"], out["probs"].argmax(1))


def test_num_classes_mismatch_with_datamodule(tiny_synthetic):
    module = SegmentationModule(num_classes=4, net=nn.Conv2d(3, 4, 1))
    trainer = Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"num_classes mismatch.*6 classes.*built for 4"):
        trainer.fit(module, datamodule=tiny_synthetic)


def test_fit_validate_test_predict_on_synthetic(tiny_synthetic, tmp_path):
    module = SegmentationModule(
        num_classes=6, class_names=tiny_synthetic.class_names, net=nn.Conv2d(3, 6, 3, padding=1)
    )
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=tiny_synthetic)
    scores = trainer.validate(module, datamodule=tiny_synthetic, verbose=False)[0]
    assert {"val/mIoU", "val/aAcc", "val/mAcc", "val/IoU_disc"} <= set(scores)
    assert 0.0 <= scores["val/mIoU"] <= 1.0
    test_scores = trainer.test(module, datamodule=tiny_synthetic, verbose=False)[0]
    assert test_scores["test/mIoU"] == pytest.approx(scores["val/mIoU"])  # synthetic test = val split
    predictions = trainer.predict(module, datamodule=tiny_synthetic)
    assert sum(len(p["id"]) for p in predictions) == 4


def test_auxiliary_fcn_head_adds_weighted_loss():
    torch.manual_seed(0)
    module = SegmentationModule(
        num_classes=6,
        arch="DeepLabV3Plus",
        encoder_name="resnet18",
        aux_weight=0.4,
        net_kwargs={"decoder_channels": 32},
    )
    assert module.aux_head is not None
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": torch.randint(0, 6, (2, 64, 64))}
    module.eval()  # deterministic (dropout off) so the two computations can be compared
    main = module.compute_loss(module(batch["image"]), batch)
    aux = module.aux_loss(batch)
    assert aux is not None and aux.item() > 0
    total = module.shared_step(batch, "train")
    assert total.item() == pytest.approx(main.item() + 0.4 * aux.item(), rel=1e-4)
    total.backward()
    assert module.aux_head[0].weight.grad is not None


def test_auxiliary_head_needs_an_smp_net():
    with pytest.raises(ValueError, match="aux_weight > 0 needs a segmentation-models-pytorch net"):
        SegmentationModule(num_classes=6, net=nn.Conv2d(3, 6, 1), aux_weight=0.4)
