"""The MAD loop under DDP on CPU stops cleanly while people are not done, and a re-run takes it on.

``segmend fit -c configs/mad_synthetic.yaml`` with ``--trainer.devices=2`` (gloo), run as users run
it, in a subprocess: the oracle is ``files`` and no score file exists, so round 0 stops at its
candidates (docs/mad.md, "Waiting for people, and resuming"); after one rater's score file is
written, the same command goes past the scores and stops again, waiting for pixel labels, without
mining the pool again.
"""

from __future__ import annotations

import atexit
import json
import subprocess
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from segmend.mad.layout import MADLayout
from segmend.mad.state import MADState
from segmend.runs import StopRun
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.mad import FILE_ORACLE_LOOP, MAD_SYNTHETIC, TINY_LOOP_RUN
from tests.fixtures.runs import ENV, SCRIPT

DDP = ["--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"]
AGAIN = "Re-run the same command when they are in."
TIMEOUT = 300  # one invocation takes about 20 s here: a rank left waiting fails the test instead of hanging it


class RankStops(Callback):
    """Records how each rank's process ends: ``<folder>/rank_<global rank>.txt``.

    When a fit ends by StopRun it writes the stage and the message, and registers an exit handler that
    adds ``exit``: Python runs it when the process ends normally, not when it is killed. The console
    shows only rank 0; this is what shows that rank 1 stopped for the same reason and was not killed.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, StopRun):
            self.folder.mkdir(parents=True, exist_ok=True)
            stage = Path(trainer.default_root_dir).name
            record = self.folder / f"rank_{trainer.global_rank}.txt"
            record.write_text(f"{stage}: {exception}\n")
            atexit.register(_append, record, "exit\n")


def _append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def run_cli(run_dir: Path, data_cache: Path, stops: Path) -> subprocess.CompletedProcess[str]:
    """``segmend fit`` on 2 CPU processes, tiny data, the file-oracle loop; each rank's stop recorded in ``stops``."""
    args = [a for a in fast_cli_args(MAD_SYNTHETIC, run_dir, data_cache) if "fast_dev_run" not in a]  # later args win
    loop = [f"--trainer.callbacks.init_args.{key}={value}" for key, value in FILE_ORACLE_LOOP.items()]
    # the recorder comes after the loop's arguments: `callbacks.init_args` go to the last callback of the list
    recorder = [
        "--trainer.callbacks+=tests.test_mad_ddp_wait.RankStops",
        f"--trainer.callbacks.init_args.folder={stops}",
    ]
    command = [str(SCRIPT), "fit", *args, *TINY_LOOP_RUN, *loop, *DDP, *recorder]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO, env=ENV)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def check_clean_stop(result: subprocess.CompletedProcess[str], stops: Path, waiting: str) -> None:
    """2 processes, no traceback, and both ranks stopped in ``mad_complete_0`` with the message ``waiting``."""
    output = result.stdout + result.stderr
    assert "Starting with 2 processes" in output
    assert "Traceback" not in output, output[-4000:]  # no rank ended with an exception
    # rank 0 prints what is missing (the console output of `segmend fit`) ...
    assert f"segmend: the run stopped: {waiting}" in result.stdout, result.stdout[-2000:]
    # ... and both ranks left the same stage by StopRun with the same message, then their processes ended
    # normally (rank 1 was not killed; its status is not the command's, but an exception would show above)
    assert sorted(path.name for path in stops.iterdir()) == ["rank_0.txt", "rank_1.txt"]
    assert {path.read_text() for path in stops.iterdir()} == {f"mad_complete_0: {waiting}\nexit\n"}


def test_ddp_run_waiting_for_people_stops_with_status_0_then_resumes(tmp_path: Path, data_cache: Path) -> None:
    run_dir = tmp_path / "run"
    layout = MADLayout(run_dir)
    readme = layout.readme_file(0)

    first = run_cli(run_dir, data_cache, tmp_path / "stops_1")
    candidates = MADState(run_dir).load_candidates(0).ids
    waiting = f"round 0 waits for weak scores of {len(candidates)} images (M); see {readme}. {AGAIN}"
    check_clean_stop(first, tmp_path / "stops_1", waiting)
    # everything done so far is in the run folder: the pool mined, M, the predictions for the raters, the README
    state = MADState(run_dir)
    assert state.current_round == 0 and state.round(0).phase == "candidates"
    assert layout.stats_file(0).is_file() and layout.candidates_file(0).is_file()
    assert state.load_stats(0).ids.size == 12 and len(candidates) >= 2
    written = sorted(layout.predictions_dir(0).rglob("*.png"))
    assert written == sorted(layout.prediction_file(0, i) for i in candidates)
    assert f"WEAK SCORES: 1 rater(s) must each score all {len(candidates)} candidate images." in readme.read_text()
    assert f"{layout.scores_dir(0)}/<rater>.json" in readme.read_text()
    assert not layout.scores_dir(0).is_dir() or not any(layout.scores_dir(0).iterdir())
    assert not layout.selection_file(0).exists()
    assert (run_dir / "mad_target" / "final.ckpt").is_file()  # the target's fit is kept
    assert not (run_dir / "mad_complete_0" / "final.ckpt").exists()  # the waiting stage is not marked done
    stats_bytes, stats_mtime = layout.stats_file(0).read_bytes(), layout.stats_file(0).stat().st_mtime_ns
    candidates_bytes = layout.candidates_file(0).read_bytes()

    # one rater scores every candidate, in the file format of docs/mad.md
    scores = {image: 1 + k % 5 for k, image in enumerate(candidates)}
    layout.scores_dir(0).mkdir(parents=True, exist_ok=True)
    document = {"format": "segmend-mad-scores", "version": 1, "round": 0, "rater": "alice", "scores": scores}
    layout.scores_file(0, "alice").write_text(json.dumps(document))

    second = run_cli(run_dir, data_cache, tmp_path / "stops_2")
    record = MADState(run_dir).round(0)
    labels = len(dict.fromkeys(record.counterexamples + record.test))
    waiting = f"round 0 waits for pixel labels of {labels} images of S and T; see {readme}. {AGAIN}"
    check_clean_stop(second, tmp_path / "stops_2", waiting)
    for number, stage in enumerate(["mad_competitor_0_FPN-resnet18", "mad_competitor_1_Unet-resnet18", "mad_target"]):
        assert f"stage {number + 1} '{stage}' already done" in second.stderr
    # past the scores: S and T chosen from alice's scores, now waiting for their labels
    assert record.phase == "selected"  # "scored" is recorded, then S and T at once
    assert record.raters == ("alice",) and record.counterexamples and labels > 0
    assert set(record.counterexamples) | set(record.test) <= set(candidates)
    assert MADState(run_dir).load_scores(0) == {image: {"alice": score} for image, score in scores.items()}
    assert f"PIXEL LABELS: a mask is still needed for {labels} images." in readme.read_text()
    assert "WEAK SCORES" not in readme.read_text()
    # the pool was not mined again, M not chosen again: the same files, stats.npz not even rewritten
    assert layout.stats_file(0).read_bytes() == stats_bytes
    assert layout.stats_file(0).stat().st_mtime_ns == stats_mtime
    assert layout.candidates_file(0).read_bytes() == candidates_bytes
