"""The erroneous-pixel benchmark's results files and its report (``docs/results/errorpix.md``).

``bench/errorpix.py`` trains and measures; this module reads what it wrote (one JSON per seed
and ``timing.json``) and renders the tables, paired intervals and computed verdicts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    CLAIM_LINES,
    CONVERGED_GAIN,
    claim_verdict,
    difference_cell,
    load_json,
    mean_std,
    paired_text,
    per_seed,
    points,
    twice_the_steps_line,
    verdict_with_seeds,
    write_readme_block,
)
from verdicts import MET, difference_interval, ratio_interval, target_verdict  # noqa: E402

if TYPE_CHECKING:
    from errorpix import Regime

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
RUNS = RESULTS / "errorpix_runs"  # one JSON per seed, and timing.json
REPORT = RESULTS / "errorpix.md"
README = REPO / "README.md"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8)
OURS = "ours_t0.7"
TABLE3 = (
    ("semantic", "DeepLabV3+ (the semantic branch)"),
    ("gau_decoder", "DeepLabV3+-GAU-Decoder"),
    ("layer_cascade", "LC-GAU-Decoder (rho 0.95)"),
    ("hard_mining", "DeepLabV3+-GAU-Decoder, hard mining (loss rank, top 20%)"),
    ("bagging", "DeepLabV3+-Bagging (detail branch on all pixels, averaged)"),
    (OURS, "Ours (t = 0.7)"),
)


#: The predictions :func:`diagnose` scores, by name.
DIAGNOSES = {
    "semantic": "semantic branch",
    "detail": "detail branch alone",
    "predicted_errors": "Eq. 5 with the predicted error mask (P_ep > t)",
    "true_errors": "Eq. 5 with the true error mask (a perfect error branch)",
    "average": "average of both branches' probabilities",
}


def load_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """Every seed's finished variants, by seed (as a string)."""
    return {path.stem.removeprefix("seed"): load_json(path)["variants"] for path in sorted(folder.glob("seed*.json"))}


