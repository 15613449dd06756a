"""MAD troubleshooting benchmark: mining speed, memory and selection time; the paper's Tables 1 and 2 on synthetic data.

Run from a clean clone (``PYTHONPATH=<clone>/src:<clone>``); each part writes JSON into
``docs/results/mad_runs/`` and the report ``docs/results/mad.md`` is rendered from those files
(``bench/mad_report.py``):

* ``speed``: mining throughput (the target, the per-image statistics and the cached competitor
  maps) against plain inference of the target over the same pool, in alternating rounds; peak
  memory of a mining pass over pools of 1k and 8k images (one fresh process each); the time of M's
  selection and of every acquisition strategy over the statistics of 1M images.
* ``tables``: per seed, a target (DeepLabV3+) and two competitors (FPN, Unet) trained on the
  synthetic training split, an error branch on the target; then the loop, two rounds, once per
  acquisition strategy (``mad``, ``entropy``, ``random``, ``error_mass``) from the same checkpoints
  at the same labelling budget, and a control that fine-tunes the same steps with no new labels.
  Every fine-tuned target is scored on held-out in-domain wild images of another data seed
  (Table 2) and on the original validation split; the ``mad`` run's metrics on T give Table 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything

from segmend.callbacks import MADTroubleshooting
from segmend.callbacks.mad_pool import (
    CompetitorCache,
    PoolSource,
    dataset_miou,
    iterate_shard,
    pool_statistics,
    predict_maps,
    target_probabilities,
)
from segmend.checkpoints import read_weights
from segmend.datamodules import SyntheticDataModule
from segmend.mad import PoolStats, acquire, content_bounds, select_candidates
from segmend.mad.oracle import SimulatedOracle
from segmend.mad.state import MADState
from segmend.modules import ErrorPixelModule, SegmentationModule
from segmend.runs import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import SeedResults, load_json, save_json, sweep  # noqa: E402
from mad_report import RUNS, STRATEGIES, write_report  # noqa: E402
from provenance import check_checkout, code_state, command_line, machine  # noqa: E402

QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False, "logger": False}
COMPETITORS = (("fpn", "FPN"), ("unet", "Unet"))


@dataclass(frozen=True)
class Regime:
    """What every seed of the tables shares.

    ``configs/mad_synthetic.yaml``'s models and fine-tuning (SGD, learning rate 1e-3, poly decay; S
    mixed into every batch at its share of the training data), with the models trained longer (30
    epochs, where extra steps on the training data no longer raise the held-out mIoU: the
    ``no_new_labels`` control measures that) and a larger pool, so M holds about a hundred images.
    """

    image_size: int = 64
    num_train: int = 200
    num_val: int = 50
    num_wild: int = 600
    held_out_wild: int = 300
    held_out_seed_offset: int = 1000
    epochs: int = 30
    batch_size: int = 16
    lr: float = 0.003
    error_steps: int = 200
    rounds: int = 2
    n3: int = 10
    n4: int = 20
    test_size: int = 20
    per_class: int = 4
    raters: int = 3
    noise_std: float = 0.5
    finetune_steps: int = 100
    finetune_lr: float = 0.001
    counterexamples_per_batch: int | None = None  # None: S's share of the training data, at least 1

    def training(self) -> dict[str, Any]:
        """The fields that decide the trained target, competitors and error branch (not the loop's)."""
        names = ("image_size", "num_train", "num_val", "num_wild", "epochs", "batch_size", "lr", "error_steps")
        return {name: getattr(self, name) for name in names}

    def data(self, seed: int, cache: Path) -> SyntheticDataModule:
        """The seed's data: training, validation and the wild pool."""
        return SyntheticDataModule(
            cache_dir=str(cache), seed=seed, num_train=self.num_train, num_val=self.num_val, num_wild=self.num_wild,
            image_size=self.image_size, batch_size=self.batch_size, num_workers=0, crop_size=self.image_size,
            scale_range=(0.75, 1.25), hflip=True,
        )  # fmt: skip

    def held_out(self, seed: int, cache: Path) -> SyntheticDataModule:
        """Wild images of another data seed: never in the pool, labelled only to score the targets."""
        return SyntheticDataModule(
            cache_dir=str(cache), seed=seed + self.held_out_seed_offset, num_train=1, num_val=1,
            num_wild=self.held_out_wild, image_size=self.image_size,
        )  # fmt: skip

    def module(self, data: SyntheticDataModule, arch: str = "DeepLabV3Plus") -> SegmentationModule:
        """A randomly initialised resnet18 net of ``arch`` with AdamW and poly decay."""
        from functools import partial

        from segmend.optim import PolyLR

        return SegmentationModule(
            num_classes=data.num_classes, class_names=data.class_names, arch=arch, encoder_name="resnet18",
            encoder_weights=None, net_kwargs={"decoder_channels": 128} if arch == "DeepLabV3Plus" else {},
            optimizer=partial(torch.optim.AdamW, lr=self.lr, weight_decay=1e-4), lr_scheduler=partial(PolyLR, power=0.9),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- speed


def make_checkpoints(folder: Path, data: SyntheticDataModule) -> dict[str, Path]:
    """Untrained target and competitor checkpoints (one step each: timing and memory need no accuracy)."""
    paths = {}
    for name, arch in (("target", "DeepLabV3Plus"), *COMPETITORS):
        torch.manual_seed(0)
        fit(Regime().module(data, arch), data, folder / name, max_steps=1, limit_val_batches=0, **QUIET)
        paths[name] = folder / name / "fit" / "final.ckpt"
    return paths


def load_model(checkpoint: Path, data: SyntheticDataModule) -> SegmentationModule:
    """The SegmentationModule of a checkpoint (its architecture from the checkpoint), in eval mode."""
    weights = read_weights(checkpoint, prefix="")
    module = Regime().module(data, weights.hyper_parameters["arch"])
    module.load_state_dict(weights.state_dict)
    return module.eval()


def caches_of(checkpoints: dict[str, Path], folder: Path, num_classes: int) -> list[CompetitorCache]:
    """The competitors' map caches in ``folder``."""
    return [CompetitorCache(name, checkpoints[name], folder, num_classes) for name, _ in COMPETITORS]


def plain_inference(target: SegmentationModule, source: PoolSource, batch_size: int) -> int:
    """The target's label maps of the whole pool through the loop's own loader; the number of images."""
    count = 0
    for batch, _ in iterate_shard(source, range(len(source.dataset)), batch_size):
        if batch is not None:
            target_probabilities(target, batch["image"]).argmax(1)
            count += len(batch["id"])
    return count


def mining(target: SegmentationModule, caches: list[CompetitorCache], source: PoolSource, num_classes: int,
           batch_size: int) -> PoolStats:  # fmt: skip
    """One mining pass: every image's statistics (competitor maps from the cache), stacked."""
    records = pool_statistics(target, caches, source, 1, 0, num_classes, torch.device("cpu"), batch_size=batch_size)
    return PoolStats.from_records(records, num_classes, [c.name for c in caches])


def measure_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating rounds of plain inference and mining over the same pool; seconds of each."""
    data = SyntheticDataModule(cache_dir=str(args.work / "data"), seed=0, num_train=4, num_val=2,
                               num_wild=args.speed_pool_images, image_size=args.speed_image_size)  # fmt: skip
    checkpoints = make_checkpoints(args.work / "speed_checkpoints", data)
    target = load_model(checkpoints["target"], data)
    source = PoolSource(data.dataset("wild", False))
    caches = caches_of(checkpoints, args.work / "speed_cache", data.num_classes)
    mining(target, caches, source, data.num_classes, args.speed_batch_size)  # fills the competitor caches
    rounds = []
    for _ in range(args.throughput_rounds):
        start = time.perf_counter()
        images = plain_inference(target, source, args.speed_batch_size)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        mining(target, caches, source, data.num_classes, args.speed_batch_size)
        rounds.append({"plain_s": plain, "mining_s": time.perf_counter() - start, "images": images})
        print(f"throughput round: plain {plain:.2f} s, mining {rounds[-1]['mining_s']:.2f} s", flush=True)
    return {"image_size": args.speed_image_size, "pool_images": args.speed_pool_images, "batch_size": args.speed_batch_size,
            "competitors": len(caches), "threads": torch.get_num_threads(), "rounds": rounds}  # fmt: skip


def memory_status(field: str) -> float:
    """A field of ``/proc/self/status`` in MiB: ``VmRSS`` (resident now) or ``VmHWM`` (peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def reset_peak_memory() -> None:
    """Start a new peak: Linux resets ``VmHWM`` to the current resident size on writing 5 to ``clear_refs``."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: mine a pool of ``--speed-pool-images`` (competitors cached); print the peak memory as JSON."""
    data = SyntheticDataModule(cache_dir=str(args.work / "data"), seed=0, num_train=4, num_val=2,
                               num_wild=args.speed_pool_images, image_size=args.memory_image_size)  # fmt: skip
    checkpoints = {
        name: args.work / "speed_checkpoints" / name / "fit" / "final.ckpt" for name in ("target", "fpn", "unet")
    }
    target = load_model(checkpoints["target"], data)
    source = PoolSource(data.dataset("wild", False))
    caches = caches_of(checkpoints, args.work / f"memory_cache_{args.speed_pool_images}", data.num_classes)
    if args.fill_cache:
        mining(target, caches, source, data.num_classes, args.speed_batch_size)
        return
    reset_peak_memory()
    before = memory_status("VmRSS")
    stats = mining(target, caches, source, data.num_classes, args.speed_batch_size)
    selection = select_candidates(stats, content_bounds(stats.target_fractions), n3=25)
    print(json.dumps({"pool_images": len(stats), "image_size": args.memory_image_size,
                      "candidates": len(selection.ids), "rss_before_mib": before,
                      "peak_mib": memory_status("VmHWM")}))  # fmt: skip


def measure_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak memory of a mining pass at each pool size, each in a fresh process after a process that fills the cache."""
    results = []
    for size in args.memory_pools:
        base = [sys.executable, __file__, "memory-child", "--work", str(args.work), "--speed-pool-images", str(size),
                "--memory-image-size", str(args.memory_image_size), "--speed-batch-size", str(args.speed_batch_size)]  # fmt: skip
        subprocess.run([*base, "--fill-cache"], check=True)
        output = subprocess.run(base, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(f"memory: {results[-1]}", flush=True)
    return results


def random_pool(n: int, m: int, c: int, seed: int = 0) -> PoolStats:
    """Statistics of ``n`` images: 1-3 foreground classes each, competitors that mostly agree with the target."""
    rng = np.random.default_rng(seed)
    target = np.zeros((n, c), dtype=np.float32)
    for chance in (1.0, 0.6, 0.3):  # a first, second and third foreground class
        rows = np.flatnonzero(rng.uniform(size=n) < chance)
        np.add.at(target, (rows, rng.integers(1, c, rows.size)), rng.uniform(0.02, 0.3, rows.size).astype(np.float32))
    target[:, 0] = 1 - target[:, 1:].sum(axis=1)
    competitors = np.clip(target[None] + rng.normal(0, 0.02, (m, n, c)).astype(np.float32), 0, 1)
    return PoolStats(
        ids=np.char.add("img", np.arange(n).astype(str)),
        target_fractions=target,
        discrepancy=rng.beta(5, 2, (m, n)).astype(np.float32),
        competitor_fractions=competitors,
        readable=rng.uniform(size=n) > 0.001,
        scalars={"entropy": rng.uniform(0, 2, n), "error_mass": rng.uniform(0, 1, n)},
    )


def measure_selection(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of M's selection and of each strategy at budget ``n4`` over the statistics of ``--selection-images``."""
    pool = random_pool(args.selection_images, args.selection_competitors, args.selection_classes)
    bounds = content_bounds(pool.target_fractions[:10_000])
    timings: dict[str, list[float]] = {"select_candidates": []}
    for _ in range(args.selection_rounds):
        start = time.perf_counter()
        selection = select_candidates(pool, bounds, n3=25)
        timings["select_candidates"].append(time.perf_counter() - start)
        for strategy in STRATEGIES:
            start = time.perf_counter()
            acquire(strategy, pool, 100, seed=0, bounds=bounds, n3=25)
            timings.setdefault(f"acquire_{strategy}", []).append(time.perf_counter() - start)
    print(f"selection: { ({k: max(v) for k, v in timings.items()}) }", flush=True)
    return {"images": len(pool), "competitors": args.selection_competitors, "classes": args.selection_classes,
            "n3": 25, "budget": 100, "candidates": len(selection.ids), "seconds": timings}  # fmt: skip


SPEED_PARTS = {"throughput": measure_throughput, "memory": measure_memory, "selection": measure_selection}


def speed(args: argparse.Namespace) -> None:
    """The ``speed`` part: each of ``--speed-parts`` measured anew into ``speed.json`` (the others kept)."""
    path = args.results / "speed.json"
    for part in args.speed_parts:
        result = load_json(path)
        result[part] = {"measured": SPEED_PARTS[part](args), "machine": machine(), "code": code_state(),
                        "command": command_line("bench/mad.py")}  # fmt: skip
        save_json(result, path)


# ---------------------------------------------------------------------------------------------- tables


def digest(fields: dict[str, Any]) -> str:
    """A short stable name for a set of settings."""
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


class SeedRuns:
    """One seed of the tables: shared checkpoints, then one loop per strategy; results in ``seed<k>.json``."""

    def __init__(self, seed: int, regime: Regime, work: Path, results: Path) -> None:
        self.seed, self.regime = seed, regime
        # trained models are shared by regimes that train them alike; the loops belong to one regime
        self.models = work / f"models-{digest(regime.training())}" / f"seed{seed}"
        self.folder = work / f"regime-{digest(asdict(regime))}" / f"seed{seed}"
        self.cache = work / "data"
        self.results = SeedResults(results / f"seed{seed}.json", asdict(regime), "bench/mad.py", seed)

    def train(self, name: str, arch: str) -> Path:
        """A model trained from random init on the training split (skipped when its checkpoint exists)."""
        data = self.regime.data(self.seed, self.cache)
        seed_everything(self.seed, workers=True)
        module = self.regime.module(data, arch)
        fit(module, data, self.models / name, max_epochs=self.regime.epochs, **QUIET)
        return self.models / name / "fit" / "final.ckpt"

    def train_error_branch(self, target: Path) -> Path:
        """The error stage of an ErrorPixelModule on the target (its detail stage: one step, unused)."""
        data = self.regime.data(self.seed, self.cache)
        seed_everything(self.seed, workers=True)
        module = ErrorPixelModule(
            semantic_checkpoint=str(target), num_classes=data.num_classes, class_names=data.class_names,
            error_width=64, detail_widths=(64, 32, 32), error_steps=self.regime.error_steps, detail_steps=1,
        )  # fmt: skip
        fit(module, data, self.models / "error_branch", limit_val_batches=1, **QUIET)
        return self.models / "error_branch" / "error" / "final.ckpt"

    def callback(self, strategy: str, checkpoints: dict[str, Path]) -> MADTroubleshooting:
        """The loop of one strategy from the shared checkpoints."""
        r = self.regime
        return MADTroubleshooting(
            competitors=[str(checkpoints[name]) for name, _ in COMPETITORS], pool_split="wild",
            target_checkpoint=str(checkpoints["target"]), oracle="simulated", raters=r.raters,
            noise_std=r.noise_std, rounds=r.rounds, n3=r.n3, n4=r.n4, test_size=r.test_size, per_class=r.per_class,
            strategy=strategy, error_checkpoint=str(checkpoints["error"]) if strategy == "error_mass" else None,
            finetune_steps=r.finetune_steps, finetune_lr=r.finetune_lr,
            counterexamples_per_batch=r.counterexamples_per_batch, report_images=4,
        )  # fmt: skip

    def run_strategy(self, strategy: str, checkpoints: dict[str, Path]) -> dict[str, Any]:
        """The loop with ``strategy``; each round's target scored on the held-out wild images and on val."""
        data = self.regime.data(self.seed, self.cache)
        run_dir = self.folder / strategy
        seed_everything(self.seed, workers=True)
        start = time.perf_counter()
        run = fit(self.regime.module(data), data, run_dir, callbacks=[self.callback(strategy, checkpoints)], **QUIET)
        if not run.completed:
            raise RuntimeError(f"{strategy}: the loop did not complete ({run.stopped})")
        stages = ["mad_target"] + [f"mad_round_{k}" for k in range(1, self.regime.rounds + 1)]
        state = MADState(run_dir)
        return {
            "seconds": time.perf_counter() - start,
            "held_out": [self.score(run_dir / stage / "final.ckpt", "held_out") for stage in stages],
            "val": [self.score(run_dir / stage / "final.ckpt", "val") for stage in stages],
            "metrics": [state.load_metrics(k) for k in range(self.regime.rounds + 1)],
            "counterexamples": [list(state.round(k).counterexamples) for k in range(self.regime.rounds + 1)],
        }

    def run_control(self, checkpoints: dict[str, Path]) -> dict[str, Any]:
        """The same fine-tuning fits (optimizer, steps) on the training data alone: no new labels."""
        data = self.regime.data(self.seed, self.cache)
        mad = self.callback("random", checkpoints)
        module = load_model(checkpoints["target"], data).train()
        scores = {
            "held_out": [self.score(checkpoints["target"], "held_out")],
            "val": [self.score(checkpoints["target"], "val")],
        }
        for k in range(1, self.regime.rounds + 1):
            seed_everything(self.seed, workers=True)
            mad.use_finetune_optimizer(module)
            fit(module, data, self.folder / "no_new_labels" / f"round_{k}", max_steps=self.regime.finetune_steps,
                limit_val_batches=0, **QUIET)  # fmt: skip
            checkpoint = self.folder / "no_new_labels" / f"round_{k}" / "fit" / "final.ckpt"
            scores["held_out"].append(self.score(checkpoint, "held_out"))
            scores["val"].append(self.score(checkpoint, "val"))
        return scores

    def score(self, checkpoint: Path, on: str) -> float:
        """MIoU (confusion summed over the images) of a model's checkpoint on ``held_out`` or ``val``."""
        data = (
            self.regime.held_out(self.seed, self.cache) if on == "held_out" else self.regime.data(self.seed, self.cache)
        )
        split = "wild" if on == "held_out" else "val"
        source = PoolSource(data.dataset(split, False))
        ids = source.ids
        if on == "held_out":
            oracle = SimulatedOracle.from_synthetic_wild(data)
            ids = [i for i in ids if not oracle.is_out_of_domain(i)]
            truth = {i: np.asarray(oracle.ground_truth(i)) for i in ids}
        else:
            truth = {i: source.dataset[source.index(i)]["mask"].numpy() for i in ids}
        maps = predict_maps(load_model(checkpoint, data), source, ids, torch.device("cpu"))
        return dataset_miou([maps[i] for i in ids], [truth[i] for i in ids], data.num_classes)

    def run(self, variants: list[str]) -> None:
        """Train what is missing, then every variant not yet in the results file."""
        checkpoints = {"target": self.train("target", "DeepLabV3Plus")}
        checkpoints.update({name: self.train(name, arch) for name, arch in COMPETITORS})
        if "error_mass" in variants:
            checkpoints["error"] = self.train_error_branch(checkpoints["target"])
        if "models" not in self.results.data:  # every model before fine-tuning on the held-out images (val: the loop's)
            self.results.data["models"] = {
                name: {"held_out": self.score(checkpoints[name], "held_out")}
                for name in ("target", *(name for name, _ in COMPETITORS))
            }
            self.results.save()
        runs = {"no_new_labels": lambda: self.run_control(checkpoints)}
        plan = [(v, runs.get(v, lambda v=v: self.run_strategy(v, checkpoints))) for v in variants]
        sweep(self.results, plan)


def tables(args: argparse.Namespace) -> None:
    """The ``tables`` part: every seed's variants."""
    regime = Regime(**{name: getattr(args, name) for name in asdict(Regime())})
    for seed in args.seeds:
        SeedRuns(seed, regime, args.work, args.results).run(args.variants)


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run a part."""
    check_checkout()
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["speed", "tables", "report", "memory-child"])
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "bench_mad")
    parser.add_argument("--results", type=Path, default=RUNS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--variants", nargs="+", default=[*STRATEGIES, "no_new_labels"])
    group = parser.add_argument_group("tables regime (stored with each seed's results)")
    for name, value in asdict(Regime()).items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int if value is None else type(value), default=value)
    parser.add_argument("--speed-pool-images", type=int, default=64)
    parser.add_argument("--speed-image-size", type=int, default=256)
    parser.add_argument("--speed-batch-size", type=int, default=8)
    parser.add_argument("--speed-parts", nargs="+", choices=["throughput", "memory", "selection"],
                        default=["throughput", "memory", "selection"])  # fmt: skip
    parser.add_argument("--throughput-rounds", type=int, default=8)
    parser.add_argument("--memory-pools", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--memory-image-size", type=int, default=64)
    parser.add_argument("--fill-cache", action="store_true")
    parser.add_argument("--selection-images", type=int, default=1_000_000)
    parser.add_argument("--selection-competitors", type=int, default=5)
    parser.add_argument("--selection-classes", type=int, default=21)
    parser.add_argument("--selection-rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "memory-child":
        memory_child(args)
        return 0
    if args.part == "speed":
        speed(args)
    elif args.part == "tables":
        tables(args)
    write_report(args.results, args.results.parent / "mad.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
