"""The benchmarks' shared harness: resumable per-seed sweeps recorded in atomic JSON files, and paired statistics.

A benchmark runs, per seed, a list of variants; :class:`SeedResults` holds one seed's results file
(the regime it belongs to, every finished variant, the command, machine and code that produced
it), and :func:`sweep` runs the variants not in it yet, writing the file as each one ends, so a
killed sweep resumes where it stopped. The report helpers below turn the files into mIoU cells
over seeds, paired 95% intervals and computed verdicts (:mod:`verdicts`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from provenance import code_state, command_line, machine
from verdicts import comparison, difference_interval, seeds_needed, target_verdict

CLAIM_LINES = (
    "Each line: the paired difference in mIoU points with its 95% t interval over seeds, the paper's own "
    "difference, and the verdict computed from the interval (a claim reproduces when the whole interval is on "
    "the paper's side of 0; an unresolved claim gives the seeds that would resolve the paper's effect with 80% "
    "power, from the spread measured so far)."
)
"""What a report's generated claim lines say (the reports put it above them)."""


def load_json(path: Path) -> dict[str, Any]:
    """A results file, or an empty dict when there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(data: dict[str, Any], path: Path) -> None:
    """Write a results file atomically, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_file = path.with_suffix(".json.partial")
    partial_file.write_text(json.dumps(data, indent=1, sort_keys=True))
    partial_file.replace(path)


class SeedResults:
    """One seed's results file: the regime it belongs to, the finished variants, and where they came from.

    Args:
        path: The file (``seed<k>.json``).
        regime: The settings every variant of the file shares (JSON-ready); a file of another
            regime is refused, so runs of two regimes never mix.
        script: The benchmark script, recorded with the command line.
        seed: The seed, recorded in a new file.

    Raises:
        ValueError: If ``path`` holds results of another regime.

    """

    def __init__(self, path: Path, regime: dict[str, Any], script: str, seed: int | None = None) -> None:
        self.path, self.script = path, script
        regime = json.loads(json.dumps(regime))  # as it reads back (tuples become lists)
        self.data = load_json(path) or {"seed": seed, "regime": regime, "variants": {}}
        if self.data["regime"] != regime:
            raise ValueError(
                f"{path} holds results of another regime ({self.data['regime']}); this run's is {regime}. "
                "Give another results folder, or delete the file."
            )

    @property
    def variants(self) -> dict[str, Any]:
        """The finished variants' results, by name."""
        return self.data["variants"]

    def __contains__(self, variant: str) -> bool:
        return variant in self.variants

    def save(self) -> None:
        """Write the file atomically, with the command, machine and code of this run."""
        self.data.update(machine=machine(), code=code_state(), command=command_line(self.script))
        save_json(self.data, self.path)

    def record(self, variant: str, result: dict[str, Any]) -> None:
        """Store a finished variant's result and write the file."""
        self.variants[variant] = result
        self.save()


def sweep(results: SeedResults, plan: Iterable[tuple[str, Callable[[], dict[str, Any]]]]) -> None:
    """Run, in order, each ``(variant, run)`` whose variant is not in ``results`` yet, recording it as it ends."""
    for variant, run in plan:
        if variant not in results:
            print(f"{results.path.stem}: {variant}", flush=True)
            results.record(variant, run())


def points(value: float) -> str:
    """An mIoU as points with one decimal, e.g. ``'66.1'``."""
    return f"{100 * value:.1f}"


def mean_std(values: list[float]) -> str:
    """``'66.1 ± 0.8'`` (points, sample std over seeds) or the single value; NaNs (empty denominators) left out."""
    values = [value for value in values if not math.isnan(value)]
    if len(values) < 2:
        return points(values[0]) if values else "-"
    return f"{points(statistics.mean(values))} ± {points(statistics.stdev(values))}"


def difference_cell(differences: list[float], subject: str, baseline: str) -> tuple[str, str]:
    """The paired difference with its 95% t interval, and the computed sentence (or why there is none)."""
    if len(differences) < 2:
        return "-", f"needs 2 or more paired seeds (has {len(differences)})"
    interval = difference_interval(differences)
    sentence = comparison(interval, subject, baseline, digits=2, unit=" pts")
    return per_seed(interval.format(2, " pts")), per_seed(sentence)


