"""Plot ARM's learned weight mapping against Hoelder's closed form while training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402

from segmend.losses.reweighting import holder_optimal_weights  # noqa: E402


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (NaN when one is constant)."""
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


class ARMCurveLogger(Callback):
    """Every ``every_n_steps`` training steps, compare ``W(v)`` with its closed-form optimum.

    The module (an :class:`~segmend.modules.ARMModule`) keeps a running loss-by-confidence
    histogram; from it the callback computes the weights Hoelder's inequality says maximise the
    weighted loss under the module's p-norm, and plots them with ARM's current ``W(v)`` (both
    scaled to a maximum of 1), next to the weight map of the last training image. The figure goes
    to W&B (``arm/curve``) when a WandbLogger is attached and always to
    ``<log_dir>/arm/step<NNNNNN>.png``; the rank correlation of the two curves is logged as
    ``arm/closed_form_rank_corr``. The histogram is reset after each plot.

    Args:
        every_n_steps: Plot interval in optimizer steps.

    """

    def __init__(self, every_n_steps: int = 200) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self._folder: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Ask the module to keep its loss-by-confidence histogram (off by default: it costs time).

        Also resolves the plot folder here, on every process: ``Trainer.log_dir`` is a broadcast under
        DDP, so calling it from rank 0 alone (where plots are saved) would hang.
        """
        self._folder = Path(trainer.log_dir or trainer.default_root_dir) / "arm"
        if hasattr(pl_module, "track_loss_by_confidence"):
            pl_module.track_loss_by_confidence = True

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        histogram = getattr(pl_module, "loss_by_confidence", None)
        if histogram is None or trainer.global_step % self.every_n_steps != 0 or histogram.count.sum() == 0:
            return
        centres = histogram.centres
        with torch.no_grad():
            weight_map = pl_module.weight_map
            param = next(iter(weight_map.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
            learned = weight_map(centres.view(1, 1, 1, -1).to(device)).flatten().cpu().numpy()
        optimal = holder_optimal_weights(histogram.mean_loss(), histogram.count, pl_module.hparams.norm_p).numpy()
        occupied = histogram.count.numpy() > 0
        corr = rank_correlation(learned[occupied], optimal[occupied])
        if trainer.is_global_zero:
            figure = self._figure(centres.numpy(), learned, optimal, occupied, pl_module.last_weight_map, corr)
            self._save(trainer, figure)
            plt.close(figure)
        pl_module.log("arm/closed_form_rank_corr", corr, rank_zero_only=True)
        histogram.reset()

    @staticmethod
    def _figure(centres, learned, optimal, occupied, weight_map, corr: float):  # noqa: ANN001, ANN205
        figure, (curve, image) = plt.subplots(1, 2, figsize=(9, 3.6))
        curve.plot(centres, learned / max(learned.max(), 1e-12), label="ARM W(v)")
        curve.plot(centres[occupied], optimal[occupied] / max(optimal.max(), 1e-12), "o--", label="closed form")
        curve.set_xlabel("confidence v (normalised variance)")
        curve.set_ylabel("weight / max")
        curve.set_title(f"rank correlation {corr:.3f}")
        curve.legend()
        if weight_map is not None:
            shown = image.imshow(weight_map.float().cpu().numpy(), cmap="magma")
            figure.colorbar(shown, ax=image)
        image.set_title("weight map (last training image)")
        image.axis("off")
        figure.tight_layout()
        return figure

    def _save(self, trainer: Trainer, figure) -> Path:  # noqa: ANN001
        folder = self._folder or Path(trainer.default_root_dir) / "arm"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step{trainer.global_step:06d}.png"
        figure.savefig(path, dpi=80)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log({"arm/curve": wandb.Image(str(path)), "trainer/global_step": trainer.global_step})
        return path
