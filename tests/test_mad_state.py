"""The MAD loop's state on disk: atomic files, versioned formats, round trips, id safety, callback state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from segmend.mad import OUT_OF_DOMAIN, Selection
from segmend.mad.files import (
    MADFileError,
    atomic_write,
    atomic_write_bytes,
    check_id,
    id_path,
    ids_in,
    read_json,
    write_json,
)
from segmend.mad.human_files import write_label_mask, write_rater_scores
from segmend.mad.layout import MADLayout, check_rater
from segmend.mad.state import PHASES, MADState
from tests.fixtures.mad import make_stats

CLASSES = ("background", "disc", "square")


def run_round(state: MADState, r: int = 0) -> dict[str, np.ndarray]:
    """Take round r of ``state`` through every phase with small made-up values; returns the labels."""
    stats = make_stats()
    state.save_stats(r, stats)
    ids = [i for i in stats.ids.tolist() if i != "folder/img2.jpg"]
    state.save_candidates(r, Selection(ids, ["folder/img2.jpg"], {("unet", "target", 1): ids[:2]}), {ids[0]: (4, 5)})
    scores = {image: {"alice": 1 + k % 5, "bob": 2} for k, image in enumerate(ids)}
    scores[ids[-1]]["bob"] = OUT_OF_DOMAIN
    state.save_scores(r, scores)
    state.save_selection(r, ids[:2], ids[2:4], out_of_domain=[ids[-1]])
    labels = {image: np.full((4, 5), k % 3, dtype=np.uint8) for k, image in enumerate(ids[:4])}
    labels[ids[0]][0, 0] = 255
    state.save_labels(r, labels)
    state.save_metrics(r, {"target": {"mIoU": 0.5, "empty": float("nan")}, "count": np.int64(3)})
    state.finish_round(r)
    return labels


# --- atomic writes -----------------------------------------------------------------------------------------


def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_json(path, "x", 1, {"value": 1})

    def crash(handle) -> None:
        handle.write(b'{"format": "x", "vers')
        raise KeyboardInterrupt  # a kill while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert read_json(path, "x")["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # the temporary file is gone


def test_a_kill_before_the_rename_leaves_the_old_file_and_a_temp_file_that_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "labels" / "a.png"
    write_label_mask(path, np.zeros((2, 2), np.uint8))
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(SystemExit("killed")))
    monkeypatch.setattr(Path, "unlink", lambda *a, **k: None)  # a real kill cleans nothing up
    with pytest.raises(SystemExit):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert len(list(path.parent.iterdir())) == 2  # the temporary file was left behind...
    assert list(ids_in(path.parent, ".png")) == ["a"]  # ...and is never taken for data


def test_json_files_are_strict(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "f.json", "x", 1, {"value": float("nan")})
    assert not (tmp_path / "f.json").exists()


# --- formats and versions ----------------------------------------------------------------------------------


def test_read_json_names_the_file_and_the_expected_and_found_values(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    with pytest.raises(MADFileError, match=r"f\.json is missing"):
        read_json(path, "segmend-mad-state")
    path.write_text("{not json")
    with pytest.raises(MADFileError, match="not a readable JSON"):
        read_json(path, "segmend-mad-state")
    path.write_text(json.dumps({"format": "segmend-mad-scores", "version": 1}))
    with pytest.raises(MADFileError, match="format 'segmend-mad-scores'; expected 'segmend-mad-state'"):
        read_json(path, "segmend-mad-state")
    path.write_text(json.dumps({"format": "segmend-mad-state", "version": 2}))
    with pytest.raises(MADFileError, match=r"version 2; this segmend reads versions \[1\]"):
        read_json(path, "segmend-mad-state")
    path.write_text(json.dumps([1]))
    with pytest.raises(MADFileError, match="JSON list"):
        read_json(path, "segmend-mad-state")


def test_a_state_file_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    layout = MADLayout(tmp_path)
    write_json(layout.state_file, "segmend-mad-state", 2, {"rounds": []})
    with pytest.raises(MADFileError, match=r"state\.json has 'segmend-mad-state' version 2"):
        MADState(tmp_path)


def test_stats_of_another_format_and_round_files_of_another_round_are_refused(tmp_path: Path) -> None:
    state = MADState(tmp_path, CLASSES)
    state.save_stats(0, make_stats())
    path = state.layout.stats_file(0)
    arrays = dict(np.load(path))
    arrays["version"] = np.array(7)
    np.savez_compressed(path, **arrays)
    with pytest.raises(MADFileError, match=r"stats\.npz has format 'segmend-mad-stats' version 7"):
        state.load_stats(0)
    write_json(state.layout.candidates_file(0), "segmend-mad-candidates", 1, {"round": 3, "ids": []})
    with pytest.raises(MADFileError, match="marked round 3; expected round 0"):
        state.load_candidates(0)


def test_a_malformed_state_file_is_reported(tmp_path: Path) -> None:
    layout = MADLayout(tmp_path)
    write_json(layout.state_file, "segmend-mad-state", 1, {"rounds": [{"round": 0, "phase": "rated"}]})
    with pytest.raises(MADFileError, match="phase 'rated'"):
        MADState(tmp_path)
    write_json(layout.state_file, "segmend-mad-state", 1, {"rounds": [{"round": 1, "phase": "mined"}]})
    with pytest.raises(MADFileError, match=r"0, 1, 2, \.\.\. in order; found \[1\]"):
        MADState(tmp_path)


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("competitor_fractions", [True, False])
def test_pool_stats_round_trip(tmp_path: Path, competitor_fractions: bool) -> None:
    state = MADState(tmp_path)
    stats = make_stats(competitor_fractions=competitor_fractions)
    state.save_stats(0, stats)
    loaded = state.load_stats(0)
    assert loaded.ids.tolist() == stats.ids.tolist()
    assert loaded.competitors == stats.competitors
    for name in ("readable", "discrepancy", "target_fractions"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    np.testing.assert_array_equal(loaded.scalar("entropy"), stats.scalar("entropy"))
    assert (loaded.competitor_fractions is None) == (not competitor_fractions)
    assert state.round(0).phase == "mined"


def test_a_whole_round_round_trips_and_survives_reopening(tmp_path: Path) -> None:
    state = MADState(tmp_path, CLASSES)
    labels = run_round(state)
    reopened = MADState(tmp_path)
    assert reopened.classes == CLASSES
    assert reopened.state_dict() == state.state_dict()
    assert reopened.current_round == 1 and reopened.round(0).phase == "finetuned"
    candidates = reopened.load_candidates(0)
    assert candidates.ids[0] == "folder/img0.jpg" and candidates.selection.skipped == ["folder/img2.jpg"]
    assert candidates.selection.groups == {("unet", "target", 1): candidates.ids[:2]}
    assert candidates.sizes == {"folder/img0.jpg": (4, 5)}
    scores = reopened.load_scores(0)
    assert reopened.round(0).raters == ("alice", "bob")
    assert scores["folder/img5.jpg"] == {"alice": 5, "bob": OUT_OF_DOMAIN}
    assert sorted(p.name for p in reopened.layout.scores_dir(0).iterdir()) == ["alice.json", "bob.json"]
    assert reopened.load_selection(0) == {
        "counterexamples": ["folder/img0.jpg", "folder/img1.jpg"],
        "test": ["folder/img3.jpg", "folder/img4.jpg"],
        "out_of_domain": ["folder/img5.jpg"],
    }
    assert reopened.counterexamples == ["folder/img0.jpg", "folder/img1.jpg"]
    assert reopened.labelled == ["folder/img0.jpg", "folder/img1.jpg", "folder/img3.jpg", "folder/img4.jpg"]
    loaded = reopened.load_labels(0)
    assert loaded.keys() == labels.keys()
    for image, mask in labels.items():
        np.testing.assert_array_equal(loaded[image], mask)
    assert (tmp_path / "mad" / "round_0" / "labels" / "folder" / "img0.jpg.png").is_file()
    metrics = reopened.load_metrics(0)
    assert metrics == {"target": {"mIoU": 0.5, "empty": None}, "count": 3}


def test_phases_only_go_forward_in_the_current_round(tmp_path: Path) -> None:
    state = MADState(tmp_path)
    state.save_stats(0, make_stats())
    state.advance(0, "candidates")
    state.advance(0, "candidates")  # a step redone after a kill
    with pytest.raises(ValueError, match="at phase 'candidates'; it cannot go back to 'mined'"):
        state.advance(0, "mined")
    with pytest.raises(ValueError, match="the loop is in round 0"):
        state.advance(1, "mined")
    with pytest.raises(ValueError, match="Unknown MAD phase"):
        state.advance(0, "rated")
    assert PHASES.index("scored") < PHASES.index("selected")


def test_scores_must_cover_exactly_the_candidates(tmp_path: Path) -> None:
    state = MADState(tmp_path)
    state.save_stats(0, make_stats())
    state.save_candidates(0, Selection(["folder/img0.jpg", "folder/img1.jpg"], []))
    with pytest.raises(ValueError, match="without weak scores"):
        state.save_scores(0, {"folder/img0.jpg": {"alice": 3}})
    with pytest.raises(ValueError, match="not in M"):
        state.save_scores(0, {"folder/img0.jpg": {"a": 3}, "folder/img1.jpg": {"a": 3}, "x": {"a": 1}})
    assert not state.reached(0, "scored")


def test_classes_of_a_run_cannot_change(tmp_path: Path) -> None:
    MADState(tmp_path, CLASSES).save_stats(0, make_stats())
    with pytest.raises(ValueError, match="records the classes"):
        MADState(tmp_path, ("background", "cat"))


# --- image ids ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "../x.jpg", "a/../../x.jpg", "/etc/passwd", "a//b.jpg", "a/./b.jpg", "a\\b.jpg", "a\nb"]
)
def test_ids_that_could_leave_their_folder_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="Image id"):
        id_path(tmp_path, bad, ".png")
    with pytest.raises(ValueError):
        MADLayout(tmp_path).label_file(0, bad)


def test_nested_ids_map_to_nested_files_and_back(tmp_path: Path) -> None:
    layout = MADLayout(tmp_path)
    path = layout.label_file(2, "street/0001.jpg")
    assert path == tmp_path / "mad" / "round_2" / "labels" / "street" / "0001.jpg.png"
    assert check_id("..a/b..") == ["..a", "b.."]  # dots inside a name are fine
    write_label_mask(path, np.zeros((2, 2), np.uint8))
    write_label_mask(layout.label_file(2, "top.png"), np.zeros((2, 2), np.uint8))
    assert list(ids_in(layout.labels_dir(2), ".png")) == ["street/0001.jpg", "top.png"]


@pytest.mark.parametrize("bad", ["", "../bob", "a/b", ".hidden", "x" * 65, "al ice"])
def test_rater_names_are_file_names(bad: str) -> None:
    with pytest.raises(ValueError, match="Rater name"):
        check_rater(bad)


# --- the callback's state_dict -----------------------------------------------------------------------------


def test_state_dict_restores_a_lost_state_file(tmp_path: Path) -> None:
    state = MADState(tmp_path, CLASSES)
    run_round(state)
    saved = state.state_dict()
    assert json.loads(json.dumps(saved)) == saved  # small and plain
    state.layout.state_file.unlink()
    restored = MADState(tmp_path)
    restored.load_state_dict({**saved, "unknown_future_key": 1})
    assert restored.state_dict() == saved
    assert MADState(tmp_path).state_dict() == saved  # written back to state.json


def test_the_run_folder_wins_when_it_is_further_than_the_checkpoint(tmp_path: Path) -> None:
    state = MADState(tmp_path, CLASSES)
    state.save_stats(0, make_stats())
    early = state.state_dict()
    state.save_candidates(0, Selection(["folder/img0.jpg"], []))
    state.load_state_dict(early)
    assert state.round(0).phase == "candidates"


def test_a_checkpoint_ahead_of_missing_files_is_refused(tmp_path: Path) -> None:
    state = MADState(tmp_path, CLASSES)
    run_round(state)
    saved = state.state_dict()
    other = tmp_path / "other_run"
    with pytest.raises(MADFileError, match=r"reached phase 'finetuned', but .*stats\.npz is missing"):
        MADState(other).load_state_dict(saved)


def test_a_score_file_edited_after_the_round_was_scored_is_reported(tmp_path: Path) -> None:
    state = MADState(tmp_path, CLASSES)
    state.save_stats(0, make_stats())
    state.save_candidates(0, Selection(["folder/img0.jpg", "folder/img1.jpg"], []))
    state.save_scores(0, {"folder/img0.jpg": {"alice": 3}, "folder/img1.jpg": {"alice": 4}})
    write_rater_scores(state.layout.scores_file(0, "alice"), 0, "alice", {"folder/img0.jpg": 3})
    with pytest.raises(MADFileError, match=r"no longer cover round 0's candidates.*folder/img1.jpg"):
        state.load_scores(0)
