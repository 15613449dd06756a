"""Print pip constraints that pin every dependency of pyproject.toml to its declared lower bound.

``make test-lowest`` installs segmend with these constraints, so the lower bounds it tests are the
ones pyproject.toml declares and the two cannot drift apart::

    python .ci/lowest_constraints.py --override torch==2.14.1 > lowest.txt

A dependency without a ``>=`` bound is left free (it would not be a claim about old versions).
``--override NAME==VERSION`` replaces one pin: a machine that can only run one torch build tests the
other lower bounds with that build.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("lowest_constraints.py needs Python >= 3.11 (tomllib); run it with a newer python3.")

REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)")
LOWER = re.compile(r">=\s*(?P<version>[^,\s]+)")


def canonical(name: str) -> str:
    """The PEP 503 normalised form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds(requirements: list[str]) -> dict[str, str]:
    """Map each requirement that has a ``>=`` bound to that version (names normalised).

    Raises:
        ValueError: If a requirement cannot be read.

    """
    bounds = {}
    for requirement in requirements:
        found = REQUIREMENT.match(requirement)
        if not found:
            raise ValueError(f"cannot read the requirement {requirement!r} in pyproject.toml")
        lower = LOWER.search(found["spec"])
        if lower:
            bounds[canonical(found["name"])] = lower["version"]
    return bounds


def constraints(pyproject: Path, overrides: list[str]) -> list[str]:
    """``name==version`` lines for the lower bounds of ``pyproject``'s dependencies.

    Args:
        pyproject: Path of pyproject.toml.
        overrides: ``NAME==VERSION`` pins that replace the lower bound of ``NAME``.

    Raises:
        ValueError: If an override is not of the form ``NAME==VERSION`` or names no dependency.

    """
    bounds = lower_bounds(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    for override in overrides:
        name, separator, version = override.partition("==")
        if not separator or not version or canonical(name) not in bounds:
            raise ValueError(
                f"--override {override!r}: expected NAME==VERSION with NAME one of {', '.join(sorted(bounds))}"
            )
        bounds[canonical(name)] = version
    return [f"{name}=={version}" for name, version in sorted(bounds.items())]


def main() -> None:
    """Print the constraints."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    parser.add_argument("--override", action="append", default=[], metavar="NAME==VERSION")
    arguments = parser.parse_args()
    try:
        print("\n".join(constraints(arguments.pyproject, arguments.override)))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
