import json
import math
from pathlib import Path

import pytest

from latentquant.cli import main
from latentquant.results import grid, table


def write_eval(root, dataset, model, seed, **values):
    run = root / dataset / model / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps(values))
    return run


def test_mean_ci_matches_t_interval():
    mean, half = table.mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    # t_{0.975, 2} = 4.302653; s = 1; n = 3
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def test_mean_ci_single_and_empty():
    assert table.mean_ci([0.5]) == (0.5, pytest.approx(math.nan, nan_ok=True))
    mean, half = table.mean_ci([None, float("nan")])
    assert math.isnan(mean) and math.isnan(half)


def test_table_rows_and_aggregate(tmp_path, capsys):
    for seed, v in enumerate([0.2, 0.4]):
        write_eval(tmp_path, "sprites", "qlae", seed, infom=v, psnr=20 + seed, step=10)
        write_eval(tmp_path, "shapes", "qlae", seed, infom=v + 0.2, psnr=30, step=10)
    write_eval(tmp_path, "sprites", "ae", 0, infom=0.1, step=10)
    assert main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "table.md").read_text()
    assert text in out
    rows = {(r["dataset"], r["model"]): r for r in table.summarise(table.collect(tmp_path))}
    assert rows[("sprites", "qlae")]["infom"][0] == pytest.approx(0.3)
    # aggregate: per seed the mean over datasets (0.3, 0.5), then over seeds
    assert rows[("aggregate", "qlae")]["n"] == 2
    assert rows[("aggregate", "qlae")]["infom"][0] == pytest.approx(0.4)
    assert rows[("aggregate", "qlae")]["infom"][1] == pytest.approx(12.706205 * 0.1414214 / math.sqrt(2), rel=1e-5)
    assert ("aggregate", "ae") not in rows  # ae has no run on shapes
    assert "| sprites | ae | 1 | 0.10 | n/a |" in text  # one seed: the mean alone; no infoe: n/a
    assert "| sprites | qlae | 2 | 0.30 ± 1.27 |" in text  # t_{0.975,1} * 0.1414 / sqrt(2) = 1.27
    assert "n/a" in text  # ae has no psnr


def test_table_leaves_out_runs_still_training(tmp_path, capsys):
    """A run evaluated mid-training (eval.json from a step before its config's
    steps) is not averaged with finished ones; the table says it left it out."""
    from latentquant.train.config import save_config

    for seed, step in ((0, 100), (1, 100), (2, 40)):
        (spec,) = grid.plan(["sprites"], ["qlae"], [seed], tmp_path, ["--steps", "100", "--arch", "small"])
        save_config(grid.requested_config(spec), spec.out / "config.yaml")
        (spec.out / "eval.json").write_text(json.dumps({"step": step, "infom": 0.1 * (seed + 1)}))
    unfinished = []
    rows = {(r["dataset"], r["model"]): r for r in table.summarise(table.collect(tmp_path, unfinished))}
    assert rows[("sprites", "qlae")]["n"] == 2
    assert rows[("sprites", "qlae")]["infom"][0] == pytest.approx(0.15)
    assert len(unfinished) == 1 and "seed2 (step 40 of 100)" in unfinished[0]
    assert main(["table", str(tmp_path)]) == 0
    assert "left out 1 unfinished run(s)" in capsys.readouterr().out
    for seed in (0, 1):  # only unfinished runs: a clear error, not an empty table
        (tmp_path / "sprites" / "qlae" / f"seed{seed}" / "eval.json").write_text(json.dumps({"step": 40}))
    with pytest.raises(Exception, match="3 still training"):
        table.collect(tmp_path, [])


