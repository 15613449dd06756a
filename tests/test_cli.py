"""Every shipped config through the real CLI entry, and the CLI's conventions."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from segmend.cli import SegmendCLI, main
from tests.fixtures.cli import CONFIGS, REPO, check_fit_metrics, fast_cli_args


@dataclass(frozen=True)
class Produces:
    """What a fast_dev_run of a shipped config leaves behind, besides the metrics every fit logs.

    Attributes:
        files: Files written under the run folder (under fast_dev_run a staged fit keeps no checkpoints).
        stages: Stages the runner runs, in order (none for a single fit).
        waits: The message of a run that stops for people before any training (then nothing is logged).

    """

    files: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    waits: str | None = None


SINGLE_FIT = Produces(files=("checkpoints/last.ckpt",))
ERROR_PIXEL = Produces(
    files=("error/error_sweep/val.md", "detail/error_sweep/val.md"), stages=("semantic", "error", "detail")
)
SELF_CORRECTION = Produces(stages=("ancillary", "pretrain", "main"))
PRODUCES = {
    "arm_ade20k.yaml": SINGLE_FIT,
    "arm_cityscapes_coarse.yaml": SINGLE_FIT,
    "arm_cityscapes_fine.yaml": SINGLE_FIT,
    "arm_synthetic_coarse.yaml": SINGLE_FIT,
    "baseline_synthetic.yaml": Produces(files=("checkpoints/last.ckpt", "images/val_predictions_epoch000.png")),
    "errorpix_ade20k.yaml": ERROR_PIXEL,
    "errorpix_cityscapes.yaml": ERROR_PIXEL,
    "errorpix_synthetic.yaml": ERROR_PIXEL,
    "mad_synthetic.yaml": Produces(
        files=("mad/state.json", "mad/report.md", "mad/round_0/metrics.json", "mad/round_1/metrics.json"),
        stages=("mad_competitor_0_FPN-resnet18", "mad_competitor_1_Unet-resnet18", "mad_target"),
    ),
    "mad_voc.yaml": Produces(
        files=("mad/state.json", "mad/round_0/candidates.json", "mad/round_0/stats.npz", "mad/round_0/README.txt"),
        waits="round 0 waits for weak scores",
    ),
    "selfcorr_cityscapes.yaml": SELF_CORRECTION,
    "selfcorr_synthetic.yaml": SELF_CORRECTION,
    "selfcorr_voc.yaml": SELF_CORRECTION,
}


def test_every_shipped_config_says_what_it_produces():
    assert sorted(PRODUCES) == [path.name for path in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_fast_dev_run(
    config: Path, tmp_path: Path, data_cache: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    expected = PRODUCES[config.name]
    with caplog.at_level(logging.INFO):
        cli = SegmendCLI(args=["fit", *fast_cli_args(config, tmp_path, data_cache)])
    out = capsys.readouterr().out
    for number, stage in enumerate(expected.stages, start=1):
        assert f"segmend: stage {number} '{stage}'" in caplog.text, stage
    for name in expected.files:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, (name, sorted(p.name for p in tmp_path.rglob("*")))
        if path.suffix == ".ckpt":  # the one fast_dev_run step, and the weights of the model that ran
            saved = torch.load(path, map_location="cpu", weights_only=False)
            assert saved["global_step"] == 1
            assert saved["state_dict"].keys() == cli.model.state_dict().keys()
    if expected.waits is not None:
        assert f"segmend: the run stopped: {expected.waits}" in out, out[-2000:]
        return
    # the last fit (a staged run's last stage) logged a finite loss and the validation metrics of every class
    check_fit_metrics(cli.trainer.callback_metrics, cli.datamodule.class_names)
    assert cli.trainer.global_step >= 1
    assert "Final validation: val/mIoU" in out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_print_config(config: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("segmend.")
    assert "seed_everything" in printed


def test_lightning_console_script_runs_fit(tmp_path: Path, data_cache: Path):
    script = Path(sys.executable).parent / "lightning"
    config = REPO / "configs" / "baseline_synthetic.yaml"
    result = subprocess.run(
        [str(script), "fit", *fast_cli_args(config, tmp_path, data_cache)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Final validation: val/mIoU" in result.stdout, result.stdout[-2000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def _fit_with_saved_config(tmp_path: Path, data_cache: Path, extra: list[str]) -> dict:
    config = REPO / "configs" / "baseline_synthetic.yaml"
    args = fast_cli_args(config, tmp_path, data_cache)
    args = [a for a in args if not a.startswith("--trainer.fast_dev_run")]
    args += [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        *extra,
    ]
    main(["fit", *args])
    saved = list(tmp_path.rglob("config.yaml"))
    assert len(saved) == 1, saved
    return yaml.safe_load(saved[0].read_text())


def test_seed_recorded_and_rerun_in_same_directory(tmp_path: Path, data_cache: Path):
    first = _fit_with_saved_config(tmp_path, data_cache, ["--seed_everything=123"])
    assert first["seed_everything"] == 123
    # a second run in the same run directory overwrites config.yaml instead of crashing
    second = _fit_with_saved_config(tmp_path, data_cache, ["--seed_everything=7"])
    assert second["seed_everything"] == 7


def test_random_seed_is_recorded(tmp_path: Path, data_cache: Path):
    saved = _fit_with_saved_config(tmp_path, data_cache, ["--seed_everything=true"])
    assert isinstance(saved["seed_everything"], int)


def test_unknown_class_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO / "configs" / "baseline_synthetic.yaml")
        .read_text()
        .replace("class_path: SegmentationModule", "class_path: SegmentationModel")
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(bad)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "SegmentationModel" in err
    assert "short names" in err and "SegmentationModule" in err


def test_num_classes_mismatch_between_config_and_data(tmp_path: Path, data_cache: Path, capsys):
    config = REPO / "configs" / "baseline_synthetic.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *fast_cli_args(config, tmp_path, data_cache), "--model.init_args.num_classes=4"])
    assert exit_info.value.code == 2
    assert re.search(r"num_classes mismatch.*num_classes=4.*6 classes", capsys.readouterr().err)


def test_any_nn_module_as_net_by_class_path(tmp_path: Path, data_cache: Path):
    config = REPO / "configs" / "baseline_synthetic.yaml"
    net = "{class_path: torch.nn.Conv2d, init_args: {in_channels: 3, out_channels: 6, kernel_size: 1}}"
    cli = SegmendCLI(args=[*fast_cli_args(config, tmp_path, data_cache), f"--model.init_args.net={net}"], run=False)
    assert isinstance(cli.model.net, torch.nn.Conv2d)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    check_fit_metrics(cli.trainer.callback_metrics, cli.datamodule.class_names)
