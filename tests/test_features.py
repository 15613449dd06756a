"""The explicit features API: equal to the plain forward, the fields other parts read, no hooks in the code."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import Tensor, nn

from segmend.modules import AncillaryModule, ARMModule, SegmentationModule
from segmend.nets.box_attention import BoxAttentionNet
from segmend.nets.factory import available_architectures, build_smp_net
from segmend.nets.features import SegmentationFeatures, forward_features
from tests.fixtures.cli import REPO

C = 4
CONTEXT_MODULE = {"DeepLabV3Plus": "aspp", "PSPNet": "psp", "DeepLabV3": None}  # None: the whole decoder


def small_net(arch: str) -> tuple[nn.Module, Tensor]:
    """A randomly initialised ``arch`` in eval mode and an input it takes."""
    torch.manual_seed(0)
    if arch == "DPT":  # smp's DPT needs a ViT encoder
        return build_smp_net(arch, "tu-vit_tiny_patch16_224", C, dynamic_img_size=True).eval(), torch.randn(
            1, 3, 224, 224
        )
    return build_smp_net(arch, "resnet18", C).eval(), torch.randn(2, 3, 128, 128)


def capture_output(module: nn.Module) -> list[Tensor]:
    """The outputs of ``module`` in the next forwards (a hook in the test only: the reference)."""
    seen: list[Tensor] = []
    module.register_forward_hook(lambda m, inputs, output: seen.append(output))
    return seen


@pytest.mark.parametrize("arch", available_architectures())
def test_features_logits_equal_the_plain_forward(arch: str):
    net, image = small_net(arch)
    head_inputs: list[Tensor] = []
    net.segmentation_head.register_forward_pre_hook(lambda m, inputs: head_inputs.append(inputs[0]))
    context_name = CONTEXT_MODULE.get(arch, "")
    contexts = capture_output(getattr(net.decoder, context_name) if context_name else net.decoder)
    with torch.no_grad():
        reference = net(image)
        features = forward_features(net, image)
    assert torch.equal(features.logits, reference)
    assert torch.equal(features.decoder, head_inputs[0])  # the segmentation head's input in the real forward
    assert features.encoder and all(isinstance(feature, Tensor) for feature in features.encoder)
    if arch in CONTEXT_MODULE:
        assert torch.equal(features.context, contexts[0])  # the ASPP / pyramid pooling output of the real forward
    else:
        assert features.context is None


def test_context_is_what_issue_12_reads():
    """DeepLabV3+: ASPP output at stride 16 and the stride-4 encoder features; PSPNet: the pyramid pooling output."""
    net, image = small_net("DeepLabV3Plus")
    features = forward_features(net, image)
    assert features.context.shape == (2, 256, 8, 8) and features.encoder[2].shape == (2, 64, 32, 32)
    psp, image = small_net("PSPNet")
    pooled = forward_features(psp, image).context
    deepest = psp.encoder.out_channels[-1]
    assert pooled.shape[1] == deepest + 4 * (deepest // 4)  # the deepest features and their 4 pooled branches


def test_decoders_taking_unpacked_features_are_called_that_way():
    """smp 0.4 decoders take ``decoder(*features)``, later ones one list: the same logits either way."""
    net, image = small_net("Unet")
    parameters = inspect.signature(type(net.decoder).forward).parameters.values()
    installed_takes_a_list = not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)

    class Unpacked(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *features: Tensor) -> Tensor:
            return self.inner(list(features)) if installed_takes_a_list else self.inner(*features)

    with torch.no_grad():
        reference = net(image)
        net.decoder = Unpacked(net.decoder)
        assert torch.equal(forward_features(net, image).logits, reference)


def test_other_nets_give_their_logits_and_refuse_boxes():
    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, C, 1)

        def forward(self, image: Tensor) -> dict[str, Tensor]:
            return {"out": self.conv(image)}

    net, image = DictNet(), torch.randn(1, 3, 8, 8)
    features = forward_features(net, image)
    assert torch.equal(features.logits, net.conv(image))
    assert features.encoder == [] and features.decoder is None and features.context is None
    with pytest.raises(ValueError, match="does not read box masks"):
        forward_features(net, image, torch.zeros(1, C, 8, 8))


def old_box_attention_forward(net: BoxAttentionNet, image: Tensor, boxes: Tensor) -> Tensor:
    """The removed implementation: a forward hook on the smp encoder gating its output."""

    def gate(module: nn.Module, inputs: object, features: list[Tensor]) -> list[Tensor]:
        features = list(features)
        for i in net.stages:
            feature = features[i]
            features[i] = feature * net.box_encoder[str(i)](boxes.to(feature.dtype), tuple(feature.shape[-2:]))
        return features

    handle = net.net.encoder.register_forward_hook(gate)
    try:
        return net.net(image)
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ["DeepLabV3Plus", "Unet", "PSPNet"])
def test_box_attention_equals_the_old_hook_path(arch: str):
    torch.manual_seed(0)
    net = BoxAttentionNet(C, arch, "resnet18").eval()
    image, boxes = torch.randn(2, 3, 64, 64), (torch.rand(2, C, 64, 64) > 0.5).float()
    with torch.no_grad():
        features = net.forward_features(image, boxes)
        assert torch.equal(features.logits, old_box_attention_forward(net, image, boxes))
        assert torch.equal(net(image, boxes), features.logits)
        plain = forward_features(net.net, image)
    gated = [i for i in range(len(features.encoder)) if not torch.equal(features.encoder[i], plain.encoder[i])]
    assert tuple(gated) == net.stages  # the encoder field holds what the decoder read: the gated maps
    with pytest.raises(ValueError, match="no box mask"):
        net.forward_features(image)


def test_module_features_and_logits_equal_the_forward_at_any_size():
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=C, arch="FPN", encoder_name="resnet18").eval()
    image = torch.randn(1, 3, 70, 45)  # padded to 96 x 64 for the net
    features = module.forward_features(image)
    assert features.logits.shape[-2:] == (96, 64)
    with torch.no_grad():
        padded = nn.functional.pad(image, (0, 19, 0, 26))
        assert torch.equal(features.logits, module.net(padded))
    assert torch.equal(module.output_logits(features, image), module(image))
    assert module(image).shape == (1, C, 70, 45)


def test_aux_head_reads_the_stride16_features_of_the_net_it_runs():
    """The head reads ``encoder[-2]`` of the net the module runs, also of a net set after construction."""
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=C, arch="DeepLabV3Plus", encoder_name="resnet18", aux_weight=0.4)
    module.net = build_smp_net("DeepLabV3Plus", "resnet18", C)  # e.g. a trained net put in after construction
    module.eval()
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": torch.randint(0, C, (2, 64, 64))}
    encoded = capture_output(module.net.encoder)
    aux = module.aux_loss(batch)  # runs the net on the batch
    assert aux is not None
    head_logits = nn.functional.interpolate(module.aux_head(encoded[-1][-2]), size=(64, 64), mode="bilinear")
    assert aux.item() == pytest.approx(nn.functional.cross_entropy(head_logits, batch["mask"]).item(), rel=1e-6)
    features = module.batch_features(batch)  # the training step's path: the features handed over
    assert module.aux_loss(batch, features).item() == pytest.approx(aux.item(), rel=1e-6)
    encoder = [*features.encoder[:-2], features.encoder[-2] * 0, features.encoder[-1]]
    changed = SegmentationFeatures(features.logits, encoder)
    assert module.aux_loss(batch, changed).item() != pytest.approx(aux.item())  # it reads that map


def test_ancillary_aux_head_reads_the_gated_features():
    torch.manual_seed(0)
    module = AncillaryModule(num_classes=C, encoder_name="resnet18", aux_weight=0.4, attention_stages=(4,)).eval()
    batch = {
        "image": torch.randn(2, 3, 64, 64),
        "mask": torch.randint(0, C, (2, 64, 64)),
        "boxes": (torch.rand(2, C, 64, 64) > 0.5).float(),
    }
    features = module.batch_features(batch)
    ungated = forward_features(module.net.net, batch["image"])
    assert not torch.equal(features.encoder[-2], ungated.encoder[-2])  # stage 4 = encoder[-2] is gated
    expected = nn.functional.interpolate(module.aux_head(features.encoder[-2]), size=(64, 64), mode="bilinear")
    ce = nn.functional.cross_entropy(expected, batch["mask"])
    assert module.aux_loss(batch, features).item() == pytest.approx(ce.item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs the box mask"):
        module(batch["image"])


def test_uncertainty_head_reads_the_decoder_features_of_the_net_it_runs():
    torch.manual_seed(0)
    kwargs = {"num_classes": C, "arch": "FPN", "encoder_name": "resnet18", "pixel_loss": "kl", "reweighting": "none"}
    module = ARMModule(**kwargs, net_kwargs={"decoder_segmentation_channels": 32}).eval()
    module.net = build_smp_net("FPN", "resnet18", C, decoder_segmentation_channels=32).eval()  # set after construction
    head_inputs: list[Tensor] = []
    module.net.segmentation_head.register_forward_pre_hook(lambda m, inputs: head_inputs.append(inputs[0]))
    image = torch.randn(2, 3, 64, 64)
    log_s = module.log_uncertainty(module(image))
    expected = nn.functional.interpolate(module.uncertainty_head(head_inputs[-1]), size=(64, 64), mode="bilinear")
    assert torch.allclose(log_s, expected)
    assert torch.equal(forward_features(module.net, image).decoder, head_inputs[-1])


def test_no_forward_hooks_in_the_package():
    pattern = re.compile(r"register_(full_backward_|forward_pre_|forward_)hook|_forward_hooks|_forward_pre_hooks")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("src", "callbacks", "datamodules")
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
