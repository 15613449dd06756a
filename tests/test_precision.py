"""Precision chosen by the hardware, and what every method keeps in fp32 under bf16 autocast."""

from __future__ import annotations

import csv
import functools
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

import segmend.cli
from segmend.cli import SegmendCLI, main
from segmend.losses import confidence_map, kl_uncertainty_map
from segmend.modules import ARMModule, SegmentationModule
from segmend.modules.selfcorr import SelfCorrectionModule
from segmend.precision import CPU_BF16_FLAGS, auto_precision, cpu_flags
from tests.fixtures.cli import REPO, data_args
from tests.fixtures.data import tiny_data_args
from tests.fixtures.trainer import CPU_TRAINER

BF16_CPU = bool(set(CPU_BF16_FLAGS) & cpu_flags())
DEFAULT_PRECISION = "bf16-mixed" if BF16_CPU else "32-true"
NUM_CLASSES = 6


def bf16_autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------- auto_precision


def fake_cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\n"
        f"flags\t\t: fpu vme sse sse2 avx avx2 avx512f {flags}\n\n"
    )
    return path


@pytest.mark.parametrize(
    ("flags", "expected", "named"),
    [
        ("amx_bf16 amx_tile amx_int8", "bf16-mixed", "amx_bf16"),
        ("avx512_bf16 avx512_vnni", "bf16-mixed", "avx512_bf16"),
        ("avx512_vnni", "32-true", "no native bf16"),
    ],
    ids=["amx", "avx512_bf16", "neither"],
)
def test_auto_precision_follows_the_cpu_flags(tmp_path: Path, flags: str, expected: str, named: str):
    choice = auto_precision("cpu", cpuinfo=fake_cpuinfo(tmp_path, flags))
    assert choice.precision == expected
    assert named in choice.reason


def test_auto_precision_without_cpuinfo_is_fp32(tmp_path: Path):
    assert auto_precision("cpu", cpuinfo=tmp_path / "missing").precision == "32-true"


# ---------------------------------------------------------------------- the CLI picks the precision


def cli_args(config: Path, run_dir: Path, data_cache: Path, precision: str | None = None) -> list[str]:
    """A short CPU run of a shipped config with a CSV logger; the precision left to the default unless given."""
    trainer = [a for a in CPU_TRAINER if not a.startswith("--trainer.precision")]
    if precision is not None:
        trainer.append(f"--trainer.precision={precision}")
    csv_logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}}
    return [
        "-c",
        str(config),
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        f"--trainer.logger={yaml.safe_dump(csv_logger, default_flow_style=True).strip()}",
        *trainer,
        *data_args(config, data_cache),
    ]


def logged_values(run_dir: Path) -> dict[str, list[float]]:
    """Every value of every metrics.csv under ``run_dir``, by key."""
    values: dict[str, list[float]] = {}
    for path in run_dir.rglob("metrics.csv"):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if value not in ("", None) and key not in ("epoch", "step"):
                        values.setdefault(key, []).append(float(value))
    return values


SELFCORR_SHORT = [
    "--model.init_args.ancillary_epochs=1",
    "--model.init_args.pretrain_epochs=1",
    "--model.init_args.encoder_name=tu-mobilenetv3_small_050",
]


