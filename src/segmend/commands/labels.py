"""``segmend export-labels`` and ``segmend import-labels``: pixel labels of S and T with people's tools.

::

    segmend export-labels RUN_DIR OUT [--round R] [--pool DIR] [--overwrite]
    segmend import-labels RUN_DIR DIR [--round R] [--complete]

See :mod:`segmend.mad.label_exchange` and ``docs/mad.md`` ("People: export, import, status").
Exit codes: 0 done, 1 a file could not be written, 2 bad input (the message names the file, what
was expected and what was found).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from segmend.commands import report
from segmend.mad.label_exchange import export_labels, import_labels


def _round(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a round is an integer >= 0; got {text}")
    return value


def export_main(argv: Sequence[str]) -> int:
    """``segmend export-labels``: the images of S and T with pre-annotations, CVAT / PASCAL VOC layout.

    Returns:
        The exit code.

    """
    parser = argparse.ArgumentParser(
        prog="segmend export-labels",
        description="Export the images of S and T that still need pixel labels, with pre-annotation masks "
        "(the labels given so far, else the target's predictions), in the CVAT 'Segmentation mask 1.1' / "
        "PASCAL VOC layout: JPEGImages, SegmentationClass, labelmap.txt, ImageSets/Segmentation/default.txt.",
    )
    parser.add_argument("run_dir", help="the run folder (trainer.default_root_dir)")
    parser.add_argument("out", help="a new or empty folder to export into")
    parser.add_argument("--round", type=_round, default=None, help="the round (default: the one waiting for labels)")
    parser.add_argument(
        "--pool",
        default=None,
        help="take the images from this folder of the pool (<DIR>/<id>) first; default: the run folder's "
        "copies, else the pool named in config.yaml",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export of the same round in OUT")
    args = parser.parse_args(list(argv))
    return report("export-labels", lambda: export_labels(args.run_dir, args.out, args.round, pool=args.pool,
                                                         overwrite=args.overwrite).text())  # fmt: skip


def import_main(argv: Sequence[str]) -> int:
    """``segmend import-labels``: validate corrected masks, then put them into the round's ``labels/``.

    Returns:
        The exit code.

    """
    parser = argparse.ArgumentParser(
        prog="segmend import-labels",
        description="Check the masks of an export folder (or CVAT's 'Segmentation mask 1.1' export, folder or zip) "
        "and put them into <run_dir>/mad/round_<r>/labels/. Nothing is written unless every mask is valid.",
    )
    parser.add_argument("run_dir", help="the run folder (trainer.default_root_dir)")
    parser.add_argument("folder", help="the folder (or zip) holding SegmentationClass/ and optionally labelmap.txt")
    parser.add_argument("--round", type=_round, default=None, help="the round (default: the one waiting for labels)")
    parser.add_argument("--complete", action="store_true", help="refuse the import unless every image has a mask")
    args = parser.parse_args(list(argv))
    return report(
        "import-labels", lambda: import_labels(args.run_dir, args.folder, args.round, complete=args.complete).text()
    )
