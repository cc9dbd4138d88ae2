"""``latentquant curves``: learning curves of runs and grids, mean and 95% t-interval over seeds."""

import csv
import json
import math

import pytest
from PIL import Image

from latentquant.cli import main
from latentquant.results.table import mean_ci


def _run(folder, dataset, seed, scores_by_step):
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"step": step, "dataset": dataset, "seed": seed, **scores})
        for step, scores in scores_by_step.items()
    ]
    (folder / "evals.jsonl").write_text("\n".join(lines) + "\n")


def _rows(path):
    return {(r["dataset"], r["model"], r["metric"], int(r["step"])): r for r in csv.DictReader(open(path))}


def test_grid_curves_are_means_and_t_intervals_over_seeds(tmp_path, capsys):
    root = tmp_path / "grid"
    infom = {0: [0.5, 0.6, 0.7], 1: [0.52, 0.58, 0.75], 2: [0.49, 0.61]}  # seed 2 stopped early
    for seed, values in infom.items():
        _run(
            root / "shapes" / "qlae" / f"seed{seed}",
            "shapes",
            seed,
            {2000 * (i + 1): {"infom": v, "psnr": 20.0 + i} for i, v in enumerate(values)},
        )
    _run(root / "shapes" / "ae" / "seed0", "shapes", 0, {2000: {"infom": 0.4, "psnr": None}})
    png, table = tmp_path / "c.png", tmp_path / "c.csv"
    assert main(["curves", str(root), "--metrics", "infom", "psnr", "--out", str(png), "--csv", str(table)]) == 0
    assert Image.open(png).size[0] > 300
    rows = _rows(table)
    for i, step in enumerate((2000, 4000, 6000)):
        values = [v[i] for v in infom.values() if len(v) > i]
        mean, half = mean_ci(values)
        row = rows[("shapes", "qlae", "infom", step)]
        assert int(row["seeds"]) == len(values) and math.isclose(float(row["mean"]), mean, rel_tol=1e-5)
        assert math.isclose(float(row["ci95_half"]), half, rel_tol=1e-5)
    assert rows[("shapes", "ae", "infom", 2000)]["ci95_half"] == ""  # one seed: no interval
    assert ("shapes", "ae", "psnr", 2000) not in rows  # a null score is left out, not plotted as 0
    assert "shapes/qlae: 3 seed(s), steps 2000, 4000, 6000" in capsys.readouterr().out


def test_single_runs_join_their_grid_group_and_the_last_line_of_a_step_wins(tmp_path):
    run = tmp_path / "shapes" / "qlae" / "seed4"
    _run(run, "shapes", 4, {1000: {"infom": 0.1}})
    with open(run / "evals.jsonl", "a") as f:  # `latentquant evaluate` appends a re-evaluation
        f.write(json.dumps({"step": 1000, "dataset": "shapes", "seed": 4, "infom": 0.3}) + "\n")
    other = tmp_path / "my-run"
    _run(other, "sprites", 0, {1000: {"infom": 0.2}})
    table = tmp_path / "c.csv"
    assert (
        main(
            [
                "curves",
                str(run),
                str(other),
                "--metrics",
                "infom",
                "--out",
                str(tmp_path / "c.png"),
                "--csv",
                str(table),
            ]
        )
        == 0
    )
    rows = _rows(table)
    assert float(rows[("shapes", "qlae", "infom", 1000)]["mean"]) == 0.3
    assert float(rows[("sprites", "my-run", "infom", 1000)]["mean"]) == 0.2


