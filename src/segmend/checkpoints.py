"""Reading weights from checkpoints: the one place segmend calls ``torch.load``.

:func:`read_weights` loads with ``torch.load(weights_only=True)``: tensors and plain data (dicts,
lists, numbers, strings) are read, and a file that would need any other object to be rebuilt is
refused without running anything, since unpickling an object can run arbitrary code. Lightning's
own checkpoints (full ones with optimizer and loop states, and the weights-only ``final.ckpt`` of
:mod:`segmend.runs`) hold nothing else, so they all load; Lightning itself reads them that way
when a fit resumes (``weights_only=None``, which torch treats as ``True``). No segmend code needs
``weights_only=False``: a net is re-created from a checkpoint's ``hyper_parameters``, which are
plain data (:func:`net_from_hyperparameters`), never unpickled.

The prefix of a sub-model's keys (``net.`` for the net of a segmend module) is handled here too,
and :func:`load_weights` checks keys and shapes with errors that name the file.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segmend.nets.factory import build_smp_net

HPARAMS_SHOWN = ("_class_path", "arch", "encoder_name", "num_classes", "net_kwargs")
"""Hyper-parameters named in errors: those that decide a segmend net's architecture."""


@dataclass(frozen=True)
class CheckpointWeights:
    """Tensors read from a checkpoint by :func:`read_weights`.

    Attributes:
        path: The file.
        prefix: The prefix the keys had in the file (stripped in ``state_dict``).
        state_dict: The selected tensors, keys without ``prefix``.
        hyper_parameters: The checkpoint's ``hyper_parameters`` (``{}`` for a plain state dict).

    """

    path: Path
    prefix: str
    state_dict: dict[str, Tensor]
    hyper_parameters: dict[str, Any]

    def describe_hyperparameters(self) -> str:
        """The architecture-deciding hyper-parameters, for error messages."""
        shown = {key: self.hyper_parameters[key] for key in HPARAMS_SHOWN if key in self.hyper_parameters}
        return f"hyper-parameters {shown}" if shown else "no hyper-parameters"


