"""The runs of a sweep: what each cell of the grid trains, whether it is done, and the command that trains it.

``sweep.py`` (the command) and ``launchers.py`` (how runs are started) both
build on this module; it imports neither.

A cell is a :class:`RunSpec`: a dataset, a model entry (a model name, with
flag overrides after ``+``: ``qlae+weight-decay=0`` is ``--model qlae
--weight-decay=0``), a seed, its folder ``OUT/<dataset>/<model entry>/seed<k>``
and the ``latentquant train`` flags it adds to the grid's. :func:`check` turns
a cell into the resolved config ``latentquant train`` would run, and refuses
what that run would refuse, so a sweep can check its whole grid before it
creates a folder.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentquant.data import FactorDataset, get_dataset
from latentquant.results.layout import check_component, run_path
from latentquant.train import cli_train
from latentquant.train.config import RUNTIME_FIELDS, TrainConfig, resolve
from latentquant.train.rundir import RunDir
from latentquant.validation import UserError

# train flags a sweep's runs cannot take: the grid sets them (a run's folder says which dataset, model
# and seed it holds, and lies below --out), or they would take the run out of the sweep's hands
_NOT_FOR_A_SWEEP = {
    "dataset": ("--dataset", "a run's dataset is its --datasets entry"),
    "model": ("--model", "a run's model is its --models entry"),
    "seed": ("--seed", "a run's seed is its --seeds entry"),
    "out": ("--out", "each run goes to <out>/<dataset>/<model>/seed<k> below the sweep's --out"),
    "resume": ("--resume", "the sweep resumes unfinished runs itself"),
    "config_file": ("--config", "a file could change a run's dataset, model or seed; give its settings as flags"),
    "overwrite": ("--overwrite", "a sweep replaces only its own runs stopped before a checkpoint"),
}


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str  # the model entry, also the folder name: "qlae" or "qlae+weight-decay=0"
    seed: int
    out: Path
    flags: tuple[str, ...] = field(default=())

    @property
    def base_model(self) -> str:
        return self.model.split("+", 1)[0]

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}/seed{self.seed}"


def parse_model(spec: str) -> tuple[str, tuple[str, ...]]:
    """``'qlae+weight-decay=0+steps=10'`` -> ``('qlae', ('--weight-decay=0', '--steps=10'))``.

    Each override is one ``--flag=value`` word, so a negative value (``lr=-1``)
    is read as the flag's value, not as a flag. A key that is no ``latentquant
    train`` flag is a model option: ``qlae+global-codebook=1`` ->
    ``('qlae', ('--option=global_codebook=1',))``; an unknown option is refused
    when the cell is checked, naming the model's options."""
    base, *overrides = spec.split("+")
    if not base:
        raise UserError(f"model entry {spec!r} has no model name before '+'")
    flags = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip("-"):
            raise UserError(
                f"override {item!r} in model entry {spec!r} must look like FLAG=VALUE (qlae+weight-decay=0)"
            )
        flag = f"--{key.lstrip('-')}"
        if flag in _train_flags():
            flags.append(f"{flag}={value}")
        else:
            flags.append(f"--option={key.lstrip('-').replace('-', '_')}={value}")
    return base, tuple(flags)


@functools.cache
def _train_flags() -> frozenset[str]:
    """Every option string ``latentquant train`` takes (``--weight-decay``, ``-o``, ...)."""
    parser = argparse.ArgumentParser(add_help=False)
    cli_train.add_arguments(parser)
    return frozenset(s for action in parser._actions for s in action.option_strings)


def plan(datasets, models, seeds, out, common_flags=()) -> list[RunSpec]:
    """Every (seed, dataset, model) cell, seeds outermost: a grid stopped early has whole
    seeds of every row rather than every seed of a few rows. A name given twice is one
    cell; a dataset or model entry that is not a plain folder name is a UserError."""
    datasets, models, seeds = _unique(datasets), _unique(models), _unique(int(s) for s in seeds)
    for kind, names in (("dataset", datasets), ("model entry", models)):
        for name in names:
            try:
                check_component(kind, name)
            except ValueError as err:
                raise UserError(str(err)) from None
    flags = {model: parse_model(model)[1] for model in models}
    return [
        RunSpec(dataset, model, seed, run_path(out, dataset, model, seed), tuple(common_flags) + flags[model])
        for seed in seeds
        for dataset in datasets
        for model in models
    ]


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


# -- checking a cell: the config `latentquant train` would run --------------------------------


class _TrainFlags(argparse.ArgumentParser):
    """``latentquant train``'s own flags, with errors raised (as UserError) instead of printed."""

    def __init__(self, context: str):
        super().__init__(prog="latentquant train", add_help=False)
        self.context = context
        cli_train.add_arguments(self)

    def error(self, message: str):
        raise UserError(f"{self.context}: {message}")


def check_flags(flags: Sequence[str], context: str) -> argparse.Namespace:
    """Parse train ``flags`` given to the sweep (an entry's overrides, the flags after ``--``);
    UserError naming ``context`` for a flag train refuses, and for one a sweep's runs cannot take."""
    args = _TrainFlags(context).parse_args(list(flags))
    for dest, (flag, why) in _NOT_FOR_A_SWEEP.items():
        if getattr(args, dest, None) not in (None, False):
            raise UserError(f"{context}: {flag} is not for a sweep's runs ({why})")
    return args


