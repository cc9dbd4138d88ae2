"""``latentquant sweep``: run a grid of training runs, resumably.

Every cell of datasets x models x seeds is one ``latentquant train`` process
writing to ``OUT/<dataset>/<model>/seed<k>/``. Calling the same sweep again
skips finished runs (an ``eval.json`` at the target step) and resumes
unfinished ones from their last checkpoint, so a grid can be stopped and
continued at any time.

A model entry may carry flag overrides after ``+``: ``qlae+weight-decay=0``
trains ``--model qlae --weight-decay 0`` into ``OUT/<dataset>/qlae+weight-decay=0/``
(the ablation row of the paper's weight-decay study).

How the runs are started is the launcher's business (``launchers.py``): here,
``--jobs`` at a time (``--launcher local``), or one cluster job per run
(``--launcher submitit``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str  # directory name, e.g. "qlae" or "qlae+weight-decay=0"
    seed: int
    out: Path
    flags: tuple[str, ...] = field(default=())

    @property
    def base_model(self) -> str:
        return self.model.split("+", 1)[0]


def parse_model(spec: str) -> tuple[str, tuple[str, ...]]:
    """``'qlae+weight-decay=0+steps=10'`` -> ``('qlae', ('--weight-decay', '0', '--steps', '10'))``."""
    base, *overrides = spec.split("+")
    if not base:
        raise ValueError(f"model spec {spec!r} has no model name before '+'")
    flags: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} in model spec {spec!r} must look like FLAG=VALUE")
        flags += [f"--{key.lstrip('-')}", value]
    return base, tuple(flags)


def plan(datasets, models, seeds, out, common_flags=()) -> list[RunSpec]:
    """Every (seed, dataset, model) cell, seeds outermost: a grid stopped early
    has whole seeds of every row rather than every seed of a few rows."""
    specs = []
    for seed in seeds:
        for dataset in datasets:
            for model in models:
                _, flags = parse_model(model)
                specs.append(RunSpec(dataset, model, int(seed), Path(out) / dataset / model / f"seed{seed}",
                                     tuple(common_flags) + flags))
    return specs


def status(spec: RunSpec, target_steps: int | None) -> str:
    """'done', 'resume' or 'new' for the run directory of ``spec``.

    A run is done when its ``eval.json`` was written at the target step: the
    sweep's ``--steps`` when given, else the ``steps`` in the run's own
    ``config.yaml``.
    """
    target = target_steps if target_steps is not None else _configured_steps(spec.out)
    step = _evaluated_step(spec.out)
    if step is not None and target is not None and step >= target:
        return "done"
    return "resume" if _has_checkpoint(spec.out) else "new"


def _evaluated_step(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "eval.json").read_text())["step"])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def _configured_steps(run_dir: Path) -> int | None:
    import yaml

    try:
        steps = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("steps")
    except FileNotFoundError:
        return None
    return None if steps is None else int(steps)


def _has_checkpoint(run_dir: Path) -> bool:
    ckpt = run_dir / "checkpoints"
    return ckpt.is_dir() and any(p.suffix == ".safetensors" for p in ckpt.iterdir())


def command(spec: RunSpec, state: str) -> list[str]:
    cmd = [sys.executable, "-m", "latentquant", "train"]
    if state == "resume":  # the sweep's flags override the run's config (e.g. a larger --steps)
        return cmd + ["--resume", str(spec.out), *spec.flags]
    return cmd + ["--dataset", spec.dataset, "--model", spec.base_model, "--seed", str(spec.seed),
                  "--out", str(spec.out), *spec.flags]


def execute(spec: RunSpec, state: str, threads: int) -> int:
    spec.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(spec.out / "train.log", "a") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command(spec, state))}\n")
        log.flush()
        return subprocess.call(command(spec, state), stdout=log, stderr=subprocess.STDOUT, env=env)


def add_arguments(parser) -> None:
    parser.add_argument("--datasets", nargs="+", required=True, help="dataset names")
    parser.add_argument("--models", nargs="+", required=True,
                        help="model names, optionally with overrides: qlae+weight-decay=0")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--out", default="results/runs", help="results root (default results/runs)")
    parser.add_argument("--steps", type=int, default=None, help="training steps for every run")
    parser.add_argument("--arch", default=None, help="backbone for every run")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel (default: CPU cores / --threads)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("extra", nargs="*", help="further flags passed to every train call (after --)")
    from latentquant.results import launchers  # [issue 14 hook] --launcher local|submitit and --slurm-*

    launchers.add_arguments(parser)


def run(args) -> int:
    from latentquant.results import launchers  # [issue 14 hook]

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    launcher = launchers.from_args(args)  # [issue 14 hook] local (--jobs at a time) or submitit
    common = ["--threads", str(args.threads), *args.extra]
    if args.steps is not None:
        common += ["--steps", str(args.steps)]
    if args.arch is not None:
        common += ["--arch", args.arch]
    specs = plan(args.datasets, args.models, args.seeds, args.out, common)
    states = {spec: status(spec, args.steps) for spec in specs}
    todo = [s for s in specs if states[s] != "done"]
    print(f"{len(specs)} runs: {len(specs) - len(todo)} done, "
          f"{sum(states[s] == 'resume' for s in todo)} to resume, {sum(states[s] == 'new' for s in todo)} new; "
          f"{launcher.describe()}")
    if args.dry_run:
        for spec in todo:
            print(states[spec], " ".join(command(spec, states[spec])))
        return 0
    return launcher.launch(todo, states)  # [issue 14 hook]
