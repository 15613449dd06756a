"""segmend's commands beside Lightning's (``fit``, ``validate``, ...): the people in the MAD loop.

``segmend <command> ...`` runs the ``main(argv) -> int`` of the command's module; the modules are
imported only when their command runs.

=================  =========================================  ===========================================
command            module                                     what
=================  =========================================  ===========================================
``rate``           :mod:`segmend.commands.rate`               a local web page where people give weak scores
``export-labels``  :mod:`segmend.commands.labels`             S and T with pre-annotations, CVAT / VOC layout
``import-labels``  :mod:`segmend.commands.labels`             corrected masks back into the run, validated
``status``         :mod:`segmend.commands.status`             where the loop is, what waits for people
=================  =========================================  ===========================================
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

#: command name -> (module, function taking the arguments after the command name and returning an exit code)
COMMANDS: dict[str, tuple[str, str]] = {
    "rate": ("segmend.commands.rate", "main"),
    "export-labels": ("segmend.commands.labels", "export_main"),
    "import-labels": ("segmend.commands.labels", "import_main"),
    "status": ("segmend.commands.status", "main"),
}


def run_command(argv: list[str]) -> int:
    """Run ``argv[0]`` (a key of :data:`COMMANDS`) with the arguments after it; its exit code."""
    module, function = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)


def report(command: str, action: Callable[[], str]) -> int:
    """Run ``action`` and print the text it returns; the command's exit code.

    Bad input (``ValueError``: a refused file, state or argument, named in the message) is printed
    as ``segmend <command>: error: ...`` with exit code 2; a file that could not be read or written
    (``OSError``) the same way with exit code 1.
    """
    try:
        text = action()
    except ValueError as error:
        print(f"segmend {command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"segmend {command}: error: {error}", file=sys.stderr)
        return 1
    print(text)
    return 0
