"""Frozen sub-models loaded from checkpoints.

A frozen part (self-correction's ancillary model, error-pixel prediction's semantic branch, MAD's
competing models) is wrapped in :class:`FrozenModel`: always in eval mode (BatchNorm statistics
and Dropout fixed, also while the module that owns it trains), run without gradients, and left out
of the optimizer by :func:`trainable_parameters`. Its weights come from a checkpoint read with
tensors only (:mod:`segmend.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segmend.checkpoints import CheckpointWeights, load_weights, net_from_hyperparameters, read_weights
from segmend.nets.features import SegmentationFeatures, forward_features, segmentation_model


class FrozenModel(nn.Module):
    """A sub-model that never trains: always in eval mode, run without gradients, outside the optimizer.

    ``train()`` (which Lightning calls on the whole module at the start of a fit and after each
    validation) leaves it, BatchNorm and Dropout included, in eval mode; its parameters do not
    require gradients; :meth:`forward` runs under ``torch.no_grad()`` (its outputs carry no graph,
    so no gradient reaches it even if a caller sets ``requires_grad`` again);
    :func:`trainable_parameters` leaves it out of the optimizer's groups.

    Its weights are in the owner's state dict under ``<name>.module.``; a state dict written before
    the model was wrapped (``<name>.<key>``) loads too.

    Args:
        module: The model to freeze (changed in place: ``requires_grad`` off, eval mode).

    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.module.requires_grad_(False)
        self.train(False)
        self.register_load_state_dict_pre_hook(_accept_unwrapped_keys)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        build: Callable[[Mapping[str, Any]], nn.Module] = net_from_hyperparameters,
        prefix: str = "net.",
    ) -> FrozenModel:
        """Build a model from a checkpoint's hyper-parameters, load its weights, freeze it.

        Args:
            path: A Lightning checkpoint (read with tensors only, see :func:`read_weights`).
            build: Makes the untrained model from the checkpoint's ``hyper_parameters``; the default
                builds the net of a :class:`~segmend.modules.SegmentationModule`.
            prefix: Key prefix of the model's weights in the checkpoint.

        Returns:
            The frozen model.

        Raises:
            ValueError: If the file is refused, or the weights do not fit the built model.

        """
        weights = read_weights(path, prefix)
        try:
            model = build(weights.hyper_parameters)
        except ValueError as error:
            raise ValueError(f"checkpoint {weights.path}: {error}") from error
        frozen = cls(model)
        load_weights(frozen.module, weights, hint="Was it trained with a custom net? Pass build= to make that net.")
        return frozen

    def load_checkpoint(
        self, path: str | Path, prefix: str = "net.", expected: str | None = None, hint: str = ""
    ) -> CheckpointWeights:
        """Load the weights under ``prefix`` of a checkpoint into the frozen model.

        Args:
            path: A Lightning checkpoint or a state dict (see :func:`read_weights`).
            prefix: Key prefix of the model's weights in the checkpoint.
            expected: What the model is, for error messages.
            hint: What to change when the weights do not fit.

        Returns:
            What was read (the weights and the checkpoint's hyper-parameters).

        Raises:
            ValueError: If the file is refused or the weights do not fit (see :func:`load_weights`).

        """
        weights = read_weights(path, prefix)
        load_weights(self.module, weights, expected, hint)
        return weights

    def train(self, mode: bool = True) -> FrozenModel:
        """Stay in eval mode whatever ``mode`` is (a frozen model never trains)."""
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward, without gradients."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @property
    def segmentation_model(self) -> nn.Module | None:
        """The smp model the frozen net is or wraps (``None`` if none).

        With :meth:`forward_features` this makes a frozen net a
        :class:`~segmend.nets.features.FeatureNet`: wherever a net is expected (as a module's ``net``),
        :func:`~segmend.nets.features.forward_features` and
        :func:`~segmend.nets.features.encoder_channels` read its features like those of the net it wraps,
        without gradients.
        """
        return segmentation_model(self.module)

    def forward_features(self, image: Tensor, boxes: Tensor | None = None) -> SegmentationFeatures:
        """The wrapped net's :class:`~segmend.nets.features.SegmentationFeatures`, without gradients."""
        with torch.no_grad():
            return forward_features(self.module, image, boxes)


def _accept_unwrapped_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load-state-dict pre-hook of :class:`FrozenModel`: move ``<prefix><key>`` to ``<prefix>module.<key>``."""
    for key in [key for key in state_dict if key.startswith(prefix) and not key.startswith(f"{prefix}module.")]:
        state_dict[f"{prefix}module.{key[len(prefix) :]}"] = state_dict.pop(key)


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``module`` outside every :class:`FrozenModel` in it (what an optimizer gets).

    Args:
        module: Usually a LightningModule.

    Returns:
        Its parameters, in ``module.parameters()`` order, less those of frozen parts.

    """
    frozen = {id(p) for part in module.modules() if isinstance(part, FrozenModel) for p in part.parameters()}
    return [p for p in module.parameters() if id(p) not in frozen]
