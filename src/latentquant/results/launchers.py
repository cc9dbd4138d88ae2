"""How ``latentquant sweep`` runs the runs it planned: on this machine, or as cluster jobs through submitit.

Both launchers take the runs that are not done yet (``RunSpec`` -> 'new',
'restart' or 'resume', from :func:`latentquant.results.grid.status`) behind one interface::

    describe() -> str                  how the runs will go, for the sweep's plan line
    launch(runs, states) -> int        start them; the sweep's exit code

``--launcher local`` (the default) runs ``latentquant train`` processes here,
``--jobs`` at a time, and returns when they end. ``--launcher submitit``
submits each run as one job with submitit (SLURM where ``srun`` is on the
PATH, else submitit's local executor; ``--submitit-cluster`` chooses), prints
the job ids and returns. Each run directory keeps its job in ``jobs/``:
submitit's own files (``<id>_submitted.pkl``, ``<id>_0_log.out``/``.err``,
``<id>_0_result.pkl``), ``job.json`` (id, cluster, time, new or resume) and
``job.pkl`` (the pickled ``submitit.Job``). Calling the same sweep again skips
finished runs, leaves runs whose job submitit reports pending or running
alone, and resubmits the others. A job decides when it starts whether its
run is new or resumes, so submitit's requeue on a time-out or preemption
(``TrainJob.checkpoint``) continues from the run's last checkpoint.

submitit is imported only for ``--launcher submitit``; without it the sweep
stops with one line naming the extra, ``pip install 'latentquant[slurm]'``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from latentquant._atomic import atomic_write_bytes, atomic_write_text
from latentquant._optional import require
from latentquant.cli import main
from latentquant.results.grid import RunSpec, command, execute, status
from latentquant.validation import UserError

LAUNCHERS = ("local", "submitit")
CLUSTERS = ("slurm", "local")


class Launcher(Protocol):
    def describe(self) -> str: ...

    def launch(self, runs: Sequence[RunSpec], states: Mapping[RunSpec, str]) -> int: ...


# ---------------------------------------------------------------------------
# local: train processes on this machine


@dataclass
class LocalLauncher:
    """``jobs`` ``latentquant train`` processes at a time, ``threads`` torch threads each; waits for all."""

    jobs: int
    threads: int
    target_steps: int | None = None  # the sweep's --steps: each run's state is decided again at its start

    def describe(self) -> str:
        return f"{self.jobs} at a time"

    def launch(self, runs: Sequence[RunSpec], states: Mapping[RunSpec, str]) -> int:
        def one(spec: RunSpec) -> tuple[RunSpec, int, float]:
            start = time.time()
            code = execute(spec, states[spec], self.threads, self.target_steps)
            return spec, code, time.time() - start

        failed = []
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for spec, code, secs in pool.map(one, runs):
                tag = "ok" if code == 0 else f"FAILED (exit {code}, see {spec.out / 'train.log'})"
                print(f"{spec.label}: {tag} in {secs:.0f}s", flush=True)
                if code != 0:
                    failed.append(spec)
        if failed:
            print(f"{len(failed)} of {len(runs)} runs failed", file=sys.stderr)
            return 1
        return 0


# ---------------------------------------------------------------------------
# submitit: one job per run


@dataclass(frozen=True)
class TrainJob:
    """What one job runs: ``latentquant train`` in the job's process, new or resumed as the run
    directory says when the job starts (not when it was submitted)."""

    spec: RunSpec
    target_steps: int | None

    def __call__(self) -> str:
        state = status(self.spec, self.target_steps)
        if state == "done":
            return state
        argv = command(self.spec, state)[3:]  # without "python -m latentquant"
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"latentquant {' '.join(argv)} exited with code {code}")
        return state

    def checkpoint(self):
        """Called by submitit on a time-out or preemption signal: requeue this same job; it resumes
        the run from its last checkpoint."""
        submitit = require("submitit", "slurm", "--launcher submitit")
        return submitit.helpers.DelayedSubmission(self)


def load_job(run_dir):
    """The ``submitit.Job`` last submitted for ``run_dir`` (``jobs/job.pkl``), or None."""
    path = run_dir / "jobs" / "job.pkl"
    return pickle.loads(path.read_bytes()) if path.is_file() else None


@dataclass
class SubmititLauncher:
    """Submit each run as one job; ``parameters`` go to ``submitit.AutoExecutor.update_parameters``."""

    target_steps: int | None
    cluster: str | None = None  # None: submitit's choice (slurm where srun exists, else local)
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.submitit = require("submitit", "slurm", "--launcher submitit")
        if self.cluster is None:
            self.cluster = self.submitit.AutoExecutor.which()
        if self.cluster == "slurm" and self.submitit.SlurmExecutor.affinity() < 0:
            raise UserError(
                "--submitit-cluster slurm: no SLURM here (srun is not on the PATH); submit from a "
                "login node of the cluster, or use --submitit-cluster local to run the jobs here"
            )

    def describe(self) -> str:
        return f"one submitit job each ({self.cluster})"

    def launch(self, runs: Sequence[RunSpec], states: Mapping[RunSpec, str]) -> int:
        jobs = {spec: load_job(spec.out) for spec in runs}  # load all first: one sacct call answers them all
        queued = {spec for spec, job in jobs.items() if job is not None and not job.done()}
        submitted = 0
        for spec in runs:
            if spec in queued:
                state = jobs[spec].state
                hint = (
                    ""
                    if state != "UNKNOWN"
                    # sacct does not know it (yet, or any more)
                    else f"; if it is gone, delete {spec.out / 'jobs' / 'job.pkl'} to resubmit"
                )
                print(f"{spec.label}: job {jobs[spec].job_id} is {state.lower()}; left alone{hint}")
                continue
            try:
                job = self._submit(spec)
            except Exception as err:  # sbatch refused (a partition, a time limit, an option): one line
                reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                raise UserError(
                    f"submitting {spec.label} to {self.cluster} failed ({reason}); {submitted} "
                    f"job(s) were submitted before it, and a rerun of the sweep skips them"
                ) from None
            self._record(spec, job, states[spec])
            submitted += 1
            print(f"{spec.label}: job {job.job_id} submitted ({states[spec]}); logs in {spec.out / 'jobs'}", flush=True)
        print(
            f"{submitted} job(s) submitted to {self.cluster}, {len(queued)} already queued or running; "
            f"run the same command again to see what is left"
        )
        return 0

    def _submit(self, spec: RunSpec):
        executor = self.submitit.AutoExecutor(folder=spec.out / "jobs", cluster=self.cluster)
        executor.update_parameters(name=f"lq-{spec.dataset}-{spec.model}-seed{spec.seed}", **self.parameters)
        return executor.submit(TrainJob(spec, self.target_steps))

    def _record(self, spec: RunSpec, job, state: str) -> None:
        folder = spec.out / "jobs"
        atomic_write_bytes(folder / "job.pkl", pickle.dumps(job))
        atomic_write_text(
            folder / "job.json",
            json.dumps(
                {
                    "job_id": job.job_id,
                    "cluster": self.cluster,
                    "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "state": state,
                    "parameters": self.parameters,
                },
                indent=1,
            )
            + "\n",
        )


# ---------------------------------------------------------------------------
# flags


def add_arguments(parser) -> None:
    """The sweep's launcher flags."""
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: train processes here, --jobs at a time (default); submitit: one job per run",
    )
    parser.add_argument(
        "--submitit-cluster",
        choices=CLUSTERS,
        default=None,
        help="submitit's executor: slurm, or local (jobs in the background here); "
        "default slurm where srun is on the PATH, else local",
    )
    parser.add_argument("--slurm-partition", default=None, help="SLURM partition")
    parser.add_argument(
        "--slurm-time",
        type=int,
        default=None,
        metavar="MINUTES",
        help="time limit of each job in minutes (default 600, the authors' launcher)",
    )
    parser.add_argument("--slurm-gpus-per-node", type=int, default=None, metavar="N", help="GPUs per job")
    parser.add_argument(
        "--slurm-cpus-per-task", type=int, default=None, metavar="N", help="CPUs per job (default --threads)"
    )
    parser.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --slurm-option account=lab --slurm-option mem=32G (repeatable)",
    )


