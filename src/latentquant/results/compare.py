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
Each side needs two seeds or more on a dataset.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_write_text
from latentquant.results.table import COLUMNS, _mean_over_datasets, collect, t_quantile_975
from latentquant.validation import UserError

DEFAULT_METRICS = ("infom", "infoe", "infoc", "dci_d", "psnr")


def welch(a, b) -> tuple[float, float, float]:
    """(mean(a) - mean(b), 95% Welch half-width, two-sided p) of two samples of two or more values."""
    from scipy import stats  # the t distribution's tail, for p

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"a Welch interval needs two values or more on each side, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0:  # both sides constant: no spread to test against
        return diff, 0.0, 1.0 if diff == 0 else 0.0
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
    """One row per shared dataset, then the aggregate: {'dataset', 'n_a', 'n_b', metric: (diff, half, p)}."""
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
    if len(shared) > 1:  # per seed, the mean over the datasets it finished on all of
        groups.append(("aggregate", _aggregate(side_a, shared), _aggregate(side_b, shared)))
    rows = []
    for dataset, seeds_a, seeds_b in groups:
        row = {"dataset": dataset, "n_a": len(seeds_a), "n_b": len(seeds_b)}
        for metric in metrics:
            va = [e[metric] for e in seeds_a.values() if _finite(e.get(metric))]
            vb = [e[metric] for e in seeds_b.values() if _finite(e.get(metric))]
            if len(va) < 2 or len(vb) < 2:
                raise UserError(
                    f"{dataset}: {metric} needs two seeds or more on each side, got {len(va)} of {a[1]!r} "
                    f"and {len(vb)} of {b[1]!r}"
                )
            row[metric] = welch(va, vb)
        rows.append(row)
    return rows


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
            diff, half, p = row[m]
            digits = 1 if m == "psnr" else 2
            star = "*" if bonferroni and p < 0.05 / bonferroni else ""
            shown = "p < 0.001" if p < 0.001 else f"p {p:.3f}"
            cells.append(f"{diff:+.{digits}f} ± {half:.{digits}f} ({shown}{star})")
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
    count = len(rows) * len(metrics)
    text = to_markdown(rows, metrics, bonferroni=count if args.bonferroni else None)
    print(f"A = {args.a[1]} ({args.a[0]}), B = {args.b[1]} ({args.b[0]}): A - B, 95% Welch interval, p")
    print(text, end="")
    if args.bonferroni:
        print(f"* p < 0.05 / {count} (Bonferroni over the {count} comparisons)")
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out}")
    return 0
