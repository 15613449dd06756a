"""Frozen parts (eval always, no gradient, outside the optimizer) and reading checkpoints with tensors only."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from segmend.checkpoints import read_weights
from segmend.cli import main
from segmend.frozen import FrozenModel, trainable_parameters
from segmend.modules import SegmentationModule, SelfCorrectionModule
from segmend.nets.factory import build_smp_net
from segmend.runs import fit
from tests.fixtures.cli import REPO
from tests.fixtures.data import tiny_data_args
from tests.fixtures.trainer import CPU_TRAINER

C = 4
NET = {"arch": "DeepLabV3Plus", "encoder_name": "tu-mobilenetv3_small_050", "net_kwargs": {"decoder_channels": 16}}


class WithFrozenPart(SegmentationModule):
    """A SegmentationModule owning a frozen smp net with BatchNorm and Dropout (like error-pixel's semantic branch)."""

    def configure_models(self) -> None:
        super().configure_models()
        torch.manual_seed(1)
        self.semantic = FrozenModel(build_smp_net("PSPNet", "resnet18", self.num_classes))

    def compute_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        frozen = self.semantic(batch["image"])  # (B, C, H, W), no graph
        return super().compute_loss(logits + frozen, batch)


def owner() -> WithFrozenPart:
    torch.manual_seed(0)
    return WithFrozenPart(num_classes=C, arch="FPN", encoder_name="resnet18")


def batch() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"image": torch.randn(2, 3, 64, 64, generator=generator), "mask": torch.randint(0, C, (2, 64, 64))}


def test_frozen_part_stays_in_eval_mode_when_its_owner_trains():
    module = owner().train()
    layers = list(module.semantic.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in layers) and any(isinstance(m, nn.Dropout2d) for m in layers)
    assert module.net.training and not any(m.training for m in layers)
    module.semantic.train()  # also when asked directly
    module.unfreeze()  # LightningModule.unfreeze: requires_grad_(True) and train() on everything
    assert not any(m.training for m in module.semantic.modules())
    before = {k: v.clone() for k, v in module.semantic.state_dict().items()}
    module.shared_step(batch(), "train").backward()  # a training step of the owner
    for key, value in module.semantic.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics unchanged


def test_frozen_part_is_outside_the_optimizer_and_gets_no_gradient():
    module = owner().train()
    frozen_ids = {id(p) for p in module.semantic.parameters()}
    assert frozen_ids and not any(p.requires_grad for p in module.semantic.parameters())
    optimizer = module.build_optimizer()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & frozen_ids
    assert optimised == {id(p) for p in module.parameters()} - frozen_ids
    assert {id(p) for p in trainable_parameters(module)} == optimised
    module.unfreeze()  # requires_grad on again: still no gradient through the frozen forward
    module.shared_step(batch(), "train").backward()
    assert all(p.grad is None for p in module.semantic.parameters())
    assert any(p.grad is not None for p in module.net.parameters())


def test_selfcorrection_ancillary_stays_frozen_when_called_directly():
    module = SelfCorrectionModule(num_classes=C, correction="linear", **NET)
    module.ancillary.train()
    assert not any(m.training for m in module.ancillary.modules())
    groups = module.parameter_groups()
    assert not {id(p) for g in groups for p in g["params"]} & {id(p) for p in module.ancillary.parameters()}


def test_state_dicts_written_before_the_wrapper_load():
    """Checkpoints from before FrozenModel have ``ancillary.<key>``, not ``ancillary.module.<key>``."""
    module = SelfCorrectionModule(num_classes=C, correction="linear", **NET)
    state = module.state_dict()
    old = {key.replace("ancillary.module.", "ancillary.", 1): value.clone() + 1 for key, value in state.items()}
    assert any(key.startswith("ancillary.net.") for key in old)
    module.load_state_dict(old)
    for key, value in module.state_dict().items():
        assert torch.equal(value, old[key.replace("ancillary.module.", "ancillary.", 1)]), key


# ---------------------------------------------------------------- checkpoints


def fitted_checkpoints(tmp_path: Path, tiny_synthetic, data_cache: Path) -> dict[str, Path]:
    """Our checkpoints: a full one (optimizer, loops, callbacks), a runner's weights-only one, a CLI run's."""
    kwargs = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "enable_progress_bar": False}
    module = SegmentationModule(num_classes=tiny_synthetic.num_classes, **NET)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "full", save_last=True)
    Trainer(logger=False, callbacks=[checkpoint], enable_model_summary=False, **kwargs).fit(module, tiny_synthetic)
    fit(SegmentationModule(num_classes=tiny_synthetic.num_classes, **NET), tiny_synthetic, tmp_path / "run", **kwargs)
    config = REPO / "configs" / "baseline_synthetic.yaml"
    args = [
        "-c",
        str(config),
        f"--trainer.default_root_dir={tmp_path / 'cli'}",
        *CPU_TRAINER,
        *tiny_data_args(data_cache),
    ]
    args += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    args += ["--model.init_args.encoder_name=tu-mobilenetv3_small_050", "--trainer.enable_progress_bar=false"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path / 'cli'}"] if "WandbLogger" in config.read_text() else []
    main(["fit", *args])
    return {
        "full": tmp_path / "full" / "last.ckpt",
        "runner": tmp_path / "run" / "fit" / "final.ckpt",
        "cli": tmp_path / "cli" / "checkpoints" / "last.ckpt",
    }


