"""Hints the ``segmend`` command adds to parse errors: closest names, and where an option lives."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterable

from jsonargparse import ArgumentParser

UNKNOWN_CLASS = re.compile(r"(?:import path string|Import path|No module named)[:\s]+'?([\w.]+)'?")
UNKNOWN_OPTION = re.compile(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted")
UNRECOGNIZED = re.compile(r"unrecognized arguments: (.+)")

# top-level options of Lightning's own CLI that are model arguments in segmend
MODEL_ARGUMENTS = {
    "optimizer": "--model.init_args.optimizer=Adam --model.init_args.optimizer.init_args.lr=0.001",
    "lr_scheduler": "--model.init_args.lr_scheduler=StepLR --model.init_args.lr_scheduler.init_args.step_size=10",
}


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (case-insensitive), or ``None`` when none is close."""
    candidates = list(candidates)
    by_lower = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def init_arguments(class_path: str) -> list[str]:
    """Names of the constructor arguments of ``class_path``, following ``**kwargs`` up the class's bases."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for base in inspect.getmro(cls):
        if "__init__" not in vars(base) or base is object:
            continue
        parameters = inspect.signature(base.__init__).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return list(dict.fromkeys(names))


def parser_options(parser: ArgumentParser) -> list[str]:
    """The ``--dotted.options`` a parser accepts (from its defaults; empty if they cannot be read)."""
    try:
        defaults = parser.get_defaults()
    except Exception:  # noqa: BLE001 - a hint must never hide the original error
        return []
    return [f"--{key}" for key in defaults.keys()]


def hint_for(message: str, parser: ArgumentParser, short_names: Iterable[str]) -> str:
    """Hint lines to append to a parse error ``message`` (empty when there is nothing useful to add).

    Args:
        message: The error jsonargparse reported.
        parser: The parser that reported it (for the options it accepts).
        short_names: segmend's short class names.

    Returns:
        Text starting with a newline, or ``""``.

    """
    hints: list[str] = []
    short_names = list(short_names)
    option = UNKNOWN_OPTION.search(message)
    if option:
        class_path, name = option.groups()
        accepted = init_arguments(class_path)
        suggestion = closest(name, accepted)
        class_name = class_path.rpartition(".")[2]
        if suggestion:
            hints.append(f"did you mean '{suggestion}'? ('{name}' is not an argument of {class_name})")
        elif accepted:
            hints.append(f"{class_name} accepts: {', '.join(accepted)}")
    elif "class_path" in message or "import path" in message.lower():
        unknown = UNKNOWN_CLASS.search(message)
        if unknown:
            name = unknown.group(1)
            suggestion = closest(name.rpartition(".")[2], short_names)
            if suggestion:
                hints.append(f"did you mean '{suggestion}'? ('{name}' is not a class segmend can import)")
            hints.append(
                "a class_path is one of segmend's short names (" + ", ".join(short_names) + ") or a full "
                "import path such as lightning.pytorch.callbacks.ModelCheckpoint; check its spelling and that "
                "the package defining it is installed."
            )
    unrecognized = UNRECOGNIZED.search(message)
    if unrecognized:
        for argument in unrecognized.group(1).split():
            if not argument.startswith("--"):
                continue
            key = argument[2:].split("=", 1)[0]
            if key in MODEL_ARGUMENTS:
                hints.append(
                    f"segmend has no top-level --{key}: it is an argument of the model, so that methods with "
                    f"several parameter groups (ARM) keep them. Use for example: {MODEL_ARGUMENTS[key]}"
                )
                continue
            suggestion = closest(f"--{key}", parser_options(parser))
            if suggestion:
                hints.append(f"did you mean '{suggestion}'? ('{argument}' is not an option)")
    return "".join(f"\nhint: {line}" for line in hints)
