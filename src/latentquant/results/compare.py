"""``latentquant compare``: the difference of two models' scores over seeds, with intervals.

    latentquant compare --a results/successors/small catvae+anneal-steps=10000 \\
        --b results/curves/small qlae

Each side is a results root (as ``latentquant table`` reads it: finished runs
``<dataset>/<model>/seed<k>/eval.json`` at any depth) and a model folder name.
For every dataset both sides have, and for their aggregate (each seed's scores
averaged over those datasets first, as in ``table``), it prints the mean of A
minus the mean of B, the half-width of its two-sided 95% Welch interval,

    half = t_{0.975, nu} * sqrt(s_A^2 / n_A + s_B^2 / n_B),
    nu = (s_A^2/n_A + s_B^2/n_B)^2 / ((s_A^2/n_A)^2/(n_A - 1) + (s_B^2/n_B)^2/(n_B - 1))

(Welch 1947; the seeds of A and B are independent, their variances need not be
equal), and the two-sided p-value of Welch's t-test. A difference whose
interval excludes 0 has p < 0.05; with many comparisons on one page, say how
many were made (``--bonferroni`` marks those below 0.05 / their number).
A cell needs two seeds or more with a finite score on each side; one with
fewer is ``n/a`` with its counts, and a cell whose counts differ from its
row's (a seed without that metric) names them. Datasets below a common folder
(``small/shapes``) aggregate within it, as in ``table``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from latentquant._atomic import atomic_write_text
from latentquant.results.table import COLUMNS, _mean_over_datasets, collect, t_quantile_975
from latentquant.validation import UserError

DEFAULT_METRICS = ("infom", "infoe", "infoc", "dci_d", "psnr")


class Cell(NamedTuple):
    """One metric of one row: A - B, the 95% half-width, p (NaN without two seeds a side), the counts."""

    diff: float
    half: float
    p: float
    n_a: int
    n_b: int

    @property
    def tested(self) -> bool:
        return self.n_a >= 2 and self.n_b >= 2


def welch(a, b) -> tuple[float, float, float]:
    """(mean(a) - mean(b), 95% Welch half-width, two-sided p) of two samples of two or more values."""
    from scipy import stats  # the t distribution's tail, for p

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"a Welch interval needs two values or more on each side, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # both sides constant (their var and mean may round)
        diff = float(a[0] - b[0])
        return diff, 0.0, 1.0 if diff == 0 else 0.0
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = t_quantile_975(dof) * se
    p = float(2 * stats.t.sf(abs(diff) / se, dof))
    return diff, half, p


def _side(root: str, model: str) -> dict[str, dict[str, dict]]:
    """dataset -> seed -> eval dict of ``model``'s finished runs under ``root``."""
    runs = collect(root)
    found = {dataset: {e["_seed"]: e for e in evals} for (dataset, m), evals in runs.items() if m == model}
    if not found:
        models = sorted({m for _, m in runs})
        raise UserError(f"no finished runs of model {model!r} under {root}; its models: {', '.join(models)}")
    return found


