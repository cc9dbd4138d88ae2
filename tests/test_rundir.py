"""Whose files: the run directory's marker, lock and overwrite rules; truthful labels; checks before work."""

import errno

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_run import TINY

from latentquant.cli import main
from latentquant.train.rundir import LOCK, MARKER, RunDir


def _one_line(capsys) -> str:
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in line
    return line


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    run = tmp_path_factory.mktemp("r") / "run"
    assert main(["train", *TINY, "--steps", "2", "--out", str(run)]) == 0
    torch.set_num_threads(1)
    return run


def _user_folder(tmp_path):
    d = tmp_path / "d"
    (d / "src").mkdir(parents=True)
    (d / "config.yaml").write_text("x: 1\n")
    (d / "src" / "a.py").write_text("keep\n")
    return d


def _tree(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


# -- never delete or overwrite what the tool did not create


def test_demo_never_empties_a_user_folder(tmp_path, capsys):
    d = _user_folder(tmp_path)
    assert main(["demo", "--out", str(d), "--steps", "5"]) == 2
    assert "not a latentquant run directory" in _one_line(capsys)
    assert _tree(d) == ["config.yaml", "src", "src/a.py"] and (d / "config.yaml").read_text() == "x: 1\n"


def test_train_never_writes_into_a_user_folder(tmp_path, capsys):
    d = _user_folder(tmp_path)
    assert main(["train", *TINY, "--steps", "1", "--out", str(d)]) == 2
    assert str(d) in _one_line(capsys)
    assert main(["train", *TINY, "--steps", "1", "--out", str(d), "--overwrite"]) == 2
    capsys.readouterr()
    assert _tree(d) == ["config.yaml", "src", "src/a.py"]


@pytest.mark.parametrize("out, expected", [("", "name a run directory"), ("FILE", "is a file, not a directory")])
def test_out_empty_or_a_file_is_one_line(tmp_path, capsys, out, expected):
    if out == "FILE":
        out = str(tmp_path / "f.txt")
        (tmp_path / "f.txt").write_text("mine")
    assert main(["train", *TINY, "--steps", "1", "--out", out]) == 2
    assert expected in _one_line(capsys)


def test_run_directory_is_marked_first_and_a_second_process_fails_at_once(run2, tmp_path, capsys):
    assert RunDir(run2).is_marked() and len((run2 / MARKER).read_text().strip()) == 32
    holder = RunDir(run2).acquire(new=False)  # another open file description: as another process
    try:
        assert RunDir(run2).status() == "running"
        assert main(["train", "--resume", str(run2), "--steps", "4"]) == 2
        line = _one_line(capsys)
        assert "in use by another latentquant process" in line and str(run2) in line
        assert main(["evaluate", str(run2)]) == 2
        assert "in use" in _one_line(capsys)
    finally:
        holder.release()
    # a lock file left by a dead process (pid written, no flock held) is no obstacle
    (run2 / LOCK).write_text("999999\n")
    assert RunDir(run2).status() == "finished"
    with RunDir(run2).acquire(new=False):
        pass


# -- results are labelled truthfully


def test_evaluate_refuses_another_runs_checkpoint(run2, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", *TINY, "--steps", "2", "--seed", "1", "--out", str(other)]) == 0
    capsys.readouterr()
    foreign = other / "checkpoints" / "step_00000002.safetensors"
    assert main(["evaluate", str(run2), "--checkpoint", str(foreign)]) == 2
    assert "was written by another run (run id" in _one_line(capsys)  # its marker's id, before its settings


def test_resume_refuses_contradicting_flags_and_fewer_steps(run2, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run2, run)
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--seed", "5", "--steps", "4"]) == 2
    assert "seed 5 (the run has 0)" in _one_line(capsys)
    assert main(["train", "--resume", str(run), "--steps", "1"]) == 2
    assert "the run is at step 2; --steps must be larger" in _one_line(capsys)
    assert (run / "config.yaml").read_text() == before
    assert len((run / "evals.jsonl").read_text().splitlines()) == 1


def test_sweep_calls_a_run_done_only_with_the_requested_settings(run2, tmp_path, capsys):
    import shutil

    cell = tmp_path / "grid" / "sprites" / "qlae" / "seed0"
    shutil.copytree(run2, cell)
    args = [
        "sweep",
        "--datasets",
        "sprites",
        "--models",
        "qlae",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--arch",
        "small",
        "--out",
        str(tmp_path / "grid"),
        "--",
        "--eval-samples",
        "100",
        "--eval-every",
        "0",
    ]
    assert main([*args, "--batch-size", "8"]) == 0
    assert "1 runs: 1 done" in capsys.readouterr().out
    before = sorted(p.name for p in cell.iterdir())
    assert main([*args, "--batch-size", "16"]) == 2
    captured = capsys.readouterr()
    assert "batch_size 8 in the run, 16 requested" in captured.err and "hold other settings" in captured.err
    assert sorted(p.name for p in cell.iterdir()) == before  # nothing started


def test_evaluate_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    d = _user_folder(tmp_path)
    assert main(["evaluate", str(d)]) == 2
    assert "is not a latentquant run directory" in _one_line(capsys)
    assert _tree(d) == ["config.yaml", "src", "src/a.py"]


def test_table_refuses_a_row_of_mixed_settings(run2, tmp_path, capsys):
    import shutil

    for seed, batch in ((0, 8), (1, 16)):
        cell = tmp_path / "grid" / "sprites" / "qlae" / f"seed{seed}"
        shutil.copytree(run2, cell)
        cfg = yaml.safe_load((cell / "config.yaml").read_text())
        (cell / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": seed, "batch_size": batch}))
    capsys.readouterr()
    assert main(["table", str(tmp_path / "grid")]) == 2
    assert "differ in more than the seed (batch_size 16 vs 8)" in _one_line(capsys)


# -- fail before the work


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--num-latents", "1"], "num_latents must be an integer in 2..1,024"),
        (["--eval-samples", "1000000000"], "eval_samples must be an integer in 10..1,000,000"),
        (["--model", "qlinfowgan", "-o", "n_critic=0"], "n_critic must be an integer >= 1"),
    ],
)
def test_settings_evaluation_would_reject_fail_before_step_one(tmp_path, capsys, flags, expected):
    assert main(["train", *TINY, "--steps", "1", "--out", str(tmp_path / "r"), *flags]) == 2
    assert expected in _one_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("options: null", "options must be a mapping"),
        ("options: 3", "options must be a mapping"),
        ("lr: abc", "lr must be a number"),
    ],
)
def test_bad_yaml_values_are_one_line(tmp_path, capsys, text, expected):
    (tmp_path / "c.yaml").write_text(text + "\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert expected in _one_line(capsys)


def test_yaml_numbers_written_as_strings_are_numbers(tmp_path):
    from latentquant.train.config import load_config

    (tmp_path / "c.yaml").write_text("lr: 1e-3\nsteps: 2e3\nweight_decay: 1e-4\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.lr, cfg.steps, cfg.weight_decay) == (1e-3, 2000, 1e-4) and isinstance(cfg.steps, int)


def test_unreadable_only_checkpoint_is_named(run2, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run2, run)
    (path,) = (run / "checkpoints").iterdir()
    path.write_bytes(path.read_bytes()[:300])
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 2
    skipped, line = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "skipping unreadable checkpoint" in skipped and "Traceback" not in line
    assert path.name in line and "not a readable checkpoint" in line


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from latentquant import _atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_atomic, "_fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*eval\.json'"):
        _atomic.atomic_write_text(tmp_path / "eval.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["npy", "empty", "pickled"])
def test_metrics_of_a_file_that_is_not_a_plain_npz_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / ("x.npy" if kind == "npy" else "x.npz")
    if kind == "npy":
        np.save(path, np.zeros((4, 2)))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        np.savez(path, sources=np.zeros((4, 2)), latents=np.array([{"a": 1}] * 4, dtype=object).reshape(4, 1))
    assert main(["metrics", str(path)]) == 2
    assert str(path) in _one_line(capsys)


def test_a_genuine_bug_shows_its_traceback(monkeypatch):
    from latentquant.train import cli_train

    def broken(args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(cli_train, "build_config", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["train", "--steps", "1"])


@given(
    steps=st.lists(st.integers(0, 50), max_size=8),
    step=st.integers(0, 50),
    torn=st.booleans(),
)
@settings(deadline=None)
def test_insert_eval_keeps_every_other_record_in_step_order(tmp_path_factory, steps, step, torn):
    """``insert_eval`` (``evaluate --initial``) against its definition: the old records of other
    steps, in their order, plus the new one, sorted by step (stably); a torn last line of a
    crashed append is dropped, and the file is whole JSON lines after."""
    import json

    run = RunDir(tmp_path_factory.mktemp("ins"))
    old = [{"step": s, "i": i} for i, s in enumerate(steps)]
    run.evals.write_text("".join(json.dumps(r) + "\n" for r in old) + ('{"step": 9' if torn else ""))
    new = {"step": step, "i": -1}
    run.insert_eval(new)
    got = [json.loads(line) for line in run.evals.read_text().splitlines()]
    expected = sorted([r for r in old if r["step"] != step] + [new], key=lambda r: r["step"])
    assert got == expected
