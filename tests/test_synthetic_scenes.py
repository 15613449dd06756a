import colorsys

import numpy as np
import pytest
import torch
from scipy import ndimage

from segmend.datamodules import synthetic_scenes as ss
from segmend.datamodules.synthetic_scenes import (
    CLASS_NAMES,
    IGNORE_INDEX,
    WILD_NUISANCES,
    Scene,
    SceneInstance,
    render_scene,
    scene_rng,
)
from segmend.losses.pixel import cross_entropy_map

N_SCENES = 50
SIZE = 128


def _scenes(domain: str, n: int = N_SCENES, seed: int = 0) -> list[Scene]:
    return [render_scene(scene_rng(seed, domain, i), SIZE, domain) for i in range(n)]


@pytest.fixture(scope="module")
def train_scenes() -> list[Scene]:
    return _scenes("train")


@pytest.fixture(scope="module")
def wild_scenes() -> list[Scene]:
    return _scenes("wild", 40)


def _assert_same(a: Scene, b: Scene) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.coarse, b.coarse)
    assert a.instances == b.instances
    assert (a.domain, a.nuisances) == (b.domain, b.nuisances)


@pytest.mark.parametrize("domain", ["train", "wild", "ood"])
def test_same_seed_split_index_is_deterministic(domain: str) -> None:
    for index in range(3):
        first = render_scene(scene_rng(7, "val", index), SIZE, domain)
        second = render_scene(scene_rng(7, "val", index), SIZE, domain)
        _assert_same(first, second)


def test_different_index_seed_or_split_gives_different_images() -> None:
    ref = render_scene(scene_rng(0, "train", 0)).image
    for other in (scene_rng(0, "train", 1), scene_rng(1, "train", 0), scene_rng(0, "val", 0)):
        assert not np.array_equal(ref, render_scene(other).image)


def test_labels_index_class_names_with_the_background_where_no_object_is(train_scenes: list[Scene]) -> None:
    background = CLASS_NAMES.index("background")
    for scene in train_scenes:
        covered = np.zeros(scene.mask.shape, dtype=bool)
        for inst in scene.instances:
            assert background < inst.label < len(CLASS_NAMES)  # an object is one of the named classes
            x0, y0, x1, y1 = inst.box
            covered[y0 : y1 + 1, x0 : x1 + 1] = True
        assert (scene.mask[~covered] == background).all()  # every pixel outside all objects is background


