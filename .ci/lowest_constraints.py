"""Print pip constraints that pin every dependency of pyproject.toml to its declared lower bound.

``make test-lowest`` installs segmend with these constraints, so the lower bounds it tests are the
ones pyproject.toml declares and the two cannot drift apart::

    python .ci/lowest_constraints.py --extra test > lowest.txt

A dependency without a ``>=`` bound is left free (it makes no claim about old versions), and so is
an extra's reference to segmend itself (``segmend[test]``).
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

PROJECT = "segmend"
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
        if lower and canonical(found["name"]) != PROJECT:
            bounds[canonical(found["name"])] = lower["version"]
    return bounds


def constraints(pyproject: Path, extras: list[str]) -> list[str]:
    """``name==version`` lines for the lower bounds of ``pyproject``'s dependencies and of ``extras``.

    Raises:
        ValueError: If an extra is not declared, or a requirement cannot be read.

    """
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(declared))
    if unknown:
        raise ValueError(f"no extra {', '.join(unknown)} in {pyproject}; it declares {', '.join(sorted(declared))}")
    requirements = project["dependencies"] + [line for extra in extras for line in declared[extra]]
    return [f"{name}=={version}" for name, version in sorted(lower_bounds(requirements).items())]


def main() -> None:
    """Print the constraints."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    parser.add_argument("--extra", action="append", default=[], help="also pin this extra's requirements")
    arguments = parser.parse_args()
    try:
        print("\n".join(constraints(arguments.pyproject, arguments.extra)))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
