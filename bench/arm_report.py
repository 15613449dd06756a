"""docs/results/arm.md, rendered from the ARM runs' JSON only (``bench/arm_ablation.py`` makes the runs).

Every number is recomputed from ``docs/results/arm_runs/seed<k>.json`` and
``docs/results/arm_tuning/seed<k>.json``: the paper-shaped tables (mean ± sample std over seeds),
each claim's paired difference with its 95% t interval, the verdict computed from the interval,
and for an unresolved claim the number of seeds that would resolve the paper's effect.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arm_ablation import (
    ARM_LR_MULTIPLIER,
    AUX_WEIGHT,
    COMMAND,
    LEARNING_RATES,
    REGIME,
    REPO,
    REPORT,
    RUNS,
    RUNS_DOUBLED,
    TUNING_DATA_SEED,
    TUNING_SEEDS,
    VARIANTS,
    run_key,
    tuned_lrs,
    tuning_table,
)
from harness import (
    CLAIM_LINES,
    DOES_NOT_REPRODUCE,
    NOT_RESOLVED,
    REPRODUCES,
    claim_outcome,
    curve_table,
    difference_cell,
    load_json,
    mean_std,
    paired_text,
    plateau_section,
    verdict_with_seeds,
    write_readme_block,
)

README = REPO / "README.md"
NAMES = {
    "base_ce": "Base model (CE)",
    "arm": "ARM (var, L2, detached)",
    "ohem": "OHEM",
    "linear_suppress": "Linear ARM (suppressing, detached)",
    "linear_focus": "Linear ARM (focusing, detached)",
    "linear_suppress_nodetach": "Linear ARM (suppressing, not detached)",
    "arm_nodetach": "ARM (not detached)",
    "arm_l1": "ARM, L1 norm",
    "arm_l3": "ARM, L3 norm",
    "arm_std": "ARM, std input",
    "arm_logvar": "ARM, log var input",
    "arm_entropy": "ARM, entropy input",
    "gce": "GCE",
    "gce_arm": "GCE + ARM",
    "kl": "KL",
    "kl_arm": "KL + ARM (input s)",
}


@dataclass(frozen=True)
class Claim:
    """A paper's statement "``subject`` minus ``baseline`` is ``paper`` mIoU points" on ``labels``."""

    subject: str
    baseline: str
    labels: str
    paper: float  # the paper's difference in mIoU points; 0 states "no gain"
    source: str  # where the paper says it


CLAIMS = [
    Claim("linear_suppress", "base_ce", "coarse", 1.80, "Table 1"),
    Claim("linear_suppress_nodetach", "base_ce", "coarse", -66.30, "Table 1"),
    Claim("linear_focus", "base_ce", "coarse", -0.79, "Table 1"),
    Claim("arm", "base_ce", "coarse", 1.61, "Tables 2, 4, 5"),
    Claim("arm_l3", "base_ce", "coarse", 0.77, "Table 2"),
    Claim("arm", "arm_l3", "coarse", 0.84, "Table 2"),
    Claim("arm_std", "base_ce", "coarse", 1.50, "Table 2"),
    Claim("arm_logvar", "base_ce", "coarse", 1.60, "Table 2"),
    Claim("gce", "base_ce", "coarse", 0.90, "Table 4"),
    Claim("kl", "base_ce", "coarse", -1.27, "Table 4"),
    Claim("gce_arm", "gce", "coarse", 0.85, "Table 4"),
    Claim("kl_arm", "kl", "coarse", 2.80, "Table 4"),
    Claim("arm", "base_ce", "fine", 0.97, "Table 5"),
    Claim("ohem", "base_ce", "fine", 0.47, "Table 5"),
    Claim("arm", "ohem", "fine", 0.50, "Table 5"),
    Claim("ohem", "base_ce", "coarse", 0.0, "Table 5 (OHEM -0.02: no gain on coarse labels)"),
    Claim("arm", "ohem", "coarse", 1.63, "Table 5"),
]
HEADLINE = [CLAIMS[3], CLAIMS[12], CLAIMS[13], CLAIMS[16]]  # ARM - CE (coarse, fine), OHEM - CE fine, ARM - OHEM
DIVERGES = {"arm_l1": "L1 norm", "arm_entropy": "entropy input"}  # the paper's NaN rows (Table 2)