def paired_text(differences: list[float]) -> str:
    """The paired difference with its 95% interval, or with fewer than 2 seeds the differences there are."""
    if len(differences) < 2:
        shown = "".join(f" ({d:+.2f} pts)" for d in differences)
        return f"{len(differences)} paired seed{'s' * (len(differences) != 1)}{shown}"
    return difference_cell(differences, "", "")[0]


def per_seed(text: str) -> str:
    """An interval's text with its sample named: here the rounds are seeds."""
    return text.replace(" rounds)", " seeds)")


CONVERGED_GAIN = "<= 2"
"""Converged: the whole 95% CI of what more steps add (mIoU points) lies at or below 2 (docs/results/regime.md)."""

REPRODUCES, DOES_NOT_REPRODUCE, NOT_RESOLVED = "reproduces", "does not reproduce", "not resolved"
"""The three outcomes of a claim, as :func:`claim_outcome` returns them."""


def claimed_side(paper_effect: float | None) -> int:
    """The side of 0 a paper's claim puts the difference on: -1 when its own difference is negative, else 1."""
    return -1 if paper_effect is not None and paper_effect < 0 else 1


def claim_outcome(differences: list[float], claimed_side: int = 1) -> str:
    """:data:`REPRODUCES` when the paired interval lies wholly on ``claimed_side`` of 0 (1 above, -1 below).

    :data:`DOES_NOT_REPRODUCE` when it lies wholly on the other side, else (or with fewer than 2
    differences) :data:`NOT_RESOLVED`.
    """
    if len(differences) < 2:
        return NOT_RESOLVED
    side = difference_interval(differences).side(0.0)
    return REPRODUCES if side == claimed_side else NOT_RESOLVED if side == 0 else DOES_NOT_REPRODUCE


def claim_verdict(differences: list[float], subject: str = "ours", paper_effect: float | None = None) -> str:
    """Whether a paper's claim about ``subject`` minus a baseline reproduces: by the paired interval's side of 0.

    The claim is "``subject`` is higher", or "lower" when the paper's own difference
    (``paper_effect``, in the units of ``differences``) is negative. With ``paper_effect``, an
    interval that lies wholly on the near side of it also says that the paper's size of the effect
    does not reproduce. The text starts with the :func:`claim_outcome`.
    """
    if len(differences) < 2:
        return f"{NOT_RESOLVED} (fewer than 2 seeds)"
    claimed = claimed_side(paper_effect)
    verdict = claim_outcome(differences, claimed)
    interval = difference_interval(differences)
    if verdict == DOES_NOT_REPRODUCE:
        verdict += f" ({subject} is {'lower' if interval.side(0.0) == -1 else 'higher'})"
    if paper_effect is not None and interval.side(paper_effect) == -claimed:
        where = "above" if claimed == 1 else "below"
        verdict += f"; the paper's {paper_effect:+.2f} lies {where} the interval, so its size does not reproduce"
    return verdict


def verdict_with_seeds(differences: list[float], subject: str, paper_effect: float) -> str:
    """:func:`claim_verdict`, and for an unresolved claim how many seeds would resolve the paper's effect.

    No seed count is given when the interval already excludes the paper's effect: more seeds would
    resolve the sign of a smaller effect, not the paper's.
    """
    verdict = claim_verdict(differences, subject, paper_effect)
    claimed = claimed_side(paper_effect)
    if claim_outcome(differences, claimed) == NOT_RESOLVED and len(differences) >= 2:
        rest = verdict[len(NOT_RESOLVED) :]
        verdict = f"{NOT_RESOLVED} at {len(differences)} seeds{rest}"
        if difference_interval(differences).side(paper_effect) != -claimed:
            verdict += f"; {seeds_to_resolve(differences, paper_effect)}"
    return verdict


