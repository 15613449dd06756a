"""Self-correcting networks on the synthetic scenes: the paper's Table 1 shape, and step-time overhead.

    .venv/bin/python bench/selfcorr.py                 # timing + every run; resumable
    .venv/bin/python bench/selfcorr.py --report-only   # rewrite the tables from the JSON
    # control for conv's extra training (second process, its own JSON; waits for conv's stage 2):
    .venv/bin/python bench/selfcorr.py --variants none_ft --skip-timing --json docs/results/selfcorr_control_runs.json

For every size of F and seed (the seed draws F and W and initialises the nets), through the real
modules, DataModule (``SemiSupervisedSyntheticDataModule``) and stage runner (``run_self_correction``):

* ``none``: stage 1 trains the ancillary model on half of F (its val mIoU, evaluated *with* the
  val images' boxes, is the "Ancillary model" row), then the primary on F + W with q = p_anc;
* ``linear`` / ``conv`` / ``em_fixed``: the same ancillary checkpoint is given (stage 1 skipped);
  ``conv`` runs stage 2 (primary + conv-SC on F) and stage 3;
* ``F only``: the primary after conv's stage 2, i.e. trained by CE on F alone for the same number
  of steps (conv-SC's input is detached, so it does not touch the primary);
* ``fully supervised``: a plain ``SegmentationModule`` on F + W *with* W's masks.

Every stage trains for ``--steps`` optimizer steps (batch 8: 2 F + 6 W in mixed batches), one
thread; val mIoU on the 100 fine-labelled val images. Each run's result is written to the JSON as
soon as it ends; a rerun skips finished runs (and the stage runner resumes a killed one).

Timing: every variant's training step (forward, loss, backward, optimizer step) on the same
pre-loaded batches, variants interleaved over rounds; median step time relative to plain
supervised training of the same primary net.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything

from segmend.checkpoints import read_weights
from segmend.datamodules import SemiSupervisedSyntheticDataModule
from segmend.modules import AncillaryModule, SegmentationModule, SelfCorrectionModule
from segmend.modules.stages import run_self_correction
from segmend.optim import PolyLR

REPO = Path(__file__).resolve().parents[1]
JSON = REPO / "docs" / "results" / "selfcorr_runs.json"
REPORT = REPO / "docs" / "results" / "selfcorr.md"
START, END = "<!-- generated tables: start -->", "<!-- generated tables: end -->"
ROWS = [
    ("ancillary", "Ancillary model (uses val boxes)"),
    ("none", "No self-correction"),
    ("linear", "Lin. self-correction"),
    ("conv", "Conv. self-correction"),
    ("none_ft", "No self-correction, started from the F-only model (control: conv's 2 x steps)"),
    ("em_fixed", "EM-fixed (box-constrained, own predictions)"),
    ("f_only", "F only (primary, CE on F)"),
    ("fullsup", "Fully supervised (F + W masks)"),
]


def adamw(params):
    return torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)


def poly(optimizer):
    return PolyLR(optimizer, power=0.9)


def model_kwargs(num_classes: int) -> dict[str, Any]:
    return {
        "num_classes": num_classes,
        "arch": "DeepLabV3Plus",
        "encoder_name": "resnet18",
        "net_kwargs": {"decoder_channels": 64},
        "optimizer": adamw,
        "lr_scheduler": poly,
    }


def datamodule(args: argparse.Namespace, num_full: int, seed: int) -> SemiSupervisedSyntheticDataModule:
    return SemiSupervisedSyntheticDataModule(
        num_full=num_full,
        split_seed=seed,
        full_per_batch=2,
        cache_dir=str(args.root / "cache"),
        seed=0,
        num_train=args.num_train,
        num_val=100,
        num_wild=0,
        image_size=64,
        crop_size=64,
        scale_range=(0.75, 1.25),
        batch_size=8,
        num_workers=0,
    )


def trainer(root: Path, steps: int) -> Trainer:
    return Trainer(
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        enable_checkpointing=False,  # the stage runner adds its own StageCheckpoint
    )


def evaluate(module, dm) -> dict[str, float]:
    evaluator = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    dm.use_train_set("full+weak")
    scores = evaluator.validate(module, datamodule=dm, verbose=False)[0]
    return {k.split("/")[1]: float(v) for k, v in scores.items() if k in ("val/mIoU", "val/aAcc", "val/mAcc")}


def load_json() -> dict[str, Any]:
    return json.loads(JSON.read_text()) if JSON.is_file() else {"runs": {}}


def all_runs() -> dict[str, Any]:
    """Runs of the main JSON and of the control runs' JSON (written by a second process)."""
    runs = dict(load_json()["runs"])
    control = JSON.with_name("selfcorr_control_runs.json")
    if control.is_file() and control != JSON:
        runs.update(json.loads(control.read_text())["runs"])
    return runs


