"""``latentquant table DIR``: mean and 95% confidence interval over seeds.

For each (dataset, model) the runs ``DIR/<dataset>/<model>/seed<k>/eval.json``
(found at any depth below DIR: the dataset column then shows the path below
DIR, ``small/sprites``) are summarised by their mean and the half-width of a two-sided 95% confidence
interval from Student's t distribution,

    half = t_{0.975, n-1} * s / sqrt(n),   s the sample standard deviation,

which is the convention of the paper's tables (Hsu et al. 2023, Tables 1-2:
"mean and 95% confidence interval over seeds"). With one seed the interval is
undefined and only the mean is shown. The aggregate block averages, for each
model and seed, the scores over the datasets, then takes the mean and interval
of those per-seed averages over seeds, so differences between datasets do not
widen the interval. Only seeds that finished on every dataset of the table
count there; datasets in different folders below DIR are aggregated apart.

``--best`` also names, for each (dataset, model), the seed with the highest
InfoM + InfoE + InfoC (the run whose figures a results page should show).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_write_text
from latentquant.results.layout import find_runs
from latentquant.train.config import RUNTIME_FIELDS
from latentquant.train.rundir import RunDir
from latentquant.train.scores import SCORES
from latentquant.validation import UserError

# (eval.json key, column title); the paper's order: InfoM, InfoE, InfoC, D, C, I.
COLUMNS = [(s.key, s.title) for s in SCORES if s.in_table]


def t_quantile_975(dof: float) -> float:
    """Two-sided 95% quantile of Student's t with ``dof`` degrees of freedom (Welch's may be fractional)."""
    from scipy.stats import t  # scipy.stats takes a while to import: only when an interval is computed

    return float(t.ppf(0.975, dof))


def mean_ci(values) -> tuple[float, float]:
    """Mean and 95% t-interval half-width of finite ``values`` (NaN when n < 2)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    half = t_quantile_975(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def collect(root: str | os.PathLike, unfinished: list[str] | None = None) -> dict[tuple[str, str], list[dict]]:
    """Map (dataset, model) to the list of eval dicts of the runs at any depth under ``root``
    (``layout.find_runs``: the dataset is the path below ``root`` down to the model folder).

    A run still training (its eval.json from a step before its config's
    ``steps``) is left out, and named in ``unfinished`` when a list is given:
    a table row is the runs' last step, never a mix of steps. An eval.json
    that is not a JSON object with a whole-number ``step`` and numeric scores is
    a UserError naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no results directory at {root}")
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    configs: dict[tuple[str, str], list] = defaultdict(list)
    for found in find_runs(root, "eval.json"):
        run = RunDir(found.path)
        scores = read_eval(run.path / "eval.json")
        cfg = run.read_config() if run.config.is_file() else None
        if cfg is not None and isinstance(scores.get("step"), int) and scores["step"] < cfg.steps:
            if unfinished is not None:
                unfinished.append(f"{run.path} (step {scores['step']:,} of {cfg.steps:,})")
            continue
        cell = (found.dataset, found.model)
        runs[cell].append({**scores, "_seed": found.seed, "_run": run.path})
        if cfg is not None:
            configs[cell].append((run.path, cfg))
    if not runs:
        still = f" ({len(unfinished)} still training)" if unfinished else ""
        raise UserError(f"no finished runs (<dataset>/<model>/seed<k>/eval.json) at any depth under {root}{still}")
    for found in configs.values():
        check_same_settings(found)
    return dict(runs)


def read_eval(path: Path) -> dict:
    """The scores in a run's ``eval.json``, checked: a JSON object, ``step`` a whole number,
    each score of the table a number or null; UserError naming the file otherwise."""
    try:
        scores = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    except RecursionError:  # arrays nested thousands deep: no run writes that
        raise UserError(f"{path} is not valid JSON: nested too deep") from None
    if not isinstance(scores, dict):
        raise UserError(f"{path} must hold a JSON object of scores, got a JSON {_json_kind(scores)}")
    step = scores.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise UserError(f"{path}: 'step' must be a whole number >= 0, got {step!r}")
    for key, _ in COLUMNS:
        value = scores.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{path}: score {key!r} must be a number or null, got {value!r}")
    return scores


def _json_kind(value) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_same_settings(found: list) -> None:
    """UserError when the runs of one row differ in anything but the seed (and how they ran):
    their mean would mix settings under one label."""
    first_path, first = found[0]
    for path, cfg in found[1:]:
        changed = cfg.differences(first, ignore=RUNTIME_FIELDS + ("seed",))
        if changed:
            shown = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in changed.items())
            raise UserError(
                f"{path} and {first_path} differ in more than the seed ({shown}); "
                "a row averages runs of one setting: move one of them out of the grid"
            )


def _fmt(mean: float, half: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(half):  # one seed: no interval
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def summarise(runs: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """One row per (dataset, model), then one per model for the aggregate over the datasets.

    Datasets found deeper below the table's root (``small/sprites``) are
    aggregated with those of the same folder (``small/aggregate``), never
    across folders: each folder is one experiment."""
    rows = [_row(dataset, model, evals) for (dataset, model), evals in sorted(runs.items())]
    groups: dict[str, set[str]] = defaultdict(set)
    for dataset, _ in runs:
        groups[dataset.rpartition("/")[0]].add(dataset)
    for prefix, datasets in sorted(groups.items()):
        label = f"{prefix}/aggregate" if prefix else "aggregate"
        for model in sorted({model for dataset, model in runs if dataset in datasets}):
            by_seed: dict[str, dict[str, dict]] = defaultdict(dict)
            for dataset in sorted(datasets):
                for e in runs.get((dataset, model), []):
                    by_seed[e["_seed"]][dataset] = e
            per_seed = [
                _mean_over_datasets(list(evals.values()))
                for seed, evals in sorted(by_seed.items())
                if len(evals) == len(datasets)
            ]
            if per_seed:
                rows.append(_row(label, model, per_seed))
    return rows


def _mean_over_datasets(evals: list[dict]) -> dict:
    out = {}
    for key, _ in COLUMNS:
        values = [e.get(key) for e in evals]
        ok = all(v is not None and math.isfinite(v) for v in values)
        out[key] = float(np.mean(values)) if ok else None
    return out


def _row(dataset: str, model: str, evals: list[dict]) -> dict:
    row = {"dataset": dataset, "model": model, "n": len(evals)}
    for key, _ in COLUMNS:
        row[key] = mean_ci(e.get(key) for e in evals)
    return row


def to_markdown(rows: list[dict]) -> str:
    header = "| dataset | model | seeds | " + " | ".join(t for _, t in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (3 + len(COLUMNS))]
    for row in rows:
        cells = [_fmt(*row[k], digits=1 if k == "psnr" else 2) for k, _ in COLUMNS]
        lines.append(f"| {row['dataset']} | {row['model']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BEST_KEYS = ("infom", "infoe", "infoc")


def best_runs(runs: dict[tuple[str, str], list[dict]], keys=BEST_KEYS) -> dict[tuple[str, str], tuple[str, float]]:
    """For each (dataset, model), the seed with the largest sum of ``keys`` and that sum.

    Runs missing a key or with a non-finite value are passed over; a cell
    with no such run is left out."""
    best = {}
    for cell, evals in sorted(runs.items()):
        scored = []
        for e in evals:
            values = [e.get(k) for k in keys]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                scored.append((sum(values), e["_seed"]))
        if scored:
            score, seed = max(scored, key=lambda s: s[0])  # ties: the first seed in path order
            best[cell] = (seed, score)
    return best


def add_arguments(parser) -> None:
    parser.add_argument("root", help="results directory holding runs <dataset>/<model>/seed<k>/ at any depth")
    parser.add_argument("--out", default=None, help="markdown file to write (default ROOT/table.md)")
    parser.add_argument(
        "--best", action="store_true", help="also print each (dataset, model)'s best seed by InfoM + InfoE + InfoC"
    )


def run(args) -> int:
    unfinished: list[str] = []
    runs = collect(args.root, unfinished)
    text = to_markdown(summarise(runs))
    print(text, end="")
    if unfinished:
        print(f"left out {len(unfinished)} unfinished run(s): " + "; ".join(unfinished))
    out = Path(args.out) if args.out else Path(args.root) / "table.md"
    atomic_write_text(out, text)
    print(f"wrote {out}")
    if args.best:
        print("best seed by " + " + ".join(dict(COLUMNS)[k] for k in BEST_KEYS) + ":")
        for cell, (seed, score) in best_runs(runs).items():
            path = next(e["_run"] for e in runs[cell] if e["_seed"] == seed)
            print(f"  {path}  {score:.3f}")
    return 0