def test_bad_input_is_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    _run(run, "shapes", 0, {1000: {"infom": 0.1}})
    cases = [
        (["curves", str(run), "--metrics", "infox", "--out", str(tmp_path / "c.png")], "unknown metric(s) infox"),
        (["curves", str(run), "--out", str(tmp_path / "c.pdf")], "must name a .png file"),
        (["curves", str(tmp_path / "missing"), "--out", str(tmp_path / "c.png")], "no run or results directory"),
        (["curves", str(tmp_path), "--out", str(tmp_path / "c.png")], "no evals.jsonl under"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and expected in err[0], err
    (run / "evals.jsonl").write_text("not json\n")
    assert main(["curves", str(run), "--out", str(tmp_path / "c.png")]) == 2
    assert "evals.jsonl:1: not an evaluation record" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_grid_runs_are_found_at_any_depth_and_labelled_by_the_path_below(tmp_path, capsys):
    for seed in (0, 1):
        _run(tmp_path / "small" / "shapes" / "qlae" / f"seed{seed}", "shapes", seed, {1000: {"infom": 0.1 * seed}})
    table = tmp_path / "c.csv"
    assert (
        main(["curves", str(tmp_path), "--metrics", "infom", "--out", str(tmp_path / "c.png"), "--csv", str(table)])
        == 0
    )
    assert float(_rows(table)[("small/shapes", "qlae", "infom", 1000)]["mean"]) == 0.05
    assert "small/shapes/qlae: 2 seed(s), steps 1000" in capsys.readouterr().out


def test_evaluation_records_of_the_wrong_type_are_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    _run(run, "shapes", 0, {1000: {"infom": 0.1}})
    for content in (
        b'{"step": "x"}\n',
        b"[1000]\n",
        b'{"step": 1.5}\n',
        b'{"step": true}\n',
        b"\xff\xfe\n",
        b"[" * 100_000,
    ):
        (run / "evals.jsonl").write_bytes(content)
        assert main(["curves", str(run), "--out", str(tmp_path / "c.png")]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and str(run / "evals.jsonl") in err[0], (content, err)
    assert not (tmp_path / "c.png").exists()


def test_weight_norms_come_from_the_log_or_else_from_the_checkpoints(tmp_path):
    """The norms of a run that logged them are its metrics.jsonl's; without them, each kept
    checkpoint's (and step 0's, the run's seeded initialization), recomputed from config.yaml."""
    import shutil

    from latentquant.results.curves import read_norms
    from latentquant.train import checkpoint
    from latentquant.train.config import resolve
    from latentquant.train.rundir import RunDir

    run = tmp_path / "grid" / "sprites" / "qlae" / "seed0"
    flags = ["--dataset", "sprites", "--arch", "small", "--batch-size", "8", "--eval-samples", "100"]
    flags += ["--log-every", "1", "--threads", "1", "--logger", "none", "--checkpoint-every", "2"]
    assert main(["train", *flags, "--model", "qlae", "--steps", "4", "--eval-every", "2", "--out", str(run)]) == 0
    logged = read_norms(run)
    assert sorted(logged) == [0, 1, 2, 3, 4] and set(logged[4]) == {"norm_conv", "norm_linear", "norm_values"}
    # an older run's log has no norms: the checkpoints give them, equal to the logged ones at their steps
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    old = tmp_path / "old" / "sprites" / "qlae" / "seed0"
    shutil.copytree(run, old)
    stripped = [{k: v for k, v in r.items() if not k.startswith("norm_")} for r in lines]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    computed = read_norms(old)
    assert sorted(computed) == [0, 2, 4]
    for step in (2, 4):
        assert computed[step] == {k: pytest.approx(v, rel=1e-6) for k, v in logged[step].items()}
    fresh = resolve(RunDir(old).read_config()).model.weight_norms()
    assert computed[0] == {f"norm_{k}": pytest.approx(v) for k, v in fresh.items()}
    assert [p.name for p in checkpoint.list_checkpoints(old / "checkpoints")][-1] == "step_00000004.safetensors"
    # and the command: one panel a group, the CSV's rows from step 0
    png, table = tmp_path / "n.png", tmp_path / "n.csv"
    args = ["curves", str(tmp_path / "old"), "--metrics", "norm_conv", "norm_values", "--out", str(png)]
    assert main([*args, "--csv", str(table)]) == 0
    rows = _rows(table)
    assert sorted(step for (_, _, metric, step) in rows if metric == "norm_conv") == [0, 2, 4]
    # a logged run (every step) and a checkpointed one (every 2) on one grid: --every 2
    both = [str(tmp_path / "old"), str(run)]
    assert (
        main(["curves", *both, "--metrics", "norm_conv", "--out", str(png), "--csv", str(table), "--every", "2"]) == 0
    )
    assert sorted({step for (_, _, metric, step) in _rows(table) if metric == "norm_conv"}) == [0, 2, 4]
    assert logged[0] == computed[0]  # both runs' step 0 is their seeded initialization


def test_the_legend_names_every_model_and_the_range_of_seeds_behind_its_curves(tmp_path):
    from latentquant.results import curves

    root = tmp_path / "grid"
    for seed in range(3):  # qlae: 3 seeds on shapes, 1 on sprites so far
        _run(root / "shapes" / "qlae" / f"seed{seed}", "shapes", seed, {1000: {"infom": 0.5 + seed / 10}})
    _run(root / "sprites" / "qlae" / "seed0", "sprites", 0, {1000: {"infom": 0.4}})
    for seed in range(2):  # only on the second dataset, so absent from the first panel
        _run(root / "sprites" / "late" / f"seed{seed}", "sprites", seed, {1000: {"infom": 0.3}})
    rows = curves.summarise(curves.collect([root]), ["infom"])
    labels = curves.plot(rows, ["infom"], tmp_path / "c.png")
    assert labels == ["late (n=2)", "qlae (n=1-3)"]
    assert Image.open(tmp_path / "c.png").size[0] > 100
