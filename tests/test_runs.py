"""The runner of fits: a toy two-stage module (not self-correction) through the CLI, killed and resumed; run folders."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import wandb
import yaml
from lightning.pytorch.loggers import Logger

from segmend.cli import SegmendCLI, main
from segmend.runs import ResumeCheckpoint, ResumePolicy, Stage, has_training_stages, run_stages
from tests.fixtures.cli import REPO
from tests.fixtures.data import tiny_data_args
from tests.fixtures.runs import EVERY, kill_args, segmend
from tests.fixtures.toy_stages import TwoStageToy
from tests.fixtures.trainer import CPU_TRAINER


def toy_args(run_dir: Path, data_cache: Path, *extra: str) -> list[str]:
    """The toy two-stage module on tiny synthetic data: 8 images, batches of 2 = 4 steps per epoch."""
    return [
        "--model=tests.fixtures.toy_stages.TwoStageToy",
        "--data=SyntheticDataModule",
        *tiny_data_args(data_cache),
        "--data.init_args.batch_size=2",
        "--data.init_args.eval_batch_size=2",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=1",
        *CPU_TRAINER,
        f"--resume.every_n_steps={EVERY}",
        *extra,
    ]


def check_killed(run: Path, first: subprocess.CompletedProcess, kill_step: int) -> None:
    """One command ran warmup and went on into finetune, killed at ``kill_step``: last.ckpt lost < EVERY steps."""
    assert first.returncode == -9, first.stderr[-3000:]
    assert "segmend: stage 2 'finetune'" in first.stderr
    assert (run / "warmup" / "final.ckpt").is_file()
    assert not (run / "finetune" / "final.ckpt").exists()
    saved = torch.load(run / "finetune" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert kill_step - EVERY < saved["global_step"] <= kill_step  # lost less than the interval ...
    assert saved["global_step"] % 4 != 0  # ... inside an epoch (4 steps per epoch)


def check_resumed(run: Path, again: str) -> None:
    """The re-run skipped warmup, resumed finetune from its last.ckpt and finished it."""
    # `again` is the re-run's log
    assert "stage 1 'warmup' already done" in again
    assert f"resuming from {run / 'finetune' / 'checkpoints' / 'last.ckpt'}" in again
    final = torch.load(run / "finetune" / "final.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 8  # 2 epochs x 4 steps, not restarted
    assert "optimizer_states" not in final  # a finished stage keeps weights only
    for stage in ("warmup", "finetune"):  # ... and one file: last.ckpt is the final checkpoint, not a copy
        assert os.path.samefile(run / stage / "checkpoints" / "last.ckpt", run / stage / "final.ckpt")


def test_protocol_not_class():
    assert has_training_stages(TwoStageToy())
    assert not has_training_stages(torch.nn.Linear(1, 1))


def test_toy_two_stages_one_command_killed_mid_stage_and_resumed(tmp_path: Path, data_cache: Path):
    run = tmp_path / "run"
    kill_step = 7  # finetune: 4 steps per epoch, killed before step 8, in the middle of epoch 2
    first = segmend("fit", *toy_args(run, data_cache, *kill_args("finetune", kill_step)))
    check_killed(run, first, kill_step)
    again = segmend("fit", *toy_args(run, data_cache))
    assert again.returncode == 0, again.stderr[-3000:]
    check_resumed(run, again.stderr)


def test_toy_two_stages_ddp_killed_mid_stage_and_resumed(tmp_path: Path, data_cache: Path):
    run = tmp_path / "run"
    ddp = [
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--data.init_args.num_train=16",
    ]
    kill_step = 7  # 16 images on 2 ranks, batches of 2: 4 steps per epoch, as in one process
    first = segmend("fit", *toy_args(run, data_cache, *kill_args("finetune", kill_step)), *ddp)
    check_killed(run, first, kill_step)
    again = segmend("fit", *toy_args(run, data_cache), *ddp)
    assert again.returncode == 0, again.stderr[-3000:]
    check_resumed(run, again.stderr)


# Lightning exits with status 1 after Ctrl-C; its SIGTERMException is a SystemExit without a status (0)
@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 1), ("SIGTERM", 0)])
def test_ctrl_c_prints_the_resume_hint_and_marks_nothing_done(
    signal_name: str, status: int, tmp_path: Path, data_cache: Path
):
    run = tmp_path / "run"
    result = segmend("fit", *toy_args(run, data_cache, *kill_args("warmup", 3, signal_name)))
    assert result.returncode == status, result.stderr[-3000:]
    assert "stage 'warmup' was interrupted; re-run the same command to resume it" in result.stderr + result.stdout
    assert not (run / "warmup" / "final.ckpt").exists()
    # Ctrl-C stops at once (last save: step 2); Lightning finishes the running step(s) after SIGTERM first
    assert torch.load(run / "warmup" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] >= 2


def test_time_interval_saves_inside_an_epoch(tmp_path: Path, tiny_synthetic, monkeypatch: pytest.MonkeyPatch):
    """resume.interval=60 s with a clock advancing 25 s per reading: last.ckpt every 3rd step, inside the epoch."""
    clock = iter(range(0, 10_000, 25))
    monkeypatch.setattr(ResumeCheckpoint, "clock", staticmethod(lambda: float(next(clock))))
    saved: list[int] = []
    save = ResumeCheckpoint.save

    def recording(self: ResumeCheckpoint, trainer) -> None:
        before = self.saved_step
        save(self, trainer)
        if self.saved_step != before:
            saved.append(trainer.global_step)

    monkeypatch.setattr(ResumeCheckpoint, "save", recording)
    tiny_synthetic.batch_size = 1  # 8 steps in one epoch
    model = TwoStageToy(num_classes=tiny_synthetic.num_classes)
    kwargs = {"max_epochs": 1, "logger": False, "enable_progress_bar": False, "num_sanity_val_steps": 0}
    result = run_stages(
        [Stage("only", model)], tiny_synthetic, tmp_path, policy=ResumePolicy(60), trainer_kwargs=kwargs
    )
    assert result.completed and (tmp_path / "only" / "final.ckpt").is_file()
    # one reading at the start (0 s), one per step: 25, 50, 75 -> save at step 3 (75 - 0 >= 60), ...
    assert saved == [3, 6, 8]  # ... step 6, and the end of the first epoch (step 8)


def test_run_folder_keeps_the_fit_config_after_validate_test_predict(tmp_path: Path, data_cache: Path):
    run = tmp_path / "run"
    main(["fit", *toy_args(run, data_cache)])
    config = (run / "config.yaml").read_text()
    assert yaml.safe_load(config)["trainer"]["max_epochs"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "finetune", "warmup"]
    for stage in ("warmup", "finetune"):
        assert sorted(p.name for p in (run / stage).iterdir()) == ["checkpoints", "config.yaml", "final.ckpt"]
        # no ModelCheckpoint configured: no full checkpoint beside the final one (Lightning's default is left out)
        assert [p.name for p in (run / stage / "checkpoints").iterdir()] == ["last.ckpt"]
    weights = run / "finetune" / "final.ckpt"
    for subcommand in ("validate", "test", "predict"):
        main([subcommand, *toy_args(run, data_cache), f"--ckpt_path={weights}"])
        assert (run / "config.yaml").read_text() == config, subcommand
        saved = yaml.safe_load((run / f"{subcommand}-config.yaml").read_text())
        assert saved["ckpt_path"] == str(weights)


def wandb_init_arguments(logger: Logger, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``logger`` passes to ``wandb.init`` when it starts its run (``wandb.init`` replaced by a recorder)."""
    calls = []
    monkeypatch.setattr(wandb, "run", None)  # no run of an earlier test to reuse
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or SimpleNamespace(id=kwargs.get("id")))
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))  # restored if the logger sets it
    assert logger.experiment is not None
    assert len(calls) == 1, calls
    return calls[0]


