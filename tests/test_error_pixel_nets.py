"""GAU, the error-prediction and detail branches, fusion (Eq. 5) and per-image error mass."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from segmend.nets.error_pixel import DetailBranch, ErrorBranch, error_mask, error_mass, fuse, select_skips
from segmend.nets.features import forward_features
from segmend.nets.gau import GAU, GAUBlock, group_norm


def test_gau_merges_coarse_into_fine_with_channel_attention():
    torch.manual_seed(0)
    gau = GAU(high_channels=16, low_channels=8, out_channels=32, groups=8)
    high, low = torch.randn(2, 16, 4, 4), torch.randn(2, 8, 16, 12)
    out = gau(high, low)
    assert out.shape == (2, 32, 16, 12)
    weights = torch.sigmoid(gau.attention(high.mean(dim=(2, 3), keepdim=True)))
    assert weights.shape == (2, 32, 1, 1) and bool(((weights > 0) & (weights < 1)).all())
    # With the low-level path silenced, the output is the upsampled high-level projection alone.
    torch.nn.init.zeros_(gau.low[0].weight)
    gau.low[1].bias.data.zero_()
    up = torch.nn.functional.interpolate(gau.high(high), size=(16, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(gau(high, low), up)


def test_gau_block_and_groupnorm_arguments_are_checked():
    block = GAUBlock(16, 8, 32, convs=2, groups=8)
    assert len(block.convs) == 2
    assert block(torch.randn(1, 16, 2, 2), torch.randn(1, 8, 8, 8)).shape == (1, 32, 8, 8)  # batch of one works
    with pytest.raises(ValueError, match="high-level input should be \\(B, 16, h, w\\)"):
        block(torch.randn(1, 15, 2, 2), torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match="divides the channels; got 48 channels and 32 groups"):
        group_norm(48, 32)
    with pytest.raises(ValueError, match="convs >= 0"):
        GAUBlock(16, 8, 32, convs=-1, groups=8)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_error_branch_gives_one_logit_per_image_pixel(stride):
    torch.manual_seed(0)
    branch = ErrorBranch(
        num_classes=5, high_channels=24, width=32, prob_channels=16, image_channels=16, stride=stride, groups=8
    )
    image = torch.randn(2, 3, 32, 40)
    probs = torch.randn(2, 5, 16, 20).softmax(dim=1)  # coarser than the image: resized inside
    out = branch(probs, torch.randn(2, 24, 2, 3), image)
    assert out.shape == (2, 1, 32, 40)
    out.mean().backward()
    assert all(p.grad is not None for p in branch.parameters())


def test_error_branch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="power of 2"):
        ErrorBranch(5, 24, stride=3)
    branch = ErrorBranch(5, 24, width=32, prob_channels=32, image_channels=32)
    with pytest.raises(ValueError, match="probabilities should be \\(B, 5, h, w\\)"):
        branch(torch.rand(1, 4, 8, 8), torch.randn(1, 24, 2, 2), torch.randn(1, 3, 8, 8))


def test_detail_branch_decodes_class_logits_from_high_level_and_skips():
    torch.manual_seed(0)
    branch = DetailBranch(num_classes=4, high_channels=24, skip_channels=(40, 20, 10), widths=(32, 16, 8), groups=8)
    high = torch.randn(2, 24, 4, 4)
    skips = [torch.randn(2, 40, 8, 8), torch.randn(2, 20, 16, 16), torch.randn(2, 10, 32, 32)]
    assert branch(high, skips).shape == (2, 4, 32, 32)
    logits = branch(high, skips, size=(64, 64))
    assert logits.shape == (2, 4, 64, 64)
    logits.mean().backward()
    assert all(p.grad is not None for p in branch.parameters())
    with pytest.raises(ValueError, match="built for 3 skip features"):
        branch(high, skips[:2])
    with pytest.raises(ValueError, match="one width per skip feature"):
        DetailBranch(4, 24, skip_channels=(40, 20), widths=(32, 16, 8))
    with pytest.raises(ValueError, match="at least one skip"):
        DetailBranch(4, 24, skip_channels=(), widths=())


def test_select_skips_takes_the_deepest_map_per_finer_resolution():
    # DeepLabV3+ with output stride 16: the last two encoder stages share stride 16 with the ASPP output.
    deeplab = [(2, 3, 64, 64), (2, 64, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 4, 4)]
    assert select_skips(deeplab, (2, 256, 4, 4)) == (3, 2, 1)
    assert select_skips(deeplab, (2, 256, 4, 4), count=1) == (3,)
    # PSPNet (encoder depth 3): the image at index 0 is never a skip, so only two qualify.
    pspnet = deeplab[:4]
    assert select_skips(pspnet, (2, 256, 8, 8), count=2) == (2, 1)
    with pytest.raises(ValueError, match="Only 2 encoder feature maps are finer.*count=2"):
        select_skips(pspnet, (2, 256, 8, 8))
    # Zero-channel placeholders (smp's transformer encoders) are skipped.
    mit = [(2, 3, 64, 64), (2, 0, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 160, 4, 4), (2, 256, 2, 2)]
    assert select_skips(mit, (2, 256, 2, 2)) == (4, 3, 2)


def test_branches_run_on_the_features_of_an_smp_deeplabv3plus():
    torch.manual_seed(0)
    net = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=3).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = forward_features(net, image)
    skips = select_skips([f.shape for f in features.encoder], features.context.shape)
    error = ErrorBranch(3, features.context.shape[1], width=32, prob_channels=32, image_channels=32)
    detail = DetailBranch(3, features.context.shape[1], [features.encoder[i].shape[1] for i in skips], (64, 32, 32))
    error_logits = error(features.logits.softmax(dim=1), features.context, image)
    detail_logits = detail(features.context, [features.encoder[i] for i in skips], size=image.shape[-2:])
    assert error_logits.shape == (1, 1, 64, 64) and detail_logits.shape == (1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bool(error(features.logits.softmax(dim=1), features.context, image).isfinite().all())


def test_fuse_is_eq5_on_a_hand_built_case():
    # One image, 2 x 2 pixels, 3 classes. Error probabilities 0.9 and 0.71 pass t = 0.7; 0.7 and 0.1 do not.
    semantic = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    detail = torch.tensor([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    to_map = lambda rows: rows.T.reshape(1, 3, 2, 2)  # noqa: E731
    error_prob = torch.tensor([[[0.9, 0.7], [0.1, 0.71]]])
    fused = fuse(to_map(semantic), to_map(detail), error_prob.unsqueeze(1), threshold=0.7)
    expected = to_map(torch.stack([detail[0], semantic[1], semantic[2], detail[3]]))
    torch.testing.assert_close(fused, expected)
    # Eq. 5 written out, E * P_db + (1 - E) * P_sb, and the fused labels.
    e = (error_prob > 0.7).float().unsqueeze(1)
    torch.testing.assert_close(fused, e * to_map(detail) + (1 - e) * to_map(semantic))
    assert fused.argmax(dim=1).tolist() == [[[2, 1], [2, 1]]]
    with pytest.raises(ValueError, match="resize the error map"):
        fuse(to_map(semantic), to_map(detail), torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        error_mask(error_prob, threshold=1.5)


def test_error_mass_per_image():
    error_prob = torch.tensor([[[0.1, 0.9], [0.7, 0.8]], [[0.0, 0.0], [0.0, 0.2]]]).unsqueeze(1)
    mass = error_mass(error_prob, threshold=0.7)
    torch.testing.assert_close(mass.mean, torch.tensor([0.625, 0.05]))
    torch.testing.assert_close(mass.area, torch.tensor([0.5, 0.0]))  # 0.7 is not above t = 0.7
    bf16 = error_mass(error_prob.bfloat16())
    assert bf16.mean.dtype == torch.float32 and bf16.area.dtype == torch.float32
