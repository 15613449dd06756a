"""``MADTroubleshooting``: the MAD loop (Wang et al. 2022, Algorithm 1) as a callback between fits.

Put it in a Trainer's callbacks and run ``segmend fit`` (or :func:`segmend.runs.fit` with
``callbacks=[mad]``): it turns the fit into the runner's stages (``docs/mad.md``, "The
troubleshooting loop")::

    mad_competitor_<j>_<arch>   competitors given as "Arch:encoder" specs, trained where missing
    mad_target                  the target's initial training; at its end round 0 is mined
    mad_round_<k>               fine-tuning on S (k = 1..rounds); at its end round k is mined
    mad_complete_<rounds>       only when the last round still waits for people (no training)

At the end of a round's fit (every rank): the pool statistics (sharded, gathered), M, weak scores,
S and T, pixel labels of S and T, mIoU of every model on T; rank 0 writes each step to
:class:`~segmend.mad.state.MADState`, every rank reads the same S. At the next fit's ``setup`` the
steps still pending (people were not done) are completed, and S joins the training data.

The callback is made of one file per idea: ``mad_stages.py`` (the runner's stages), this file (the
hooks, and a round across DDP ranks), ``mad_pool.py`` (inference over the pool),
``mad_round.py`` (rank 0's steps of a round) and ``mad_report.py`` (the report, the grid of S).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from segmend.callbacks.mad_pool import (
    CompetitorCache,
    ErrorMassScorer,
    PoolSource,
    gather_records,
    pool_statistics,
)
from segmend.callbacks.mad_round import MADRoundSteps
from segmend.callbacks.mad_stages import MADStages
from segmend.mad import (
    STRATEGIES,
    PoolStats,
)
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import FileOracle, Oracle, SimulatedOracle
from segmend.mad.state import MADState
from segmend.runs import StopRun

ORACLES = ("files", "simulated")


class MADTroubleshooting(MADStages, MADRoundSteps, Callback):
    """Mines the pool between fits, asks an oracle, adds the counterexamples S, fine-tunes; round after round.

    Args:
        competitors: Competing models: paths of SegmentationModule checkpoints, or ``"Arch:encoder"``
            specs (e.g. ``"FPN:resnet18"``), trained first (random init, the target's classes,
            optimizer and Trainer settings) where their checkpoint is missing.
        pool_split: A split of the DataModule read as the pool (e.g. the synthetic data's ``"wild"``);
            its labels are never read.
        pool_root: Or a folder of images, read by :class:`~segmend.datamodules.ImageFolderPool`.
        target_checkpoint: A trained target (a SegmentationModule checkpoint of the config's model):
            its net's weights are loaded and ``mad_target`` only mines round 0; ``None``: the
            ``mad_target`` stage trains the target.
        oracle: ``"files"`` (people answer through files in the run folder,
            :class:`~segmend.mad.oracle.FileOracle`), ``"simulated"`` (the synthetic wild split's
            ground truth, :meth:`SimulatedOracle.from_synthetic_wild`) or an :class:`Oracle`.
        raters: Simulated raters.
        noise_std: Simulated raters' noise (score units).
        min_raters: Raters a file oracle waits for.
        rounds: Fine-tuning rounds r (paper: 2); rounds 0..r are mined.
        n3: Images per (competitor, role, class) subgroup in M (paper: 25).
        n4: Size of S per round (paper: 100).
        test_size: Size of T per round (paper: 30).
        per_class: At most this many images of T per main foreground class (paper: 4).
        bounds_statistic: Content bounds from the training labels: ``"quartiles"`` (the paper's),
            ``"mean_std"``, or ``"none"`` (subgroups by predicted classes only, no size filter).
        strategy: ``"mad"`` (Algorithm 1) or another of :data:`segmend.mad.STRATEGIES`
            (``entropy``, ``random``, ``error_mass``, ...; no weak scores are asked then).
        error_checkpoint: An :class:`~segmend.modules.ErrorPixelModule` checkpoint (error stage
            trained): its error branch adds the scalars ``error_mass`` and ``error_area`` to the
            pool statistics. Required by ``strategy="error_mass"``. The branch judges its own
            frozen semantic branch, so it describes the target exactly only while the target has
            that branch's weights (round 0).
        finetune_steps: Optimizer steps of each fine-tuning fit.
        finetune_lr: Fine-tuning learning rate (SGD, momentum 0.9, weight decay 5e-4, poly decay
            with power 0.9, the paper's settings after Chen et al.).
        counterexamples_per_batch: Samples of S in each fine-tuning batch (``None``: S's share, at least 1).
        report_images: Images of S per round in ``mad/round_<r>/counterexamples.png`` and the W&B table.
        run_dir: The run folder; ``None``: found from the Trainer (the parent of a ``mad_*`` stage
            folder, else ``trainer.default_root_dir``).

    Raises:
        ValueError: For invalid arguments (the message says which and what to give).

    """

    def __init__(
        self,
        competitors: Sequence[str] = (),
        pool_split: str | None = None,
        pool_root: str | None = None,
        target_checkpoint: str | None = None,
        oracle: str | Oracle = "files",
        raters: int = 3,
        noise_std: float = 0.5,
        min_raters: int = 1,
        rounds: int = 2,
        n3: int = 25,
        n4: int = 100,
        test_size: int = 30,
        per_class: int = 4,
        bounds_statistic: Literal["quartiles", "mean_std", "none"] = "quartiles",
        strategy: str = "mad",
        error_checkpoint: str | None = None,
        finetune_steps: int = 200,
        finetune_lr: float = 1e-3,
        counterexamples_per_batch: int | None = None,
        report_images: int = 16,
        run_dir: str | None = None,
    ) -> None:
        if (pool_split is None) == (pool_root is None):
            raise ValueError("Give exactly one of pool_split (a split of the DataModule) and pool_root (a folder).")
        if isinstance(oracle, str) and oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {ORACLES} or an Oracle object; got {oracle!r}.")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}; got {strategy!r}.")
        if strategy == "mad" and not competitors:
            raise ValueError("strategy 'mad' needs competitors: give checkpoint paths or 'Arch:encoder' specs.")
        if strategy == "error_mass" and error_checkpoint is None:
            raise ValueError("strategy 'error_mass' needs error_checkpoint: an ErrorPixelModule checkpoint.")
        for name, value in {"rounds": rounds + 1, "n3": n3, "n4": n4, "test_size": test_size, "per_class": per_class,
                            "finetune_steps": finetune_steps, "raters": raters}.items():  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be positive; got {value if name != 'rounds' else rounds}.")
        self.competitors = list(competitors)
        self.pool_split = pool_split
        self.pool_root = pool_root
        self.target_checkpoint = target_checkpoint
        self.oracle_spec = oracle
        self.raters, self.noise_std, self.min_raters = raters, noise_std, min_raters
        self.rounds, self.n3, self.n4 = rounds, n3, n4
        self.test_size, self.per_class = test_size, per_class
        self.bounds_statistic = bounds_statistic
        self.strategy = strategy
        self.error_checkpoint = error_checkpoint
        self._scorers = [] if error_checkpoint is None else [ErrorMassScorer(error_checkpoint)]
        self.finetune_steps, self.finetune_lr = finetune_steps, finetune_lr
        self.counterexamples_per_batch = counterexamples_per_batch
        self.report_images = report_images
        self.run_dir = None if run_dir is None else Path(run_dir)
        self._oracle: Oracle | None = None
        self._source: PoolSource | None = None
        self._run_dir: Path | None = None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Complete the previous round's pending steps (or stop, waiting for people); S joins the training data.

        A fit after a finished round fine-tunes: the module's optimizer becomes the fine-tuning one
        (:meth:`use_finetune_optimizer`) before Lightning configures it.
        """
        if stage != "fit":
            return
        role, index, run_dir = self.stage_role(trainer)
        self._run_dir = run_dir
        if self.pool_root is not None:
            self.pool(trainer)  # scanned before any training: a wrong pool_root stops the run now, not after a fit
        if role == "competitor" or role == "target":
            return
        state = self._state(trainer, run_dir)
        pending = {"round": (index or 1) - 1, "complete": index}.get(role, state.current_round)
        if state.reached(pending, "mined") and not state.reached(pending, "evaluated"):
            waiting = self.complete_round(trainer, pl_module, run_dir, pending)
            if waiting:
                raise StopRun(waiting)
        state = MADState(run_dir)
        if role == "round" and not state.reached(pending, "evaluated"):
            raise StopRun(f"round {pending} of {run_dir / 'mad'} was not mined; re-run the previous stage.")
        if state.reached(pending, "evaluated"):  # this fit fine-tunes on S
            self.use_finetune_optimizer(pl_module)
        self.add_counterexamples(trainer, state)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Finish the round fine-tuned in this fit; mine the next one and take it as far as the oracle allows."""
        role, index, run_dir = self.stage_role(trainer)
        if role == "competitor":
            return
        state = self._state(trainer, run_dir)
        current = state.current_round
        if role == "complete":  # a stage without training: the round of the restored weights, whatever is missing
            if index == current and not state.reached(current, "evaluated"):
                waiting = self.complete_round(trainer, pl_module, run_dir, current)
                if waiting:  # not marked done: a re-run asks again
                    raise StopRun(waiting)
            return
        if role == "target":
            own = 0
        elif role == "round":
            own = int(index or 0)
        else:
            own = current + 1 if state.reached(current, "evaluated") else current
        if own == current + 1 and state.reached(current, "evaluated"):
            if trainer.is_global_zero:
                state.finish_round(current)
            trainer.strategy.barrier("mad_finish_round")
        elif own != current:
            rank_zero_info(f"segmend MAD: round {own} is not the loop's current round ({current}); nothing mined.")
            return
        waiting = self.complete_round(trainer, pl_module, run_dir, own)
        if waiting:
            rank_zero_info(f"segmend MAD: {waiting}")

    def add_counterexamples(self, trainer: Trainer, state: MADState) -> None:
        """Give the DataModule S of every labelled round (image and label files)."""
        datamodule = trainer.datamodule
        entries = {}
        source = self.pool(trainer)
        for r in sorted(state.rounds):
            if state.reached(r, "labelled"):
                for image_id in state.round(r).counterexamples:
                    entries[image_id] = (source.image_path(image_id), state.layout.label_file(r, image_id))
        if not entries:
            return
        if not callable(getattr(datamodule, "add_labelled", None)):
            raise ValueError(
                f"{type(datamodule).__name__} cannot take labelled images (no add_labelled); use a "
                "SegmentationDataModule for the MAD loop."
            )
        datamodule.add_labelled(entries, self.counterexamples_per_batch)
        rank_zero_info(f"segmend MAD: {len(entries)} counterexamples join the training data.")

    # ------------------------------------------------------------------ one round
    def pool(self, trainer: Trainer) -> PoolSource:
        """The pool (built once)."""
        if self._source is None:
            datamodule = trainer.datamodule
            if self.pool_root is not None:
                from segmend.datamodules import ImageFolderPool

                dataset = ImageFolderPool(self.pool_root, argument="pool_root")
                self._source = PoolSource(dataset, list(dataset.report.skipped))
            else:
                self._source = PoolSource(datamodule.dataset(self.pool_split, False))
        return self._source

    def oracle(self, trainer: Trainer, run_dir: Path, classes: Sequence[str]) -> Oracle:
        """The oracle (built once)."""
        if self._oracle is None:
            if self.oracle_spec == "simulated":
                kwargs = {"raters": self.raters, "noise_std": self.noise_std}
                self._oracle = SimulatedOracle.from_synthetic_wild(trainer.datamodule, **kwargs)
            elif self.oracle_spec == "files":
                self._oracle = FileOracle(run_dir, class_names=classes, min_raters=self.min_raters)
            else:
                self._oracle = self.oracle_spec
        return self._oracle

    def competitor_caches(self, run_dir: Path, num_classes: int) -> list[CompetitorCache]:
        """The competitors' map caches."""
        folder = MADLayout(run_dir).root / "competitors"
        caches = []
        for name, checkpoint in self.competitor_checkpoints(run_dir):
            if not checkpoint.is_file():
                raise ValueError(f"competitor {name}: checkpoint {checkpoint} is missing; train it or give its path.")
            caches.append(CompetitorCache(name, checkpoint, folder, num_classes))
        return caches

    def complete_round(self, trainer: Trainer, module: LightningModule, run_dir: Path, r: int) -> str | None:
        """Take round ``r`` as far as possible, on every rank; the message of what people must do, or ``None``."""
        num_classes = trainer.datamodule.num_classes
        state = self._state(trainer, run_dir)
        device = trainer.strategy.root_device
        was_training = module.training
        module.to(device).eval()
        try:
            caches = self.competitor_caches(run_dir, num_classes)
            source = self.pool(trainer)
            if not state.reached(r, "mined"):
                records = pool_statistics(
                    module, caches, source, trainer.world_size, trainer.global_rank, num_classes, device,
                    batch_size=getattr(trainer.datamodule, "eval_batch_size", 8), scorers=self._scorers,
                )  # fmt: skip
                stats = PoolStats.from_records(
                    gather_records(records, _all_gather(trainer), source.ids), num_classes, [c.name for c in caches]
                )
                if trainer.is_global_zero:
                    if hasattr(source.dataset, "write_report"):  # an image folder: what was skipped and why
                        source.dataset.write_report(MADLayout(run_dir).round_dir(r) / "pool_report.json")
                    state.save_stats(r, stats)
                trainer.strategy.barrier("mad_mined")
            outcome: tuple[str, str | None] = ("ok", None)
            if trainer.is_global_zero:
                try:
                    outcome = ("ok", self._decide(trainer, module, run_dir, r, caches, device))
                except Exception as error:  # noqa: BLE001 - re-raised on every rank below
                    outcome = ("error", f"{type(error).__name__}: {error}")
                    rank_zero_warn(f"segmend MAD: round {r} failed: {outcome[1]}")
                    raise
                finally:
                    outcome = trainer.strategy.broadcast(outcome)
            else:
                outcome = trainer.strategy.broadcast(outcome)
                if outcome[0] == "error":
                    raise RuntimeError(f"MAD round {r} failed on rank 0: {outcome[1]}")
            trainer.strategy.barrier("mad_decided")
            return outcome[1]
        finally:
            module.train(was_training)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """The loop's small state (:meth:`MADState.state_dict`: phases, S and T per round) from the run folder."""
        if self._run_dir is None or not MADLayout(self._run_dir).state_file.is_file():
            return {}
        return MADState(self._run_dir).state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Reconcile a checkpoint's state with the run folder (:meth:`MADState.load_state_dict`; rank 0 writes)."""
        if state_dict and self._run_dir is not None and rank_zero_only.rank == 0:
            MADState(self._run_dir).load_state_dict(state_dict)


def _all_gather(trainer: Trainer) -> Any:
    if trainer.world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None

    def gather(records: list[Any]) -> list[list[Any]]:
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, records)
        return out

    return gather
