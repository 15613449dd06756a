"""segmend uses only the public API of the libraries it builds on (issue 11, part 5).

A name with a leading underscore is private to the library that defines it (Lightning, jsonargparse,
torch, smp, albumentations, argparse, wandb, ...) and may change in any release. Checks:

* source (``ast``): attribute access ``x._name``, ``getattr(x, "_name")`` and imports of private
  modules or names, where segmend itself does not define ``_name``;
* classes (at run time): no private method or attribute of a segmend class shadows one that a library
  base class uses (overriding argparse's ``_get_help_string`` was such a case);
* the private uses removed in issue 11 stay removed.

``python tests/test_public_api.py`` lists every underscore access of the sources, segmend's own ones
included, for a review by hand.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("src", "callbacks", "datamodules", "bench", "tests")
ATTRIBUTE_FUNCTIONS = ("getattr", "hasattr", "setattr", "delattr")

# Private uses that stay, each with the reason. Keys: (path relative to the repo, private name).
ALLOWED = {
    ("tests/test_selfcorr_cli.py", "_wandb_init"): (
        "self-correction's tests stay unchanged (issue 11); the stage logger's W&B name is read in a test only"
    ),
}

# Removed in issue 11; a regression would bring back one of these (checked in the library's code).
REMOVED = {
    "LightningCLI._parser": re.compile(r"\._parser\b"),
    "LightningCLI._instantiate_trainer": re.compile(r"\b_instantiate_trainer\b"),
    "ModelCheckpoint._save_topk_checkpoint": re.compile(r"\b_save_topk_checkpoint\b"),
    "trainer.fit_loop written after construction": re.compile(r"fit_loop\.\w+\s*=[^=]"),
}


@dataclass(frozen=True)
class Access:
    """One use of an underscore name in the sources."""

    path: str
    line: int
    name: str
    code: str
    own: bool

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code} ({'segmend' if self.own else 'LIBRARY'})"


def is_private(name: str) -> bool:
    """Whether ``name`` has a leading underscore and is not a dunder."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def python_files() -> list[Path]:
    """The Python sources of the repository that are scanned."""
    return sorted(path for root in SOURCES for path in (REPO / root).rglob("*.py"))


def parse(path: Path) -> ast.Module:
    """The syntax tree of ``path``."""
    return ast.parse(path.read_text(), filename=str(path))


def own_private_names(trees: list[ast.Module]) -> set[str]:
    """The underscore names segmend defines: functions, classes, variables and ``self``/``cls`` attributes."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
    return {name for name in names if is_private(name)}


def private_imports(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """Imports of a private module or name of another package, as (node, dotted name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            dotted = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in dotted:
            if name.split(".")[0] != "segmend" and any(is_private(part) for part in name.split(".")):
                yield node, name


def private_accesses() -> Iterator[Access]:
    """Every underscore attribute, ``getattr``-style name and private import in the sources."""
    files = python_files()
    trees = {path: parse(path) for path in files}
    own = own_private_names(list(trees.values()))
    for path, tree in trees.items():
        relative = path.relative_to(REPO).as_posix()
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ATTRIBUTE_FUNCTIONS
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and is_private(node.args[1].value)
            ):
                name = node.args[1].value
            if name is not None:
                yield Access(relative, node.lineno, name, ast.unparse(node), own=name in own)
        for node, dotted in private_imports(tree):
            yield Access(relative, node.lineno, dotted, ast.unparse(node), own=False)


def test_no_private_attribute_of_a_library_is_used():
    found = [
        str(access) for access in private_accesses() if not access.own and (access.path, access.name) not in ALLOWED
    ]
    assert not found, "private API of a library used (find a public way, or add it to ALLOWED with the reason):\n" + (
        "\n".join(found)
    )


def test_allowed_exceptions_still_exist():
    """An entry of ALLOWED whose use is gone must go too, so the list stays what it claims."""
    used = {(access.path, access.name) for access in private_accesses()}
    assert not set(ALLOWED) - used, f"remove these from ALLOWED: {sorted(set(ALLOWED) - used)}"