@pytest.mark.parametrize(
    ("config", "extra", "trainers"),
    [("baseline_synthetic", [], 1), ("arm_synthetic_coarse", [], 1), ("selfcorr_synthetic", SELFCORR_SHORT, 4)],
    ids=["baseline_synthetic", "arm_synthetic_coarse", "selfcorr_synthetic"],
)
def test_synthetic_configs_train_at_the_precision_the_hardware_picks(
    config: str, extra: list[str], trainers: int, tmp_path: Path, data_cache: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        main(["fit", *cli_args(REPO / "configs" / f"{config}.yaml", tmp_path, data_cache), *extra])
    assert f"Precision: {DEFAULT_PRECISION}, chosen by the hardware" in caplog.text
    if BF16_CPU:  # every Trainer (the CLI's and, for self-correction, one per stage) runs bf16 autocast
        assert caplog.text.count("Using bfloat16 Automatic Mixed Precision (AMP)") == trainers
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved
    for path in saved:
        assert yaml.safe_load(path.read_text())["trainer"]["precision"] == DEFAULT_PRECISION, path
    logged = logged_values(tmp_path)
    for key in ("train/loss", "val/loss", "val/mIoU", "val/aAcc", "val/mAcc"):
        assert logged.get(key), (key, sorted(logged))
    assert all(math.isfinite(v) for values in logged.values() for v in values), logged
    if config == "selfcorr_synthetic":
        assert len(list(tmp_path.rglob("metrics.csv"))) >= 3  # one logger per stage


def quick_cli(tmp_path: Path, data_cache: Path, *args: str, config: str = "baseline_synthetic.yaml") -> SegmendCLI:
    base = ["-c", str(REPO / "configs" / config), f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    trainer = [a for a in CPU_TRAINER if not a.startswith("--trainer.precision")]
    return SegmendCLI(args=[*base, *trainer, *tiny_data_args(data_cache), *args], run=False)


def test_explicit_precision_on_the_command_line_wins(tmp_path: Path, data_cache: Path, caplog, monkeypatch):
    amx = fake_cpuinfo(tmp_path, "amx_bf16")
    monkeypatch.setattr(segmend.cli, "auto_precision", functools.partial(auto_precision, cpuinfo=amx))
    with caplog.at_level(logging.INFO):
        cli = quick_cli(tmp_path, data_cache, "--trainer.precision=32-true")
    assert cli.trainer.precision == "32-true"
    assert "Precision: 32-true, set by the config" in caplog.text


def test_explicit_precision_in_the_config_file_wins(tmp_path: Path, data_cache: Path, monkeypatch):
    amx = fake_cpuinfo(tmp_path, "amx_bf16")
    monkeypatch.setattr(segmend.cli, "auto_precision", functools.partial(auto_precision, cpuinfo=amx))
    config = yaml.safe_load((REPO / "configs" / "baseline_synthetic.yaml").read_text())
    config["trainer"]["precision"] = "32-true"
    (tmp_path / "fp32.yaml").write_text(yaml.safe_dump(config))
    cli = SegmendCLI(
        args=["-c", str(tmp_path / "fp32.yaml"), "--trainer.logger=false", "--trainer.accelerator=cpu"], run=False
    )
    assert cli.trainer.precision == "32-true"


@pytest.mark.parametrize(("flags", "expected"), [("amx_bf16", "bf16-mixed"), ("avx2", "32-true")])
def test_cli_default_follows_the_cpu_flags_into_every_stage_trainer(
    flags: str, expected: str, tmp_path: Path, data_cache: Path, caplog, monkeypatch
):
    cpuinfo = fake_cpuinfo(tmp_path, flags)
    monkeypatch.setattr(segmend.cli, "auto_precision", functools.partial(auto_precision, cpuinfo=cpuinfo))
    with caplog.at_level(logging.INFO):
        cli = quick_cli(tmp_path, data_cache, config="selfcorr_synthetic.yaml")
    assert cli.config.trainer.precision == expected
    assert cli.trainer.precision == expected
    assert cli.stage_trainer("ancillary").precision == expected
    assert f"Precision: {expected}, chosen by the hardware: the CPU has" in caplog.text


# ---------------------------------------------------------------------- fp32 where it matters under bf16


class TinyNet(nn.Module):
    """A conv body and an smp-style ``segmentation_head`` (what the KL loss's uncertainty head reads)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.segmentation_head = nn.Conv2d(8, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.body(image))


def make_batch(seed: int = 0, size: int = 16) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, NUM_CLASSES, (2, size, size), generator=generator)
    mask[:, :2] = 255
    boxes = (torch.rand(2, NUM_CLASSES, size, size, generator=generator) > 0.5).float()
    return {
        "image": torch.randn(2, 3, size, size, generator=generator),
        "mask": mask,
        "boxes": boxes,
        "has_mask": torch.tensor([True, False]),
    }


def arm_module(**kwargs) -> ARMModule:
    torch.manual_seed(0)
    module = ARMModule(num_classes=NUM_CLASSES, net=TinyNet(), isolation_fraction=0.0, **kwargs)
    with torch.no_grad():  # a mapping with some shape, and a non-zero uncertainty head
        for parameter in module.weight_map.parameters():
            parameter.add_(torch.randn(parameter.shape))
        if module.uncertainty_head is not None:
            for parameter in module.uncertainty_head[-1].parameters():
                parameter.copy_(0.3 * torch.randn(parameter.shape))
    return module.train()


def selfcorr_module(correction: str, monkeypatch: pytest.MonkeyPatch) -> SelfCorrectionModule:
    torch.manual_seed(0)
    module = SelfCorrectionModule(
        num_classes=NUM_CLASSES,
        correction=correction,
        arch="Unet",
        encoder_name="resnet18",
        net_kwargs={"decoder_channels": (16, 16, 16, 16, 16)},
        ancillary_net_kwargs={"decoder_channels": (16, 16, 16, 16, 16)},
        alpha_start=2.0,
        alpha_end=1.0,
    )
    module.ancillary_ready.fill_(True)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    return module.train()


def relative_difference(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


def test_forward_gives_fp32_logits_under_autocast_and_fp64_stays_fp64():
    module = SegmentationModule(num_classes=NUM_CLASSES, net=TinyNet())
    image = make_batch()["image"]
    with bf16_autocast():
        logits = module(image)
        probs = module.predict_step({"image": image}, 0)["probs"]
    assert logits.dtype == torch.float32 and probs.dtype == torch.float32
    assert module.double()(image.double()).dtype == torch.float64


def test_ancillary_logits_are_fp32_under_autocast(monkeypatch: pytest.MonkeyPatch):
    module = selfcorr_module("linear", monkeypatch)
    batch = make_batch(size=32)
    with bf16_autocast():
        ancillary = module.ancillary_logits(batch["image"], batch["boxes"])
    assert ancillary.dtype == torch.float32


ARM_VARIANTS = {
    "ce": {},
    "gce": {"pixel_loss": "gce"},
    "kl": {"pixel_loss": "kl"},
    "kl_uncertainty": {"pixel_loss": "kl", "confidence": "uncertainty"},
    "per_pixel_arm": {"weight_table_size": None},
    "linear": {"reweighting": "linear"},
    "ohem": {"reweighting": "ohem", "ohem_min_kept": 50},
}


@pytest.mark.parametrize("variant", ARM_VARIANTS, ids=str)
def test_arm_loss_is_fp32_and_equals_the_fp32_computation(variant: str):
    module = arm_module(**ARM_VARIANTS[variant])
    batch = make_batch()
    with bf16_autocast():
        logits = module(batch["image"])  # the net in bf16, as in a bf16-mixed fit
        loss = module.compute_loss(logits, batch)
    reference = module.compute_loss(logits.detach().float(), batch)  # same logits, autocast off
    assert loss.dtype == torch.float32
    assert relative_difference(loss, reference) < 1e-6


@pytest.mark.parametrize("table", [1025, None], ids=["table", "per_pixel"])
def test_arm_confidence_and_weights_are_fp32_and_equal_the_fp32_computation(table: int | None):
    module = arm_module(weight_table_size=table)
    batch = make_batch()
    valid = batch["mask"] != 255
    with bf16_autocast():
        logits = module(batch["image"])
        confidence = module.confidence(logits)
        weights = module.pixel_weights(confidence, valid)
    fp32_logits = logits.detach().float()
    ref_confidence = module.confidence(fp32_logits)
    ref_weights = module.pixel_weights(ref_confidence, valid)
    assert confidence.dtype == torch.float32 and weights.dtype == torch.float32
    assert torch.allclose(confidence, ref_confidence, rtol=0, atol=1e-7)
    assert relative_difference(weights, ref_weights) < 1e-6


def test_kl_log_s_is_fp32_and_equals_the_fp32_computation():
    module = arm_module(pixel_loss="kl")
    batch = make_batch()
    with bf16_autocast():
        logits = module(batch["image"])
        log_s = module.log_uncertainty(logits)
        kl = kl_uncertainty_map(logits, log_s, batch["mask"])
    features = module._uncertainty_tap.features  # the decoder features, bf16 under autocast
    assert features.dtype == torch.bfloat16
    ref_log_s = module.uncertainty_head(features.float())
    ref_kl = kl_uncertainty_map(logits.detach().float(), ref_log_s, batch["mask"])
    assert log_s.dtype == torch.float32 and kl.dtype == torch.float32
    assert log_s.abs().max() > 0.1  # a head that predicts something
    assert relative_difference(log_s, ref_log_s) < 1e-6
    assert relative_difference(kl, ref_kl) < 1e-6


@pytest.mark.parametrize("correction", ["none", "linear", "em_fixed"])
def test_soft_targets_and_selfcorr_loss_are_fp32_and_equal_the_fp32_computation(correction: str, monkeypatch):
    module = selfcorr_module(correction, monkeypatch)
    batch = make_batch(size=32)
    with bf16_autocast():
        logits = module(batch["image"])
        ancillary = module.ancillary_logits(batch["image"], batch["boxes"]) if correction != "em_fixed" else None
        q = module.soft_targets(logits, ancillary, batch["boxes"], alpha=2.0)
        loss = module.compute_loss(logits, batch)
    fp32_ancillary = ancillary.float() if ancillary is not None else None
    ref_q = module.soft_targets(logits.detach().float(), fp32_ancillary, batch["boxes"], alpha=2.0)
    ref_loss = module.compute_loss(logits.detach().float(), batch)  # the ancillary again in fp32
    assert loss.dtype == torch.float32
    if correction == "em_fixed":
        assert torch.equal(q, ref_q)
    else:
        assert q.dtype == torch.float32
        assert torch.allclose(q, ref_q, rtol=0, atol=1e-6)
    # the ancillary net ran in bf16 under autocast, in fp32 for the reference: compare loosely
    assert relative_difference(loss, ref_loss) < (1e-6 if correction == "em_fixed" else 1e-2)


def test_selfcorr_loss_against_given_targets_is_exactly_fp32(monkeypatch: pytest.MonkeyPatch):
    """With q fixed, the cross-entropy against it under autocast equals the fp32 one."""
    from segmend.nets.self_correction import linear_self_correction, soft_cross_entropy

    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, NUM_CLASSES, 16, 16, generator=generator)).bfloat16()
    ancillary = (3 * torch.randn(2, NUM_CLASSES, 16, 16, generator=generator)).bfloat16()
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    with bf16_autocast():
        q = linear_self_correction(logits, ancillary, 2.0)
        loss = soft_cross_entropy(logits, q, valid)
    ref_q = linear_self_correction(logits.float(), ancillary.float(), 2.0)
    ref_loss = soft_cross_entropy(logits.float(), ref_q, valid)
    assert q.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.allclose(q, ref_q, rtol=0, atol=1e-7)
    assert relative_difference(loss, ref_loss) < 1e-6


def test_conv_self_correction_targets_are_fp32(monkeypatch: pytest.MonkeyPatch):
    """The conv self-correction net runs in bf16 like any layer; its q is a softmax of fp32 logits."""
    module = selfcorr_module("conv", monkeypatch)
    batch = make_batch(size=32)
    with bf16_autocast():
        logits = module(batch["image"])
        ancillary = module.ancillary_logits(batch["image"], batch["boxes"])
        q = module.soft_targets(logits, ancillary, batch["boxes"])
        loss = module.compute_loss(logits, batch)
    assert q.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.allclose(q.sum(dim=1), torch.ones(()), atol=1e-6)


def near_uniform_module(**kwargs) -> tuple[ARMModule, torch.Tensor, torch.Tensor]:
    """An ARM module whose net outputs logits ``(delta, 0, ..., 0)``, delta read from the image (exact in bf16).

    Two pixels: delta = 2^-8 and 2^-6, class variances ~1e-7 and ~1e-5, confidences within
    1e-4 of -1 (bf16 resolves only 0.002 there).
    """
    net = nn.Conv2d(3, NUM_CLASSES, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0] = 1.0
    torch.manual_seed(0)
    module = ARMModule(num_classes=NUM_CLASSES, net=net, isolation_fraction=0.0, **kwargs).train()
    with torch.no_grad():  # a steep mapping near v = -1, so that weights tell small confidence gaps apart
        module.weight_map.layers[0].weight.fill_(20.0)
        module.weight_map.layers[0].bias.fill_(19.0)
    image = torch.zeros(1, 3, 1, 2)
    image[0, 0, 0] = torch.tensor([2.0**-8, 2.0**-6])
    return module, image, torch.ones(1, 1, 2, dtype=torch.bool)


@pytest.mark.parametrize("table", [1025, None], ids=["table", "per_pixel"])
def test_arm_tells_near_zero_variances_apart_where_bf16_collapses_them(table: int | None):
    module, image, valid = near_uniform_module(weight_table_size=table)
    with bf16_autocast():
        logits = module(image)
        confidence = module.confidence(logits).flatten()
        weights = module.pixel_weights(confidence.view(1, 1, 1, 2), valid).flatten()
    assert torch.all(confidence > -1.0) and torch.all(confidence < -1.0 + 1e-3)
    assert confidence[1] > confidence[0]  # the larger variance is the more confident pixel
    assert (confidence[1] + 1) / (confidence[0] + 1) == pytest.approx(16.0, rel=0.05)  # var ~ delta^2
    assert weights[0] != weights[1]

    # the same pipeline in bf16 (what CPU autocast would do without segmend's fp32 casts) collapses
    probs = logits.detach().bfloat16().softmax(dim=1)
    bf16_confidence = confidence_map(probs, "var").bfloat16()  # even the fp32 statistic, stored in bf16
    var = (probs - 1.0 / NUM_CLASSES).pow(2).mean(dim=1)
    bf16_direct = (2.0 * var / ((NUM_CLASSES - 1) / NUM_CLASSES**2) - 1.0).flatten()
    assert bf16_direct.dtype == torch.bfloat16
    assert bf16_direct[0] == bf16_direct[1] == -1.0
    assert bf16_confidence.flatten()[0] == bf16_confidence.flatten()[1] == -1.0
    with bf16_autocast():  # the mapping's layers under autocast, without ARM's own fp32 guard
        bf16_weights = module.weight_map.layers(bf16_direct.float().view(1, 1, 1, 2)).flatten()
    assert bf16_weights.dtype == torch.bfloat16
    assert bf16_weights[0] == bf16_weights[1]


class RecordLearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []
        self.loss_dtypes: set[torch.dtype] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})
        self.loss_dtypes.add(outputs["loss"].dtype)


def record_weight_dtypes(module: ARMModule, monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.dtype, ...]]:
    seen: list[tuple[torch.dtype, ...]] = []
    original = module.pixel_weights

    def pixel_weights(confidence: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        weights = original(confidence, valid)
        seen.append(
            (
                torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                confidence.dtype,
                weights.dtype,
            )
        )
        return weights

    monkeypatch.setattr(module, "pixel_weights", pixel_weights)
    return seen


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_arm_fit_under_mixed_precision_keeps_its_negative_lr(
    precision: str, tiny_synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A real fit: bf16-mixed (no gradient scaler) and 16-mixed with Lightning's GradScaler."""
    torch.manual_seed(0)
    module = ARMModule(
        num_classes=tiny_synthetic.num_classes,
        net=TinyNet(tiny_synthetic.num_classes),
        isolation_fraction=0.0,
        arm_lr_multiplier=3.0,
    )
    seen = record_weight_dtypes(module, monkeypatch)
    before = [p.detach().clone() for p in module.weight_map.parameters()]
    recorder = RecordLearningRates()
    # Lightning turns precision="16-mixed" on a CPU into bf16-mixed; the plugin gives the GPU's fp16 + GradScaler
    amp = {"precision": precision} if precision == "bf16-mixed" else {"plugins": [MixedPrecision(precision, "cpu")]}
    trainer = Trainer(
        accelerator="cpu",
        **amp,
        max_steps=4,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[recorder],
    )
    trainer.fit(module, datamodule=tiny_synthetic)
    assert (trainer.precision_plugin.scaler is None) is (precision == "bf16-mixed")
    autocast_dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    assert seen and all(s == (autocast_dtype, torch.float32, torch.float32) for s in seen), seen
    assert recorder.loss_dtypes == {torch.float32}
    assert len(recorder.lrs) == 4
    for lrs in recorder.lrs:
        assert lrs["arm"] == pytest.approx(-3.0 * lrs["net"])
    assert all(lrs["arm"] < 0 for lrs in recorder.lrs[:-1])  # the poly schedule ends at lr 0
    assert any(not torch.equal(a, b) for a, b in zip(before, module.weight_map.parameters(), strict=True))
    metrics = trainer.callback_metrics
    assert all(math.isfinite(float(metrics[k])) for k in ("train/loss", "val/loss", "val/mIoU"))


def test_grad_scaler_leaves_arms_negative_lr_step_unchanged():
    """One SGD step through a GradScaler moves ARM up its gradient exactly as a step without one."""

    def one_step(scaler: torch.amp.GradScaler | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        module = arm_module()
        groups = module.parameter_groups()
        for group in groups:
            group["lr"] = -100.0 if group["name"] == "arm" else 0.1
        optimizer = torch.optim.SGD(groups)
        batch = make_batch()
        loss = module.compute_loss(module(batch["image"]), batch)
        if scaler is None:
            loss.backward()
            grads = [p.grad.clone() for p in module.weight_map.parameters()]
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # as Lightning does before on_before_optimizer_step
            grads = [p.grad.clone() for p in module.weight_map.parameters()]
            scaler.step(optimizer)
            scaler.update()
        return grads, [p.detach().clone() for p in module.weight_map.parameters()]

    initial = [p.detach().clone() for p in arm_module().weight_map.parameters()]
    grads, plain = one_step(None)
    scaled_grads, scaled = one_step(torch.amp.GradScaler("cpu", init_scale=2.0**16))
    for start, grad, after in zip(initial, grads, plain, strict=True):
        assert torch.allclose(after - start, 100.0 * grad, atol=1e-5)  # ascent: lr -100 steps along +grad
    assert any(g.abs().max() > 1e-4 for g in grads)
    for a, b, ga, gb in zip(plain, scaled, grads, scaled_grads, strict=True):
        assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-9)
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
