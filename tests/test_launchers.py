"""latentquant sweep --launcher submitit, through submitit's local executor: the code path that submits
to SLURM, with jobs that run as background processes here."""

import argparse
import json
import pickle
import shutil
import sys

import pytest

from latentquant.cli import main
from latentquant.results import grid, launchers, sweep

submitit = pytest.importorskip("submitit")


def sweep_args(out, steps, *extra):
    return [
        "sweep",
        "--datasets",
        "sprites",
        "--models",
        "qlae",
        "ae",
        "--seeds",
        "0",
        "--steps",
        str(steps),
        "--arch",
        "small",
        "--out",
        str(out),
        "--launcher",
        "submitit",
        "--submitit-cluster",
        "local",
        "--slurm-time",
        "10",
        *extra,
        "--",
        "--batch-size",
        "8",
        "--eval-samples",
        "300",
        "--eval-every",
        "0",
        "--device",
        "cpu",
    ]


def recorded_jobs(out):
    runs = [out / "sprites" / model / "seed0" for model in ("qlae", "ae")]
    return [json.loads((run / "jobs" / "job.json").read_text()) for run in runs], [launchers.load_job(r) for r in runs]


@pytest.mark.slow
def test_submitit_sweep_submits_leaves_running_jobs_and_resubmits_unfinished(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(sweep_args(out, 2)) == 0
    printed = capsys.readouterr().out
    records, jobs = recorded_jobs(out)
    assert "2 runs: 0 done, 0 to resume, 2 new; one submitit job each (local)" in printed
    for record, job in zip(records, jobs):
        assert record["cluster"] == "local" and record["state"] == "new" and record["job_id"] == job.job_id
        assert f"job {job.job_id} submitted (new)" in printed
    # the same command while the jobs run (a job needs seconds to import torch): nothing is submitted twice
    assert main(sweep_args(out, 2)) == 0
    printed = capsys.readouterr().out
    assert "0 job(s) submitted to local, 2 already queued or running" in printed
    assert f"job {jobs[0].job_id} is running; left alone" in printed
    assert [job.result() for job in jobs] == ["new", "new"]  # waits; raises with the job's log if training failed
    assert [json.loads((job.paths.folder.parent / "eval.json").read_text())["step"] for job in jobs] == [2, 2]

    # finished runs are skipped
    assert main(sweep_args(out, 2)) == 0
    assert "2 runs: 2 done, 0 to resume, 0 new" in capsys.readouterr().out
    assert [r["job_id"] for r in recorded_jobs(out)[0]] == [r["job_id"] for r in records]

    # unfinished runs whose jobs ended are resubmitted, and resume from their checkpoints
    assert main(sweep_args(out, 4)) == 0
    assert "2 runs: 0 done, 2 to resume, 0 new" in capsys.readouterr().out
    new_records, new_jobs = recorded_jobs(out)
    assert {r["job_id"] for r in new_records}.isdisjoint({r["job_id"] for r in records})
    assert [job.result() for job in new_jobs] == ["resume", "resume"]
    metrics = (out / "sprites" / "qlae" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [2, 4]  # resumed at 2, not restarted
    assert main(["table", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| sprites | qlae | 1 |" in table and "| sprites | ae | 1 |" in table


def test_slurm_flags_reach_the_sbatch_script(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # pretend srun exists
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    args = parser.parse_args(
        [
            "--datasets",
            "sprites",
            "--models",
            "qlae",
            "--launcher",
            "submitit",
            "--submitit-cluster",
            "slurm",
            "--slurm-partition",
            "gpu",
            "--slurm-time",
            "2880",
            "--slurm-gpus-per-node",
            "1",
            "--slurm-option",
            "account=lab",
            "--slurm-option",
            "mem=32G",
            "--threads",
            "4",
        ]
    )
    launcher = launchers.from_args(args)
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**launcher.parameters)
    script = executor._executor._make_submission_file_text("true", "0")  # the sbatch file submitit would submit
    for line in (
        "--partition=gpu",
        "--time=2880",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--account=lab",
        "--mem=32G",
    ):
        assert f"#SBATCH {line}\n" in script


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--slurm-option", "account"], "--slurm-option expects KEY=VALUE"),
        (["--slurm-time", "0"], "--slurm-time must be >= 1, got 0"),
        (["--submitit-cluster", "slurm"], "--submitit-cluster slurm: no SLURM here (srun is not on the PATH)"),
        (["--launcher", "local", "--slurm-partition", "gpu"], "--slurm-partition applies to --launcher submitit"),
    ],
)
def test_submitit_flag_errors_are_one_line(tmp_path, capsys, flags, message):
    if flags[0] == "--submitit-cluster" and submitit.SlurmExecutor.affinity() > 0:
        pytest.skip("this machine has SLURM")
    args = ["sweep", "--datasets", "sprites", "--models", "qlae", "--out", str(tmp_path), *flags]
    if "--launcher" not in flags:
        args += ["--launcher", "submitit"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentquant: error: {message}") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_missing_submitit_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert (
        main(["sweep", "--datasets", "sprites", "--models", "qlae", "--out", str(tmp_path), "--launcher", "submitit"])
        == 2
    )
    assert capsys.readouterr().err == (
        "latentquant: error: --launcher submitit needs the submitit package: pip install 'latentquant[slurm]'\n"
    )


def test_a_job_slurm_cannot_account_for_is_left_alone_with_the_way_out(tmp_path, capsys):
    """A recorded SLURM job whose state sacct cannot give (here: no sacct at all) counts as queued,
    as submitit's Job.done() has it; nothing is submitted and the sweep names the file to delete."""
    if shutil.which("sacct"):
        pytest.skip("this machine has SLURM accounting: job 4242 may exist")
    (spec,) = grid.plan(["sprites"], ["qlae"], [0], tmp_path)
    (spec.out / "jobs").mkdir(parents=True)
    (spec.out / "jobs" / "job.pkl").write_bytes(pickle.dumps(submitit.SlurmJob(spec.out / "jobs", "4242")))
    assert (
        main(
            [
                "sweep",
                "--datasets",
                "sprites",
                "--models",
                "qlae",
                "--seeds",
                "0",
                "--out",
                str(tmp_path),
                "--launcher",
                "submitit",
                "--submitit-cluster",
                "local",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"job 4242 is unknown; left alone; if it is gone, delete {spec.out / 'jobs' / 'job.pkl'}" in out
    assert "0 job(s) submitted to local, 1 already queued or running" in out
    assert sorted(p.name for p in (spec.out / "jobs").iterdir()) == ["job.pkl"]