def _key_summary(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    groups = sorted({key.split(".", 1)[0] + "." if "." in key else key for key in keys})
    return f"{len(keys)} keys, first {keys[:3]}, top-level names {groups[:8]}"


def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The classes and functions a refused file would need (read without unpickling), or ``[]``."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))  # zip files (torch.save)
    except Exception:  # noqa: BLE001 - a legacy or broken file; fall back to torch's message
        found = []
    if not found:
        found = re.findall(r"GLOBAL ([\w.]+)", str(error))
    if not found:  # e.g. an opcode the tensors-only reader does not take
        details = re.findall(r"WeightsUnpickler error:\s*(.+?)\n\n", str(error))
        found = [f"torch: {detail.strip()}" for detail in details]
    return found


def _load_tensors(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``, with errors that name the file and what it holds.

    Raises:
        ValueError: If the file is missing, is not a torch file, or needs objects other than
            tensors and plain data (it is then not unpickled at all).

    """
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; give the path of a .ckpt file or a saved state dict.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _unsafe_globals(path, error)
        if not found and "weights only load failed" not in str(error).lower():
            raise ValueError(f"checkpoint {path} could not be read as a PyTorch file: {error}") from error
        raise ValueError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data "
            f"({', '.join(found) or 'see the error above'}), and loading those could run code from the file, so "
            "segmend reads only tensors (torch.load with weights_only=True). Expected a Lightning checkpoint or a "
            "state dict. If you trust the file, save its weights again as a plain state dict "
            "(torch.save(model.state_dict(), path)), or allow exactly those classes with "
            "torch.serialization.add_safe_globals([...]) before loading."
        ) from error
    except Exception as error:  # noqa: BLE001 - whatever else torch.load raises: not a readable torch file
        raise ValueError(f"checkpoint {path} could not be read as a PyTorch file: {error!r}") from error


def read_weights(path: str | Path, prefix: str = "net.") -> CheckpointWeights:
    """Read the tensors under ``prefix`` from a checkpoint, loading tensors only.

    Accepted files:

    * a Lightning checkpoint (a dict with ``state_dict``): the entries of its ``state_dict`` whose
      keys start with ``prefix`` (``"net."``: the net of a segmend module; ``""``: the whole module);
    * a plain state dict (a dict of tensors): the entries under ``prefix`` if there are any,
      otherwise the whole dict, taken as the state dict of the net itself (as saved by
      ``torch.save(net.state_dict(), path)``).

    Args:
        path: The file.
        prefix: Key prefix of the sub-model's weights.

    Returns:
        The weights, keys stripped of ``prefix``, and the checkpoint's hyper-parameters.

    Raises:
        ValueError: If the file is missing or refused (see :func:`_load_tensors`), is neither kind of
            file, or a Lightning checkpoint has no key under ``prefix`` (the message names the file,
            the prefix and the keys found).

    """
    path = Path(path)
    data = _load_tensors(path)
    lightning = isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping)
    state = data["state_dict"] if lightning else data
    if not isinstance(state, Mapping) or not all(isinstance(value, Tensor) for value in state.values()):
        found = (
            f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, Mapping) else type(state).__name__
        )
        raise ValueError(
            f"checkpoint {path} is neither a Lightning checkpoint (a dict with 'state_dict') nor a state dict "
            f"(a dict of tensors); found {found}."
        )
    selected = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not selected and (lightning or not prefix):
        raise ValueError(
            f"checkpoint {path} has no weights under the prefix {prefix!r}; its state_dict has "
            f"{_key_summary(state)}. Give the prefix of the sub-model to load (e.g. 'net.' for the net of a "
            "segmend module, '' for the whole module)."
        )
    hyper_parameters = data.get("hyper_parameters") if lightning else None
    return CheckpointWeights(
        path=path,
        prefix=prefix if selected else "",
        state_dict=selected or dict(state),
        hyper_parameters=dict(hyper_parameters) if isinstance(hyper_parameters, Mapping) else {},
    )


def load_weights(module: nn.Module, weights: CheckpointWeights, expected: str | None = None, hint: str = "") -> None:
    """Copy ``weights`` into ``module``, which must have exactly their keys and shapes.

    Args:
        module: The model receiving the weights.
        weights: Read by :func:`read_weights`.
        expected: What ``module`` is, for the error message (default: its class name).
        hint: What to change when the weights do not fit, appended to the error message.

    Raises:
        ValueError: If the keys or shapes differ (naming the file, the prefix, the differing keys
            and the checkpoint's architecture hyper-parameters).

    """
    expected = expected or type(module).__name__
    own = set(module.state_dict())
    if own != set(weights.state_dict):
        missing, unexpected = sorted(own - set(weights.state_dict)), sorted(set(weights.state_dict) - own)
        raise ValueError(
            f"checkpoint {weights.path} does not hold the weights of {expected}: under the prefix "
            f"{weights.prefix!r} it has {_key_summary(weights.state_dict)}; missing keys e.g. {missing[:3]}, "
            f"unexpected e.g. {unexpected[:3]}; found {weights.describe_hyperparameters()}. {hint}".rstrip()
        )
    try:
        module.load_state_dict(weights.state_dict)
    except RuntimeError as error:  # same keys, other shapes
        raise ValueError(
            f"checkpoint {weights.path}: the weights under {weights.prefix!r} have other shapes than those of "
            f"{expected} ({weights.describe_hyperparameters()}): {error} {hint}".rstrip()
        ) from error


def net_from_hyperparameters(hyper_parameters: Mapping[str, Any]) -> nn.Module:
    """The smp net a :class:`~segmend.modules.SegmentationModule` with these hyper-parameters builds.

    ``encoder_weights`` is not used: the checkpoint's weights replace the encoder's, so no
    pretrained file is needed.

    Args:
        hyper_parameters: A checkpoint's ``hyper_parameters`` (``arch``, ``encoder_name``,
            ``num_classes``, optionally ``net_kwargs``).

    Returns:
        The net, randomly initialised.

    Raises:
        ValueError: If a needed hyper-parameter is missing.

    """
    missing = [key for key in ("arch", "encoder_name", "num_classes") if hyper_parameters.get(key) is None]
    if missing:
        raise ValueError(
            f"the hyper-parameters {sorted(hyper_parameters)} lack {missing}, so the net cannot be rebuilt from "
            "them; build the net yourself and load its weights with FrozenModel(net).load_checkpoint(path), or pass "
            "build= (a function from the hyper-parameters to the net)."
        )
    return build_smp_net(
        hyper_parameters["arch"],
        hyper_parameters["encoder_name"],
        int(hyper_parameters["num_classes"]),
        None,
        **dict(hyper_parameters.get("net_kwargs") or {}),
    )
