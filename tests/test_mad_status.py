"""``segmend status``: hand-built run folders at each waiting point, and the whole loop with people as files.

The last test runs the real loop (``segmend fit``, ``oracle: files``, tiny synthetic data) and plays
the people: a rater's score file, then ``segmend export-labels``, the ground truth painted into the
exported masks, ``segmend import-labels``; each re-run is the command ``segmend status`` prints.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segmend.cli import main
from segmend.commands.status import main as status_main
from segmend.datamodules import SyntheticDataModule
from segmend.datamodules.voc_format import read_index_mask, voc_palette
from segmend.mad.human_files import write_label_mask, write_rater_scores
from segmend.mad.label_exchange import MASKS_DIR, export_labels, export_names
from segmend.mad.layout import MADLayout
from segmend.mad.pool_images import PoolImages
from segmend.mad.state import MADState
from segmend.mad.status import status
from tests.fixtures.cli import fast_cli_args
from tests.fixtures.data import TINY_SYNTHETIC
from tests.fixtures.mad import FILE_ORACLE_LOOP, MAD_SYNTHETIC, TINY_LOOP_RUN
from tests.fixtures.mad_runs import IDS, S, T, build_run, predictions, save_palette
from tests.fixtures.runs import ENV, SCRIPT


def json_status(run: Path, capsys: pytest.CaptureFixture) -> dict:
    assert status_main([str(run), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_no_state_yet_and_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = tmp_path / "run"
    run.mkdir()
    result = status(run)
    assert result.round is None and result.waiting_for == "fit" and result.fit_command is None
    assert "has not mined round 0" in result.summary
    assert result.next_steps == ["re-run the fit that started this run (no config.yaml: a run started from Python)"]
    assert "or " + str(run) + " is not a MAD run folder" in result.summary  # no config.yaml: it may be no run at all
    assert status_main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_run_folder_of_another_fit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    """A plain training run (config.yaml without the callback): no 'run the fit' advice, an error naming why."""
    run = tmp_path / "voc_fpn"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"default_root_dir": str(run)}, "model": {}}))
    assert status_main([str(run)]) == 2
    error = capsys.readouterr().err
    assert f"{run} is not the run folder of a MAD loop: its config.yaml has no MADTroubleshooting callback" in error
    assert str(run / "mad" / "state.json") in error and capsys.readouterr().out == ""


def test_waiting_for_weak_scores_with_each_raters_progress(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = build_run(tmp_path, phase="candidates", min_raters=2)
    layout = MADLayout(run)
    first = status(run)
    assert (first.round, first.phase, first.waiting_for) == (0, "candidates", "weak_scores")
    assert first.candidates == len(IDS) and first.raters == [] and first.min_raters == 2
    assert "(no score file yet)" in first.text()
    write_rater_scores(layout.scores_file(0, "alice"), 0, "alice", dict.fromkeys(IDS, 3))
    write_rater_scores(layout.scores_file(0, "bob"), 0, "bob", dict.fromkeys(IDS[:2], 4))
    text = status(run).text()
    assert f"MAD run {run}: round 0, phase 'candidates' (the loop runs rounds 0..1)." in text
    assert f"Waiting for people: weak scores of round 0's {len(IDS)} candidates (M), from 2 rater(s); 1 done." in text
    assert f"  alice: {len(IDS)} of {len(IDS)} (done)\n  bob: 2 of {len(IDS)}\n" in text
    assert f"  segmend rate {run}    (or write {layout.scores_dir(0)}/<rater>.json, docs/mad.md)" in text
    assert text.endswith(f"  segmend fit -c {run / 'config.yaml'}")
    document = json_status(run, capsys)
    assert document["format"] == "segmend-mad-status" and document["version"] == 1
    assert document["waiting_for"] == "weak_scores" and document["round"] == 0 and document["phase"] == "candidates"
    assert document["raters"] == [
        {"rater": "alice", "scored": len(IDS), "total": len(IDS), "complete": True},
        {"rater": "bob", "scored": 2, "total": len(IDS), "complete": False},
    ]
    assert document["next_steps"][-1] == document["fit_command"] == f"segmend fit -c {run / 'config.yaml'}"
    # a bad score file is named; a second complete rater lets the fit go on
    (layout.scores_dir(0) / "carol.json").write_text('{"format": "segmend-mad-scores", "version": 2}')
    write_rater_scores(layout.scores_file(0, "bob"), 0, "bob", dict.fromkeys(IDS, 4))
    ready = status(run)
    assert ready.waiting_for == "fit" and "weak scores are in (2 complete rater(s))" in ready.summary
    assert len(ready.problems) == 1 and "carol.json has 'segmend-mad-scores' version 2" in ready.problems[0]


def test_waiting_for_pixel_labels_lists_present_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = build_run(tmp_path)
    layout = MADLayout(run)
    masks = predictions(run)
    write_label_mask(layout.label_file(0, S[0]), masks[S[0]])
    write_label_mask(layout.label_file(0, T[1]), masks[T[1]][:, :-1])  # the wrong size
    result = status(run)
    assert (result.round, result.phase, result.waiting_for) == (0, "selected", "pixel_labels")
    assert result.labels.requested == S + T and result.labels.present == [S[0]]
    assert result.labels.missing == [i for i in S + T if i != S[0]]
    assert len(result.problems) == 1 and str(layout.label_file(0, T[1])) in result.problems[0]
    text = result.text()
    assert "Waiting for people: pixel labels of 5 of round 0's 6 images of S and T." in text
    assert "Pixel labels: 1 of 6 present" in text and f"  missing: {', '.join(result.labels.missing)}" in text
    folder = shlex.quote(str(run.parent / "run_labels_round_0"))
    assert f"  segmend export-labels {run} {folder}    (images with pre-annotations, CVAT / VOC layout)" in text
    assert f"  segmend import-labels {run} {folder}    (or CVAT's exported zip)" in text
    assert json_status(run, capsys)["labels"] == {
        "requested": S + T,
        "present": [S[0]],
        "missing": result.labels.missing,
        "reused": 0,
    }
    # once exported there (and partly imported), the steps go on in that folder instead of exporting again
    write_label_mask(layout.label_file(0, T[1]), masks[T[1]])  # its size corrected (export reads it)
    export_labels(run, run.parent / "run_labels_round_0")
    exported = status(run).next_steps
    assert exported[0].startswith(f"correct the masks in {folder}/SegmentationClass (exported there already")
    assert exported[1:] == [f"segmend import-labels {run} {folder}    (or CVAT's exported zip)", result.fit_command]
    for image in S + T:
        write_label_mask(layout.label_file(0, image), masks[image])
    done = status(run)
    assert done.waiting_for == "fit" and done.labels.missing == [] and not done.problems
    assert "pixel labels are in" in done.summary and done.next_steps == [done.fit_command]


def test_after_the_people_the_loop_goes_on_until_complete(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = build_run(tmp_path, rounds=0)
    state = MADState(run)
    state.save_labels(0, predictions(run))
    assert status(run).waiting_for == "fit" and "evaluate round 0 on T" in status(run).summary
    state.save_metrics(0, {"target": {"mIoU": 0.5}})
    complete = json_status(run, capsys)
    assert complete["waiting_for"] == "nothing" and complete["next_steps"] == []
    assert complete["summary"].startswith("The loop is complete: round 0, the last one, is evaluated")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("rounds: 0", "rounds: 1"))
    assert "fine-tune the target on S, then mine round 1" in status(run).summary
    # a config written for another folder (a relative run folder, or a copied run): the command names this one
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["trainer"]["default_root_dir"] = "runs/elsewhere"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert status(run).fit_command == f"segmend fit -c {run / 'config.yaml'} --trainer.default_root_dir={run}"
    # a run started from Python has no config.yaml: its last round is unknown, and status says both cases
    (run / "config.yaml").unlink()
    unknown = status(run).summary
    assert (
        "round 0 is evaluated. If the loop has more rounds" in unknown and "otherwise the loop is complete" in unknown
    )


def _fit(command: str) -> None:
    """Run ``segmend fit ...`` as printed by ``segmend status``, in this process."""
    argv = shlex.split(command)
    assert argv[:2] == ["segmend", "fit"]
    main(argv[1:])


def test_the_loop_waits_for_people_then_resumes_with_their_files(
    tmp_path: Path, data_cache: Path, capsys: pytest.CaptureFixture
):
    """The real loop with ``oracle: files``: scores, then exported, painted and imported labels; the fit goes on."""
    run = tmp_path / "run"
    # the tiny loop of the DDP waiting test (file oracle), with one competitor and one fine-tuning round
    loop = {**FILE_ORACLE_LOOP, "competitors": "[FPN:resnet18]", "rounds": 1, "counterexamples_per_batch": 1}
    args = [a for a in fast_cli_args(MAD_SYNTHETIC, run, data_cache) if "fast_dev_run" not in a]
    main(
        ["fit", *args, *TINY_LOOP_RUN, *(f"--trainer.callbacks.init_args.{key}={value}" for key, value in loop.items())]
    )
    layout = MADLayout(run)
    waiting = status(run)
    assert (waiting.round, waiting.phase, waiting.waiting_for) == (0, "candidates", "weak_scores")
    assert waiting.fit_command == f"segmend fit -c {run / 'config.yaml'}"
    candidates = MADState(run).load_candidates(0).ids

    # a rater's score file (docs/mad.md); the command status printed takes the loop on to the labels
    write_rater_scores(layout.scores_file(0, "alice"), 0, "alice", {i: 1 + k % 5 for k, i in enumerate(candidates)})
    capsys.readouterr()
    _fit(waiting.fit_command)
    assert "waits for pixel labels" in capsys.readouterr().out
    record = MADState(run).round(0)
    asked = list(dict.fromkeys(record.counterexamples + record.test))
    # `segmend status --json` through the installed console script, as a script would call it
    result = subprocess.run([str(SCRIPT), "status", str(run), "--json"], capture_output=True, text=True, env=ENV,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert document["waiting_for"] == "pixel_labels" and document["phase"] == "selected"
    assert document["labels"]["missing"] == asked and document["raters"][0]["complete"] is True
    assert document["next_steps"][0].startswith(f"segmend export-labels {run} ")

    # the person: export, paint the ground truth over the pre-annotations, import
    out = tmp_path / "to_label"
    with pytest.raises(SystemExit) as exported:
        main(["export-labels", str(run), str(out)])
    assert exported.value.code == 0 and f"Exported {len(asked)} images of round 0" in capsys.readouterr().out
    data = SyntheticDataModule(cache_dir=str(data_cache), **{**TINY_SYNTHETIC, "num_wild": 12})
    truth = {i: read_index_mask(Path(data.root) / "SegmentationClass" / f"{i}.png") for i in asked}
    pool = PoolImages.from_run(run)
    assert all(pool.path(i).parent == Path(data.root) / "JPEGImages" for i in asked)  # the loop's pool, via config
    names = export_names(asked)
    for image in asked:  # the images the loop copied for people are the ones exported
        exported = out / "JPEGImages" / f"{names[image]}.jpg"
        assert exported.read_bytes() == layout.image_file(0, image).read_bytes()
    for k, image in enumerate(asked):
        if k == 0:  # as CVAT would return it: RGB colours
            Image.fromarray(voc_palette()[truth[image]]).save(out / MASKS_DIR / f"{names[image]}.png")
        else:
            save_palette(out / MASKS_DIR / f"{names[image]}.png", truth[image])
    with pytest.raises(SystemExit) as imported:
        main(["import-labels", str(run), str(out)])
    assert imported.value.code == 0
    assert f"Every image of round 0 has its mask. Continue the loop: {waiting.fit_command}" in capsys.readouterr().out
    ready = status(run)
    assert ready.waiting_for == "fit" and ready.labels.missing == []

    # the same command: round 0 completes with the people's labels, the next fit fine-tunes on S and mines round 1
    _fit(ready.fit_command)
    state = MADState(run)
    assert state.round(0).phase == "finetuned" and state.round(1).phase == "candidates"
    labels = state.load_labels(0)
    assert set(labels) == set(asked) and all(np.array_equal(labels[i], truth[i]) for i in asked)
    assert state.load_metrics(0)["T"] == len(record.test)
    assert (run / "mad_round_1" / "final.ckpt").is_file()  # the fine-tuning fit ran
    after = status(run)
    assert (after.round, after.phase, after.waiting_for) == (1, "candidates", "weak_scores")