def check(spec: RunSpec) -> TrainConfig:
    """The resolved config of ``spec``'s run, checked as ``latentquant train`` checks it; UserError naming the cell."""
    try:
        return requested_config(spec)
    except (ValueError, TypeError) as err:  # UserError included: the message names the setting
        message = str(err)
        raise UserError(message if message.startswith(spec.label) else f"{spec.label}: {message}") from None


def requested_config(spec: RunSpec, saved: TrainConfig | None = None) -> TrainConfig:
    """The resolved config ``latentquant train`` makes of the spec's flags (``saved``: a
    run's config, whose steps count when the sweep gives no --steps)."""
    args = _TrainFlags(spec.label).parse_args(command(spec, "new")[4:])  # without "python -m latentquant train"
    config = cli_train.build_config(args)
    if saved is not None and not hasattr(args, "steps"):
        config = config.replace(steps=saved.steps)
    return resolved(config)


def resolved(config: TrainConfig) -> TrainConfig:
    """``config`` validated and filled with the published defaults, as ``train`` resolves it.

    The one place ``results`` calls the training config's validation. The model
    ``resolve`` builds to check its arguments is built on the meta device here
    (no memory, no initialisation): a sweep checks every cell of its grid."""
    config.validate()  # names and ranges first: a bad setting is named before a dataset's files are looked for
    with torch.device("meta"):
        return resolve(config, _dataset(config.dataset, config.data_root, config.data_path)).config


@functools.lru_cache(maxsize=16)
def _dataset(name: str, root: str | None, path: str | None) -> FactorDataset:
    """A dataset opened once for every cell that uses it (opening reads the files' headers only)."""
    return get_dataset(name, root=root, path=path)


# -- state and command ------------------------------------------------------------------------


def status(spec: RunSpec, target_steps: int | None = None) -> str:
    """'done', 'resume', 'restart', 'new', or 'conflict: <why>' for the run directory of ``spec``.

    The requested config is what ``latentquant train`` would resolve from the
    spec's flags; the run is done when it finished at the requested steps with
    that config (how it ran aside: device, threads, ...), to be resumed when it
    has the same config and fewer steps, and in conflict when its config
    differs or another process holds it. A run of the requested config that
    stopped before its first checkpoint has nothing to resume from: it is
    started again from step 0 ('restart', which replaces its files); a finished
    run without checkpoints asked for more steps is a conflict, never restarted.
    """
    run = RunDir(spec.out)
    state = run.status()
    if state == "running":
        return "conflict: in use by another process"
    if not run.config.is_file():
        return "resume" if state == "interrupted" else _fresh(run)
    saved = run.read_config()
    requested = requested_config(spec, saved if target_steps is None else None)
    changed = requested.differences(saved, ignore=RUNTIME_FIELDS + ("steps",))
    if changed:
        return "conflict: " + ", ".join(f"{k} {b!r} in the run, {a!r} requested" for k, (a, b) in changed.items())
    if state == "finished" and requested.steps == saved.steps:
        return "done"
    if requested.steps < saved.steps:
        return f"conflict: the run has {saved.steps} steps, {requested.steps} requested"
    if run.latest_checkpoint():
        return "resume"
    if state == "finished":  # its results are kept: a restart would replace them
        return (
            f"conflict: finished at {saved.steps} steps without a checkpoint to continue from "
            f"({requested.steps} requested); move the run, or ask for {saved.steps} steps"
        )
    return _fresh(run)


def _fresh(run: RunDir) -> str:
    """A run without a checkpoint: 'new', or 'restart' when a start of it left files (a process
    killed before its first checkpoint)."""
    return "restart" if run.holds_run() else "new"


def command(spec: RunSpec, state: str) -> list[str]:
    """The ``latentquant train`` command line of ``spec`` ('new', 'restart' or 'resume')."""
    cmd = [sys.executable, "-m", "latentquant", "train"]
    if state == "resume":  # the sweep's flags override the run's config (e.g. a larger --steps)
        return cmd + ["--resume", str(spec.out), *spec.flags]
    # a restart replaces the files of its own earlier start (same config, no checkpoint), only those
    return cmd + ["--overwrite"] * (state == "restart") + [
        "--dataset",
        spec.dataset,
        "--model",
        spec.base_model,
        "--seed",
        str(spec.seed),
        "--out",
        str(spec.out),
        *spec.flags,
    ]


def execute(spec: RunSpec, state: str, threads: int, target_steps: int | None = None) -> int:
    """Run ``spec``'s train command here, its output appended to the run's ``train.log``; its exit code.

    ``state`` is what the sweep planned, perhaps hours earlier; the run's state is decided again
    now (``target_steps`` as planned), since another sweep on the same folder may have moved it
    on: done meanwhile, it is skipped (0); in conflict now, it is not started (2, the reason in
    ``train.log``); otherwise it runs as it stands now (a planned restart that has since
    checkpointed resumes instead of starting over)."""
    run = RunDir(spec.out)
    now = status(spec, target_steps)
    run.mark()  # before its log: the folder is a run's
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(run.log, "a") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if now == "done" or now.startswith("conflict"):
            log.write(f"# {stamp} not started: planned {state!r}, now {now}\n")
            return 0 if now == "done" else 2
        cmd = command(spec, now)
        log.write(f"# {stamp} {' '.join(cmd)}\n")
        log.flush()
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
