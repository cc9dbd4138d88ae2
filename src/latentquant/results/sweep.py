"""``latentquant sweep``: run a grid of training runs, resumably.

Every cell of datasets x models x seeds is one ``latentquant train`` process
writing to ``OUT/<dataset>/<model>/seed<k>/``. Calling the same sweep again
skips finished runs and resumes unfinished ones from their last checkpoint,
so a grid can be stopped and continued at any time. A run counts as done
only if its resolved config is the one requested (``RunDir.status`` and
``TrainConfig.differences``); a run folder holding other settings is
reported, and nothing is started.

A model entry may carry flag overrides after ``+``: ``qlae+weight-decay=0``
trains ``--model qlae --weight-decay=0`` into ``OUT/<dataset>/qlae+weight-decay=0/``
(the ablation row of the paper's weight-decay study).

The whole grid is checked before anything is created: every cell's config is
resolved as ``latentquant train`` would resolve it, and a bad entry (an
unknown model, a flag train refuses, a name that is not a plain folder name,
an override of what the grid sets: ``--out``, ``--dataset``, ...) is one line
naming it, with no folder made. A name or seed given twice is one run.

How the runs are started is the launcher's business (``launchers.py``): here,
``--jobs`` at a time (``--launcher local``), or one cluster job per run
(``--launcher submitit``).
"""

from __future__ import annotations

from functools import partial

from latentquant.results import launchers
from latentquant.results.grid import RunSpec, check, check_flags, command, parse_model, plan, status
from latentquant.results.stacks import StackLauncher
from latentquant.train.rundir import RunDir
from latentquant.validation import UserError, arg_type, check_int, check_number

__all__ = ["RunSpec", "add_arguments", "check_grid", "run"]

MAX_SEED = 2**32 - 1  # the evaluation's scikit-learn estimators take a 32-bit random_state


def add_arguments(parser) -> None:
    parser.add_argument("--datasets", nargs="+", required=True, help="dataset names")
    parser.add_argument(
        "--models", nargs="+", required=True, help="model names, optionally with overrides: qlae+weight-decay=0"
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=arg_type(int, partial(check_int, "--seeds", low=0, high=MAX_SEED)),
        default=[0, 1, 2],
        help="seeds (default 0 1 2)",
    )
    parser.add_argument("--out", default="results/runs", help="results root (default results/runs)")
    parser.add_argument(
        "--steps",
        type=arg_type(int, partial(check_int, "--steps", low=1)),
        default=None,
        help="training steps for every run",
    )
    parser.add_argument("--arch", default=None, help="backbone for every run")
    parser.add_argument(
        "--jobs",
        type=arg_type(int, partial(check_int, "--jobs", low=1)),
        default=None,
        help="runs in parallel (default: CPU cores / --threads)",
    )
    parser.add_argument(
        "--threads",
        type=arg_type(int, partial(check_int, "--threads", low=1)),
        default=1,
        help="torch threads per run (default 1)",
    )
    parser.add_argument("--dry-run", action="store_true", help="check the grid, print the plan and exit")
    parser.add_argument(
        "--stack",
        type=arg_type(int, partial(check_int, "--stack", low=1)),
        default=1,
        help="train up to K runs that can share a model family, backbone and batch as one stacked model "
        "per process (results/stacks.py; default 1: every run alone)",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=arg_type(float, partial(check_number, "--checkpoint-seconds", low_open=True)),
        default=None,
        help="also checkpoint every run each S seconds (train --checkpoint-seconds): a run killed outright, "
        "as when a lease or session ends, loses at most S",
    )
    parser.add_argument("extra", nargs="*", help="further flags passed to every train call (after --)")
    launchers.add_arguments(parser)  # --launcher local|submitit and --slurm-*


def check_grid(specs: list[RunSpec], common: list[str]) -> None:
    """Every cell's config, resolved before anything is created; UserError naming the first bad entry."""
    check_flags(common, "the flags for every run (--steps, --arch, --threads, after --)")
    for model in dict.fromkeys(spec.model for spec in specs):
        check_flags(parse_model(model)[1], f"model entry {model!r}")
    for spec in specs:
        check(spec)


def run(args) -> int:
    if not str(args.out).strip():
        raise UserError("--out is empty; name the results root, e.g. --out results/runs")
    launcher = launchers.from_args(args)  # local (--jobs at a time) or submitit
    if args.stack > 1:  # stacks of runs in one process each (results/stacks.py)
        if args.launcher != "local":
            raise UserError("--stack trains stacks on this machine; use it with --launcher local")
        launcher = StackLauncher(launcher.jobs, launcher.threads, args.stack, target_steps=args.steps)
    common = ["--threads", str(args.threads)]
    if args.checkpoint_seconds:  # every run's own flag, in a stack or alone
        common += ["--checkpoint-seconds", str(args.checkpoint_seconds)]
    common += args.extra
    if args.steps is not None:
        common += ["--steps", str(args.steps)]
    if args.arch is not None:
        common += ["--arch", args.arch]
    specs = plan(args.datasets, args.models, args.seeds, args.out, common)
    check_grid(specs, common)
    states = {spec: status(spec, args.steps) for spec in specs}
    conflicts = [s for s in specs if states[s].startswith("conflict")]
    if conflicts:
        for spec in conflicts:
            print(f"{spec.out}: {states[spec]}")
        raise UserError(
            f"{len(conflicts)} run folder(s) hold other settings than requested ({conflicts[0].out}: "
            f"{states[conflicts[0]].removeprefix('conflict: ')}{'; all listed above' if len(conflicts) > 1 else ''}); "
            "choose another --out, or move those runs"
        )
    todo = [s for s in specs if states[s] != "done"]
    restart = sum(states[s] == "restart" for s in todo)
    print(
        f"{len(specs)} runs: {len(specs) - len(todo)} done, "
        f"{sum(states[s] == 'resume' for s in todo)} to resume, {sum(states[s] == 'new' for s in todo)} new"
        + (f", {restart} to restart from step 0 (stopped before a checkpoint)" if restart else "")
        + f"; {launcher.describe()}"
    )
    if args.dry_run:
        for spec in todo:
            print(states[spec], " ".join(command(spec, states[spec])))
        return 0
    for spec in todo:  # before a launcher writes its logs or job files there, the folders are runs'
        RunDir(spec.out).mark()
    return launcher.launch(todo, states)