def strip_option(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg in options
        if not skipping:
            kept.append(arg)
    return kept


def paired(runs: dict[str, dict[str, Any]], subject: str, baseline: str, key: str = "mIoU") -> list[float]:
    """Per-seed ``subject - baseline`` in points, over the seeds that have both."""
    return [
        100 * (variants[subject][key] - variants[baseline][key])
        for variants in runs.values()
        if subject in variants and baseline in variants
    ]


def sweep_rows(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Tab. 1: error-pixel IoU, hard recall, precision and recall of the shared error branch at each t."""
    sweeps = [variants[OURS]["sweep"] for variants in runs.values() if OURS in variants]
    if not sweeps:
        return []
    rows = ["| t | error-pixel IoU (%) | hard recall (%) | precision (%) | recall (%) |", "|---|---|---|---|---|"]
    for index, threshold in enumerate(sweeps[0]["threshold"]):
        cells = [
            mean_std([sweep[key][index] for sweep in sweeps]) for key in ("iou", "hard_recall", "precision", "recall")
        ]
        rows.append(f"| {threshold:g} | " + " | ".join(cells) + " |")
    fraction = [sweep["error_fraction"][0] for sweep in sweeps]
    hard = [sweep["hard_fraction"][0] for sweep in sweeps if "hard_fraction" in sweep]
    rows.append("")
    rows.append(
        f"Erroneous share of the labelled test pixels: {mean_std(fraction)} %"
        + (f"; hard errors (semantic max probability > 0.95) among them: {mean_std(hard)} %." if hard else ".")
    )
    return rows


def curve_rows(runs: dict[str, dict[str, Any]], regime: Regime) -> list[str]:
    """The semantic branch's learning curve (val mIoU by step, mean over seeds) and the computed plateau check."""
    curves = [dict(variants["semantic"]["curve"]) for variants in runs.values() if "semantic" in variants]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(curve) for curve in curves)))
    rows = ["| step | " + " | ".join(str(step) for step in steps) + " |", "|---|" + "---|" * len(steps)]
    rows.append("| val mIoU | " + " | ".join(mean_std([curve[step] for curve in curves]) for step in steps) + " |")
    late = [step for step in steps if step <= (2 * regime.semantic_steps) // 3]
    if late and len(curves) >= 2:
        start = late[-1]
        gains = [100 * (curve[steps[-1]] - curve[start]) for curve in curves]
        interval = difference_interval(gains)
        verdict = "a plateau" if target_verdict(interval, CONVERGED_GAIN) == MET else "not shown to be a plateau"
        rows += [
            "",
            f"Gain over the last third of training (step {start} to {steps[-1]}): {per_seed(interval.format(2, ' pts'))}; "
            f"the whole interval at or below +2 points is called a plateau, the criterion of docs/results/regime.md: "
            f"**{verdict}**.",
        ]
    return rows


def doubled_folder(folder: Path) -> Path:
    """Where ``bench/errorpix.py --doubled`` puts the runs that pair with ``folder``'s: ``<folder>_doubled``."""
    return folder.with_name(folder.name + "_doubled")


def doubling_rows(results: Path, runs: dict[str, dict[str, Any]], regime: Regime) -> list[str]:
    """The semantic branch at twice the steps minus at the regime's, test mIoU paired by seed, against the target.

    Raises:
        ValueError: If a doubled run's regime is not ``regime`` with twice the semantic steps.
    """
    folder = doubled_folder(results)
    doubled = {path.stem.removeprefix("seed"): load_json(path) for path in sorted(folder.glob("seed*.json"))}
    if not doubled:
        return ["", "Twice the steps: not run yet (`python bench/errorpix.py --doubled --seeds ...`)."]
    expected = json.loads(json.dumps({**asdict(regime), "semantic_steps": 2 * regime.semantic_steps}))
    for seed, record in doubled.items():
        if record["regime"] != expected:
            raise ValueError(
                f"{folder / f'seed{seed}.json'}: expected the regime at twice the semantic steps, {expected}; "
                f"found {record['regime']}"
            )
    seeds = sorted(
        (s for s in runs if "semantic" in runs[s] and "semantic" in doubled.get(s, {}).get("variants", {})), key=int
    )
    gains = [100 * (doubled[s]["variants"]["semantic"]["mIoU"] - runs[s]["semantic"]["mIoU"]) for s in seeds]
    what = (
        f"Semantic branch, test mIoU: twice the steps ({2 * regime.semantic_steps}) minus {regime.semantic_steps} "
        f"(pts, seeds {', '.join(seeds) or 'none'} of {len(runs)})"
    )
    return [
        "",
        f"The convergence check of docs/results/regime.md, on the semantic branch (`{shown(folder)}/`):",
        "",
        twice_the_steps_line(gains, what),
    ]


def diagnosis_rows(folder: Path) -> list[str]:
    """Each way to combine the trained branches (:func:`diagnose`), and the paired gaps between them."""
    found = {seed: load_json(folder / f"seed{seed}.json").get("diagnostics", {}) for seed in load_runs(folder)}
    found = {seed: d for seed, d in found.items() if OURS in d and "bagging" in d}
    if not found:
        return []
    rows = ["| prediction | the branches of ours (t = 0.7) | the branches of bagging |", "|---|---|---|"]
    for name, label in DIAGNOSES.items():
        cells = [mean_std([d[variant][name] for d in found.values()]) for variant in (OURS, "bagging")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    codes = sorted({d[variant].get("code", "not recorded") for d in found.values() for variant in (OURS, "bagging")})
    rows += [
        "",
        f"Diagnosed with code: {'; '.join(codes)}. Paired over {len(found)} seeds (ours' branches unless named):",
        "",
    ]
    pairs = (
        ("true_errors", "predicted_errors", "Eq. 5 with the true error mask", "Eq. 5 with the predicted one"),
        ("average", "predicted_errors", "averaging ours' two branches", "Eq. 5 with the predicted mask"),
        ("detail", "semantic", "ours' detail branch alone", "the semantic branch"),
    )
    for subject, baseline, subject_label, baseline_label in pairs:
        gaps = [100 * (d[OURS][subject] - d[OURS][baseline]) for d in found.values()]
        rows.append(f"- {difference_cell(gaps, subject_label, baseline_label)[1]}.")
    gaps = [100 * (d["bagging"]["detail"] - d[OURS]["detail"]) for d in found.values()]
    rows.append(
        f"- {difference_cell(gaps, 'the detail branch trained on all pixels', 'the one trained on P_ep > t')[1]}."
    )
    return rows


#: The paper's Tab. 3 (Cityscapes val mIoU, %): ours minus each row.
PAPER_GAPS = {"semantic": 1.11, "gau_decoder": 1.01, "layer_cascade": 0.17, "hard_mining": 0.53, "bagging": 0.52}


def claim_lines(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's Table 3 claims (ours above each row), one generated line each; the README copies them."""
    labels = dict(TABLE3)
    lines = []
    for variant, gap in PAPER_GAPS.items():
        differences = paired(runs, OURS, variant)
        verdict = verdict_with_seeds(differences, "ours", gap)
        lines.append(
            f"- Ours (t = 0.7) − {labels[variant]}: {paired_text(differences)}; paper +{gap:.2f} (Table 3). **{verdict}**"
        )
    return lines


def reproduction_rows(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The claims of the paper's Tables 1 and 2 with the verdict computed from this run's numbers."""
    rows = ["| the paper's claim | here | verdict |", "|---|---|---|"]
    means = {
        t: statistics.mean(v[f"ours_t{t}"]["mIoU"] for v in runs.values() if f"ours_t{t}" in v) for t in THRESHOLDS
    }
    best = max(means, key=means.get)
    against = paired(runs, "ours_t0.7", f"ours_t{best}") if best != 0.7 else []
    verdict = (
        "reproduces"
        if best == 0.7
        else f"best mean at t = {best}; "
        + {
            "reproduces": "0.7 is higher",
            "does not reproduce (ours is lower)": f"0.7 is lower than {best}",
        }.get(claim_verdict(against), "0.7 against it: not resolved")
    )
    rows.append(
        f"| Tab. 2: t = 0.7 gives the best fused mIoU | means {', '.join(f'{t}: {points(m)}' for t, m in means.items())} | **{verdict}** |"
    )
    sweeps = [v[OURS]["sweep"] for v in runs.values() if OURS in v]
    if sweeps:
        count = len(sweeps[0]["threshold"])
        iou = [statistics.mean(s["iou"][i] for s in sweeps) for i in range(count)]
        hard = [statistics.mean(s["hard_recall"][i] for s in sweeps) for i in range(count)]
        rises = all(b >= a for a, b in zip(iou[:3], iou[1:3], strict=False))
        falls = all(b <= a for a, b in zip(hard, hard[1:], strict=False))
        shape = "reproduces" if rises and falls else "does not reproduce"
        trend = f"IoU {' → '.join(points(v) for v in iou)}; hard recall {' → '.join(points(v) for v in hard)}"
        rows.append(
            f"| Tab. 1: error IoU rises with t up to 0.7 while hard recall falls | {trend} | **{shape}** (means) |"
        )
    return rows


def timing_rows(timing: dict[str, Any] | None) -> list[str]:
    """Each branch's time per image and its ratio to the semantic branch, with 95% intervals over rounds."""
    if not timing:
        return []
    rounds = timing["rounds"]
    semantic = statistics.median(r["semantic"] for r in rounds)
    rows = [
        f"One {timing['size'][0]}x{timing['size'][1]} image, fp32, eval mode, {timing['threads']} threads, "
        f"{len(rounds)} rounds, the branches' order rotating each round (seed {timing['seed']}'s trained module).",
        "",
        "| branch | median time (ms) | ratio to the semantic branch | paper (0.38 s DeepLabV3+) |",
        "|---|---|---|---|",
        f"| semantic (DeepLabV3+) | {1000 * semantic:.1f} | 1 | 0.38 s |",
    ]
    for name, paper in (("error", 0.05), ("detail", 0.28)):
        interval = ratio_interval([r[name] / r["semantic"] for r in rounds])
        median = statistics.median(r[name] for r in rounds)
        rows.append(f"| {name} branch | {1000 * median:.1f} | {interval.format(3)} | {paper} s ({paper / 0.38:.2f}) |")
    return rows


def parent(command: str | None) -> str:
    """The command as the user gave it: a child's command without the options its parent added."""
    words = strip_option((command or "").split(), ("--seeds", "--jobs", "--no-report", "--threads"))
    return " ".join(words)


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def runs_regime(files: list[dict[str, Any]], fallback: Regime) -> Regime:
    """The regime the runs were made in, as their JSON records it (settings added since take their defaults).

    Raises:
        ValueError: If the files record different regimes.
    """
    stored = {json.dumps(f["regime"], sort_keys=True) for f in files}
    if len(stored) > 1:
        raise ValueError(f"the results mix runs of {len(stored)} regimes: {sorted(stored)}")
    if not files:
        return fallback
    return type(fallback)(**{k: tuple(v) if isinstance(v, list) else v for k, v in files[0]["regime"].items()})


def write_report(args: argparse.Namespace, regime: Regime) -> None:
    """Write ``docs/results/errorpix.md`` from the per-seed JSON files and ``timing.json``."""
    runs = load_runs(args.results)
    seeds = sorted(runs, key=int)
    files = [load_json(args.results / f"seed{seed}.json") for seed in seeds]
    regime = runs_regime(files, regime)
    provenance = sorted(
        {f"{f.get('machine')}; code: {f.get('code')}; command: `{parent(f.get('command'))}`" for f in files}
    )
    lines = [
        "# Erroneous-pixel prediction: the paper's Tables 1-3 on the synthetic scenes",
        "",
        f"Generated by `bench/errorpix.py` from `{shown(args.results)}/` (see the script's docstring for "
        "every run; `python bench/errorpix.py --report-only` rewrites this page).  ",
        *[f"Runs made on: {line}  " for line in provenance],
        f"Seeds: {', '.join(seeds)} (each initialises every net and orders every variant's batches alike; "
        "the images are the same for every seed).  ",
        f"Regime: {json.dumps(asdict(regime))}.  ",
        f"Scores: mIoU on {regime.test_images} held-out synthetic test images (another data seed), "
        "mean ± sample std over seeds, in points; differences are paired by seed with a 95% t interval.",
        "",
        "## The semantic branch's learning curve",
        "",
        *curve_rows(runs, regime),
        *doubling_rows(args.results, runs, regime),
        "",
        "## Tab. 1: error prediction at each threshold t (the error branch of `ours_t0.7`)",
        "",
        *sweep_rows(runs),
        "",
        "## Tab. 2: the threshold t of the detail branch's pixels and of the fusion",
        "",
        "| t | fused mIoU | semantic mIoU (same images) | fused - semantic (paired) |",
        "|---|---|---|---|",
    ]
    for threshold in THRESHOLDS:
        variant = f"ours_t{threshold}"
        fused = [v[variant]["mIoU"] for v in runs.values() if variant in v]
        semantic = [v[variant]["semantic_mIoU"] for v in runs.values() if variant in v]
        gain, _ = difference_cell(paired(runs, variant, "semantic"), variant, "semantic")
        lines.append(f"| {threshold:g} | {mean_std(fused)} | {mean_std(semantic)} | {gain} |")
    lines += ["", "## Tab. 3: against the baselines", ""]
    lines += ["| method | mIoU | ours - method (paired) |", "|---|---|---|"]
    sentences = []
    for variant, label in TABLE3:
        values = [v[variant]["mIoU"] for v in runs.values() if variant in v]
        cell, sentence = ("", "") if variant == OURS else difference_cell(paired(runs, OURS, variant), "ours", label)
        lines.append(f"| {label} | {mean_std(values)} | {cell or '-'} |")
        if sentence:
            sentences.append(f"- {sentence}.")
    lines += ["", "Computed from the intervals above:", "", *sentences]
    lines += ["", "## What reproduces (verdicts computed from the tables above)", "", CLAIM_LINES, ""]
    lines += [*claim_lines(runs), "", *reproduction_rows(runs)]
    lines += ["", "## Where the differences come from", "", *diagnosis_rows(args.results)]
    lines += ["", "## Inference time of the branches", "", *timing_rows(load_json(args.results / "timing.json")), ""]
    lines += ["Seconds per run (training and evaluation, mean over seeds):", ""]
    variants = sorted({name for v in runs.values() for name in v})
    lines += [
        f"- {name}: {statistics.mean(v[name]['seconds'] for v in runs.values() if name in v):.0f} s"
        for name in variants
    ]
    REPORT.write_text("\n".join(lines) + "\n")
    if args.results == RUNS:  # the README quotes the committed results only
        write_readme_block(README, "bench/errorpix_report.py", [f"  {line}" for line in claim_lines(runs)])
    print(f"wrote {REPORT}")
