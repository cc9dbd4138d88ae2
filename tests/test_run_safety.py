"""Issue 28's cases on the training side: what the tool may delete, inputs that must not run
away or end in a traceback, a run's identity, and the one-line messages."""

import json
import shutil
import time

import pytest
import torch
import yaml
from tiny_run import TINY

from latentquant.cli import main
from latentquant.train.config import MAX_LATENTS, TrainConfig, resolve
from latentquant.train.rundir import MARKER, RunDir
from latentquant.train.scores import format_score, score_line


def _train(*args) -> int:
    return main(["train", *TINY, *map(str, args)])


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _one_line(capsys) -> str:
    (line,) = _lines(capsys)
    assert "Traceback" not in line
    return line


def _snapshot(d) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    """A finished 2-step run with checkpoints at steps 1 and 2."""
    run = tmp_path_factory.mktemp("safety") / "run"
    assert _train("--steps", "2", "--checkpoint-every", "1", "--out", run) == 0
    torch.set_num_threads(1)
    return run


@pytest.fixture
def copy(run2, tmp_path, capsys):
    """A private copy of ``run2`` (same marker: the same run)."""
    capsys.readouterr()
    dest = tmp_path / "copy"
    shutil.copytree(run2, dest)
    return dest


# -- 1. never delete what the user made


def test_demo_refuses_a_users_run_and_touches_nothing(copy, capsys):
    before = _snapshot(copy)
    assert main(["demo", "--out", str(copy), "--steps", "1"]) == 2
    line = _one_line(capsys)
    assert "not a demo run" in line and "--resume" in line and "--overwrite" in line
    assert _snapshot(copy) == before


def test_demo_replaces_its_own_run_only_by_the_names_it_wrote(copy, capsys, monkeypatch):
    from latentquant import demo

    monkeypatch.setitem(demo.DEMO, "eval_samples", 100)  # the demo's own settings, kept small
    monkeypatch.setitem(demo.DEMO, "batch_size", 8)
    (copy / MARKER).write_text(RunDir(copy).run_id() + "\nkind: demo\n")
    (copy / "figures" / "mine.png").write_bytes(b"my figure")
    old_id = RunDir(copy).run_id()
    assert main(["demo", "--out", str(copy), "--steps", "1"]) == 0
    assert "kept 1 file(s) latentquant did not write: figures/mine.png" in capsys.readouterr().err
    assert (copy / "figures" / "mine.png").read_bytes() == b"my figure"
    assert json.loads((copy / "eval.json").read_text())["step"] == 1
    assert RunDir(copy).kind() == "demo" and RunDir(copy).run_id() != old_id  # a new run, still a demo's
    # resumed with train, a demo run is the user's: the next demo refuses it
    assert main(["train", "--resume", str(copy), "--steps", "2"]) == 0
    assert RunDir(copy).kind() == "train"


def test_overwrite_deletes_only_the_files_it_wrote(copy, capsys):
    mine = {
        "figures/my_annotated.png": b"annotated",
        "checkpoints/best/best_model.pt": b"weights",
        "checkpoints/notes.txt": b"which step was best",
        "tensorboard/README": b"my notes",
        "notes.txt": b"mine",
    }
    for rel, data in mine.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    old_id = RunDir(copy).run_id()
    assert _train("--steps", "1", "--out", copy, "--overwrite") == 0
    err = capsys.readouterr().err
    assert f"kept {len(mine)} file(s) latentquant did not write" in err
    for rel, data in mine.items():
        assert (copy / rel).read_bytes() == data, rel
        assert rel in err
    assert sorted(p.name for p in (copy / "checkpoints").glob("step_*")) == ["step_00000001.safetensors"]
    assert RunDir(copy).run_id() != old_id  # a new run, a new id: the old checkpoints are not its own