def test_the_coarse_ignore_band_is_what_segmends_losses_skip(train_scenes: list[Scene]) -> None:
    logits = torch.randn(1, len(CLASS_NAMES), SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    for scene in train_scenes[:10]:
        ignored = scene.coarse == IGNORE_INDEX
        assert ignored.any()
        loss = cross_entropy_map(logits, torch.from_numpy(scene.coarse).long()[None])[0]
        np.testing.assert_array_equal((loss == 0).numpy(), ignored)  # no loss exactly on the band


@pytest.mark.parametrize("size", [32, 64, 96, 128])
def test_shapes_dtypes_and_ranges_for_all_domains(size: int) -> None:
    for domain in ("train", "wild", "ood"):
        for index in range(4):
            scene = render_scene(scene_rng(3, "shape", index), size, domain)
            assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
            assert scene.mask.shape == (size, size) and scene.mask.dtype == np.uint8
            assert scene.coarse.shape == (size, size) and scene.coarse.dtype == np.uint8
            assert scene.mask.max() <= 5
            assert set(np.unique(scene.coarse)) <= set(range(6)) | {IGNORE_INDEX}
            assert scene.domain == domain
            assert all(isinstance(inst, SceneInstance) for inst in scene.instances)


def test_train_scenes_cover_all_classes_with_several_objects(train_scenes: list[Scene]) -> None:
    seen = set(np.unique(np.concatenate([s.mask.ravel() for s in train_scenes])).tolist())
    assert seen == set(range(len(CLASS_NAMES)))
    assert np.mean([len(s.instances) for s in train_scenes]) >= 2.5
    assert all(s.nuisances == () and s.domain == "train" for s in train_scenes)
    image_std = np.mean([s.image.astype(float).std() for s in train_scenes])
    assert image_std > 20  # textured, not flat


def test_instance_labels_match_mask_labels(train_scenes: list[Scene]) -> None:
    for scene in train_scenes:
        in_mask = set(np.unique(scene.mask).tolist()) - {0}
        assert {inst.label for inst in scene.instances} == in_mask


def test_boxes_touch_their_class_on_all_four_edges(train_scenes: list[Scene]) -> None:
    for scene in train_scenes:
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.box
            assert 1 <= inst.label <= 5
            assert 0 <= x0 <= x1 < SIZE and 0 <= y0 <= y1 < SIZE
            crop = scene.mask[y0 : y1 + 1, x0 : x1 + 1] == inst.label
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_box_equals_class_bbox_when_class_has_single_instance(
    train_scenes: list[Scene],
) -> None:
    checked = 0
    for scene in train_scenes:
        labels = [inst.label for inst in scene.instances]
        for inst in scene.instances:
            if labels.count(inst.label) != 1:
                continue
            ys, xs = np.nonzero(scene.mask == inst.label)
            assert inst.box == (xs.min(), ys.min(), xs.max(), ys.max())
            checked += 1
    assert checked >= 50


def test_coarse_agrees_mostly_but_not_fully_with_fine(train_scenes: list[Scene]) -> None:
    agreement, ignored = [], []
    for scene in train_scenes:
        labelled = scene.coarse != IGNORE_INDEX
        agreement.append(np.mean(scene.coarse[labelled] == scene.mask[labelled]))
        ignored.append(1 - labelled.mean())
    assert 0.75 <= np.mean(agreement) <= 0.99
    assert 0.02 <= np.mean(ignored) <= 0.30


def test_coarse_ignore_band_lies_on_fine_boundaries(train_scenes: list[Scene]) -> None:
    # An ignored pixel always has a fine-label change within a few pixels.
    for scene in train_scenes[:10]:
        near_edge = ndimage.maximum_filter(scene.mask, 7) != ndimage.minimum_filter(scene.mask, 7)
        assert not np.any((scene.coarse == IGNORE_INDEX) & ~near_edge)


def test_small_objects_are_left_out_of_coarse(train_scenes: list[Scene]) -> None:
    assert any(np.any((s.mask > 0) & (s.coarse == 0)) for s in train_scenes)
    left_out = 0
    for scene in train_scenes:
        labels = [inst.label for inst in scene.instances]
        for label in set(labels):
            region = scene.mask == label
            if labels.count(label) == 1 and region.sum() < ss.COARSE_MIN_AREA * region.size:
                assert not np.any(scene.coarse[region] == label)
                left_out += 1
    assert left_out >= 1


def test_wild_scenes_record_allowed_nuisances(wild_scenes: list[Scene]) -> None:
    seen: set[str] = set()
    for scene in wild_scenes:
        assert scene.domain == "wild"
        assert 1 <= len(scene.nuisances) <= 2
        assert set(scene.nuisances) <= set(WILD_NUISANCES)
        seen |= set(scene.nuisances)
        assert scene.mask.max() <= 5
    assert seen == set(WILD_NUISANCES)


def test_ood_scenes_have_no_known_class() -> None:
    for scene in _scenes("ood", 10):
        assert scene.nuisances == ("out_of_domain",)
        assert not scene.mask.any() and not scene.coarse.any()
        assert scene.instances == []
        assert scene.image.astype(float).std() > 10


def test_train_object_hues_avoid_the_unseen_colour_band() -> None:
    rng = np.random.default_rng(0)
    for unseen in (False, True):
        hsv = [
            colorsys.rgb_to_hsv(*colour)
            for label in range(1, 6)
            for _ in range(100)
            for colour in ss._object_colours(rng, label, unseen)
        ]
        hue, sat = np.array([c[0] for c in hsv]), np.array([c[1] for c in hsv])
        in_band = (hue > ss.TRAIN_HUE_ARC + 1e-6) | (sat < 0.1)
        assert in_band.all() if unseen else not in_band.any()


def test_colour_alone_does_not_solve_the_task(train_scenes: list[Scene]) -> None:
    def object_pixels(scenes: list[Scene]) -> tuple[np.ndarray, np.ndarray]:
        xs = [s.image[s.mask > 0].astype(np.float64) for s in scenes]
        ys = [s.mask[s.mask > 0] for s in scenes]
        return np.concatenate(xs), np.concatenate(ys)

    x_fit, y_fit = object_pixels(train_scenes[:30])
    x_test, y_test = object_pixels(train_scenes[30:])
    means = np.stack([x_fit[y_fit == c].mean(axis=0) for c in range(1, 6)])
    dist = ((x_test[:, None, :] - means[None]) ** 2).sum(axis=-1)
    accuracy = np.mean(dist.argmin(axis=1) + 1 == y_test)
    assert 0.25 < accuracy < 0.9  # colour is class-typical, but hues overlap


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 16}, "size >= 32, got 16"),
        ({"size": 64.0}, "size >= 32"),
        ({"domain": "test"}, "got 'test'"),
    ],
)
def test_render_scene_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_scene(np.random.default_rng(0), **kwargs)


def test_render_scene_rejects_non_generator_rng() -> None:
    with pytest.raises(TypeError, match="Generator"):
        render_scene(np.random.RandomState(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(("seed", "split", "index"), [(-1, "train", 0), (0, "train", -2)])
def test_scene_rng_rejects_negative_seed_or_index(seed: int, split: str, index: int) -> None:
    with pytest.raises(ValueError, match="expected seed >= 0"):
        scene_rng(seed, split, index)
