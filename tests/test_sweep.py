"""``latentquant sweep`` checks its whole grid before it creates anything (issue 28 section 3).

Every bad entry is one line naming it, exit code 2, and no folder; a run never
lands outside ``--out``; a name or seed given twice is one run.
"""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from latentquant.cli import main
from latentquant.results import grid, launchers, sweep


def run_cli(argv) -> tuple[int, str, str]:
    """``latentquant ARGV`` in this process: (exit code, stdout, stderr), argparse's exits included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def sweep_argv(out, *models, datasets=("sprites",), seeds=("0",), extra=()):
    return [
        "sweep",
        "--datasets",
        *datasets,
        "--models",
        *models,
        "--seeds",
        *seeds,
        "--steps",
        "3",
        "--arch",
        "small",
        "--out",
        str(out),
        *extra,
    ]


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


# each: (argv after the grid's --out, text the one line must hold)
BAD_GRIDS = [
    (dict(models=["nosuchmodel"]), "unknown model 'nosuchmodel'"),
    (dict(models=["qlae", "qlae+weight-decay=abc"]), "model entry 'qlae+weight-decay=abc': argument --weight-decay"),
    # a key that is no train flag is a model option: an unknown one names the model's options
    (dict(models=["qlae+nosuchkey=1"]), "sprites/qlae+nosuchkey=1/seed0: unknown option(s) nosuchkey for model"),
    (dict(models=["qlae"], extra=["--", "--nosuchkey", "1"]), "the flags for every run"),
    (dict(models=["qlae+steps=0"]), "sprites/qlae+steps=0/seed0: steps must be an integer"),
    (dict(models=["qlae+arch=huge"]), "sprites/qlae+arch=huge/seed0: unknown arch 'huge'"),
    (dict(models=["qlae", "qlae+option=nosuch=1"]), "unknown option(s) nosuch for model 'qlae'"),
    (dict(models=["qlae", "ae+values-per-latent=5"]), "values_per_latent applies to quantized-latent models only"),
    (dict(models=["qlae"], datasets=["nosuchdata"]), "unknown dataset 'nosuchdata'"),
    (dict(models=["qlae"], seeds=["-1"]), "--seeds must be an integer in 0..4,294,967,295, got -1"),
    (dict(models=["qlae"], extra=["--steps", "0"]), "--steps must be an integer >= 1, got 0"),
    (dict(models=["qlae"], extra=["--jobs", "0"]), "--jobs must be an integer >= 1, got 0"),
    (dict(models=["qlae"], extra=["--threads", "0"]), "--threads must be an integer >= 1, got 0"),
    (dict(models=["qlae"], extra=["--", "--lr", "abc"]), "the flags for every run"),
    (dict(models=["qlae"], extra=["--", "--eval-samples", "5"]), "eval_samples must be an integer in 10.."),
    # names that would put a run elsewhere than OUT/<dataset>/<model>/seed<k>
    (dict(models=["../../x"]), "model entry '../../x' must be a plain folder name"),
    (dict(models=["qlae+data-path=/etc"]), "model entry 'qlae+data-path=/etc' must be a plain folder name"),
    (dict(models=["qlae"], datasets=["../sprites"]), "dataset '../sprites' must be a plain folder name"),
    (dict(models=[".."]), "model entry '..' must be a plain folder name"),
    # overrides of what the grid sets, in a model entry or after --, abbreviated or not
    (dict(models=["qlae+out=elsewhere"]), "model entry 'qlae+out=elsewhere': --out is not for a sweep's runs"),
    (dict(models=["qlae"], extra=["--", "--ou", "elsewhere"]), "--out is not for a sweep's runs"),
    (dict(models=["qlae"], extra=["--", "--out", "elsewhere"]), "the flags for every run"),
    (dict(models=["qlae+dataset=shapes"]), "--dataset is not for a sweep's runs"),
    (dict(models=["qlae+model=ae"]), "--model is not for a sweep's runs"),
    (dict(models=["qlae+seed=4"]), "--seed is not for a sweep's runs"),
    (dict(models=["qlae+resume=x"]), "--resume is not for a sweep's runs (the sweep resumes unfinished runs itself)"),
    (dict(models=["qlae"], extra=["--", "--config", "c.yaml"]), "--config is not for a sweep's runs"),
    (dict(models=["qlae"], extra=["--", "--overwrite"]), "--overwrite is not for a sweep's runs"),
]


@pytest.mark.parametrize("grid_args, message", BAD_GRIDS, ids=[m for _, m in BAD_GRIDS])
def test_a_bad_entry_is_one_line_and_creates_nothing(tmp_path, monkeypatch, grid_args, message):
    monkeypatch.chdir(tmp_path)  # a relative --out elsewhere, a stray log: all would land here
    out = tmp_path / "grid"
    argv = sweep_argv(
        out,
        *grid_args["models"],
        datasets=grid_args.get("datasets", ("sprites",)),
        seeds=grid_args.get("seeds", ("0",)),
        extra=grid_args.get("extra", ()),
    )
    code, _, err = run_cli(argv)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert files_under(tmp_path) == []  # not the grid's folder, nor any other


def test_a_bad_entry_among_good_ones_stops_the_whole_grid_without_dry_run(tmp_path):
    """Without --dry-run too: the first runs are not started (nor their folders made) when the last entry is bad."""
    code, _, err = run_cli(sweep_argv(tmp_path / "grid", "qlae", "ae", "qlae+lr=x", seeds=("0", "1")))
    assert code == 2 and "model entry 'qlae+lr=x'" in err and err.count("\n") == 1
    assert not (tmp_path / "grid").exists()


def test_duplicates_are_one_run(tmp_path):
    code, out, err = run_cli(
        sweep_argv(
            tmp_path / "grid",
            "qlae",
            "qlae",
            "ae",
            datasets=("sprites", "sprites"),
            seeds=("0", "0", "1"),
            extra=["--dry-run"],
        )
    )
    assert code == 0, err
    assert "4 runs: 0 done, 0 to resume, 4 new" in out
    commands = [line for line in out.splitlines() if line.startswith("new ")]
    assert len(commands) == len(set(commands)) == 4
    specs = grid.plan(["sprites", "sprites"], ["qlae", "qlae"], [0, 0], tmp_path)
    assert specs == [grid.RunSpec("sprites", "qlae", 0, tmp_path / "sprites" / "qlae" / "seed0")]
    assert not (tmp_path / "grid").exists()  # --dry-run checks and prints, and makes nothing


def test_check_flags_sees_every_spelling_of_a_grid_flag():
    for flags in (["--out", "x"], ["--ou=x"], ["--out=x"], ["--datas", "shapes"], ["--seed=3"], ["--resume", "r"]):
        with pytest.raises(ValueError, match="is not for a sweep's runs"):
            grid.check_flags(flags, "test")
    args = grid.check_flags(["--lr=-1e-3", "--weight-decay", "0"], "test")
    assert args.lr == -1e-3 and args.weight_decay == 0  # a negative value parses; train's checks refuse it


def test_a_negative_override_value_is_a_value_and_is_refused_by_name(tmp_path):
    code, _, err = run_cli(sweep_argv(tmp_path / "grid", "qlae+lr=-1e-3"))
    assert code == 2 and "sprites/qlae+lr=-1e-3/seed0: lr must be" in err and "-0.001" in err


def test_the_grid_is_checked_in_one_place(tmp_path, monkeypatch):
    """Every cell goes through grid.resolved (the sweep's one call of the training config's validation)."""
    seen = []
    original = grid.resolved

    def counting(config):
        seen.append((config.dataset, config.model, config.seed))
        return original(config)

    monkeypatch.setattr(grid, "resolved", counting)
    specs = grid.plan(["sprites", "shapes"], ["qlae", "ae+weight-decay=0"], [0, 1], tmp_path, ["--steps", "2"])
    sweep.check_grid(specs, ["--steps", "2"])
    assert sorted(seen) == sorted((s.dataset, s.base_model, s.seed) for s in specs) and len(seen) == 8


def test_no_import_circle_between_sweep_and_launchers():
    """The grid's names live in results/grid.py, which imports neither the command nor the launchers."""
    source = Path(grid.__file__).read_text()
    assert "results.sweep" not in source and "results.launchers" not in source
    assert launchers.RunSpec is grid.RunSpec and sweep.RunSpec is grid.RunSpec
    assert "results.sweep" not in Path(launchers.__file__).read_text()