def test_table_best_seed(tmp_path, capsys):
    write_eval(tmp_path, "sprites", "qlae", 0, infom=0.9, infoe=0.1, infoc=0.1)  # 1.1
    write_eval(tmp_path, "sprites", "qlae", 1, infom=0.5, infoe=0.5, infoc=0.5)  # 1.5: best
    write_eval(tmp_path, "sprites", "qlae", 2, infom=0.9, infoe=0.9, infoc=float("nan"))  # not finite: passed over
    write_eval(tmp_path, "sprites", "ae", 0, infom=0.9)  # no infoe/infoc: no best
    best = table.best_runs(table.collect(tmp_path))
    assert best == {("sprites", "qlae"): ("1", pytest.approx(1.5))}
    assert main(["table", str(tmp_path), "--best"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'sprites' / 'qlae' / 'seed1'}  1.500" in out
    assert "sprites/ae" not in out.split("best seed")[1]


def test_table_errors(tmp_path, capsys):
    assert main(["table", str(tmp_path / "missing")]) == 2
    assert "no results directory" in capsys.readouterr().err
    assert main(["table", str(tmp_path)]) == 2
    run = tmp_path / "d" / "m" / "seed0"
    run.mkdir(parents=True)
    (run / "eval.json").write_text("{not json")
    assert main(["table", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_parse_model_overrides():
    assert grid.parse_model("qlae") == ("qlae", ())
    assert grid.parse_model("qlae+weight-decay=0+lr=1e-4") == ("qlae", ("--weight-decay=0", "--lr=1e-4"))
    # one --flag=value word each: a negative value is the flag's value, not another flag
    assert grid.parse_model("qlae+lr=-1e-3") == ("qlae", ("--lr=-1e-3",))
    with pytest.raises(ValueError, match="FLAG=VALUE"):
        grid.parse_model("qlae+weight-decay")
    with pytest.raises(ValueError, match="no model name"):
        grid.parse_model("+lr=1")
    # a key that is no train flag is a model option (the sweep entry for the global codebook)
    assert grid.parse_model("qlae+global-codebook=1") == ("qlae", ("--option=global_codebook=1",))
    assert grid.parse_model("vae+beta=4+lr=1e-4") == ("vae", ("--option=beta=4", "--lr=1e-4"))


def test_model_option_entries_resolve_and_unknown_ones_are_refused(tmp_path):
    """``qlae+global-codebook=1`` reaches the model as its option; an unknown key names the valid options."""
    cells = grid.plan(["sprites"], ["qlae+global-codebook=1"], [0], tmp_path, ("--steps=2", "--arch=small"))
    assert grid.check(cells[0]).options["global_codebook"] in (1, True)
    (bad,) = grid.plan(["sprites"], ["qlae+nosuchkey=1"], [0], tmp_path, ("--steps=2", "--arch=small"))
    with pytest.raises(ValueError, match="nosuchkey.*global_codebook"):
        grid.check(bad)


def test_status_done_resume_new_and_conflict(tmp_path):
    from latentquant.train.config import save_config

    (spec,) = grid.plan(["sprites"], ["qlae"], [0], tmp_path, ["--steps", "100", "--arch", "small"])
    assert spec.out == tmp_path / "sprites" / "qlae" / "seed0"
    assert grid.status(spec, 100) == "new"
    requested = grid.requested_config(spec)
    save_config(requested, spec.out / "config.yaml")
    (spec.out / "checkpoints").mkdir()
    (spec.out / "checkpoints" / "step_00000050.safetensors").write_bytes(b"x")
    assert grid.status(spec, 100) == "resume"
    assert grid.command(spec, "resume")[-6:-4] == ["--resume", str(spec.out)]
    (spec.out / "eval.json").write_text(json.dumps({"step": 50}))
    assert grid.status(spec, 100) == "resume"  # evaluated mid-run only
    (spec.out / "eval.json").write_text(json.dumps({"step": 100}))
    assert grid.status(spec, 100) == "done"
    # the same steps with other settings is not done: the run holds something else
    save_config(requested.replace(weight_decay=0.5), spec.out / "config.yaml")
    assert grid.status(spec, 100).startswith("conflict: weight_decay 0.5 in the run, 0.1 requested")
    # how a run ran (threads, device) is not a setting
    save_config(requested.replace(threads=4, device="cpu"), spec.out / "config.yaml")
    assert grid.status(spec, 100) == "done"


def test_sweep_dry_run_plans_new_commands(tmp_path, capsys):
    code = main(
        [
            "sweep",
            "--datasets",
            "sprites",
            "--models",
            "qlae",
            "ae+weight-decay=0",
            "--seeds",
            "0",
            "1",
            "--steps",
            "5",
            "--out",
            str(tmp_path),
            "--dry-run",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "4 runs: 0 done, 0 to resume, 4 new" in out
    assert f"--out {tmp_path / 'sprites' / 'ae+weight-decay=0' / 'seed1'} --threads 1 --steps 5 --weight-decay=0" in out


def test_sweep_runs_skips_and_extends_a_real_grid(tmp_path, capsys):
    """Two real (tiny) runs; a second call skips them; a larger --steps resumes them; table reads them.
    A model and a seed given twice are one run (before, both started and one failed on the other's lock)."""
    out = tmp_path / "runs"
    args = [
        "sweep",
        "--datasets",
        "sprites",
        "--models",
        "qlae",
        "ae+weight-decay=0",
        "qlae",
        "--seeds",
        "0",
        "0",
        "--out",
        str(out),
        "--arch",
        "small",
        "--jobs",
        "2",
        "--",
        "--batch-size",
        "8",
        "--eval-samples",
        "300",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "2",
    ]
    assert main(args[:1] + ["--steps", "2"] + args[1:]) == 0
    assert "2 runs: 0 done, 0 to resume, 2 new" in capsys.readouterr().out
    for model in ("qlae", "ae+weight-decay=0"):
        run = out / "sprites" / model / "seed0"
        assert json.loads((run / "eval.json").read_text())["step"] == 2
    import yaml

    assert (
        yaml.safe_load((out / "sprites" / "ae+weight-decay=0" / "seed0" / "config.yaml").read_text())["weight_decay"]
        == 0
    )
    assert main(args[:1] + ["--steps", "2"] + args[1:]) == 0
    assert "2 runs: 2 done, 0 to resume, 0 new" in capsys.readouterr().out
    assert main(args[:1] + ["--steps", "4"] + args[1:]) == 0
    assert "2 runs: 0 done, 2 to resume, 0 new" in capsys.readouterr().out
    assert json.loads((out / "sprites" / "qlae" / "seed0" / "eval.json").read_text())["step"] == 4
    assert main(["table", str(out)]) == 0
    assert "| sprites | qlae | 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("grid", ["runs", "curves/small", "regime/small", "successors/small"])
def test_results_page_matches_committed_runs(grid):
    """Each table in docs/results.md is what `latentquant table results/<grid>`
    makes of the committed runs (finished runs only)."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "results.md").read_text()
    start, end = f"<!-- table: latentquant table results/{grid} -->\n", "<!-- /table -->"
    assert start in page, f"docs/results.md lost its table markers for results/{grid}"
    shown = page.split(start, 1)[1].split(end, 1)[0]
    assert shown == table.to_markdown(table.summarise(table.collect(root / "results" / grid)))


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"step": "x"}', "'step' must be a whole number >= 0, got 'x'"),
        ('{"step": true}', "'step' must be a whole number >= 0, got True"),
        ("[1, 2]", "must hold a JSON object of scores, got a JSON array"),
        ('"scores"', "got a JSON string"),
        ('{"step": 10, "infom": "high"}', "score 'infom' must be a number or null, got 'high'"),
        ('{"step": 10, "psnr": [20]}', "score 'psnr' must be a number or null, got [20]"),
        (b"\xff\xfe{}", "is not valid JSON"),
        (b"[" * 100_000, "is not valid JSON"),
    ],
)
def test_table_of_a_wrongly_typed_eval_json_is_one_line_naming_it(tmp_path, capsys, content, message):
    write_eval(tmp_path, "sprites", "qlae", 0, infom=0.5, step=10)
    bad = tmp_path / "sprites" / "qlae" / "seed1"
    bad.mkdir()
    (bad / "eval.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["table", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(bad / "eval.json") in err[0] and message in err[0], err
    assert not (tmp_path / "table.md").exists()


def test_table_finds_runs_at_any_depth_and_labels_them_by_the_path_below(tmp_path, capsys):
    """`latentquant table results/curves` reads results/curves/small/<dataset>/<model>/seed<k>; rows are those
    of `table results/curves/small` with the folder in the dataset column, aggregated per folder."""
    for seed, v in enumerate([0.2, 0.4]):
        write_eval(tmp_path / "small", "sprites", "qlae", seed, infom=v, infoe=0.0, infoc=0.0, step=10)
        write_eval(tmp_path / "small", "shapes", "qlae", seed, infom=v + 0.2, step=10)
        write_eval(tmp_path / "big" / "deeper", "sprites", "qlae", seed, infom=0.9, step=10)
    below = table.summarise(table.collect(tmp_path / "small"))
    rows = {(r["dataset"], r["model"]): r for r in table.summarise(table.collect(tmp_path))}
    assert set(rows) == {
        ("small/sprites", "qlae"),
        ("small/shapes", "qlae"),
        ("small/aggregate", "qlae"),
        ("big/deeper/sprites", "qlae"),
        ("big/deeper/aggregate", "qlae"),
    }
    for row in below:  # the same numbers as the table of the folder itself
        label = "small/" + row["dataset"]
        assert rows[(label, row["model"])] == {**row, "dataset": label}
    assert rows[("big/deeper/aggregate", "qlae")]["infom"][0] == pytest.approx(0.9)  # not averaged with small/
    assert main(["table", str(tmp_path), "--best", "--out", str(tmp_path / "t.md")]) == 0
    out = capsys.readouterr().out
    assert "| small/sprites | qlae | 2 | 0.30 ± 1.27 |" in out
    assert f"{tmp_path / 'small' / 'sprites' / 'qlae' / 'seed1'}  0.400" in out  # --best names the real folder
    # a dataset folder or a model folder as the root: the names above it label the rows
    rows = {(r["dataset"], r["model"]) for r in table.summarise(table.collect(tmp_path / "small" / "shapes"))}
    assert ("shapes", "qlae") in rows
    rows = {(r["dataset"], r["model"]) for r in table.summarise(table.collect(tmp_path / "small" / "shapes" / "qlae"))}
    assert ("shapes", "qlae") in rows


def test_table_and_curves_of_the_committed_curves_root_read_its_small_folder():
    """Issue 21: `latentquant curves results/curves` and `table results/curves` exited 2 (the runs lie in small/)."""
    from latentquant.results import curves

    root = Path(__file__).resolve().parents[1] / "results" / "curves"
    rows = table.summarise(table.collect(root))
    below = table.summarise(table.collect(root / "small"))
    assert [(r["dataset"], r["model"]) for r in rows] == [("small/" + r["dataset"], r["model"]) for r in below]
    groups = curves.collect([root])
    assert sorted(groups) == sorted(("small/" + d, m) for d, m in curves.collect([root / "small"]))


def compare_blocks(page: str) -> list[tuple[list[str], str]]:
    """Each ``<!-- compare: latentquant compare ARGS -->`` block of a page: (ARGS, the table under it)."""
    import shlex

    blocks = []
    for part in page.split("<!-- compare: latentquant compare ")[1:]:
        args, rest = part.split(" -->\n", 1)
        blocks.append((shlex.split(args), rest.split("<!-- /compare -->", 1)[0]))
    return blocks


def test_results_page_comparisons_match_committed_runs(monkeypatch):
    """Each difference table in docs/results.md is what its `latentquant compare` command makes of
    the committed runs."""
    import argparse

    from latentquant.results import compare

    root = Path(__file__).resolve().parents[1]
    blocks = compare_blocks((root / "docs" / "results.md").read_text())
    assert blocks, "docs/results.md lost its compare blocks"
    monkeypatch.chdir(root)
    for argv, shown in blocks:
        parser = argparse.ArgumentParser()
        compare.add_arguments(parser)
        args = parser.parse_args(argv)
        rows = compare.compare(tuple(args.a), tuple(args.b), args.metrics)
        count = compare.tested_cells(rows, args.metrics)
        assert shown == compare.to_markdown(rows, args.metrics, bonferroni=count if args.bonferroni else None)
