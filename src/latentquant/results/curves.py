"""``latentquant curves``: learning curves, score against training step, mean and 95% interval over seeds.

    latentquant curves results/curves --metrics infom infoe infoc psnr --out curves.png
    latentquant curves runs/a runs/b --out ab.png        # single runs work too

Every evaluation a run made during training is a line of its ``evals.jsonl``
(``--eval-every``). Runs are grouped as ``latentquant table`` groups them, by
(dataset, model) under a grid root ``ROOT/<dataset>/<model>/seed<k>/``, found
at any depth below ROOT (the dataset then names the path below it:
``latentquant curves results/curves`` shows ``small/sprites``); a
single run directory given directly joins the group of its dataset and folder
name (its model folder when it is a grid's ``seed<k>``). For each group and step the line is the mean over the
seeds evaluated at that step, the band its two-sided 95% Student-t interval
(``table.mean_ci``: no band where one seed has the step). One column per
metric, one row per dataset. The figure is written atomically; ``--csv`` also
writes the plotted numbers.

The weights' norms per group (``norm_conv``, ``norm_linear``, ``norm_other``,
``norm_values``: ``LatentModel.weight_norms``) are metrics too, to see whether
weight decay has brought a run to its stationary state:

    latentquant curves results/regime/small --metrics norm_conv norm_linear norm_values --out norms.png

They come from ``metrics.jsonl`` (logged every ``--log-every`` steps) where the
run logged them, else from its kept checkpoints, and step 0 from the model
rebuilt from its ``config.yaml`` (seeded as the run built it; its data must be
at hand). ``--every N`` keeps the steps at multiples of N, to draw runs
logged at different cadences on one grid (the regime's: 5,000).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from functools import partial
from pathlib import Path

from latentquant._atomic import atomic_path, atomic_write_text
from latentquant.results.layout import SEED_DIR, find_runs
from latentquant.results.table import COLUMNS, mean_ci
from latentquant.validation import UserError, arg_type, check_int

NORMS = ("norm_conv", "norm_linear", "norm_other", "norm_values")  # LatentModel.weight_norms, prefixed
TITLES = {
    **dict(COLUMNS),
    "mig": "MIG",
    "norm_conv": "|W| conv (decayed)",
    "norm_linear": "|W| linear (decayed)",
    "norm_other": "|W| other decayed",
    "norm_values": "|values| (not decayed)",
}
DEFAULT_METRICS = ("infom", "infoe", "infoc", "psnr")


def read_evals(run_dir: Path) -> dict[int, dict]:
    """A run's evaluations by step (the last line wins where a step was evaluated twice)."""
    path = run_dir / "evals.jsonl"
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (expected one JSON evaluation record a line)") from None
    by_step: dict[int, dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested thousands deep
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise UserError(f"{path}:{number}: not an evaluation record (a JSON object with a whole-number 'step')")
        by_step[step] = record
    return by_step


def read_norms(run_dir: Path) -> dict[int, dict]:
    """A run's weight norms by step (``norm_<group>``): its initialization (step 0) and the
    logged ones from ``metrics.jsonl``, else those of each kept checkpoint."""
    from latentquant.train import checkpoint  # torch: only when norms are asked for
    from latentquant.train.config import resolve
    from latentquant.train.rundir import RunDir, read_jsonl

    logged = {}
    if (run_dir / "metrics.jsonl").is_file():
        logged = {
            r["step"]: {k: v for k, v in r.items() if k in NORMS}
            for r in read_jsonl(run_dir / "metrics.jsonl")
            if any(k in r for k in NORMS)
        }
    paths = [] if logged else checkpoint.list_checkpoints(run_dir / "checkpoints")
    if not logged and not paths:
        return {}
    model = resolve(RunDir(run_dir).read_config()).model  # seeded as the run built it: its step 0
    by_step = {0: {f"norm_{k}": v for k, v in model.weight_norms().items()}}
    if logged:
        return {**by_step, **logged}
    for path in paths:
        state, doc = checkpoint.load_model_state(path)
        checkpoint.load_model_weights(model, state)
        by_step[int(doc["step"])] = {f"norm_{k}": v for k, v in model.weight_norms().items()}
    return by_step


def _records(run_dir: Path, norms: bool) -> dict[int, dict]:
    """A run's evaluations by step, with its weight norms merged in when ``norms``."""
    by_step = read_evals(run_dir) if (run_dir / "evals.jsonl").is_file() else {}
    if norms:
        for step, values in read_norms(run_dir).items():
            by_step[step] = {**by_step.get(step, {}), **values}
    return by_step


def collect(paths, norms: bool = False) -> dict[tuple[str, str], dict[str, dict[int, dict]]]:
    """(dataset, model) -> seed -> step -> evaluation (and weight norms when ``norms``),
    from grid roots and single run directories."""
    groups: dict[tuple[str, str], dict[str, dict[int, dict]]] = defaultdict(dict)
    for root in map(Path, paths):
        if (root / "evals.jsonl").is_file():  # one run
            evals = _records(root, norms)
            first = next(iter(evals.values()), {})
            # a run of a grid (<model>/seed<k>) is named by its model folder, any other by its own
            name = root.resolve().parent.name if SEED_DIR.fullmatch(root.name) else root.name
            key = (str(first.get("dataset", "?")), name)
            groups[key][str(first.get("seed", root.name))] = evals
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"no run or results directory at {root}")
        found = find_runs(root, "evals.jsonl")
        if not found:
            raise FileNotFoundError(
                f"no evals.jsonl under {root} (expected a run directory, or runs <dataset>/<model>/seed<k>/"
                f"evals.jsonl at any depth below it; runs evaluate during training with --eval-every)"
            )
        for run in found:
            groups[(run.dataset, run.model)][run.seed] = _records(run.path, norms)
    return dict(groups)


