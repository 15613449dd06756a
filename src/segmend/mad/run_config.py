"""What a run folder's ``config.yaml`` says about the MAD loop (``segmend fit`` writes it there).

The commands for people (``segmend status``, ``export-labels``) read it to find the loop's
settings (oracle, strategy, rounds, ``min_raters``), the pool, and the command that continues the
loop. A run started from Python (:func:`segmend.runs.fit`) has no ``config.yaml``: they then use
their defaults and say so.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segmend.mad.files import MADFileError

CONFIG_NAME = "config.yaml"
MAD_CALLBACK = "MADTroubleshooting"


@dataclass(frozen=True)
class RunConfig:
    """The parts of ``<run_dir>/config.yaml`` the commands for people use.

    Attributes:
        path: The file, ``None`` when the run folder has none.
        document: The parsed YAML (empty without a file).

    """

    path: Path | None
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def mad(self) -> dict[str, Any]:
        """The ``init_args`` of the ``MADTroubleshooting`` callback (empty when not found)."""
        callbacks = (self.document.get("trainer") or {}).get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            if isinstance(callback, dict) and str(callback.get("class_path", "")).split(".")[-1] == MAD_CALLBACK:
                return dict(callback.get("init_args") or {})
        return {}

    @property
    def data(self) -> dict[str, Any] | None:
        """The ``data`` section (``class_path`` and ``init_args``), if any."""
        data = self.document.get("data")
        return data if isinstance(data, dict) else None

    @property
    def root_dir(self) -> str | None:
        """``trainer.default_root_dir`` as written."""
        value = (self.document.get("trainer") or {}).get("default_root_dir")
        return None if value is None else str(value)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """Read ``<run_dir>/config.yaml`` (a :class:`RunConfig` without a path when there is none).

    Raises:
        MADFileError: If the file exists but is not a YAML mapping.

    """
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        return RunConfig(None)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise MADFileError(f"{path} is not a readable YAML file ({err}).") from err
    if not isinstance(document, dict):
        raise MADFileError(f"{path} holds a YAML {type(document).__name__}; expected the mapping segmend fit writes.")
    return RunConfig(path, document)


def fit_command(run_dir: str | Path, config: RunConfig) -> str | None:
    """The command that continues the loop: ``segmend fit -c <run_dir>/config.yaml``.

    ``--trainer.default_root_dir`` is added when the config's run folder, seen from the current
    folder, is not ``run_dir`` (a relative path written by a run started elsewhere).

    Returns:
        The command, or ``None`` for a run without ``config.yaml`` (started from Python).

    """
    if config.path is None:
        return None
    command = f"segmend fit -c {shlex.quote(str(config.path))}"
    if config.root_dir is None or Path(config.root_dir).resolve() != Path(run_dir).resolve():
        command += f" --trainer.default_root_dir={shlex.quote(str(run_dir))}"
    return command
