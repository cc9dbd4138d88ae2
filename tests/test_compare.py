"""``latentquant compare``: A - B over seeds with a 95% Welch interval and Welch's p (results/compare.py)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from latentquant.cli import main
from latentquant.results import compare

samples = st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=6)


@given(samples, samples)
def test_welch_is_scipys_test_and_the_textbook_interval(a, b):
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if va + vb < 1e-6:  # (near) no spread: the degenerate branch is checked below
        return
    diff, half, p = compare.welch(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-6, abs=1e-12)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert half == pytest.approx(stats.t.ppf(0.975, dof) * math.sqrt(va + vb), rel=1e-9)
    # swapping the sides negates the difference only
    d2, h2, p2 = compare.welch(b, a)
    assert (d2, h2, p2) == pytest.approx((-diff, half, p))
    # the interval excludes 0 exactly when p < 0.05
    if abs(abs(diff) - half) > 1e-9 * max(1.0, half):
        assert (abs(diff) > half) == (p < 0.05)


def test_welch_degenerate_and_too_few():
    assert compare.welch([1.0, 1.0], [1.0, 1.0]) == (0.0, 0.0, 1.0)
    assert compare.welch([2.0, 2.0], [1.0, 1.0]) == (1.0, 0.0, 0.0)
    # constant sides whose floating-point variance is not exactly 0 (var of three 0.1s: 2.9e-34)
    assert compare.welch([0.1] * 3, [0.1] * 4) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="two values or more on each side, got 1 and 2"):
        compare.welch([1.0], [1.0, 2.0])


def write_runs(root, model, scores):
    """scores: {dataset: {seed: {metric: value}}} -> root/dataset/model/seed<k>/eval.json."""
    for dataset, seeds in scores.items():
        for seed, values in seeds.items():
            run = root / dataset / model / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "eval.json").write_text(json.dumps({"step": 10, **values}))


def test_cli_prints_per_dataset_and_aggregate_differences(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = {d: {s: {"infom": float(rng.random()), "psnr": float(20 + rng.random())} for s in range(3)} for d in "xy"}
    b = {d: {s: {"infom": float(rng.random()), "psnr": float(20 + rng.random())} for s in range(4)} for d in "xyz"}
    del b["y"][3]  # seed 3 of B lacks y: the aggregate takes B's seeds 0-2 only
    write_runs(tmp_path / "ra", "m1", a)
    write_runs(tmp_path / "rb", "m2", b)
    argv = ["compare", "--a", str(tmp_path / "ra"), "m1", "--b", str(tmp_path / "rb"), "m2", "--metrics", "infom"]
    assert main([*argv, "--bonferroni", "--out", str(tmp_path / "c.md")]) == 0
    out = capsys.readouterr().out
    rows = compare.compare((str(tmp_path / "ra"), "m1"), (str(tmp_path / "rb"), "m2"), ["infom"])
    assert [(r["dataset"], r["n_a"], r["n_b"]) for r in rows] == [("x", 3, 4), ("y", 3, 3), ("aggregate", 3, 3)]
    expect_x = compare.welch([a["x"][s]["infom"] for s in range(3)], [b["x"][s]["infom"] for s in range(4)])
    assert rows[0]["infom"][:3] == pytest.approx(expect_x)
    mean = lambda side, s: (side["x"][s]["infom"] + side["y"][s]["infom"]) / 2  # noqa: E731
    expect_agg = compare.welch([mean(a, s) for s in range(3)], [mean(b, s) for s in range(3)])
    assert rows[2]["infom"][:3] == pytest.approx(expect_agg)
    assert f"| x | 3, 4 | {expect_x[0]:+.2f} ± {expect_x[1]:.2f} (p" in out
    assert "Bonferroni over the 3 comparisons" in out
    assert (tmp_path / "c.md").read_text() == compare.to_markdown(rows, ["infom"], bonferroni=3)


@pytest.mark.parametrize(
    "b_model, b_scores, metrics, message",
    [
        ("nosuch", None, ["infom"], "no finished runs of model 'nosuch' under"),
        ("m2", {"z": {0: {"infom": 0.1}, 1: {"infom": 0.2}}}, ["infom"], "share no dataset (x against z)"),
        ("m2", {"x": {0: {"infom": 0.1}}}, ["infom"], "nothing to compare: no dataset has two seeds or more"),
        ("m2", {"x": {0: {"psnr": 1.0}, 1: {"psnr": 2.0}}}, ["infom"], "(x: infom of 2 seed(s) of 'm1' and 0 of"),
        ("m2", {"x": {0: {"infom": 0.1}, 1: {"infom": 0.2}}}, ["nosuch"], "unknown metric(s) nosuch"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, b_model, b_scores, metrics, message):
    write_runs(tmp_path / "ra", "m1", {"x": {0: {"infom": 0.5}, 1: {"infom": 0.6}}})
    write_runs(tmp_path / "rb", "m2", b_scores or {"x": {0: {"infom": 0.1}, 1: {"infom": 0.2}}})
    argv = ["compare", "--a", str(tmp_path / "ra"), "m1", "--b", str(tmp_path / "rb"), b_model, "--metrics", *metrics]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_cell_without_two_seeds_is_na_and_the_rest_is_still_compared(tmp_path, capsys):
    """One dataset with a single seed of A, and a seed whose metric is NaN: those cells say so with
    their counts; every other cell is tested, and Bonferroni counts the tested cells only."""
    a = {"x": {0: {"infom": 0.5}, 1: {"infom": 0.6}, 2: {"infom": float("nan")}}, "y": {1: {"infom": 0.4}}}
    b = {d: {s: {"infom": 0.1 * s} for s in range(3)} for d in "xy"}
    write_runs(tmp_path / "ra", "m1", a)
    write_runs(tmp_path / "rb", "m2", b)
    argv = ["compare", "--a", str(tmp_path / "ra"), "m1", "--b", str(tmp_path / "rb"), "m2", "--metrics", "infom"]
    assert main([*argv, "--bonferroni"]) == 0
    out = capsys.readouterr().out
    rows = compare.compare((str(tmp_path / "ra"), "m1"), (str(tmp_path / "rb"), "m2"), ["infom"])
    assert [(r["dataset"], r["n_a"], r["infom"].n_a, r["infom"].tested) for r in rows] == [
        ("x", 3, 2, True),  # seed 2's NaN is left out, and the cell says how many seeds it used
        ("y", 1, 1, False),
        ("aggregate", 1, 1, False),  # only seed 1 of A has both datasets
    ]
    assert rows[0]["infom"][:3] == pytest.approx(compare.welch([0.5, 0.6], [0.0, 0.1, 0.2]))
    assert "| x | 3, 3 | " in out and "; seeds 2, 3)" in out
    assert "| y | 1, 3 | n/a (seeds 1, 3) |" in out
    assert "Bonferroni over the 1 comparisons" in out and "n/a: fewer than two seeds" in out


def test_the_aggregate_stays_within_a_folder_as_in_table(tmp_path):
    scores = {
        f"{f}/{d}": {s: {"infom": 0.1 * s + (f == "large")} for s in range(2)} for f in ("small", "large") for d in "xy"
    }
    write_runs(tmp_path / "ra", "m1", scores)
    write_runs(tmp_path / "rb", "m2", scores)
    rows = compare.compare((str(tmp_path / "ra"), "m1"), (str(tmp_path / "rb"), "m2"), ["infom"])
    assert [r["dataset"] for r in rows] == [
        "large/x",
        "large/y",
        "small/x",
        "small/y",
        "large/aggregate",
        "small/aggregate",
    ]