def summarise(groups, metrics) -> list[dict]:
    """Rows (dataset, model, metric, step, n, mean, half) of the plotted lines."""
    rows = []
    for (dataset, model), seeds in sorted(groups.items()):
        steps = sorted({step for evals in seeds.values() for step in evals})
        for metric in metrics:
            for step in steps:
                values = [evals[step].get(metric) for evals in seeds.values() if step in evals]
                values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
                if values:
                    mean, half = mean_ci(values)
                    rows.append(
                        {
                            "dataset": dataset,
                            "model": model,
                            "metric": metric,
                            "step": step,
                            "n": len(values),
                            "mean": mean,
                            "half": half,
                        }
                    )
    return rows


def legend_labels(rows) -> dict[str, str]:
    """One legend entry per model that has a line in any panel: its name and the seeds
    behind its curves, a range (``n=1-3``) where the panels differ, as when a
    dataset's runs are still coming in or a score is undefined for some seeds."""
    counts: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for r in rows:
        line = counts[r["model"]]
        key = (r["dataset"], r["metric"])
        line[key] = max(line.get(key, 0), r["n"])
    labels = {}
    for model in sorted(counts):
        low, high = min(counts[model].values()), max(counts[model].values())
        labels[model] = f"{model} (n={low})" if low == high else f"{model} (n={low}-{high})"
    return labels


def plot(rows, metrics, path: Path, title: str | None = None) -> list[str]:
    """Draw one panel per (dataset, metric) to ``path``; returns the legend's labels."""
    import matplotlib  # an optional dependency (the metrics and data extras), slow to import: only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    datasets = sorted({r["dataset"] for r in rows})
    labels = legend_labels(rows)
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(labels)}
    fig, axes = plt.subplots(
        len(datasets), len(metrics), squeeze=False, figsize=(3.4 * len(metrics), 2.7 * len(datasets))
    )
    for i, dataset in enumerate(datasets):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for model in labels:
                line = [r for r in rows if (r["dataset"], r["model"], r["metric"]) == (dataset, model, metric)]
                if not line:
                    continue
                steps = [r["step"] for r in line]
                ax.plot(steps, [r["mean"] for r in line], marker="o", markersize=3, color=colors[model])
                lo = [r["mean"] - r["half"] if math.isfinite(r["half"]) else r["mean"] for r in line]
                hi = [r["mean"] + r["half"] if math.isfinite(r["half"]) else r["mean"] for r in line]
                ax.fill_between(steps, lo, hi, color=colors[model], alpha=0.2, linewidth=0)
            ax.set_title(f"{dataset}: {TITLES.get(metric, metric)}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    # The legend is built from every model, not from the first panel's lines: a model
    # with no line there (another dataset only, or a score undefined there) is still named.
    handles = [Line2D([], [], marker="o", markersize=3, color=colors[m]) for m in labels]
    fig.legend(handles, list(labels.values()), loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 4), 1, 1))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return list(labels.values())


def to_csv(rows) -> str:
    lines = ["dataset,model,metric,step,seeds,mean,ci95_half"]
    lines += [
        f"{r['dataset']},{r['model']},{r['metric']},{r['step']},{r['n']},{r['mean']:.6g},"
        f"{'' if math.isnan(r['half']) else format(r['half'], '.6g')}"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def add_arguments(parser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_GRID",
        help="run directories or results roots laid out as <dataset>/<model>/seed<k>/",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="KEY",
        help=f"eval.json keys, one panel each (default {' '.join(DEFAULT_METRICS)}; also dci_d, dci_c, dci_i, "
        f"mig), or weight norms: {' '.join(NORMS)}",
    )
    parser.add_argument("--out", required=True, help="figure to write (PNG)")
    parser.add_argument("--csv", default=None, help="also write the plotted means and intervals as CSV")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument(
        "--every",
        type=arg_type(int, partial(check_int, "--every", low=1)),
        default=None,
        metavar="N",
        help="keep only the steps at multiples of N (runs logged or evaluated at different cadences)",
    )


def run(args) -> int:
    known = {k for k, _ in COLUMNS} | {"mig", *NORMS}
    unknown = [m for m in args.metrics if m not in known]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    groups = collect(args.paths, norms=any(m in NORMS for m in args.metrics))
    if args.every:
        groups = {
            key: {seed: {t: e for t, e in evals.items() if t % args.every == 0} for seed, evals in seeds.items()}
            for key, seeds in groups.items()
        }
    rows = summarise(groups, args.metrics)
    if not rows:
        raise UserError(f"no finite {', '.join(args.metrics)} in the evaluations found")
    plot(rows, args.metrics, out, args.title)
    if args.csv:
        atomic_write_text(args.csv, to_csv(rows))
    for (dataset, model), seeds in sorted(groups.items()):
        steps = sorted({s for evals in seeds.values() for s in evals})
        shown = ", ".join(map(str, steps)) if len(steps) <= 12 else f"{len(steps)} from {steps[0]} to {steps[-1]}"
        print(f"{dataset}/{model}: {len(seeds)} seed(s), steps {shown}")
    print(f"wrote {out}" + (f" and {args.csv}" if args.csv else ""))
    return 0