def seeds_to_resolve(differences: list[float], effect: float) -> str:
    """``'about M seeds would resolve +x (80% power)'``: what an unresolved paired comparison needs.

    The spread of fewer than 3 seeds is too uncertain to size a sample from; and as the comparison is
    unresolved at its current seeds, at least one more is needed, whatever the formula says.
    """
    if len(differences) < 3 or effect == 0:
        return "3 or more seeds are needed to estimate how many would resolve it"
    needed = max(seeds_needed(differences, effect), len(differences) + 1)
    return f"about {needed} seeds would resolve {effect:+.2f} (80% power)"


def curve_table(curves: dict[str, list[list[list[float]]]]) -> list[str]:
    """``| step | <name> ... |`` rows: each name's val mIoU (%) by step, mean over its runs' curves.

    Args:
        curves: Per column name, the curves of its runs, each a list of ``[step, mIoU]`` points.

    Returns:
        The table's lines, or none when no curve has a point.

    """
    steps = sorted({point[0] for runs in curves.values() for curve in runs for point in curve})
    if not steps:
        return []
    lines = ["| step | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for step in steps:
        cells = []
        for runs in curves.values():
            at = [point[1] for curve in runs for point in curve if point[0] == step]
            cells.append(f"{100 * statistics.mean(at):.1f}" if at else "-")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return lines


def write_readme_block(readme: Path, name: str, lines: list[str]) -> bool:
    """Put ``lines`` between the README's ``<!-- generated by NAME -->`` and ``<!-- end of NAME -->`` markers.

    The README's claims are the report's generated lines, copied in whenever the report is rendered.

    Returns:
        Whether the README has the markers (without them nothing is written).

    """
    start, end = f"<!-- generated by {name} -->", f"<!-- end of {name} -->"
    text = readme.read_text() if readme.is_file() else ""
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail)
    return True


def target_line(values: list[float], target: str, what: str) -> str:
    """``- what: x (95% CI ...); target <target>: <verdict>`` over paired ``values`` (or why there is no interval)."""
    if len(values) < 2:
        shown = ", ".join(f"{v:+.1f}" for v in values) or "none"
        return f"- {what}: {shown} (n = {len(values)}); target {target}: not resolved (needs 2 or more seeds)"
    interval = difference_interval(values)
    measured = interval.format(2, " pts").replace(" rounds)", " seeds)")
    return f"- {what}: {measured}; target {target}: {target_verdict(interval, target)}"


def twice_the_steps_line(gains: list[float], what: str) -> str:
    """The convergence check: ``gains`` (twice the steps minus the budget, points, paired by seed) against
    :data:`CONVERGED_GAIN`, and whether twice the steps is resolved as a gain at all."""
    line = target_line(gains, CONVERGED_GAIN, what)
    if len(gains) >= 2:  # the weaker question: do more steps still raise the result measurably?
        gain = "yes" if difference_interval(gains).low > 0 else "no"
        line += f"; twice the steps resolved as a gain (whole interval above 0): {gain}"
    return line


def value_at(curve: list[list[float]], step: float) -> float:
    """The curve's mIoU at the recorded step closest to ``step``."""
    return min(curve, key=lambda point: abs(point[0] - step))[1]


def plateau_gain(run: dict[str, Any]) -> float:
    """mIoU points a run gained over the last third of training (final minus the value at 2/3 of its ``steps``)."""
    return 100 * (run["curve"][-1][1] - value_at(run["curve"], 2 * run["steps"] / 3))


PLATEAU_TEXT = (
    "Each line: a variant's val mIoU gain from 2/3 of its steps to the end, 95% t interval over seeds, against "
    f"the regime's convergence target ({CONVERGED_GAIN} points; docs/results/regime.md, which checks it for plain "
    "CE). A variant that misses it was still learning when the budget ended, so its comparisons measure how fast "
    "it learns as well as where it ends."
)
"""What :func:`plateau_section` says (the reports put it above them)."""


def plateau_section(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A report's "Did each variant plateau?" section: per name, its runs' :func:`plateau_gain` against
    :data:`CONVERGED_GAIN` (one :func:`target_line` each); empty when no name has a run."""
    lines = [
        target_line([plateau_gain(run) for run in group], CONVERGED_GAIN, f"{name}: gain over the last third (pts)")
        for name, group in runs.items()
        if group
    ]
    return ["## Did each variant plateau?", "", PLATEAU_TEXT, "", *lines, ""] if lines else []
