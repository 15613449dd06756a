"""``segmend status RUN_DIR [--json]``: where the MAD loop is, what waits for people, what to run next.

See :mod:`segmend.mad.status` and ``docs/mad.md`` ("People: export, import, status"). Exit codes:
0 (also while waiting), 2 when the folder or its state is refused, 1 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from segmend.commands import report
from segmend.mad.status import status


def main(argv: Sequence[str]) -> int:
    """Print the status of a MAD run folder (``--json``: the machine-readable form).

    Returns:
        The exit code.

    """
    parser = argparse.ArgumentParser(
        prog="segmend status",
        description="Say which round the MAD loop is in and its phase, what waits for people (each rater's "
        "progress, the pixel labels present and missing) and what to run next.",
    )
    parser.add_argument("run_dir", help="the run folder (trainer.default_root_dir)")
    parser.add_argument("--json", action="store_true", help="print JSON (format segmend-mad-status, version 1)")
    args = parser.parse_args(list(argv))

    def shown() -> str:
        result = status(args.run_dir)  # MADFileError (a ValueError): an unreadable state or config, named
        return json.dumps(result.to_dict(), indent=1) if args.json else result.text()

    return report("status", shown)