def test_a_run_folder_holding_other_settings_is_one_line_on_stderr(tmp_path):
    """The conflicting folders are listed on stdout; stderr keeps its one line (it had one line per folder too)."""
    from latentquant.train.config import save_config

    specs = grid.plan(["sprites"], ["qlae"], [0, 1], tmp_path, ["--steps", "3", "--arch", "small"])
    for spec in specs:
        save_config(grid.requested_config(spec).replace(weight_decay=0.5), spec.out / "config.yaml")
    code, out, err = run_cli(sweep_argv(tmp_path, "qlae", seeds=("0", "1")))
    assert code == 2 and err.count("\n") == 1, err
    assert f"2 run folder(s) hold other settings than requested ({specs[0].out}: weight_decay 0.5 in the run" in err
    assert all(f"{spec.out}: conflict: weight_decay 0.5 in the run, 0.1 requested" in out for spec in specs)
    assert sorted(p.name for p in specs[0].out.iterdir()) == ["config.yaml"]  # nothing written into the runs


def test_every_registered_model_and_backbone_is_checked_without_building_weights():
    """grid.resolved builds each cell's model on the meta device: every model and backbone must allow it,
    else a sweep would fail on a correct grid (a model added later included)."""
    from latentquant.models import ARCHS, available_models
    from latentquant.train.config import TrainConfig

    for model in available_models():
        for arch in ARCHS:
            config = grid.resolved(TrainConfig(dataset="shapes", model=model, arch=arch, steps=10))
            assert config.model == model and config.num_latents is not None and config.lr is not None


