"""Oracles of the MAD loop: the simulated one (ground truth + noisy raters) and the file-based human one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from segmend.mad import OUT_OF_DOMAIN, Selection, discrepancy, mean_opinion_scores
from segmend.mad.files import MADFileError, write_json
from segmend.mad.human_files import read_rater_scores, write_label_mask, write_rater_scores
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import FileOracle, Oracle, SimulatedOracle
from segmend.mad.state import MADState
from tests.fixtures.data import TINY_SYNTHETIC

CLASSES = ("background", "disc", "square")

# hand-built ground truth: left half class 1, right half class 2 (8x8)
TRUTH = np.zeros((8, 8), np.uint8)
TRUTH[:, :4], TRUTH[:, 4:] = 1, 2


def prediction_with_errors(columns: int) -> np.ndarray:
    """The ground truth with its ``columns`` rightmost columns predicted as background."""
    pred = TRUTH.copy()
    if columns:
        pred[:, -columns:] = 0
    return pred


PREDICTIONS = {f"img{c}": prediction_with_errors(c) for c in range(9)}  # mIoU falls with c


def simulated(**kwargs) -> SimulatedOracle:
    return SimulatedOracle(lambda image: TRUTH, num_classes=3, **kwargs)


# --- SimulatedOracle ---------------------------------------------------------------------------------------


def test_simulated_oracle_is_an_oracle() -> None:
    assert isinstance(simulated(), Oracle)
    assert isinstance(FileOracle(), Oracle)


def test_simulated_scores_are_deterministic_and_do_not_depend_on_the_order() -> None:
    scores = simulated(seed=1, noise_std=1.0).request_scores(0, PREDICTIONS)
    reversed_order = dict(reversed(list(PREDICTIONS.items())))
    assert simulated(seed=1, noise_std=1.0).request_scores(0, reversed_order) == scores
    assert simulated(seed=2, noise_std=1.0).request_scores(0, PREDICTIONS) != scores
    assert set(next(iter(scores.values()))) == {"simulated1", "simulated2", "simulated3"}
    assert all(isinstance(s, int) and 1 <= s <= 5 for by_rater in scores.values() for s in by_rater.values())


def test_noiseless_scores_quantise_the_true_miou() -> None:
    oracle = simulated(noise_std=0.0, raters=1)
    scores = oracle.request_scores(0, PREDICTIONS)
    miou = {image: discrepancy(pred, TRUTH, 3) for image, pred in PREDICTIONS.items()}
    assert miou["img0"] == 1.0 and miou["img8"] < 0.2
    for image, by_rater in scores.items():
        assert by_rater["simulated1"] == round(1 + 4 * miou[image])
    by_miou = sorted(scores, key=miou.__getitem__)  # quantised scores never contradict the mIoU order
    assert [scores[image]["simulated1"] for image in by_miou] == sorted(s["simulated1"] for s in scores.values())
    assert scores["img0"]["simulated1"] == 5 and scores["img8"]["simulated1"] == 1


def test_noisy_scores_rank_images_like_their_true_miou() -> None:
    scores = simulated(noise_std=0.5, raters=5, seed=3).request_scores(0, PREDICTIONS)
    mos = mean_opinion_scores(scores)
    miou = [discrepancy(PREDICTIONS[image], TRUTH, 3) for image in mos]
    assert spearmanr(list(mos.values()), miou).statistic > 0.9


def test_out_of_domain_images_are_flagged_by_every_rater() -> None:
    for ood in ({"img3"}, lambda image: image == "img3"):
        scores = simulated(out_of_domain=ood).request_scores(0, PREDICTIONS)
        assert scores["img3"] == dict.fromkeys(("simulated1", "simulated2", "simulated3"), OUT_OF_DOMAIN)
        assert all(OUT_OF_DOMAIN not in scores[image].values() for image in scores if image != "img3")


def test_simulated_labels_are_the_ground_truth() -> None:
    labels = simulated().request_labels(0, ["img1", "img2"], sizes={"img1": (8, 8)})
    np.testing.assert_array_equal(labels["img1"], TRUTH)
    assert labels["img2"].dtype == np.uint8
    with pytest.raises(ValueError, match=r"ground truth of 'img1' is \(8, 8\)"):
        simulated().request_labels(0, ["img1"], sizes={"img1": (8, 9)})


def test_simulated_oracle_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="raters >= 1"):
        simulated(raters=0)
    with pytest.raises(ValueError, match="prediction of 'x'"):
        simulated().request_scores(0, {"x": np.zeros((4, 4), np.uint8)})


def test_simulated_oracle_over_the_synthetic_wild_split(data_cache: Path) -> None:
    from segmend.datamodules import SyntheticDataModule

    data = SyntheticDataModule(cache_dir=str(data_cache), **{**TINY_SYNTHETIC, "ood_fraction": 0.5})
    meta = data.wild_metadata()
    ood = sorted(image for image, info in meta.items() if info["domain"] == "ood")
    assert len(meta) == 4 and len(ood) == 2
    oracle = SimulatedOracle.from_synthetic_wild(data, raters=2, noise_std=0.0)
    truth = oracle.request_labels(0, sorted(meta))
    assert all(mask.shape == (64, 64) for mask in truth.values())
    predictions = {image: np.zeros((64, 64), np.uint8) for image in meta}
    predictions[f"{ood[0]}.jpg"] = predictions.pop(ood[0])  # a pool id with its extension
    scores = oracle.request_scores(0, predictions)
    assert scores[f"{ood[0]}.jpg"] == {"simulated1": OUT_OF_DOMAIN, "simulated2": OUT_OF_DOMAIN}
    in_domain = next(image for image in sorted(meta) if image not in ood)
    perfect = oracle.request_scores(0, {in_domain: truth[in_domain]})
    assert perfect[in_domain] == {"simulated1": 5, "simulated2": 5}
    with pytest.raises(ValueError, match="not an image of the synthetic wild split"):
        oracle.request_labels(0, ["train_0000"])


# --- FileOracle --------------------------------------------------------------------------------------------

IDS = ["street/a.jpg", "street/b.jpg", "c.png"]
MAPS = {image: np.full((4, 6), k, np.uint8) for k, image in enumerate(IDS)}
SIZES = {image: (4, 6) for image in IDS}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    state = MADState(tmp_path, CLASSES)
    state.save_candidates(0, Selection(IDS, []), SIZES)
    return tmp_path


def write_scores(run: Path, rater: str, scores: dict, round_index: int = 0) -> Path:
    path = MADLayout(run).scores_file(round_index, rater)
    write_rater_scores(path, round_index, rater, scores)
    return path


def test_scores_are_incomplete_until_enough_raters_scored_every_candidate(run: Path) -> None:
    oracle = FileOracle(run, min_raters=2)
    layout = MADLayout(run)
    assert oracle.request_scores(0, MAPS) is None
    readme = layout.readme_file(0).read_text()
    assert "2 rater(s) must each score all 3 candidate images" in readme and "(no rater yet)" in readme
    assert (layout.predictions_dir(0) / "street" / "a.jpg.png").is_file()  # for the rating page
    write_scores(run, "alice", {"street/a.jpg": 1, "street/b.jpg": 4, "c.png": OUT_OF_DOMAIN})
    write_scores(run, "bob", {"street/a.jpg": 2})
    assert oracle.request_scores(0, MAPS) is None
    readme = layout.readme_file(0).read_text()
    assert "alice: 3 of 3 scored" in readme and "bob: 1 of 3 scored" in readme
    assert FileOracle(run).request_scores(0, MAPS) == {  # one rater is enough by default; bob is left out
        "street/a.jpg": {"alice": 1},
        "street/b.jpg": {"alice": 4},
        "c.png": {"alice": OUT_OF_DOMAIN},
    }
    write_scores(run, "bob", {"street/a.jpg": 2, "street/b.jpg": 5, "c.png": 3})
    scores = oracle.request_scores(0, MAPS)
    assert scores["street/b.jpg"] == {"alice": 4, "bob": 5}
    assert json.loads(layout.scores_file(0, "alice").read_text())["scores"]["c.png"] == "ood"


def test_the_candidates_images_are_copied_upright_for_people(run: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    upright = np.zeros((4, 6, 3), np.uint8)
    upright[0, 0] = upright[0, 1] = 255  # a white mark in the top-left corner, as the scene is seen
    (pool / "street").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: show rotated 90 degrees clockwise
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(pool / "street" / "a.jpg", exif=exif,
                                                                        quality=100)  # fmt: skip
    rgba = np.zeros((4, 6, 4), np.uint8)  # fully transparent: white as a browser shows it on a white page
    Image.fromarray(rgba).save(pool / "c.png")
    layout = MADLayout(run)
    assert FileOracle(run).request_scores(0, MAPS) is None
    assert not layout.images_dir(0).exists()  # nobody said where the pool's images are
    assert "the image upright" not in layout.readme_file(0).read_text()
    oracle = FileOracle(run)
    oracle.show_images(lambda image: pool / image)
    with pytest.warns(UserWarning, match=r"'street/b.jpg' is not shown to people: Image file not found"):
        assert oracle.request_scores(0, MAPS) is None
    assert str(layout.images_dir(0)) in layout.readme_file(0).read_text()
    shown = Image.open(layout.image_file(0, "street/a.jpg"))
    assert shown.format == "JPEG" and shown.size == (6, 4) and 0x0112 not in shown.getexif()
    pixels = np.asarray(shown.convert("L")).astype(int)
    assert pixels[0, :2].min() > 200 and pixels[1:, 2:].max() < 60  # upright: the mark is top-left
    assert np.asarray(Image.open(layout.image_file(0, "c.png"))).min() > 250
    assert not layout.image_file(0, "street/b.jpg").exists()
    written = layout.image_file(0, "c.png").stat().st_mtime_ns
    write_scores(run, "alice", {"c.png": 3})
    with pytest.warns(UserWarning):
        assert oracle.request_scores(0, MAPS) is None
    assert layout.image_file(0, "c.png").stat().st_mtime_ns == written  # written once


def score_document(**changes) -> dict:
    """A valid score file of rater ``x`` for round 0, with ``changes`` (a value of None drops the key)."""
    document = {"format": "segmend-mad-scores", "version": 1, "round": 0, "rater": "x", "scores": {"c.png": 3}}
    document.update(changes)
    return {key: value for key, value in document.items() if value is not None}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (score_document(scores={"nope.jpg": 3}), "1 image outside the candidates of round 0"),
        (score_document(scores={"c.png": 6}), "the score 6; expected an integer from 1 to 5"),
        (score_document(scores={"c.png": True}), "the score True"),
        (score_document(scores={"c.png": "bad"}), "'bad'"),
        (score_document(round=1), "scores of round 1; it is in the folder of round 0"),
        (score_document(rater="y"), "names the rater 'y'"),
        (score_document(version=9), "version 9"),
        (score_document(format="segmend-mad-labels"), "expected 'segmend-mad-scores'"),
        (score_document(scores=None), "no 'scores' entry"),
        (score_document(scores=[3]), "'scores' must be a dict"),
    ],
)
def test_bad_score_files_are_refused_with_the_file_named(run: Path, document: dict, message: str) -> None:
    path = MADLayout(run).scores_file(0, "x")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    with pytest.raises(MADFileError, match=message) as err:
        FileOracle(run).request_scores(0, MAPS)
    assert str(path) in str(err.value)


def test_writing_a_bad_score_is_refused() -> None:
    with pytest.raises(ValueError, match="the score 0"):
        write_rater_scores("/nonexistent/x.json", 0, "x", {"a": 0})


def test_labels_are_incomplete_until_every_image_has_a_mask(run: Path) -> None:
    oracle, layout = FileOracle(run), MADLayout(run)
    ids = ["street/a.jpg", "c.png"]
    assert oracle.request_labels(0, ids, SIZES) is None
    readme = layout.readme_file(0).read_text()
    assert "a mask is still needed for 2 images" in readme and "1: disc" in readme
    assert "(6x4 px, width x height)" in readme
    assert str(layout.label_file(0, "street/a.jpg")) in readme
    mask = np.array([[0, 1, 2, 255, 0, 0]] * 4, np.uint8)
    write_label_mask(layout.label_file(0, "street/a.jpg"), mask)
    assert oracle.request_labels(0, ids, SIZES) is None
    assert "street/a.jpg" not in layout.readme_file(0).read_text().split("Missing:")[1]
    Image.fromarray(np.ones((4, 6), np.uint8), mode="L").save(layout.label_file(0, "c.png"))  # greyscale is fine
    labels = oracle.request_labels(0, ids, SIZES)
    np.testing.assert_array_equal(labels["street/a.jpg"], mask)
    np.testing.assert_array_equal(labels["c.png"], np.ones((4, 6)))


def test_bad_masks_are_refused_with_the_reason(run: Path) -> None:
    oracle, layout = FileOracle(run), MADLayout(run)
    path = layout.label_file(0, "c.png")
    write_label_mask(path, np.zeros((5, 6), np.uint8))
    with pytest.raises(MADFileError, match=r"c\.png\.png is 6x5 \(width x height\); the image is 6x4"):
        oracle.request_labels(0, ["c.png"], SIZES)
    bad = np.zeros((4, 6), np.uint8)
    bad[0, :3] = 7
    write_label_mask(path, bad)
    with pytest.raises(MADFileError, match=r"not classes: 7 \(3 px\); expected class indices 0\.\.2 or 255"):
        oracle.request_labels(0, ["c.png"], SIZES)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    with pytest.raises(MADFileError, match="RGB image"):
        oracle.request_labels(0, ["c.png"], SIZES)
    path.unlink()
    write_label_mask(layout.label_file(0, "street/zzz.jpg"), np.zeros((4, 6), np.uint8))
    with pytest.raises(MADFileError, match=r"not asked for: \['street/zzz.jpg'\]"):
        oracle.request_labels(0, ["c.png"], SIZES)


def test_file_oracle_needs_a_run_folder_and_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no run folder"):
        FileOracle().request_scores(0, MAPS)
    with pytest.raises(ValueError, match="min_raters"):
        FileOracle(min_raters=0)
    oracle = FileOracle()
    oracle.attach(tmp_path)
    with pytest.raises(ValueError, match="does not know the classes"):
        oracle.request_labels(0, ["c.png"])
    oracle.attach(tmp_path, class_names=CLASSES)
    assert oracle.request_labels(0, ["c.png"]) is None


def test_the_state_stores_simulated_answers_in_the_human_formats(run: Path) -> None:
    state = MADState(run)
    oracle = SimulatedOracle(lambda image: TRUTH[:4, :6], num_classes=3, raters=2, noise_std=0.0)
    scores = oracle.request_scores(0, {image: MAPS[image] for image in IDS})
    state.save_scores(0, scores)
    assert read_rater_scores(state.layout.scores_file(0, "simulated1"), 0, IDS).scores == {
        image: by_rater["simulated1"] for image, by_rater in scores.items()
    }
    assert FileOracle(run, min_raters=2).request_scores(0, MAPS) == scores
    write_json(state.layout.scores_file(0, "simulated1"), "segmend-mad-scores", 1, {"round": 0})
    with pytest.raises(MADFileError, match="simulated1.json has no 'rater' entry"):
        state.load_scores(0)
