"""Every shipped config through the real CLI entry, and the CLI's conventions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from segmend.cli import SegmendCLI, main
from tests.fixtures.cli import CONFIGS, REPO, fast_cli_args


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_fast_dev_run(config: Path, tmp_path: Path, data_cache: Path):
    main(["fit", *fast_cli_args(config, tmp_path, data_cache)])


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