# -- 2. no input runs away, none ends in a traceback


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--num-latents", 1_000_000_000, f"num_latents must be an integer in 2..{MAX_LATENTS:,}"),
        ("--values-per-latent", 10**9, "values_per_latent must be an integer in 2..1,024"),
        ("--batch-size", 10**9, "batch_size must be an integer in 1..8,192"),
        ("--eval-samples", 10**12, "eval_samples must be an integer in 10..1,000,000"),
        ("--prefetch", 10**9, "prefetch must be an integer in 1..16"),
        ("--threads", 10**9, "threads must be an integer in 1..1,024"),
        ("--seed", 10**30, "seed must be an integer in 0..2,147,483,647"),
        ("--steps", 10**30, "steps must be an integer in 1..1,000,000,000"),
    ],
)
def test_every_size_is_bounded_before_anything_is_allocated(tmp_path, capsys, flag, value, expected):
    start = time.perf_counter()
    assert _train("--steps", "1", "--out", tmp_path / "r", flag, value) == 2
    assert expected in _one_line(capsys)
    assert time.perf_counter() - start < 10 and not (tmp_path / "r").exists()


def test_a_torn_last_line_is_dropped_on_resume(copy, capsys):
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 45, "loss": 0.1')  # a crash mid-append
    with open(copy / "evals.jsonl", "a") as f:
        f.write('{"step": 2, "inf')
    assert main(["train", "--resume", str(copy), "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "dropped the torn last line of" in err and "metrics.jsonl" in err and "evals.jsonl" in err
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert [json.loads(line)["step"] for line in (copy / "evals.jsonl").read_text().splitlines()] == [2, 3]


@pytest.mark.parametrize("damage", ["not json", '["a list"]', '{"step": "x"}'])
def test_damage_before_the_last_line_is_one_line_and_nothing_is_rewritten(copy, capsys, damage):
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text("\n".join([lines[0], damage, *lines[1:]]) + "\n")
    before = _snapshot(copy)
    assert main(["train", "--resume", str(copy), "--steps", "3"]) == 2
    line = _one_line(capsys)
    assert "metrics.jsonl: line 2 is not a JSON record" in line
    after = _snapshot(copy)
    assert {k: v for k, v in after.items() if k != ".latentquant-lock"} == {
        k: v for k, v in before.items() if k != ".latentquant-lock"
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        ("out: 5\n", "out must be a path (text), got int"),
        ("data_root: [1, 2]\n", "data_root must be a path (text), got list"),
        ("data_path: {a: 1}\n", "data_path must be a path (text), got dict"),
        ('out: "a\\0b"\n', "out must be a path without NUL characters"),
        ("{1: 2}\n", "unknown key(s) 1"),
        ("options: {1: 2}\n", "unknown option(s) 1"),
        ("logger: tensorboard\n", "logger must be a list"),
        ("compile: 'yes'\n", "compile must be True or False, got 'yes'"),
        ("weight_decay_timescale: 1.0e-310\n", "gives an infinite weight decay"),
    ],
)
def test_wrong_typed_config_fields_are_one_line(tmp_path, capsys, text, expected):
    (tmp_path / "c.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--steps", "1"]) == 2
    assert expected in _one_line(capsys)
    assert not (tmp_path / "runs").exists()


NOT_UTF8 = b"seed: 0\nmodel: qlae\xff\xfe\n"


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(NOT_UTF8)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "c.yaml: not UTF-8 text (byte 0xff at position 19)" in _one_line(capsys)


@pytest.mark.parametrize("command", ["resume", "evaluate"])
@pytest.mark.parametrize("content, expected", [(NOT_UTF8, "not UTF-8 text"), (b"", "is empty"), (b"\n \n", "is empty")])
def test_a_runs_config_yaml_not_utf8_or_empty_is_one_line(copy, capsys, command, content, expected):
    (copy / "config.yaml").write_bytes(content)
    argv = ["train", "--resume", str(copy), "--steps", "4"] if command == "resume" else ["evaluate", str(copy)]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert expected in line and "config.yaml" in line


# -- 4. a run keeps its identity


def test_evaluate_refuses_a_checkpoint_of_another_run_with_the_same_settings(run2, tmp_path, capsys):
    twin = tmp_path / "twin"
    assert _train("--steps", "2", "--checkpoint-every", "1", "--out", twin) == 0  # the same settings, another run
    capsys.readouterr()
    before = _snapshot(run2)
    assert main(["evaluate", str(run2), "--checkpoint", str(twin / "checkpoints" / "step_00000002.safetensors")]) == 2
    line = _one_line(capsys)
    assert "was written by another run (run id" in line
    assert {k: v for k, v in _snapshot(run2).items() if "lock" not in k} == {
        k: v for k, v in before.items() if "lock" not in k
    }
    # its own checkpoints are accepted, and their run id is the marker's
    from latentquant.train.checkpoint import read_checkpoint

    _, doc = read_checkpoint(run2 / "checkpoints" / "step_00000001.safetensors")
    assert doc["run_id"] == RunDir(run2).run_id()