def test_output_folders_follow_default_root_dir(tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """The W&B logger's save_dir, checkpoints and group follow --trainer.default_root_dir; two roots share nothing."""
    config = REPO / "configs" / "selfcorr_synthetic.yaml"
    clis = {}
    for root in ("a", "b"):
        args = ["-c", str(config), f"--trainer.default_root_dir={tmp_path / root}", *CPU_TRAINER]
        args += [*tiny_data_args(data_cache), "--trainer.logger.init_args.resume=allow"]
        clis[root] = SegmendCLI(args=args, run=False)
    groups = set()
    for root, cli in clis.items():
        assert cli.trainer.logger.save_dir == str(tmp_path / root)
        stage = cli.stage_trainer("pretrain", max_epochs=3)
        assert stage.max_epochs == 3
        assert stage.logger.save_dir == str(tmp_path / root)
        init = wandb_init_arguments(stage.logger, monkeypatch)
        assert init["name"] == "selfcorr_synthetic-pretrain"
        assert init["group"].startswith("selfcorr_synthetic-") and init["id"].endswith("-pretrain")
        groups.add(init["group"])
        # the same stage of the same run folder continues the same W&B run
        assert wandb_init_arguments(cli.stage_trainer("pretrain").logger, monkeypatch)["id"] == init["id"]
        checkpoints = [c.dirpath for c in stage.checkpoint_callbacks]
        assert checkpoints == [str(tmp_path / root / "pretrain" / "checkpoints")]
    assert len(groups) == 2


def test_baseline_fit_checkpoints_in_the_run_folder(tmp_path: Path, data_cache: Path, caplog):
    """A plain fit with the shipped W&B config: checkpoints in <run>/checkpoints, not <run>/segmend/<W&B id>/."""
    config = REPO / "configs" / "baseline_synthetic.yaml"
    args = ["-c", str(config), f"--trainer.default_root_dir={tmp_path}", *CPU_TRAINER, *tiny_data_args(data_cache)]
    args += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    args += ["--model.init_args.encoder_name=tu-mobilenetv3_small_050", "--trainer.enable_progress_bar=false"]
    with caplog.at_level(logging.INFO):
        main(["fit", *args])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "config.yaml").is_file()
    assert not (tmp_path / "segmend").exists()