def from_args(args) -> Launcher:
    """The launcher the parsed flags ask for; ValueError naming a bad value."""
    submitit_flags = {
        "--submitit-cluster": args.submitit_cluster,
        "--slurm-partition": args.slurm_partition,
        "--slurm-time": args.slurm_time,
        "--slurm-gpus-per-node": args.slurm_gpus_per_node,
        "--slurm-cpus-per-task": args.slurm_cpus_per_task,
        "--slurm-option": args.slurm_option or None,
    }
    if args.launcher == "local":
        given = [flag for flag, value in submitit_flags.items() if value is not None]
        if given:
            raise UserError(f"{given[0]} applies to --launcher submitit, not to the default --launcher local")
        jobs = args.jobs or max(1, (os.cpu_count() or 1) // args.threads)
        if jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {jobs}")
        return LocalLauncher(jobs, args.threads, args.steps)
    for flag, low in (("slurm_time", 1), ("slurm_gpus_per_node", 0), ("slurm_cpus_per_task", 1)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise UserError(f"--{flag.replace('_', '-')} must be >= {low}, got {value}")
    options = {}
    for text in args.slurm_option:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-option expects KEY=VALUE (an sbatch option without its dashes), got {text!r}")
        options[key.strip().lstrip("-")] = value.strip()
    parameters = {
        "timeout_min": args.slurm_time or 600,
        "cpus_per_task": args.slurm_cpus_per_task or args.threads,
        "gpus_per_node": args.slurm_gpus_per_node,
        "slurm_partition": args.slurm_partition,
        "slurm_additional_parameters": options or None,
    }
    return SubmititLauncher(args.steps, args.submitit_cluster, {k: v for k, v in parameters.items() if v is not None})