def segmend_classes() -> list[type]:
    """Every class defined in a module of the installed ``segmend`` package.

    ``segmend.callbacks`` and ``segmend.datamodules`` live in folders of their own (pyproject's
    ``package-dir``), so they are walked as packages of their own.
    """
    packages = [importlib.import_module(name) for name in ("segmend", "segmend.callbacks", "segmend.datamodules")]
    modules = packages + [
        importlib.import_module(info.name)
        for package in packages
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    ]
    classes = {
        id(cls): cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
    }
    return list(classes.values())


def library_bases(cls: type) -> list[type]:
    """The classes of ``cls``'s MRO that segmend does not define (``object`` left out)."""
    return [base for base in cls.__mro__[1:] if not base.__module__.startswith("segmend") and base is not object]


def private_members(cls: type) -> set[str]:
    """The underscore names a segmend class defines: in its body and as ``self._name = ...`` in its methods.

    Read from the class's source, so names Python itself adds (``_abc_impl``, ``_is_protocol``) do not count.
    """
    try:
        tree = ast.parse(inspect.getsource(cls).lstrip())  # lstrip: a class nested in a function
    except (OSError, TypeError, SyntaxError):
        return set()
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    names = {node.name for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    names |= {
        target.id
        for node in body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    names |= {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    return {name for name in names if is_private(name) and name != "_"}


def uses_name(base: type, name: str) -> bool:
    """Whether the library class ``base`` has or refers to ``name`` (in its source, when it has Python source)."""
    if name in vars(base):
        return True
    try:
        source = inspect.getsource(base)
    except (OSError, TypeError):
        return False
    return re.search(rf"\b{re.escape(name)}\b", source) is not None


def test_no_segmend_class_shadows_a_private_member_of_a_library_class():
    shadowed = [
        f"{cls.__module__}.{cls.__qualname__}.{name} shadows {base.__module__}.{base.__qualname__}.{name}"
        for cls in segmend_classes()
        for name in sorted(private_members(cls))
        for base in library_bases(cls)
        if uses_name(base, name)
    ]
    assert not shadowed, "\n".join(shadowed)


@pytest.mark.parametrize("removed", sorted(REMOVED))
def test_private_uses_removed_in_issue_11_stay_removed(removed: str):
    pattern = REMOVED[removed]
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for root in ("src", "callbacks", "datamodules", "bench")
        for path in sorted((REPO / root).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"{removed} is back:\n" + "\n".join(found)


class ShadowingFormatter(argparse.HelpFormatter):
    """What the shadow check must catch: an override of a private method, a write to a private attribute."""

    def _get_help_string(self, action: argparse.Action) -> str:
        self._width = 40
        return super()._get_help_string(action)


def test_the_shadow_check_finds_private_overrides():
    assert private_members(ShadowingFormatter) == {"_get_help_string", "_width"}
    assert library_bases(ShadowingFormatter) == [argparse.HelpFormatter]
    assert all(uses_name(argparse.HelpFormatter, name) for name in private_members(ShadowingFormatter))


def test_the_checks_find_what_they_look_for():
    """The source check flags a library's private attribute, private imports and getattr; not segmend's own names."""
    tree = ast.parse(
        "import torch._dynamo\n"
        "from argparse import _SubParsersAction\n"
        "class Net:\n"
        "    def __init__(self):\n"
        "        self._cache = {}\n"
        "    def f(self, trainer):\n"
        "        return self._cache, trainer._results, getattr(trainer, '_logger_connector')\n"
    )
    own = own_private_names([tree])
    assert own == {"_cache"}
    imports = [name for _, name in private_imports(tree)]
    assert imports == ["torch._dynamo", "argparse._SubParsersAction"]
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and is_private(node.attr)}
    assert attributes - own == {"_results"}
    for pattern, line in zip(
        REMOVED.values(),
        (
            "cli._parser.parse_args()",
            "self._instantiate_trainer(config)",
            "cb._save_topk_checkpoint(t, m)",
            "trainer.fit_loop.max_epochs = 3",
        ),
        strict=True,
    ):
        assert pattern.search(line), line
    assert not REMOVED["trainer.fit_loop written after construction"].search("if trainer.fit_loop.max_epochs == 3:")


if __name__ == "__main__":
    for access in private_accesses():
        print(access)