def test_a_run_killed_before_its_first_checkpoint_is_restarted_not_refused(tmp_path):
    """A run process killed before its first checkpoint leaves config.yaml and metrics but nothing to
    resume from. The sweep used to call it 'new' and start `train` without --overwrite, which refused
    the folder (exit 2) on every later call; it is restarted from step 0, replacing the tool's files of
    that start and no other file."""
    out = tmp_path / "grid"
    train_flags = ["--", "--batch-size", "8", "--eval-samples", "200"]
    argv = sweep_argv(out, "qlae", extra=["--jobs", "1", *train_flags])
    assert run_cli(argv)[0] == 0
    run = out / "sprites" / "qlae" / "seed0"
    # the state a kill before the first checkpoint leaves: the run's files, no checkpoint, no evaluation
    shutil.rmtree(run / "checkpoints")
    (run / "eval.json").unlink()
    (run / "notes.txt").write_text("mine")
    common = ["--batch-size", "8", "--eval-samples", "200", "--steps", "3", "--arch", "small"]
    assert grid.status(grid.plan(["sprites"], ["qlae"], [0], out, common)[0], 3) == "restart"
    code, printed, err = run_cli(sweep_argv(out, "qlae", extra=["--dry-run", *train_flags]))
    assert code == 0, err
    assert "1 runs: 0 done, 0 to resume, 0 new, 1 to restart from step 0" in printed
    assert "restart " in printed and " --overwrite " in printed
    code, printed, err = run_cli(argv)
    assert code == 0, (printed, err, (run / "train.log").read_text()[-2000:])
    assert json.loads((run / "eval.json").read_text())["step"] == 3
    assert (run / "notes.txt").read_text() == "mine"
    assert run_cli(argv)[1].startswith("1 runs: 1 done")


def test_a_finished_run_without_checkpoints_asked_for_more_steps_is_a_conflict_not_wiped(tmp_path):
    """Checkpoints are local and large, so a finished run often has none left; asked for more steps it
    has nothing to continue from, and restarting it would replace its results: a conflict."""
    out = tmp_path / "grid"
    train_flags = ["--", "--batch-size", "8", "--eval-samples", "200"]
    assert run_cli(sweep_argv(out, "qlae", extra=["--jobs", "1", *train_flags]))[0] == 0
    run = out / "sprites" / "qlae" / "seed0"
    shutil.rmtree(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    more = [a if a != "3" else "5" for a in sweep_argv(out, "qlae", extra=["--jobs", "1", *train_flags])]
    code, printed, err = run_cli(more)
    assert code == 2 and "finished at 3 steps without a checkpoint to continue from" in printed + err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_run_moved_on_since_the_plan_is_decided_again_at_its_start(tmp_path):
    """The launcher starts runs hours after the plan; another sweep on the same folder may have finished
    one meanwhile. A run planned 'restart' and done by then is skipped, its results untouched."""
    out = tmp_path / "grid"
    train_flags = ["--", "--batch-size", "8", "--eval-samples", "200"]
    assert run_cli(sweep_argv(out, "qlae", extra=["--jobs", "1", *train_flags]))[0] == 0
    run = out / "sprites" / "qlae" / "seed0"
    evaluation = (run / "eval.json").read_bytes()
    common = ["--batch-size", "8", "--eval-samples", "200", "--steps", "3", "--arch", "small"]
    spec = grid.plan(["sprites"], ["qlae"], [0], out, common)[0]
    assert grid.execute(spec, "restart", threads=1, target_steps=3) == 0
    assert (run / "eval.json").read_bytes() == evaluation
    assert "not started: planned 'restart', now done" in (run / "train.log").read_text()
    # in use by another process now: not started, exit 2
    with grid.RunDir(run).acquire(new=False):
        assert grid.execute(spec, "resume", threads=1, target_steps=3) == 2
    assert "now conflict: in use by another process" in (run / "train.log").read_text()


def test_sweep_checkpoint_seconds_reaches_every_run_with_or_without_stack(tmp_path):
    out = tmp_path / "grid"
    for stack in ("1", "2"):
        code, printed, err = run_cli(
            sweep_argv(out, "qlae", "ae", extra=["--dry-run", "--stack", stack, "--checkpoint-seconds", "60"])
        )
        assert code == 0, err
        commands = [line for line in printed.splitlines() if line.startswith("new ")]
        assert len(commands) == 2 and all("--checkpoint-seconds 60.0" in c for c in commands), printed