def save_result(key: str, result: dict[str, Any]) -> None:
    data = load_json()
    data["runs"][key] = result
    tmp = JSON.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, JSON)
    print(f"[selfcorr bench] {key}: {result}", flush=True)


def run_variant(args, variant: str, num_full: int, seed: int) -> None:
    key = f"F{num_full}/seed{seed}/{variant}"
    if key in load_json()["runs"]:
        return
    base = args.root / f"F{num_full}_seed{seed}"
    while variant == "none_ft" and not (base / "conv" / "pretrain" / "final.ckpt").is_file():
        time.sleep(30)  # the control starts from conv's stage 2, made by the main sweep
    dm = datamodule(args, num_full, seed)
    seed_everything(seed, workers=True)
    started = time.time()
    meta = {"steps": args.steps, "num_train": args.num_train, "num_full": num_full, "seed": seed}
    anc_ckpt = base / "none" / "ancillary" / "final.ckpt"
    if variant == "fullsup":
        module = SegmentationModule(**model_kwargs(dm.num_classes))
        dm.use_train_set("full+weak_masks")
        trainer(base / "fullsup", args.steps).fit(module, datamodule=dm)
        save_result(key, {**evaluate(module, dm), **meta, "seconds": time.time() - started})
        return
    if variant in ("ancillary", "f_only"):
        raise ValueError(f"{variant} is produced by the none / conv runs")
    model = SelfCorrectionModule(
        correction="none" if variant == "none_ft" else variant,
        ancillary_checkpoint=None if variant in ("none", "em_fixed") else str(anc_ckpt),
        **model_kwargs(dm.num_classes),
    )
    pretrain = base / "conv" / "pretrain" / "final.ckpt"
    if variant == "none_ft":  # control for conv's extra stage: start from conv's stage-2 primary
        model.net.load_state_dict(read_weights(pretrain, prefix="net.").state_dict)
    run = run_self_correction(model, dm, base / variant, lambda stage: trainer(base / variant / stage, args.steps))
    if not run.completed:
        raise RuntimeError(f"{key} was interrupted")
    seconds = time.time() - started
    if variant == "none":
        ancillary = AncillaryModule(**model_kwargs(dm.num_classes))
        ancillary.load_state_dict(read_weights(anc_ckpt, prefix="").state_dict)
        save_result(f"F{num_full}/seed{seed}/ancillary", {**evaluate(ancillary, dm), **meta})
    if variant == "conv":
        f_only = SelfCorrectionModule(correction="conv", **model_kwargs(dm.num_classes))
        f_only.load_state_dict(read_weights(pretrain, prefix="").state_dict)
        save_result(f"F{num_full}/seed{seed}/f_only", {**evaluate(f_only, dm), **meta})
    save_result(key, {**evaluate(model, dm), **meta, "seconds": seconds})