def compare(a: tuple[str, str], b: tuple[str, str], metrics=DEFAULT_METRICS) -> list[dict]:
    """One row per shared dataset, then per folder of them the aggregate:
    {'dataset', 'n_a', 'n_b', metric: :class:`Cell`}. UserError when no cell has two seeds a side."""
    known = dict(COLUMNS)
    metrics = list(dict.fromkeys(metrics))  # a metric named twice is one column
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    side_a, side_b = _side(*a), _side(*b)
    shared = sorted(set(side_a) & set(side_b))
    if not shared:
        raise UserError(
            f"{a[1]!r} under {a[0]} and {b[1]!r} under {b[0]} share no dataset "
            f"({', '.join(sorted(side_a))} against {', '.join(sorted(side_b))})"
        )
    groups = [(dataset, side_a[dataset], side_b[dataset]) for dataset in shared]
    folders = defaultdict(list)  # as table: small/shapes and large/shapes aggregate apart
    for dataset in shared:
        folders[dataset.rpartition("/")[0]].append(dataset)
    for folder, datasets in sorted(folders.items()):
        if len(datasets) > 1:  # per seed, the mean over the datasets it finished on all of
            label = f"{folder}/aggregate" if folder else "aggregate"
            groups.append((label, _aggregate(side_a, datasets), _aggregate(side_b, datasets)))
    rows = []
    for dataset, seeds_a, seeds_b in groups:
        row = {"dataset": dataset, "n_a": len(seeds_a), "n_b": len(seeds_b)}
        for metric in metrics:
            va = [e[metric] for e in seeds_a.values() if _finite(e.get(metric))]
            vb = [e[metric] for e in seeds_b.values() if _finite(e.get(metric))]
            tested = len(va) >= 2 and len(vb) >= 2
            row[metric] = Cell(*(welch(va, vb) if tested else (math.nan,) * 3), len(va), len(vb))
        rows.append(row)
    if not any(row[m].tested for row in rows for m in metrics):
        cell = rows[0][metrics[0]]
        raise UserError(
            f"nothing to compare: no dataset has two seeds or more with a finite score on each side "
            f"({rows[0]['dataset']}: {metrics[0]} of {cell.n_a} seed(s) of {a[1]!r} and {cell.n_b} of {b[1]!r})"
        )
    return rows


def tested_cells(rows: list[dict], metrics) -> int:
    """The number of comparisons made (the cells with two seeds or more a side): Bonferroni's count."""
    return sum(row[m].tested for row in rows for m in metrics)


def _aggregate(side: dict[str, dict[str, dict]], datasets: list[str]) -> dict[str, dict]:
    seeds = set.intersection(*(set(side[d]) for d in datasets))
    return {seed: _mean_over_datasets([side[d][seed] for d in datasets]) for seed in sorted(seeds)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def to_markdown(rows: list[dict], metrics=DEFAULT_METRICS, bonferroni: int | None = None) -> str:
    """Cells 'diff ± half (p)'; with ``bonferroni`` = the number of comparisons, a p below 0.05 / it
    is marked with *."""
    titles = dict(COLUMNS)
    lines = [
        "| dataset | seeds A, B | " + " | ".join(titles[m] for m in metrics) + " |",
        "|" + "---|" * (2 + len(metrics)),
    ]
    for row in rows:
        cells = []
        for m in metrics:
            cell = row[m]
            counts = "" if (cell.n_a, cell.n_b) == (row["n_a"], row["n_b"]) else f"seeds {cell.n_a}, {cell.n_b}"
            if not cell.tested:
                cells.append(f"n/a (seeds {cell.n_a}, {cell.n_b})")
                continue
            digits = 1 if m == "psnr" else 2
            star = "*" if bonferroni and cell.p < 0.05 / bonferroni else ""
            shown = "p < 0.001" if cell.p < 0.001 else f"p {cell.p:.3f}"
            note = f"; {counts}" if counts else ""
            cells.append(f"{cell.diff:+.{digits}f} ± {cell.half:.{digits}f} ({shown}{star}{note})")
        lines.append(f"| {row['dataset']} | {row['n_a']}, {row['n_b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--a", nargs=2, metavar=("ROOT", "MODEL"), required=True, help="results root and model folder of side A"
    )
    parser.add_argument(
        "--b", nargs=2, metavar=("ROOT", "MODEL"), required=True, help="results root and model folder of side B"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help=f"eval.json keys (default {' '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument(
        "--bonferroni", action="store_true", help="mark with * the p-values below 0.05 / the number of comparisons"
    )
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")


def run(args) -> int:
    metrics = list(dict.fromkeys(args.metrics))
    rows = compare(tuple(args.a), tuple(args.b), metrics)
    count = tested_cells(rows, metrics)
    text = to_markdown(rows, metrics, bonferroni=count if args.bonferroni else None)
    print(f"A = {args.a[1]} ({args.a[0]}), B = {args.b[1]} ({args.b[0]}): A - B, 95% Welch interval, p")
    print(text, end="")
    if args.bonferroni:
        print(f"* p < 0.05 / {count} (Bonferroni over the {count} comparisons)")
    if count < len(rows) * len(metrics):
        print("n/a: fewer than two seeds with a finite score on a side (their counts in brackets)")
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out}")
    return 0