def test_python_entry_point_dispatches_on_the_protocol(tmp_path: Path, tiny_synthetic):
    """segmend.runs.fit: a staged module runs its stages (a re-run skips them); a plain module is one stage."""
    from segmend.modules import SegmentationModule
    from segmend.runs import fit

    kwargs = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "enable_progress_bar": False}
    toy = TwoStageToy(num_classes=tiny_synthetic.num_classes)
    run = fit(toy, tiny_synthetic, run_dir=tmp_path / "toy", **kwargs)
    assert [(s.name, s.status) for s in run.stages] == [("warmup", "trained"), ("finetune", "trained")]
    assert toy.outcomes == [("warmup", "trained"), ("finetune", "trained")]
    again = TwoStageToy(num_classes=tiny_synthetic.num_classes)
    rerun = fit(again, tiny_synthetic, run_dir=tmp_path / "toy", **kwargs)
    assert [s.status for s in rerun.stages] == ["skipped", "skipped"] and rerun.trainer is None
    torch.testing.assert_close(again.net.weight, toy.net.weight)  # restored from the final checkpoints

    plain = SegmentationModule(num_classes=tiny_synthetic.num_classes, encoder_name="tu-mobilenetv3_small_050")
    single = fit(plain, tiny_synthetic, run_dir=tmp_path / "plain", **kwargs)
    assert [(s.name, s.status) for s in single.stages] == [("fit", "trained")]
    assert (tmp_path / "plain" / "fit" / "final.ckpt").is_file()


def test_resume_from_an_epoch_end_is_exact(tmp_path: Path, data_cache: Path):
    """every_n_steps = steps per epoch: last.ckpt is saved at the epoch end, and the resumed run ends bit-identical."""
    exact = ["--seed_everything=0", "--resume.every_n_steps=4", "--resume.interval=100000"]
    whole = segmend("fit", *toy_args(tmp_path / "whole", data_cache, *exact))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = segmend("fit", *toy_args(tmp_path / "killed", data_cache, *exact, *kill_args("finetune", 5)))
    assert killed.returncode == -9
    resumed = segmend("fit", *toy_args(tmp_path / "killed", data_cache, *exact))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "ended before the epoch ended" not in resumed.stderr
    a, b = (
        torch.load(p / "finetune" / "final.ckpt", weights_only=True) for p in (tmp_path / "whole", tmp_path / "killed")
    )
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