@pytest.mark.parametrize("command", ["resume", "evaluate"])
def test_a_config_yaml_edited_after_the_checkpoint_is_refused_naming_the_field(copy, capsys, command):
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": 3}))
    argv = ["train", "--resume", str(copy), "--steps", "4"] if command == "resume" else ["evaluate", str(copy)]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "seed 0 (the run has 3)" in line and "config.yaml was changed after the checkpoint" in line
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 2  # nothing trained


# -- 5. messages


def test_a_negative_number_reaches_the_range_check(tmp_path, capsys):
    assert _train("--steps", "1", "--out", tmp_path / "r", "--lr", "-1e-3") == 2
    assert "lr must be a finite number > 0, got -0.001" in _one_line(capsys)
    assert _train("--steps", "1", "--out", tmp_path / "r", "--weight-decay", "-.5") == 2
    assert "weight_decay must be a finite number >= 0, got -0.5" in _one_line(capsys)


def test_a_resumed_run_keeps_its_model(copy, capsys):
    assert main(["train", "--resume", str(copy), "--steps", "4", "--model", "ae"]) == 2
    assert "a resumed run keeps its model ('qlae'), got 'ae'" in _one_line(capsys)


def test_report_config_block_is_the_yaml_of_config_yaml(run2):
    report = (run2 / "report.md").read_text()
    block = report.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load((run2 / "config.yaml").read_text())


def test_unreadable_newest_checkpoint_evaluate_falls_back_and_says_so_in_one_line(copy, capsys):
    newest = copy / "checkpoints" / "step_00000002.safetensors"
    newest.write_bytes(newest.read_bytes()[:300])
    assert main(["evaluate", str(copy)]) == 0
    err = _lines(capsys)
    skipped = [line for line in err if "skipping unreadable checkpoint" in line]
    assert len(skipped) == 1 and newest.name in skipped[0]
    assert not any("warn" in line or "UserWarning" in line for line in err)  # no source line of a warning
    assert json.loads((copy / "eval.json").read_text())["step"] == 1


def test_demo_checks_its_flags_before_its_banner(tmp_path, capsys):
    for flags in (["--steps", "0"], ["--seed", "-1"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as exit_:
            main(["demo", "--out", str(tmp_path / "d"), *flags])
        assert exit_.value.code == 2
        captured = capsys.readouterr()
        assert "latentquant demo:" in captured.err and captured.out == ""
        assert len([line for line in captured.err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "value, text", [(-0.0001, "0.000"), (-0.0, "0.000"), (-0.0006, "-0.001"), (0.5, "0.500"), (None, "n/a")]
)
def test_scores_never_print_minus_zero(value, text):
    assert format_score(value) == text
    assert "-0.000" not in score_line({"infom": -1e-9, "psnr": -0.0004, "step": 3})


def test_resolve_validates_once_and_builds_the_model_once(tmp_path, monkeypatch):
    from latentquant.models.qlae import QLAE

    calls = {"validate": 0, "build": 0}
    validate, init = TrainConfig.validate, QLAE.__init__

    def counting_validate(self):
        calls["validate"] += 1
        return validate(self)

    def counting_init(self, *args, **kwargs):
        calls["build"] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(TrainConfig, "validate", counting_validate)
    monkeypatch.setattr(QLAE, "__init__", counting_init)
    assert _train("--steps", "1", "--out", tmp_path / "r") == 0
    assert calls == {"validate": 1, "build": 1}
    assert main(["evaluate", str(tmp_path / "r")]) == 0
    assert calls == {"validate": 2, "build": 2}
    resolved = resolve(TrainConfig(arch="small", steps=1))
    assert calls == {"validate": 3, "build": 3}
    assert isinstance(resolved.model, QLAE) and resolved.info.num_factors == resolved.dataset.num_factors == 5
    assert resolved.config.num_latents == 10 and resolved.model.num_latents == 10
