"""Variants of one seed start from the same network and go on with the same random stream."""

from __future__ import annotations

import torch
from lightning.pytorch import seed_everything

from segmend.modules import ARMModule, SegmentationModule

NET = {"num_classes": 3, "arch": "FPN", "encoder_name": "resnet18", "encoder_weights": None, "aux_weight": 0.4}


def built(module_class: type, seed: int, **kwargs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    seed_everything(seed, verbose=False)
    module = module_class(**NET, **kwargs)
    return module.state_dict(), torch.get_rng_state()


def test_ce_and_arm_of_one_seed_share_net_aux_head_and_global_stream():
    ce, ce_rng = built(SegmentationModule, 3)
    arm, arm_rng = built(ARMModule, 3, reweighting="arm")
    shared = [key for key in ce if key.startswith(("net.", "aux_head."))]
    assert any(key.startswith("aux_head.") for key in shared)
    assert all(torch.equal(ce[key], arm[key]) for key in shared)
    assert torch.equal(ce_rng, arm_rng)  # ARM's parameters were drawn from a stream of their own
    assert any(key.startswith("weight_map.") for key in arm)


def test_the_added_modules_still_depend_on_the_seed():
    first, _ = built(ARMModule, 3, reweighting="arm")
    again, _ = built(ARMModule, 3, reweighting="arm")
    other, _ = built(ARMModule, 4, reweighting="arm")
    arm_keys = [key for key in first if key.startswith("weight_map.")]
    assert all(torch.equal(first[key], again[key]) for key in arm_keys)
    assert not all(torch.equal(first[key], other[key]) for key in arm_keys)
    assert not torch.equal(first["aux_head.0.weight"], other["aux_head.0.weight"])
