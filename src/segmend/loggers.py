"""Loggers with segmend's conventions: ``class_path: segmend.loggers.WandbLogger`` in a config."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

# wandb warnings that say nothing about the run: Lightning always passes ``anonymous`` (as None),
# which wandb >= 0.19 reports as deprecated on every run.
NOISE = ("The anonymous setting has no effect",)


def wandb_disabled() -> bool:
    """Whether the environment switches W&B off (``WANDB_MODE=disabled`` or ``WANDB_DISABLED=true``)."""
    return os.environ.get("WANDB_MODE", "").strip().lower() == "disabled" or os.environ.get(
        "WANDB_DISABLED", ""
    ).strip().lower() in ("true", "1", "yes")


class WandbLogger(LightningWandbLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.WandbLogger` that obeys ``WANDB_MODE=disabled``.

    Lightning's logger with ``offline=True`` sets ``WANDB_MODE=dryrun`` in the process environment
    when it starts its run, so a user's ``WANDB_MODE=disabled`` is overridden and the run still
    writes ``wandb/offline-run-*`` (and every later logger in the process runs offline too). This one
    asks wandb for ``mode="offline"`` instead of touching the environment, and when the environment
    disables W&B it creates a disabled run that writes nothing. It also creates ``save_dir`` before
    the run starts (wandb warns that the git root does not exist otherwise) and drops wandb's
    deprecation warning about the ``anonymous`` setting, which Lightning always passes.

    Args:
        offline: Run offline: write the run under ``save_dir`` to upload later with ``wandb sync``.
        **kwargs: Arguments of Lightning's ``WandbLogger`` (``project``, ``name``, ``save_dir``, ...)
            and of ``wandb.init``.

    """

    def __init__(self, offline: bool = False, **kwargs: Any) -> None:
        if wandb_disabled():
            kwargs["mode"] = "disabled"
            offline = False
        elif offline:
            if kwargs.get("log_model"):
                super().__init__(offline=True, **kwargs)  # Lightning's own error for offline + log_model
            if kwargs.get("mode") is None:  # the CLI passes every wandb.init argument, unset ones as None
                kwargs["mode"] = "offline"
            offline = False
        super().__init__(offline=offline, **kwargs)
        self._run_started = False

    @property
    def experiment(self) -> Any:
        """The wandb run, started on first use (without wandb's noise)."""
        if self._run_started:
            return super().experiment
        if self.save_dir is not None and not wandb_disabled():
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        with _drop_lines(NOISE):
            run = super().experiment
        self._run_started = True
        return run


@contextlib.contextmanager
def _drop_lines(fragments: tuple[str, ...]):  # noqa: ANN202
    """Pass stderr through, without the lines that contain any of ``fragments``."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        kept = [line for line in captured.getvalue().splitlines(True) if not any(f in line for f in fragments)]
        sys.stderr.write("".join(kept))