def load_seeds(folder: Path | None = None) -> dict[int, dict[str, Any]]:
    """Every reporting seed's finished runs in ``folder`` (default: the regime's runs), by seed."""
    return {load_json(p)["seed"]: load_json(p) for p in sorted((folder or RUNS).glob("seed*.json"))}


def budget_lines(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """The headline claims again at twice the steps (``--doubled``), beside the regime's, on the seeds run at both."""
    doubled = load_seeds(RUNS_DOUBLED)
    if not doubled:
        return []
    lines = [
        "## Does a verdict depend on the step budget?",
        "",
        f"The headline claims at twice the regime's steps (`{COMMAND} --doubled --seeds ...`, "
        "`docs/results/arm_runs_doubled/`), then at the regime's steps on the same seeds:",
        "",
    ]
    for claim in HEADLINE:
        paired_seeds = {s for s in doubled if paired(doubled, claim.subject, claim.baseline, claim.labels, [s])}
        if not paired_seeds:
            continue  # a claim whose variants were not run at twice the steps
        both = {s: d for s, d in seeds.items() if s in paired_seeds}
        lines.append(claim_line(doubled, claim).replace("- ", "- Twice the steps: ", 1))
        lines.append(claim_line(both, claim).replace("- ", "- The regime, same seeds: ", 1))
    return [*lines, ""]


def values(seeds: dict[int, dict[str, Any]], variant: str, labels: str, metric: str = "mIoU") -> dict[int, float]:
    """The metric of ``variant`` on ``labels`` per seed that has it."""
    key = run_key(variant, labels)
    return {s: d["variants"][key].get(metric, math.nan) for s, d in seeds.items() if key in d["variants"]}


def paired(
    seeds: dict[int, dict[str, Any]], subject: str, baseline: str, labels: str, only: list[int] | None = None
) -> list[float]:
    """Per-seed mIoU differences ``subject - baseline`` in points, over the seeds with both (finite; of ``only``)."""
    a, b = values(seeds, subject, labels), values(seeds, baseline, labels)
    diffs = [100 * (a[s] - b[s]) for s in sorted(a) if s in b and (only is None or s in only)]
    return [d for d in diffs if math.isfinite(d)]


def claim_line(seeds: dict[int, dict[str, Any]], claim: Claim) -> str:
    """One generated line: the difference here with its interval, the paper's, and the computed verdict."""
    what = f"{NAMES[claim.subject]} − {NAMES[claim.baseline]}, {claim.labels} labels"
    diffs = paired(seeds, claim.subject, claim.baseline, claim.labels)
    cell = paired_text(diffs)
    if claim.paper == 0:
        verdict = no_gain_verdict(diffs, NAMES[claim.subject])
    else:
        verdict = verdict_with_seeds(diffs, NAMES[claim.subject], claim.paper)
    return f"- {what}: {cell}; paper {claim.paper:+.2f} ({claim.source}). **{verdict}**"


def no_gain_verdict(diffs: list[float], subject: str) -> str:
    """For the paper's "no gain" statements: contradicted only by an interval wholly above 0."""
    if len(diffs) < 2:
        return f"{NOT_RESOLVED} (fewer than 2 seeds)"
    return {
        DOES_NOT_REPRODUCE: f"does not reproduce ({subject} gains)",
        REPRODUCES: f"reproduces ({subject} is lower)",
        NOT_RESOLVED: "consistent with no gain (no difference resolved)",
    }[claim_outcome(diffs, claimed_side=-1)]


def outcome(seeds: dict[int, dict[str, Any]], claim: Claim) -> str:
    """The claim's :func:`harness.claim_outcome`; a "no gain" claim (paper 0) reproduces when the subject is lower."""
    claimed_side = -1 if claim.paper <= 0 else 1
    return claim_outcome(paired(seeds, claim.subject, claim.baseline, claim.labels), claimed_side)


def divergence_line(seeds: dict[int, dict[str, Any]], variant: str, what: str) -> str:
    """The paper's runs of ``variant`` did not converge (NaN): how many runs here had a non-finite loss."""
    runs = [d["variants"][key] for d in seeds.values() if (key := run_key(variant, "coarse")) in d["variants"]]
    if not runs:
        return f"- {what}: the paper's run did not converge (NaN). Not run here yet."
    diverged = sum(r["non_finite_steps"] > 0 or not math.isfinite(r["mIoU"]) for r in runs)
    verdict = "reproduces" if diverged == len(runs) else "does not reproduce" if diverged == 0 else "mixed"
    miou = mean_std([r["mIoU"] for r in runs])
    return (
        f"- {what}: the paper's run did not converge (NaN). Here {diverged} of {len(runs)} runs had a non-finite "
        f"training loss; val mIoU {miou}. **{verdict}**"
    )


def table(seeds: dict[int, dict[str, Any]], rows: list[tuple[str, str]], labels: str, baseline: str) -> list[str]:
    """``| row | aAcc | mAcc | mIoU | Δ mIoU vs baseline, paired |`` for ``(title, variant)`` rows."""
    lines = [f"| {labels} labels | seeds | aAcc | mAcc | mIoU | Δ mIoU vs {NAMES[baseline]} (paired by seed, 95% CI) |"]
    lines.append("|---|---|---|---|---|---|")
    for title, variant in rows:
        cells = [mean_std(list(values(seeds, variant, labels, m).values())) for m in ("aAcc", "mAcc", "mIoU")]
        n = len(values(seeds, variant, labels))
        delta = "" if variant == baseline else difference_cell(paired(seeds, variant, baseline, labels), "", "")[0]
        lines.append(f"| {title} | {n} | {' | '.join(cells)} | {delta} |")
    return lines


def tables(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """The paper's Tables 1, 2, 4 and 5 in its row order."""
    by = NAMES
    out = ["## Tables (val metrics in %, mean ± sample std over seeds)", ""]
    out += ["**Table 1: detaching the confidence; suppressing vs focusing.**", ""]
    t1 = ["base_ce", "linear_suppress_nodetach", "linear_suppress", "linear_focus", "arm_nodetach", "arm"]
    out += [*table(seeds, [(by[v], v) for v in t1], "coarse", "base_ce"), ""]
    out += ["**Table 2: ARM's normalisation and input.**", ""]
    t2 = ["base_ce", "arm_l1", "arm", "arm_l3", "arm_std", "arm_logvar", "arm_entropy"]
    out += [*table(seeds, [(by[v], v) for v in t2], "coarse", "base_ce"), ""]
    out += ["**Table 4: ARM on other losses** (Δ against the same loss without ARM).", ""]
    for plain, with_arm in (("kl", "kl_arm"), ("base_ce", "arm"), ("gce", "gce_arm")):
        out += [*table(seeds, [(by[plain], plain), (by[with_arm], with_arm)], "coarse", plain), ""]
    out += ["**Table 5: ARM against OHEM.**", ""]
    for labels in ("fine", "coarse"):
        t5 = ["base_ce", "ohem", "linear_suppress", "arm"]
        out += [*table(seeds, [(by[v], v) for v in t5], labels, "base_ce"), ""]
    return out


def tuning_lines() -> list[str]:
    """The lr sweeps of CE and ARM and what each chose."""
    table_ = tuning_table()
    lrs = tuned_lrs()
    lines = ["## Tuning", ""]
    lines.append(
        f"On other images (`data_seed` {TUNING_DATA_SEED}) and other seeds ({', '.join(map(str, TUNING_SEEDS))}) "
        "than the reporting runs, coarse labels; CE and ARM each try the same learning rates, and each keeps "
        "the one with the best mean val mIoU. Val mIoU (%) per seed:"
    )
    lines += ["", "| lr | CE | ARM |", "|---|---|---|"]
    for lr in LEARNING_RATES:
        cells = [", ".join(f"{100 * v:.1f}" for v in table_[f].get(lr, [])) or "-" for f in ("ce", "arm")]
        lines.append(f"| {lr:g} | {cells[0]} | {cells[1]} |")
    chosen = f"CE {lrs['ce']:g}, ARM {lrs['arm']:g}" if lrs else "not yet (tuning unfinished)"
    lines += ["", f"Chosen: {chosen}."]
    edges = [f for f, lr in (lrs or {}).items() if lr in (min(LEARNING_RATES), max(LEARNING_RATES))]
    if edges:
        sides = " and ".join("CE" if f == "ce" else "ARM" for f in edges)
        lines.append(
            f"{sides} chose an lr at the edge of the sweep, so a wider sweep might find a better one (for both "
            "sides alike, to keep the budgets equal)."
        )
    return [*lines, ""]


def curve_lines(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """CE's and ARM's mean val mIoU by step (the plateau), over the seeds finished."""
    keys = [run_key(v, lab) for lab in ("coarse", "fine") for v in ("base_ce", "arm")]
    table_ = curve_table({k: [d["variants"][k]["curve"] for d in seeds.values() if k in d["variants"]] for k in keys})
    if not table_:
        return []
    return ["## Learning curves", "", "Val mIoU (%) by step, mean over the seeds finished.", "", *table_, ""]


def plateau_lines(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """Whether each variant's own val curve flattened over the last third of its steps."""
    runs = {
        f"{NAMES[variant]}, {labels} labels": [
            d["variants"][key] for d in seeds.values() if (key := run_key(variant, labels)) in d["variants"]
        ]
        for variant, spec in VARIANTS.items()
        for labels in spec.labels
    }
    return plateau_section(runs)


def learned_lines(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """ARM's final W(v), scaled to a maximum of 1, and its rank correlation with the closed form."""
    lines = ["## What ARM learned", ""]
    lines.append(
        "W(v) at v = -1, -0.5, 0, 0.5, 1 (mean over seeds, each scaled to a maximum of 1) and its rank correlation "
        "with the Hölder closed form of the second half's loss by confidence. W(1)/W(-1) near 1 means W stayed flat."
    )
    lines += ["", "| run | W(-1) | W(-0.5) | W(0) | W(0.5) | W(1) | rank corr. | W(1)/W(-1) per seed |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for variant, spec in VARIANTS.items():
        for labels in spec.labels:
            runs = [d["variants"][k] for d in seeds.values() if (k := run_key(variant, labels)) in d["variants"]]
            runs = [r for r in runs if "arm_curve" in r]
            if not runs:
                continue
            scaled = [[w / max(max(r["arm_curve"]), 1e-12) for w in r["arm_curve"]] for r in runs]
            at = " | ".join(f"{statistics.mean(c[i] for c in scaled):.2f}" for i in (0, 5, 10, 15, 20))
            corrs = [r["closed_form_rank_corr"] for r in runs if r["closed_form_rank_corr"] is not None]
            corr = f"{statistics.mean(corrs):.2f}" if corrs else "-"
            ratios = ", ".join(f"{r['arm_curve'][-1] / max(r['arm_curve'][0], 1e-12):.2f}" for r in runs)
            lines.append(f"| {run_key(variant, labels)} | {at} | {corr} | {ratios} |")
    return [*lines, ""]


def header(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """Command, machine, code, seeds and the regime."""
    first = next(iter(seeds.values()), {})
    without_threads = {k: v for k, v in dataclasses.asdict(REGIME).items() if k != "threads"}
    lines = [
        "# ARM's claims re-run in the benchmark regime (paper Tables 1, 2, 4, 5)",
        "",
        f"Generated by `{COMMAND} --report-only` from `docs/results/arm_runs/` and `docs/results/arm_tuning/`. "
        f"Runs: `{COMMAND} --tune`, then `{COMMAND} --seeds ...` (resumable; see `bench/arm_ablation.py`).",
        "",
        f"- Machine: {first.get('machine', '-')}; code: {first.get('code', '-')}.",
        f"- Reporting seeds: {', '.join(map(str, sorted(seeds))) or 'none yet'} (a seed fixes the initial net, "
        "aux head and ARM, and the batch order; every variant of a seed shares them).",
        f"- Regime (`bench/regime.py`, docs/results/regime.md): {without_threads}; "
        f"torch threads per run: {threads_used(seeds)}; AdamW with poly "
        f"decay; auxiliary FCN head, weight {AUX_WEIGHT}; ARM's lr = -{ARM_LR_MULTIPLIER:g} x the net's (the paper's "
        "rule); 5% isolation phase; metrics on the fine val masks after the last step (no checkpoint selection).",
        "- Read these with docs/results/regime.md: whether the regime converges (for coarse and for fine labels) is "
        "one of its computed verdicts.",
        "",
    ]
    return lines


def write_report() -> None:
    """Render docs/results/arm.md."""
    seeds = load_seeds()
    lines = [*header(seeds), "## Does it reproduce here?", ""]
    lines.append(CLAIM_LINES)
    lines += ["", *[claim_line(seeds, c) for c in CLAIMS]]
    lines += [divergence_line(seeds, v, f"{NAMES[v]} ({w})") for v, w in DIVERGES.items()]
    lines += ["", *budget_lines(seeds), *tuning_lines(), *tables(seeds), *curve_lines(seeds), *plateau_lines(seeds)]
    lines += learned_lines(seeds)
    lines += [
        "## Notes",
        "",
        "- std is the sample standard deviation over seeds; intervals are paired Student t intervals "
        "(`bench/verdicts.py`).",
        "- The earlier 200-step results (under-trained, unpaired, CE untuned) were replaced by these; they are in "
        "the git history of this file. So are the runs of two earlier regimes, each in "
        "`docs/results/arm_runs/` and `arm_tuning/`: 400 training images and 2400 steps (at commit 520f858), which "
        "did not converge with fine labels, and 200 images and 2000 steps (at commit 586c914), which did not meet the "
        "twice-the-steps check (docs/results/regime.md).",
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"wrote {REPORT}")
    write_readme_block(README, "bench/arm_report.py", readme_lines(seeds))


def threads_used(seeds: dict[int, dict[str, Any]]) -> str:
    """The torch threads the runs recorded (a run's threads are not part of the regime)."""
    used = sorted(
        {run["threads"] for record in seeds.values() for run in record["variants"].values() if "threads" in run}
    )
    return ", ".join(map(str, used)) or "-"


def readme_lines(seeds: dict[int, dict[str, Any]]) -> list[str]:
    """The README's ARM claims: the headline comparisons' generated lines and the count of every claim's verdicts."""
    lines = [claim_line(seeds, claim) for claim in HEADLINE]
    outcomes = [outcome(seeds, claim) for claim in CLAIMS]
    lines.append(
        f"- Of the {len(CLAIMS)} claims in docs/results/arm.md at {len(seeds)} seed(s): "
        f"{outcomes.count(REPRODUCES)} reproduce, {outcomes.count(DOES_NOT_REPRODUCE)} do not, "
        f"{outcomes.count(NOT_RESOLVED)} are not resolved."
    )
    return [f"  {line}" for line in lines]  # sub-items of the README's ARM item
