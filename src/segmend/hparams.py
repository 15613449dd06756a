"""What segmend's modules and DataModules hand to the loggers as hyperparameters."""

from __future__ import annotations

from lightning.pytorch.utilities import AttributeDict


class LoggedHyperparameters:
    """Mixin for a LightningModule or LightningDataModule: log its hyperparameters without private keys.

    Under LightningCLI, ``save_hyperparameters`` also records ``_class_path`` and ``_instantiator``,
    which the checkpoint needs but a logger's run config does not (Lightning drops the first
    itself, not the second). The checkpoint still stores both.
    """

    @property
    def hparams_initial(self) -> AttributeDict:
        """The hyperparameters given at construction, less LightningCLI's private ``_``-prefixed keys."""
        initial = super().hparams_initial  # type: ignore[misc]
        return AttributeDict({key: value for key, value in initial.items() if not key.startswith("_")})
