"""``latentquant sweep``: run a grid of training runs, resumably.

Every cell of datasets x models x seeds is one ``latentquant train`` process
writing to ``OUT/<dataset>/<model>/seed<k>/``. Calling the same sweep again
skips finished runs and resumes unfinished ones from their last checkpoint,
so a grid can be stopped and continued at any time. A run counts as done
only if its resolved config is the one requested (``RunDir.status`` and
``TrainConfig.differences``); a run folder holding other settings is
reported, and nothing is started.

A model entry may carry flag overrides after ``+``: ``qlae+weight-decay=0``
trains ``--model qlae --weight-decay 0`` into ``OUT/<dataset>/qlae+weight-decay=0/``
(the ablation row of the paper's weight-decay study).

How the runs are started is the launcher's business (``launchers.py``): here,
``--jobs`` at a time (``--launcher local``), or one cluster job per run
(``--launcher submitit``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from latentquant.validation import UserError


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
        raise UserError(f"model spec {spec!r} has no model name before '+'")
    flags: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} in model spec {spec!r} must look like FLAG=VALUE")
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


def status(spec: RunSpec, target_steps: int | None = None) -> str:
    """'done', 'resume', 'new', or 'conflict: <why>' for the run directory of ``spec``.

    The requested config is what ``latentquant train`` would resolve from the
    spec's flags; the run is done when it finished at the requested steps with
    that config (how it ran aside: device, threads, ...), to be resumed when it
    has the same config and fewer steps, and in conflict when its config
    differs or another process holds it.
    """
    from latentquant.train.config import RUNTIME_FIELDS
    from latentquant.train.rundir import RunDir

    run = RunDir(spec.out)
    state = run.status()
    if state == "running":
        return "conflict: in use by another process"
    if not run.config.is_file():
        return "resume" if state == "interrupted" else "new"
    saved = run.read_config()
    requested = requested_config(spec, saved if target_steps is None else None)
    changed = requested.differences(saved, ignore=RUNTIME_FIELDS + ("steps",))
    if changed:
        return "conflict: " + ", ".join(f"{k} {b!r} in the run, {a!r} requested" for k, (a, b) in changed.items())
    if state == "finished" and requested.steps == saved.steps:
        return "done"
    if requested.steps < saved.steps or (state == "finished" and requested.steps < saved.steps):
        return f"conflict: the run has {saved.steps} steps, {requested.steps} requested"
    return "resume" if run.latest_checkpoint() else "new"


def requested_config(spec: RunSpec, saved=None):
    """The resolved config ``latentquant train`` makes of the spec's flags (``saved``: a
    run's config, whose steps count when the sweep gives no --steps)."""
    from latentquant.cli import build_parser
    from latentquant.data import get_dataset
    from latentquant.models import DataInfo
    from latentquant.train.cli_train import build_config
    from latentquant.train.config import resolve

    argv = command(spec, "new")[3:]
    config = build_config(build_parser("train").parse_args(argv))
    if saved is not None and "--steps" not in argv:
        config = config.replace(steps=saved.steps)
    dataset = get_dataset(config.dataset, root=config.data_root, path=config.data_path)
    return resolve(config, DataInfo(config.dataset, dataset.num_channels, dataset.num_factors, len(dataset)))


def command(spec: RunSpec, state: str) -> list[str]:
    cmd = [sys.executable, "-m", "latentquant", "train"]
    if state == "resume":  # the sweep's flags override the run's config (e.g. a larger --steps)
        return cmd + ["--resume", str(spec.out), *spec.flags]
    return cmd + ["--dataset", spec.dataset, "--model", spec.base_model, "--seed", str(spec.seed),
                  "--out", str(spec.out), *spec.flags]


def execute(spec: RunSpec, state: str, threads: int) -> int:
    from latentquant.train.rundir import RunDir

    run = RunDir(spec.out)
    run.mark()  # before its log: the folder is a run's
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(run.log, "a") as log:
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
    from latentquant.results import launchers  # --launcher local|submitit and --slurm-*

    launchers.add_arguments(parser)


def run(args) -> int:
    from latentquant.results import launchers
    from latentquant.train.rundir import RunDir

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    launcher = launchers.from_args(args)  # local (--jobs at a time) or submitit
    common = ["--threads", str(args.threads), *args.extra]
    if args.steps is not None:
        common += ["--steps", str(args.steps)]
    if args.arch is not None:
        common += ["--arch", args.arch]
    specs = plan(args.datasets, args.models, args.seeds, args.out, common)
    states = {spec: status(spec, args.steps) for spec in specs}
    conflicts = [s for s in specs if states[s].startswith("conflict")]
    if conflicts:
        for spec in conflicts:
            print(f"{spec.out}: {states[spec]}", file=sys.stderr)
        raise UserError(f"{len(conflicts)} run folder(s) hold other settings than requested (listed above); "
                        "choose another --out, or remove those runs")
    todo = [s for s in specs if states[s] != "done"]
    print(f"{len(specs)} runs: {len(specs) - len(todo)} done, "
          f"{sum(states[s] == 'resume' for s in todo)} to resume, {sum(states[s] == 'new' for s in todo)} new; "
          f"{launcher.describe()}")
    if args.dry_run:
        for spec in todo:
            print(states[spec], " ".join(command(spec, states[spec])))
        return 0
    for spec in todo:  # before a launcher writes its logs or job files there, the folders are runs'
        RunDir(spec.out).mark()
    return launcher.launch(todo, states)
