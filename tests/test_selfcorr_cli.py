"""Self-correction through the real CLI: one command runs every stage, a re-run resumes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from segmend.cli import SegmendCLI, main
from tests.fixtures.cli import REPO, fast_cli_args

CONFIG = REPO / "configs" / "selfcorr_synthetic.yaml"


def short_run_args(run_dir: Path, data_cache: Path) -> list[str]:
    args = [a for a in fast_cli_args(CONFIG, run_dir, data_cache) if not a.startswith("--trainer.fast_dev_run")]
    return [
        *args,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--model.init_args.ancillary_epochs=1",
        "--model.init_args.pretrain_epochs=1",
        "--model.init_args.encoder_name=tu-mobilenetv3_small_050",
    ]


def test_stage_trainers_get_their_own_root_and_logger_name(tmp_path: Path, data_cache: Path):
    cli = SegmendCLI(args=short_run_args(tmp_path, data_cache), run=False)
    trainer = cli.stage_trainer("ancillary")
    assert Path(trainer.default_root_dir) == tmp_path / "ancillary"
    assert trainer.logger._wandb_init["name"] == "selfcorr_synthetic-ancillary"
    # fresh callbacks per stage: no state shared with the CLI's own trainer
    assert not {id(c) for c in trainer.callbacks} & {id(c) for c in cli.trainer.callbacks}


def test_one_command_runs_all_stages_and_rerun_skips_them(
    tmp_path: Path, data_cache: Path, caplog: pytest.LogCaptureFixture
):
    main(["fit", *short_run_args(tmp_path, data_cache)])
    for stage in ("ancillary", "pretrain", "main"):
        assert (tmp_path / stage / "final.ckpt").is_file(), stage
        assert (tmp_path / stage / "checkpoints" / "last.ckpt").is_file(), stage
    stamp = (tmp_path / "main" / "final.ckpt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        main(["fit", *short_run_args(tmp_path, data_cache)])
    assert caplog.text.count("already done") == 3
    assert (tmp_path / "main" / "final.ckpt").stat().st_mtime_ns == stamp