# ---------------------------------------------------------------------------------------- timing
def time_steps(args) -> None:
    data = load_json()
    if "timing" in data:
        return
    dm = datamodule(args, max(args.fulls), 0)
    dm.setup("fit")
    dm.use_train_set("full+weak")
    loader = dm.train_dataloader()
    batches = []
    for batch in _iterate(loader, dm):
        batches.append(batch)
        if len(batches) == 4:
            break
    seed_everything(0)
    kwargs = model_kwargs(dm.num_classes)
    variants: dict[str, Any] = {"plain": SegmentationModule(**kwargs), "ancillary": AncillaryModule(**kwargs)}
    for correction in ("none", "linear", "conv", "em_fixed"):
        module = SelfCorrectionModule(correction=correction, **kwargs)
        module.ancillary_ready.fill_(True)
        variants[correction] = module
    state = variants["plain"].net.state_dict()
    for module in variants.values():  # same primary weights everywhere
        (module.net.net if isinstance(module, AncillaryModule) else module.net).load_state_dict(state)
    optimizers = {name: module.build_optimizer() for name, module in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(args.timing_rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            module, optimizer = variants[name], optimizers[name]
            module.train()
            for step, batch in enumerate(batches):
                start = time.perf_counter()
                if isinstance(module, AncillaryModule):
                    logits = module(batch["image"], batch["boxes"])
                else:
                    logits = module(batch["image"])
                loss = module.compute_loss(logits, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if round_index > 0 or step > 0:  # first step of the first round: warm-up
                    times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    data = load_json()
    data["timing"] = {
        "median_step_seconds": medians,
        "relative_to_plain": {name: medians[name] / medians["plain"] for name in medians},
        "steps_per_variant": len(times["plain"]),
        "batch": "8 images of 64x64 (2 F + 6 W), resnet18 DeepLabV3+ (decoder 64), AdamW",
    }
    JSON.write_text(json.dumps(data, indent=1, sort_keys=True))
    print("[selfcorr bench] timing", data["timing"], flush=True)


def _iterate(loader, dm):
    """Training batches as the module sees them (the mixed loaders merged by the DataModule)."""
    loaders = loader if isinstance(loader, dict) else {"only": loader}
    iterators = {k: iter(v) for k, v in loaders.items()}
    while True:
        parts = {}
        for key, iterator in iterators.items():
            try:
                parts[key] = next(iterator)
            except StopIteration:  # cycle the shorter loader
                iterators[key] = iter(loaders[key])
                parts[key] = next(iterators[key])
        yield dm.on_before_batch_transfer(parts if "only" not in parts else parts["only"], 0)


# ---------------------------------------------------------------------------------------- report
def report() -> None:
    data = load_json()
    runs = all_runs()
    fulls = sorted({r["num_full"] for r in runs.values()})
    lines = [START, ""]
    if runs:
        any_run = next(iter(runs.values()))
        lines += [
            f"Val mIoU (%) on the 100 synthetic val images, mean ± std over seeds (n = seeds finished); "
            f"{any_run['steps']} optimizer steps per stage, {any_run['num_train']} training images (F + W).",
            "",
            "| # images in F | " + " | ".join(str(f) for f in fulls) + " |",
            "|---|" + "---|" * len(fulls),
        ]
        for key, label in ROWS:
            cells = []
            for full in fulls:
                values = [100 * r["mIoU"] for k, r in runs.items() if k.endswith(f"/{key}") and r["num_full"] == full]
                if not values:
                    cells.append("–")
                elif len(values) == 1:
                    cells.append(f"{values[0]:.2f} (n=1)")
                else:
                    cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "Per seed (val mIoU %):", "", "| run | " + " | ".join(k for k, _ in ROWS) + " |"]
        lines.append("|---|" + "---|" * len(ROWS))
        for full in fulls:
            for seed in sorted({r["seed"] for r in runs.values()}):
                cells = []
                for key, _ in ROWS:
                    r = runs.get(f"F{full}/seed{seed}/{key}")
                    cells.append(f"{100 * r['mIoU']:.2f}" if r else "–")
                lines.append(f"| F={full}, seed {seed} | " + " | ".join(cells) + " |")
    timing = data.get("timing")
    if timing:
        lines += [
            "",
            f"Training step time ({timing['batch']}; median of {timing['steps_per_variant']} steps, variants "
            "interleaved in one process, one thread):",
            "",
            "| variant | median step (s) | relative to plain supervised |",
            "|---|---|---|",
        ]
        for name in ("plain", "ancillary", "none", "linear", "conv", "em_fixed"):
            seconds = timing["median_step_seconds"][name]
            lines.append(f"| {name} | {seconds:.3f} | {timing['relative_to_plain'][name]:.2f} |")
    lines += ["", END]
    block = "\n".join(lines)
    text = REPORT.read_text() if REPORT.is_file() else f"# Self-correcting networks: results\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    REPORT.write_text(head + block + tail)
    print(block)


def main() -> None:
    global JSON, REPORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--fulls", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--timing-rounds", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=["none", "linear", "conv", "em_fixed", "fullsup"])
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "bench_selfcorr")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--json", type=Path, default=JSON, help="per-run results (a smoke test points this elsewhere)")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    JSON, REPORT = args.json, args.report
    if args.report_only:
        report()
        return
    torch.set_num_threads(1)
    data = load_json()
    data.setdefault("runs", {})
    data["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": 1,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    JSON.parent.mkdir(parents=True, exist_ok=True)
    JSON.write_text(json.dumps(data, indent=1, sort_keys=True))
    if not args.skip_timing:
        time_steps(args)
    report()
    for seed in args.seeds:  # all F sizes of one seed first, so partial results cover both columns
        for num_full in args.fulls:
            for variant in args.variants:
                run_variant(args, variant, num_full, seed)
                report()


if __name__ == "__main__":
    main()
