"""Pixel labels with people's tools: ``segmend export-labels`` / ``import-labels`` on hand-built run folders.

The run folders are built with :class:`MADState` in the real file formats (docs/mad.md): a pool of
real image files (a plain JPEG, one with an EXIF rotation, an RGBA PNG, nested ids, ids whose flat
names collide), M with its upright sizes, the target's predictions, a rater's scores, S and T.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmend.datamodules.image_io import read_image
from segmend.datamodules.voc_format import read_index_mask
from segmend.mad.files import MADFileError, ids_in
from segmend.mad.human_files import read_label_mask
from segmend.mad.label_exchange import (
    LABELMAP_NAME,
    MANIFEST_NAME,
    MASKS_DIR,
    LabelImportError,
    export_labels,
    export_names,
    import_labels,
)
from segmend.mad.labelmap import read_labelmap
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import FileOracle
from segmend.mad.state import MADState
from tests.fixtures.mad_runs import (
    CLASSES,
    IDS,
    PALETTE,
    ROTATED,
    S,
    T,
    build_round,
    build_run,
    predictions,
    save_palette,
)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (``None``) under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_export_writes_the_voc_layout_with_pre_annotations(tmp_path: Path):
    run = build_run(tmp_path)
    out = tmp_path / "out"
    summary = export_labels(run, out)
    assert summary.round == 0 and set(summary.names) == set(IDS)
    digest = {i: hashlib.sha1(i.encode()).hexdigest()[:8] for i in ("x/img.jpg", "x/img.png")}
    assert summary.names == {
        "street/0001.jpg": "street__0001",
        "street/0002.jpg": "street__0002",
        ROTATED: "park__rotated",
        "shots/a b.png": "shots__a_b",
        "x/img.jpg": f"x__img-{digest['x/img.jpg']}",  # same flat name as x/img.png: both get their hash
        "x/img.png": f"x__img-{digest['x/img.png']}",
    }
    assert summary.sources == dict.fromkeys(IDS, "prediction")
    pool = tmp_path / "pool"
    for image, name in summary.names.items():
        files = list((out / "JPEGImages").glob(f"{name}.*"))
        assert len(files) == 1
        if image in ("street/0001.jpg", "street/0002.jpg", "x/img.jpg"):  # plain JPEGs: copied, not re-encoded
            assert files[0].suffix == ".jpg" and files[0].read_bytes() == (pool / image).read_bytes()
        else:  # rotated or transparent: upright pixels as the loop reads them, lossless
            assert files[0].suffix == ".png"
            assert np.array_equal(read_image(files[0]), read_image(pool / image))
        mask_file = out / MASKS_DIR / f"{name}.png"
        with Image.open(mask_file) as mask:
            assert mask.mode == "P" and mask.getpalette()[: 3 * 3] == PALETTE[:3].ravel().tolist()
        assert np.array_equal(read_index_mask(mask_file), predictions(run)[image])
    raw = Image.open(pool / ROTATED).size  # (width, height) as stored
    assert read_image(out / "JPEGImages" / "park__rotated.png").shape[:2] == raw  # upright: height = stored width
    assert (out / LABELMAP_NAME).read_text() == (
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\ndisc:128,0,0::\nsquare:0,128,0::\nignore:224,224,192::\n"
    )
    listed = (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split("\n")
    assert listed == [summary.names[i] for i in IDS] + [""]
    assert "segmend import-labels" in summary.text()


def test_export_refuses_a_used_folder_and_needs_the_pool(tmp_path: Path):
    run = build_run(tmp_path, config=False)
    with pytest.raises(MADFileError, match="--pool"):
        export_labels(run, tmp_path / "out")
    export_labels(run, tmp_path / "out", pool=tmp_path / "pool")
    with pytest.raises(MADFileError, match="would be overwritten.*--overwrite"):
        export_labels(run, tmp_path / "out", pool=tmp_path / "pool")
    export_labels(run, tmp_path / "out", pool=tmp_path / "pool", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MADFileError, match="not empty"):
        export_labels(run, tmp_path / "other", pool=tmp_path / "pool", overwrite=True)
    early = build_run(tmp_path / "early", phase="scored")
    with pytest.raises(MADFileError, match="No round waits for pixel labels: round 0 has no S and T yet"):
        export_labels(early, tmp_path / "out_early")


def test_the_run_folders_copies_are_exported_unless_a_pool_is_given(tmp_path: Path):
    from segmend.mad.human_files import write_display_image

    run = build_run(tmp_path, config=False)
    layout = MADLayout(run)
    for image in IDS:  # what the loop writes for people: the upright image as a JPEG
        write_display_image(layout.image_file(0, image), read_image(tmp_path / "pool" / image))
    moved = tmp_path / "pool_moved"
    (tmp_path / "pool").rename(moved)  # the pool is gone (and there is no config.yaml): the copies are enough
    names = export_labels(run, tmp_path / "out").names
    for image in IDS:
        exported = tmp_path / "out" / "JPEGImages" / f"{names[image]}.jpg"
        assert exported.read_bytes() == layout.image_file(0, image).read_bytes()
    # a pool given by hand is taken first (the original files)
    export_labels(run, tmp_path / "out_pool", pool=moved)
    original = tmp_path / "out_pool" / "JPEGImages" / f"{names[IDS[0]]}.jpg"
    assert original.read_bytes() == (moved / IDS[0]).read_bytes()
    # a changed file is refused, naming it
    write_display_image(layout.image_file(0, IDS[1]), np.zeros((5, 7, 3), np.uint8))
    with pytest.raises(MADFileError, match=r"images/street/0002.jpg.jpg, the image of 'street/0002.jpg', is 7x5"):
        export_labels(run, tmp_path / "out_changed")


def test_round_trip_palette_and_rgb_masks_reach_the_file_oracle(tmp_path: Path):
    run = build_run(tmp_path)
    out = tmp_path / "out"
    names = export_labels(run, out).names
    edited = {}
    for k, image in enumerate(IDS):
        path = out / MASKS_DIR / f"{names[image]}.png"
        mask = read_index_mask(path).copy()
        mask[2 : 6 + k, 3:9] = (k % 2) + 1  # the person paints a block
        mask[0, : k + 1] = 255  # and marks some pixels unsure
        if k % 2:  # as CVAT exports: RGB colours of the labels
            Image.fromarray(PALETTE[mask]).save(path)
        else:  # an editor keeping the palette: class indices
            save_palette(path, mask)
        edited[image] = mask
    summary = import_labels(run, out)
    assert sorted(summary.new) == sorted(IDS) and not summary.replaced and not summary.missing
    assert summary.as_predicted == [] and "prediction" not in summary.text()  # every mask was edited
    layout = MADLayout(run)
    assert set(ids_in(layout.labels_dir(0), ".png")) == set(IDS)  # exactly the asked images, nothing else
    for image in IDS:
        assert np.array_equal(read_label_mask(layout.label_file(0, image), len(CLASSES)), edited[image])
    sizes = MADState(run).load_candidates(0).sizes
    labels = FileOracle(run).request_labels(0, S + T, sizes)
    assert labels is not None and all(np.array_equal(labels[i], edited[i]) for i in IDS)
    # importing the same masks again changes nothing
    before = snapshot(layout.labels_dir(0))
    again = import_labels(run, out)
    assert sorted(again.unchanged) == sorted(IDS) and snapshot(layout.labels_dir(0)) == before


def test_a_cvat_zip_with_its_own_labelmap_is_read_by_label_names(tmp_path: Path):
    run = build_run(tmp_path)
    truth = {image: (predictions(run)[image] + 1) % len(CLASSES) for image in IDS}
    # CVAT's export: labels in another order, other colours, a label the run does not have, RGB masks, a top folder
    colours = {"square": (250, 50, 50), "background": (0, 0, 0), "tree": (10, 200, 10), "disc": (50, 50, 250)}
    labelmap = "# label:color_rgb:parts:actions\n" + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in colours.items())
    table = np.array([colours[name] for name in CLASSES], dtype=np.uint8)
    archive = tmp_path / "task_round0.zip"
    names = export_names(S + T)
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("task/labelmap.txt", labelmap)
        zipped.writestr("task/ImageSets/Segmentation/default.txt", "\n".join(names.values()))
        for image, name in names.items():
            png = tmp_path / "mask.png"
            Image.fromarray(table[truth[image]]).save(png)
            zipped.write(png, f"task/{MASKS_DIR}/{name}.png")
        zipped.writestr(f"task/{MASKS_DIR}/._street__0001.png", b"macOS resource fork")  # hidden: ignored
    summary = import_labels(run, archive)
    assert sorted(summary.new) == sorted(IDS)
    for image in IDS:
        assert np.array_equal(read_label_mask(MADLayout(run).label_file(0, image), len(CLASSES)), truth[image])

    # the label the run does not know is named when a mask uses its colour
    other = build_run(tmp_path / "other")
    with zipfile.ZipFile(archive, "a") as zipped:
        tree = np.zeros(truth["street/0002.jpg"].shape + (3,), np.uint8)
        tree[:2, :2] = colours["tree"]
        Image.fromarray(tree).save(tmp_path / "tree.png")
        zipped.write(tmp_path / "tree.png", f"task/{MASKS_DIR}/street__0002.png")
    with pytest.raises(LabelImportError, match=r"\(10, 200, 10\) \(label 'tree', not a class of this run\): 4 px"):
        import_labels(other, archive)


def test_a_reordered_palette_is_read_by_colour(tmp_path: Path):
    run = build_run(tmp_path)
    out = tmp_path / "out"
    names = export_labels(run, out).names
    image = S[0]
    truth = predictions(run)[image]
    order = np.array([2, 0, 1])  # an editor's 'convert to indexed' put square first, then background, then disc
    palette = np.zeros((256, 3), np.uint8)
    palette[:3] = PALETTE[order]
    save_palette(out / MASKS_DIR / f"{names[image]}.png", np.argsort(order)[truth], palette)
    import_labels(run, out)
    assert np.array_equal(read_label_mask(MADLayout(run).label_file(0, image), len(CLASSES)), truth)


def test_a_bad_import_is_refused_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture):
    from segmend.commands.labels import import_main

    run = build_run(tmp_path)
    out = tmp_path / "out"
    names = export_labels(run, out).names
    # a first partial import, so labels/ already holds masks that must stay as they are
    (out / MASKS_DIR / f"{names[T[2]]}.png").rename(tmp_path / "held_back.png")
    import_labels(run, out)
    (tmp_path / "held_back.png").rename(out / MASKS_DIR / f"{names[T[2]]}.png")
    wrong_size = read_index_mask(out / MASKS_DIR / f"{names[S[0]]}.png")[:, :-3]
    save_palette(out / MASKS_DIR / f"{names[S[0]]}.png", wrong_size)
    rgb = PALETTE[read_index_mask(out / MASKS_DIR / f"{names[S[1]]}.png")]
    rgb[:2, :2] = (1, 2, 3)
    Image.fromarray(rgb).save(out / MASKS_DIR / f"{names[S[1]]}.png")
    index7 = read_index_mask(out / MASKS_DIR / f"{names[T[0]]}.png").copy()
    index7[0, :5] = 7
    save_palette(out / MASKS_DIR / f"{names[T[0]]}.png", index7)
    save_palette(out / MASKS_DIR / "stranger.png", np.zeros((4, 4), np.uint8))
    before = snapshot(run)

    assert import_main([str(run), str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("segmend import-labels: error: 4 problem(s), nothing imported:")
    h, w = MADState(run).load_candidates(0).sizes[S[0]]
    assert (
        f"{out / MASKS_DIR / names[S[0]]}.png is {w - 3}x{h} (width x height); the image {S[0]!r} is {w}x{h}" in error
    )
    assert (
        f"{out / MASKS_DIR / names[S[1]]}.png holds colours that are no class" in error and "(1, 2, 3): 4 px" in error
    )
    assert (
        f"{out / MASKS_DIR / names[T[0]]}.png holds pixel values that are no class: 7 (colour (128, 128, 128)): 5 px"
        in error
    )
    assert "masks of images that were not asked for in round 0: ['stranger.png']" in error
    assert snapshot(run) == before  # byte-identical: nothing written, no temporary folder left


def test_missing_masks_are_listed_and_complete_refuses_them(tmp_path: Path, capsys: pytest.CaptureFixture):
    from segmend.commands.labels import import_main

    run = build_run(tmp_path)
    out = tmp_path / "out"
    names = export_labels(run, out).names
    for image in (S[1], T[0]):
        (out / MASKS_DIR / f"{names[image]}.png").unlink()
    before = snapshot(run)
    assert import_main([str(run), str(out), "--complete"]) == 2
    assert f"No mask in {out} for 2 images of round 0: [{S[1]!r}, {T[0]!r}]" in capsys.readouterr().err
    assert snapshot(run) == before

    assert import_main([str(run), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 new, 0 replaced, 0 unchanged" in printed and f"2 images still need a mask: {S[1]}, {T[0]}" in printed
    # the masks were imported as exported: the target's predictions, which nobody corrected; the summary says so
    unedited = ", ".join(i for i in IDS if i not in (S[1], T[0]))
    assert f"4 of them equal the target's prediction (the pre-annotation, unedited): {unedited}." in printed
    state = MADState(run)
    assert FileOracle(run).request_labels(0, S + T, state.load_candidates(0).sizes) is None  # the loop still waits
    readme = MADLayout(run).readme_file(0).read_text()
    assert str(MADLayout(run).label_file(0, S[1])) in readme and str(MADLayout(run).label_file(0, S[0])) not in readme
    # a partially labelled round exported again: the labels given so far are the pre-annotations
    again = export_labels(run, tmp_path / "again")
    assert again.sources == {i: "prediction" if i in (S[1], T[0]) else "label" for i in IDS}


@pytest.mark.parametrize("before", ["none", "all"])
def test_an_interrupted_import_leaves_the_round_incomplete(
    before: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import segmend.mad.label_exchange as exchange

    run = build_run(tmp_path)
    out = tmp_path / "out"
    names = export_labels(run, out).names
    layout = MADLayout(run)
    sizes = MADState(run).load_candidates(0).sizes
    if before == "all":  # every mask is in; the person re-imports corrections of all of them
        import_labels(run, out)
        for image in IDS:
            path = out / MASKS_DIR / f"{names[image]}.png"
            save_palette(path, (read_index_mask(path) + 1) % len(CLASSES))
    moves = []
    real_replace = exchange.os.replace

    def dies_after_two_moves(src: str, dst: str) -> None:
        if layout.labels_dir(0) in Path(dst).parents:
            if len(moves) == 2:
                raise OSError("killed")
            moves.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(exchange.os, "replace", dies_after_two_moves)
    with pytest.raises(OSError, match="killed"):
        import_labels(run, out)
    monkeypatch.undo()
    assert len(moves) == 2
    # some masks are new, the others not: the set is incomplete, so the loop keeps waiting instead of using a mix
    assert FileOracle(run).request_labels(0, S + T, sizes) is None
    assert not list(layout.round_dir(0).glob(".labels*"))  # no staging folder left
    import_labels(run, out)  # run again: done
    labels = FileOracle(run).request_labels(0, S + T, sizes)
    assert labels is not None
    assert all(np.array_equal(labels[i], read_index_mask(out / MASKS_DIR / f"{names[i]}.png")) for i in IDS)


def test_earlier_labels_are_reused_not_exported_and_labelled_rounds_are_final(tmp_path: Path):
    from segmend.cli import main

    run = build_run(tmp_path)
    state = MADState(run)
    state.save_labels(0, predictions(run))
    state.save_metrics(0, {"target": {"mIoU": 0.5}})
    state.finish_round(0)
    with pytest.raises(SystemExit) as exit_info:  # through the real entry point: exit status 2, the reason printed
        main(["import-labels", str(run), str(tmp_path / "nothing"), "--round", "0"])
    assert exit_info.value.code == 2
    later = ["later/0001.jpg", "later/0002.jpg"]
    build_round(state, tmp_path / "pool", 1, [*later, T[0]], [later[0]], [later[1], T[0]], "selected")
    summary = export_labels(run, tmp_path / "out")
    assert summary.round == 1 and set(summary.names) == set(later) and summary.reused == 1
    assert "Labelled in an earlier round and reused: 1 image of S and T." in summary.text()
    save_palette(tmp_path / "out" / MASKS_DIR / f"{export_names([T[0]])[T[0]]}.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(LabelImportError, match="not asked for in round 1"):
        import_labels(run, tmp_path / "out")


def test_labelmap_errors_name_the_line(tmp_path: Path):
    path = tmp_path / LABELMAP_NAME
    path.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ndisc:128,0::\n")
    with pytest.raises(MADFileError, match=r"line 3: colour '128,0'; expected 'r,g,b'"):
        read_labelmap(path, CLASSES)
    path.write_text("background:0,0,0::\ndisc:9,9,9::\nsquare:9,9,9::\n")
    with pytest.raises(MADFileError, match="'disc' and 'square' have the same colour"):
        read_labelmap(path, CLASSES)
    path.write_text("background:0,0,0:a:b:c\n")
    with pytest.raises(MADFileError, match="line 1: .* has 5 ':'-separated fields"):
        read_labelmap(path, CLASSES)
    assert MANIFEST_NAME == "segmend-labels.json"


def test_the_import_summary_says_one_image_in_the_singular():
    from segmend.mad.label_exchange import ImportSummary

    text = ImportSummary(0, Path("labels"), new=["a.jpg"], missing=["b.jpg"], as_predicted=["a.jpg"]).text()
    assert "1 of them equals the target's prediction (the pre-annotation, unedited): a.jpg." in text
    assert "1 image still needs a mask: b.jpg" in text
