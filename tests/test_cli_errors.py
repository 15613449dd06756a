"""What a new user meets on the command line: hints, user errors as messages, --version, help size."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segmend.cli import SHORT_NAMES, main
from tests.fixtures.cli import REPO, fast_cli_args

BASELINE = REPO / "configs" / "baseline_synthetic.yaml"


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_misspelt_option_gets_did_you_mean_and_no_class_path_hint(capsys: pytest.CaptureFixture):
    code, err = run_main(["fit", "-c", str(BASELINE), "--model.init_args.encoder_nme=resnet34"], capsys)
    assert code != 0
    assert "did you mean 'encoder_name'?" in err
    assert "short names" not in err  # the class path is fine: no class-path hint


def test_misspelt_data_option_follows_kwargs_to_the_base_class(capsys: pytest.CaptureFixture):
    code, err = run_main(["fit", "-c", str(BASELINE), "--data.init_args.batch_sze=3"], capsys)
    assert code != 0 and "did you mean 'batch_size'?" in err


def test_misspelt_class_gets_did_you_mean_and_the_short_names(capsys: pytest.CaptureFixture):
    code, err = run_main(["fit", "-c", str(BASELINE), "--model=SegmentationModel"], capsys)
    assert code != 0
    assert "did you mean 'SegmentationModule'?" in err
    assert "short names" in err


def test_misspelt_trainer_option_gets_did_you_mean(capsys: pytest.CaptureFixture):
    code, err = run_main(["fit", "-c", str(BASELINE), "--trainer.max_epohcs=3"], capsys)
    assert code != 0 and "did you mean '--trainer.max_epochs'?" in err


@pytest.mark.parametrize("option", ["optimizer", "lr_scheduler"])
def test_top_level_optimizer_points_at_the_model_argument(option: str, capsys: pytest.CaptureFixture):
    code, err = run_main(["fit", "-c", str(BASELINE), f"--{option}=Adam"], capsys)
    assert code != 0
    assert f"--model.init_args.{option}=" in err


def test_abstract_base_is_not_a_short_name():
    assert "SegmentationDataModule" not in SHORT_NAMES
    assert {"SegmentationModule", "SyntheticDataModule", "VOCDataModule"} <= set(SHORT_NAMES)


def test_bad_config_value_is_a_message_not_a_traceback(tmp_path: Path, data_cache: Path, capsys):
    args = [*fast_cli_args(BASELINE, tmp_path, data_cache), "--model.init_args.arch=DeepLabV3Pls"]
    code, err = run_main(["fit", *args], capsys)
    assert code == 2
    assert "segmend: error: Unknown segmentation-models-pytorch architecture arch='DeepLabV3Pls'" in err
    assert "Traceback" not in err and "Union subtypes" not in err


def test_traceback_on_request(tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SEGMEND_TRACEBACK", "1")
    args = [*fast_cli_args(BASELINE, tmp_path, data_cache), "--model.init_args.arch=DeepLabV3Pls"]
    with pytest.raises(ValueError, match="DeepLabV3Pls"):
        main(["fit", *args])


def test_missing_data_stops_before_a_wandb_run_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """W&B on (offline), VOC roots missing: one message naming both roots, and no W&B run folder."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = REPO / "configs" / "selfcorr_voc.yaml"
    args = [
        "fit",
        "-c",
        str(config),
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.sync_batchnorm=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--data.init_args.root={tmp_path / 'no-voc'}",
        f"--data.init_args.sbd_root={tmp_path / 'no-sbd'}",
    ]
    code, err = run_main(args, capsys)
    assert code == 2
    assert "Traceback" not in err
    assert "root" in err and "sbd_root" in err and "no-voc" in err and "no-sbd" in err
    assert not list(tmp_path.rglob("wandb")), list(tmp_path.rglob("*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_config_on_cpu_says_which_overrides_run_it(capsys: pytest.CaptureFixture):
    code, err = run_main(["fit", "-c", str(REPO / "configs" / "selfcorr_voc.yaml")], capsys)
    assert code == 2
    assert "no CUDA GPU" in err
    assert "--trainer.accelerator=cpu" in err
    assert "--trainer.precision" not in err  # the shipped configs leave the precision to the hardware
    assert "Traceback" not in err


def test_version_flag():
    script = Path(sys.executable).parent / "segmend"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith("segmend ") and result.stdout.split()[1][0].isdigit()


def test_model_help_is_short(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "SegmentationModule"])
    out = capsys.readouterr().out
    assert "--model.encoder_name" in out and "--model.net" in out
    assert len(out.splitlines()) < 200, len(out.splitlines())
    assert "more (any import path works)" in " ".join(out.split())


def test_the_lr_in_use_is_logged(tmp_path: Path, data_cache: Path, caplog: pytest.LogCaptureFixture):
    """Changing only the optimizer's class keeps the config's lr: a log line says which lr is used."""
    args = [*fast_cli_args(BASELINE, tmp_path, data_cache), "--model.init_args.optimizer=Adam"]
    with caplog.at_level(logging.INFO):
        main(["fit", *args])
    assert "Optimizer: Adam, lr 0.003, weight_decay 0.0001; schedule: PolyLR" in caplog.text


def test_shipped_config_runs_with_its_logger_switched_off(tmp_path: Path, data_cache: Path):
    """The config's LearningRateMonitor would stop a run that has no logger; it is left out instead."""
    args = [a for a in fast_cli_args(BASELINE, tmp_path, data_cache) if "fast_dev_run" not in a]
    args = [a for a in args if not a.startswith("--trainer.logger")]
    limits = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    main(["fit", *args, "--trainer.logger=false", *limits])
    assert list(tmp_path.rglob("last.ckpt"))
