"""``latentquant sweep --stack K``: the grid's runs trained K at a time, one stack per process.

Runs that can share a stack (``train.stacked``: one dataset, model, backbone,
batch size, shapes and cadence; they differ in seed, lr, weight decay, clip and
float options) and start from the same step (new runs: 0; resumed runs: their
last checkpoint's) are grouped, K at most per group, in the grid's order; each
group is one ``python -m latentquant.train.cli_stack`` process whose members are
the runs' own ``latentquant train`` flags (``grid.command``). A run that cannot
share a stack with any other (a GAN, or alone in its group) runs as a separate
``latentquant train`` process, as without ``--stack``.

Everything else is the sweep's: which runs are done, to resume or new (per
member, ``grid.status``), the run directories and their locks (each member's,
held by the stack process), SIGINT/SIGTERM (the stack checkpoints every member).
The stack's output goes to every member's ``train.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from latentquant.results.grid import RunSpec, check, command, execute, status
from latentquant.train.checkpoint import checkpoint_step, list_checkpoints
from latentquant.train.rundir import RunDir
from latentquant.train.stacked import STACKABLE, VARYING


def stack_key(spec: RunSpec, state: str) -> tuple | None:
    """What members of one stack share (None: the run cannot be stacked)."""
    config = check(spec)
    if config.model not in STACKABLE:
        return None
    shared = tuple((k, repr(v)) for k, v in config.to_dict().items() if k not in VARYING)
    options = tuple((k, repr(v)) for k, v in sorted(config.options.items()) if type(v) is not float)
    start = 0
    if state == "resume":
        found = list_checkpoints(RunDir(spec.out).checkpoints)
        start = checkpoint_step(found[-1]) if found else 0
    return shared + options + (("start", start),)


def plan_stacks(runs: Sequence[RunSpec], states: Mapping[RunSpec, str], size: int) -> list[list[RunSpec]]:
    """The runs in groups of at most ``size`` that share a stack, in the grid's order; a group of one
    runs alone."""
    groups: dict[tuple, list[list[RunSpec]]] = {}
    order: list[list[RunSpec]] = []
    for spec in runs:
        key = stack_key(spec, states[spec])
        if key is None:
            order.append([spec])
            continue
        open_groups = groups.setdefault(key, [])
        if not open_groups or len(open_groups[-1]) == size:
            open_groups.append([])
            order.append(open_groups[-1])
        open_groups[-1].append(spec)
    return order


def stack_command(group: Sequence[RunSpec], states: Mapping[RunSpec, str], strategy: str = "auto") -> list[str]:
    """The stack's command; each member's flags are its own ``train`` flags (``--checkpoint-seconds``
    included, from ``sweep --checkpoint-seconds``)."""
    cmd = [sys.executable, "-m", "latentquant.train.cli_stack", "--strategy", strategy]
    for spec in group:
        cmd += ["--member", *command(spec, states[spec])[4:]]  # without "python -m latentquant train"
    return cmd


def execute_stack(group: Sequence[RunSpec], states: Mapping[RunSpec, str], threads: int, strategy: str) -> int:
    """Run the group's stack here, its output appended to every member's ``train.log``; its exit code."""
    runs = [RunDir(spec.out) for spec in group]
    for run in runs:
        run.mark()
    cmd = stack_command(group, states, strategy)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    logs = [open(run.log, "a") for run in runs]  # noqa: SIM115 (closed below)
    try:
        for log in logs:
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} stack of {len(group)}: {' '.join(cmd)}\n")
            log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        for line in proc.stdout:
            for log in logs:
                log.write(line)
                log.flush()
        return proc.wait()
    finally:
        for log in logs:
            log.close()


@dataclass
class StackLauncher:
    """``jobs`` processes at a time, each a stack of at most ``size`` runs (or a run alone)."""

    jobs: int
    threads: int
    size: int
    strategy: str = "auto"
    target_steps: int | None = None  # the sweep's --steps: each run's state is decided again at its start

    def describe(self) -> str:
        return f"stacks of up to {self.size}, {self.jobs} at a time"

    def launch(self, runs: Sequence[RunSpec], states: Mapping[RunSpec, str]) -> int:
        def one(group: list[RunSpec]) -> tuple[list[RunSpec], int, float]:
            start = time.time()
            # planned perhaps hours ago: a member another sweep has moved on since (done, resumable,
            # in use) leaves the stack and runs alone, where execute() decides its state again
            moved = [s for s in group if len(group) > 1 and status(s, self.target_steps) != states[s]]
            stay = [s for s in group if s not in moved]
            codes = [execute(s, states[s], self.threads, self.target_steps) for s in moved]
            if len(stay) == 1:
                codes.append(execute(stay[0], states[stay[0]], self.threads, self.target_steps))
            elif stay:
                codes.append(execute_stack(stay, states, self.threads, self.strategy))
            return group, max(codes, default=0), time.time() - start

        failed = 0
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for group, code, secs in pool.map(one, plan_stacks(runs, states, self.size)):
                what = group[0].label if len(group) == 1 else f"stack of {len(group)} ({group[0].label}, ...)"
                tag = "ok" if code == 0 else f"FAILED (exit {code}, see {group[0].out / 'train.log'})"
                print(f"{what}: {tag} in {secs:.0f}s", flush=True)
                failed += code != 0
        if failed:
            print(f"{failed} process(es) failed", file=sys.stderr)
            return 1
        return 0