def test_our_checkpoints_load_with_tensors_only_and_rebuild_the_net(tmp_path: Path, tiny_synthetic, data_cache: Path):
    paths = fitted_checkpoints(tmp_path, tiny_synthetic, data_cache)
    full = torch.load(paths["full"], map_location="cpu", weights_only=True)
    assert {"optimizer_states", "loops", "callbacks", "hyper_parameters"} <= set(full)
    assert "_class_path" in torch.load(paths["cli"], map_location="cpu", weights_only=True)["hyper_parameters"]
    image = torch.randn(1, 3, 64, 64)
    for kind, path in paths.items():
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], kind
        weights = read_weights(path)
        frozen = FrozenModel.from_checkpoint(path)  # the net rebuilt from the hyper-parameters
        assert frozen.module.encoder.name == "mobilenetv3_small_050", kind
        for key, value in frozen.module.state_dict().items():
            assert torch.equal(value, weights.state_dict[key]), (kind, key)
        features = frozen.forward_features(image)  # what error-pixel prediction reads from its semantic branch
        assert features.context is not None and features.logits.shape[1] == tiny_synthetic.num_classes
        assert not features.logits.requires_grad
    whole = read_weights(paths["full"], prefix="")
    assert set(whole.state_dict) == set(full["state_dict"])


class Payload:
    """Unpickling it calls :func:`record_call` (what a malicious checkpoint would do with ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (record_call, (str(self.marker),))


def record_call(marker: str) -> None:
    Path(marker).write_text("code from the checkpoint ran")


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path: Path):
    marker = tmp_path / "ran"
    ancillary = SelfCorrectionModule(num_classes=C, **NET).build_ancillary_module()
    state = {
        f"net.{k}": v for k, v in ancillary.net.state_dict().items()
    }  # weights that fit: only the payload is wrong
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"arch": "DeepLabV3Plus", "x": Payload(marker)}}, evil)
    legacy = tmp_path / "legacy.ckpt"
    with legacy.open("wb") as file:
        pickle.dump({"state_dict": {}, "x": Payload(marker)}, file)
    with pytest.raises(ValueError, match=r"evil\.ckpt was refused.*record_call"):
        SelfCorrectionModule(num_classes=C, correction="linear", ancillary_checkpoint=str(evil), **NET)
    with pytest.raises(ValueError, match=r"evil\.ckpt was refused"):
        FrozenModel.from_checkpoint(evil)
    with pytest.raises(ValueError, match=r"legacy\.ckpt was refused"):
        read_weights(legacy)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # what the refused call would have done
    assert marker.exists()


def test_prefix_and_key_mismatches_name_the_file_and_the_keys(tmp_path: Path):
    net = build_smp_net("FPN", "resnet18", C)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {f"sc_net.{k}": v for k, v in net.state_dict().items()}}, other)
    with pytest.raises(ValueError, match=r"other\.ckpt has no weights under the prefix 'net\.'.*'sc_net\.'"):
        FrozenModel(net).load_checkpoint(other)
    unet = tmp_path / "unet.ckpt"
    state = {f"net.{k}": v for k, v in build_smp_net("Unet", "resnet18", C).state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"arch": "Unet", "num_classes": C}}, unet)
    with pytest.raises(ValueError, match=r"unet\.ckpt does not hold the weights of FPN.*missing keys.*'arch': 'Unet'"):
        FrozenModel(net).load_checkpoint(unet)
    plain = tmp_path / "plain.pt"  # a net's own state dict, no prefix
    torch.save(net.state_dict(), plain)
    frozen = FrozenModel(build_smp_net("FPN", "resnet18", C))
    assert read_weights(plain).prefix == "" and frozen.load_checkpoint(plain).hyper_parameters == {}
    assert all(
        torch.equal(a, b) for a, b in zip(frozen.module.state_dict().values(), net.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match=r"plain\.pt: the hyper-parameters \[\] lack.*build="):
        FrozenModel.from_checkpoint(plain)
    with pytest.raises(ValueError, match=r"nope\.ckpt does not exist"):
        read_weights(tmp_path / "nope.ckpt")
