"""Property-based tests of the command line (issue 28 section 6): ``sweep``, ``metrics`` and ``table``
called with random flag values and random inputs.

Each call either succeeds (exit 0) or exits with code 2 and exactly one line on
stderr; it never ends in a traceback, never writes a file outside the folder it
was given (a sweep's ``--out``, the metrics file's folder, the table's root),
and returns within a bounded time. Calls run in this process, in a fresh
folder that is also the working directory, so a file written to a relative
path would be seen. The examples are few and small (a sweep is always a
``--dry-run``: its whole-grid check is what runs before any work), so the
three tests together take well under a minute.
"""

import contextlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from latentquant.cli import main

SECONDS = 60  # per call; a sweep's first call opens the datasets, a metrics call fits a few classifiers


def run_in(folder: Path, argv: list[str], stdout: io.StringIO | None = None) -> tuple[int, str]:
    """``latentquant ARGV`` with ``folder`` as the working directory: (exit code, stderr); the call must end
    in time, with code 0, or with code 2 and one line. What it prints goes to ``stdout`` when given."""
    err = io.StringIO()
    before = os.getcwd()
    start = time.monotonic()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(stdout or io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse's one-line errors exit from inside parse_args
                code = exit_.code
    finally:
        os.chdir(before)
    text = err.getvalue()
    assert time.monotonic() - start < SECONDS, f"{argv} took {time.monotonic() - start:.0f}s"
    assert "Traceback" not in text, text
    assert code in (0, 2), (argv, code, text)
    if code == 2:
        assert text.count("\n") == 1 and text.endswith("\n") and text.strip(), (argv, text)
    return code, text


def outcome(code: int, text: str) -> None:
    """Count the outcomes (pytest --hypothesis-show-statistics): enough calls must succeed to test that path."""
    event("exit 0" if code == 0 else f"exit 2: {text.split(': ', 2)[-1][:90]}")


def files_in(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def often(value, times: int = 3) -> list:
    """``value`` ``times`` over, for a sampled_from that draws it that much more often."""
    return [value] * times


def mostly(good, bad, odds: int):
    """``good`` ``odds`` times as often as ``bad``: enough calls get past the first check."""
    return st.sampled_from([*often(True, odds), False]).flatmap(lambda ok: good if ok else bad)


# -- sweep --------------------------------------------------------------------------------------

words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
dataset_names = st.sampled_from(["sprites", "shapes", "nosuch", "../sprites", "a/b", "..", "."]) | words
BAD_MODEL_ENTRIES = {
    "qlae+weight-decay=abc",
    "qlae+nosuchkey=1",
    "qlae+lr=-1e-3",
    "qlae+out=elsewhere",
    "qlae+ou=x",
    "qlae+steps=0",
    "qlae+num-latents=1000000000",
    "qlae+values-per-latent=1",
    "ae+values-per-latent=4",
    "qlae+option=nosuch=1",
    "qlae+",
    "+lr=1",
    "../../x",
    "qlae+data-path=/etc",
}
BAD_EXTRA_FLAGS = [
    ["--batch-size", "0"],
    ["--batch-size", "10000000000"],
    ["--eval-samples", "5"],
    ["--lr", "-1e-3"],
    ["--lr=-1e-3"],
    ["--weight-decay", "nan"],
    ["--out", "elsewhere"],
    ["--resume", "elsewhere"],
    ["--overwrite"],
    ["--config", "c.yaml"],
    ["--nosuch", "1"],
    ["-h"],
]
model_entries = st.sampled_from(["qlae", "ae", "vqvae", "qlae+weight-decay=0", *sorted(BAD_MODEL_ENTRIES)]) | words
extra_flags = st.sampled_from([["--logger", "none"], ["--device", "cpu"], *BAD_EXTRA_FLAGS])
good_models = st.sampled_from(["qlae", "ae", "vqvae", "qlae+weight-decay=0", "ae+lr=3e-4", "vae+option=beta=4"])


@settings(max_examples=40)
@given(
    datasets=st.lists(mostly(st.sampled_from(["sprites", "shapes"]), dataset_names, 8), min_size=1, max_size=2),
    models=st.lists(mostly(good_models, model_entries, 6), min_size=1, max_size=3),
    seeds=st.lists(mostly(st.integers(0, 3), st.integers(-2, 2**33), 8), min_size=1, max_size=2),
    steps=mostly(st.none() | st.integers(1, 1000), st.integers(-1, 10**10), 4),
    arch=mostly(st.none() | st.sampled_from(["small", "paper", "compact"]), st.just("huge"), 6),
    jobs=mostly(st.none() | st.integers(1, 4), st.integers(-1, 0), 6),
    extra=mostly(st.just([]), st.lists(extra_flags, min_size=1, max_size=2), 3),
)
def test_sweep_checks_any_grid_in_one_line_and_writes_nothing(
    tmp_path_factory, datasets, models, seeds, steps, arch, jobs, extra
):
    folder = tmp_path_factory.mktemp("sweep")
    argv = ["sweep", "--datasets", *datasets, "--models", *models, "--seeds", *map(str, seeds), "--out", "grid"]
    argv += ["--dry-run"]
    argv += [] if steps is None else ["--steps", str(steps)]
    argv += [] if arch is None else ["--arch", arch]
    argv += [] if jobs is None else ["--jobs", str(jobs)]
    if extra:
        argv += ["--", *[word for flags in extra for word in flags]]
    printed = io.StringIO()
    code, text = run_in(folder, argv, printed)
    outcome(code, text)
    assert files_in(folder) == set()  # a dry run checks and prints; it creates nothing, anywhere
    if code == 0:  # an accepted grid holds no entry known to be bad, and plans every run inside --out
        assert not set(models) & BAD_MODEL_ENTRIES and set(datasets) <= {"sprites", "shapes"}, argv
        assert not [flags for flags in extra if flags in BAD_EXTRA_FLAGS], argv
        assert all(0 <= seed < 2**32 for seed in seeds) and (steps is None or 1 <= steps <= 10**9), argv
        outs = [line.split(" --out ", 1)[1].split(" ")[0] for line in printed.getvalue().splitlines()[1:]]
        assert outs and all((folder / out).resolve().is_relative_to((folder / "grid").resolve()) for out in outs), outs


# -- metrics ------------------------------------------------------------------------------------


FAULTS = [
    "truncate", "text", "bytes", "npy", "empty", "missing", "folder", "huge-header",  # not an archive of arrays
    "no-latents", "3-d", "nan", "float-sources", "string-latents", "names", "discrete-flag", "rows", "one-latent",
    "bad-seed", "bad-bins", "bad-fraction", "both-kinds", "bad-estimator",  # flags
]  # fmt: skip


@st.composite
def metrics_call(draw, folder: Path) -> list[str]:
    """A ``metrics`` argv on a file written in ``folder``: a valid archive and flags, with at most one fault
    (drawn about half of the time) in the file or in a flag."""
    fault = draw(st.sampled_from([*often("none", len(FAULTS)), *FAULTS]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rows = draw(st.integers(24, 60))
    sources = rng.integers(0, draw(st.integers(2, 4)), size=(rows, draw(st.integers(1, 3))))
    latents = rng.integers(0, draw(st.integers(1, 5)), size=(rows, draw(st.integers(2, 3))))
    if draw(st.booleans()):
        latents = latents + rng.normal(scale=draw(st.sampled_from([0.0, 0.1, 1.0])), size=latents.shape)
    members = {"sources": sources, "latents": latents}
    if fault == "no-latents":
        del members["latents"]
    elif fault == "3-d":
        members["latents"] = latents[:, :, None]
    elif fault == "nan":
        members["latents"] = np.where(rng.random(latents.shape) < 0.1, np.nan, latents)
    elif fault == "float-sources":
        members["sources"] = rng.normal(size=sources.shape)
    elif fault == "string-latents":
        members["latents"] = rng.choice(np.array(["a", "b"]), size=latents.shape)
    elif fault == "names":
        members["source_names"] = np.array(["s"] * (sources.shape[1] + 1))
    elif fault == "discrete-flag":
        members["discrete_latents"] = np.array(draw(st.sampled_from([2.5, "yes", [True, False]])))
    elif fault == "rows":
        members["latents"] = latents[:-1]
    elif fault == "one-latent":
        members["latents"] = latents[:, :1]
    path = folder / "codes.npz"
    with open(path, "wb") as f:
        np.savez(f, **members)
    data = path.read_bytes()
    if fault == "truncate":
        path.write_bytes(data[: draw(st.integers(1, len(data) - 1))])
    elif fault == "text":
        path.write_text(draw(words))
    elif fault == "bytes":
        path.write_bytes(draw(st.binary(min_size=1, max_size=64)))
    elif fault == "npy":
        np.save(folder / "one.npy", latents)
        (folder / "one.npy").replace(path)
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "huge-header":  # a member whose header declares far more than it holds
        header = io.BytesIO()
        shape = (draw(st.integers(10**6, 10**15)), 2)
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("sources.npy", header.getvalue() + bytes(draw(st.integers(0, 256))))
            archive.writestr("latents.npy", header.getvalue())
    target = {"missing": folder / "absent.npz", "folder": folder}.get(fault, path)

    argv = ["metrics", str(target)]
    argv += draw(st.sampled_from([["--no-dci"], ["--dci-model", "fast"]]))  # gbt, the default, takes seconds
    for flags in draw(st.lists(st.sampled_from(VALID_METRIC_FLAGS), max_size=3, unique_by=lambda f: f[0])):
        argv += flags
    if fault == "both-kinds":
        argv += ["--discrete-latents", "--continuous-latents"]
    elif fault == "bad-estimator":
        argv += ["--estimator", "kde"]
    bad = {
        "bad-seed": st.integers(-(2**40), -1) | st.integers(2**32, 2**40),
        "bad-bins": st.integers(-5, 1) | st.integers(10_001, 10**12),
        "bad-fraction": st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x < 1),
    }
    for flag, fault_name, good in (
        ("--seed", "bad-seed", st.integers(0, 99)),
        ("--num-bins", "bad-bins", st.integers(2, 40)),
        ("--test-fraction", "bad-fraction", st.floats(0.1, 0.5)),
    ):
        value = draw(bad[fault_name]) if fault == fault_name else draw(st.none() | good)
        if value is not None:
            argv.append(f"{flag}={value}")
    return argv


VALID_METRIC_FLAGS = [
    ["--no-sap"],
    ["--no-mig"],
    ["--no-explicitness"],
    ["--no-plot"],
    ["--discrete-latents"],
    ["--continuous-latents"],
    ["--estimator", "histogram"],
]


@settings(max_examples=40)
@given(data=st.data())
def test_metrics_of_any_file_and_flags_is_scored_or_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("metrics")
    argv = data.draw(metrics_call(folder))
    before = files_in(folder)
    code, text = run_in(folder, argv)
    outcome(code, text)
    written = files_in(folder) - before
    assert written <= {Path("codes.metrics.json"), Path("codes.nmi.png")}
    if code == 0:
        assert Path("codes.metrics.json") in written
        json.loads((folder / "codes.metrics.json").read_text())  # strict JSON: NaN written as null


# -- table --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
eval_files = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "step": json_values,
            "infom": st.floats() | json_values,
            "infoe": st.floats(0, 1),
            "psnr": st.floats() | json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=16),
)


@settings(max_examples=40)
@given(
    runs=st.lists(
        st.tuples(st.sampled_from(["sprites", "small/shapes", "a/b/c"]), st.sampled_from(["qlae", "ae"]), eval_files),
        min_size=0,
        max_size=4,
    ),
    best=st.booleans(),
)
def test_table_of_any_eval_files_is_a_table_or_one_line(tmp_path_factory, runs, best):
    folder = tmp_path_factory.mktemp("table")
    root = folder / "grid"
    root.mkdir()
    for seed, (dataset, model, content) in enumerate(runs):
        run = root / dataset / model / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "eval.json").write_bytes(content)
    before = files_in(folder)
    code, text = run_in(folder, ["table", "grid", *(["--best"] if best else [])])
    outcome(code, text)
    assert files_in(folder) - before <= {Path("grid/table.md")}
    assert (code == 0) == (root / "table.md").is_file()


# -- compare ------------------------------------------------------------------------------------

# mostly well-formed evaluations, so that enough calls get to the statistics
good_evals = st.fixed_dictionaries(
    {"step": st.just(10), "infom": st.floats(0, 1), "psnr": st.floats(10, 40)}, optional={"infoe": st.floats(0, 1)}
).map(lambda d: json.dumps(d).encode())


@settings(max_examples=60)
@given(
    seeds=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    datasets=st.tuples(st.sampled_from(["shapes", "small/shapes"]), st.sampled_from(["sprites", "shapes"])),
    evals=st.lists(good_evals, min_size=24, max_size=24),
    broken=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["shapes", "sprites"]), st.integers(0, 2), eval_files),
        max_size=2,
    ),
    models=st.tuples(st.sampled_from([*often("qlae", 4), "vae"]), st.sampled_from(["qlae", "ae"])),
    metrics=st.lists(st.sampled_from([*often("infom"), *often("psnr"), "infoe", "nosuch"]), min_size=1, max_size=3),
    bonferroni=st.booleans(),
)
def test_compare_of_any_eval_files_is_a_table_or_one_line(
    tmp_path_factory, seeds, datasets, evals, broken, models, metrics, bonferroni
):
    """Two result roots (side a: datasets[0] and sprites; side b: sprites and datasets[1]), their
    evaluations mostly well formed, some replaced by anything: a table of differences or one line."""
    folder = tmp_path_factory.mktemp("compare")
    files = iter(evals)
    for side, n, names in (("a", seeds[0], (datasets[0], "sprites")), ("b", seeds[1], ("sprites", datasets[1]))):
        for dataset in names:
            for model in ("qlae", "ae"):
                for seed in range(n):
                    run = folder / side / dataset / model / f"seed{seed}"
                    run.mkdir(parents=True, exist_ok=True)
                    (run / "eval.json").write_bytes(next(files))
    for side, dataset, seed, content in broken:
        run = folder / side / dataset / "qlae" / f"seed{seed}"
        if run.is_dir():
            (run / "eval.json").write_bytes(content)
    before = files_in(folder)
    out = io.StringIO()
    argv = ["compare", "--a", "a", models[0], "--b", "b", models[1], "--metrics", *metrics]
    code, text = run_in(folder, argv + ["--bonferroni"] * bonferroni, stdout=out)
    outcome(code, text)
    assert files_in(folder) == before  # compare writes only with --out
    if code == 0:
        rows = [line for line in out.getvalue().splitlines() if line.startswith("| ") and "---" not in line]
        # every cell a difference with its interval, or n/a (fewer than two seeds a side) with its counts
        cells = [line.count(" ± ") + line.count("n/a (seeds ") for line in rows[1:]]
        assert len(rows) >= 2 and all(n == len(set(metrics)) for n in cells)
        assert any(" ± " in line for line in rows[1:])  # nothing testable is one line, not a table
        assert ("n/a (seeds " in out.getvalue()) == ("n/a: fewer than two seeds" in out.getvalue())


# -- usage errors -------------------------------------------------------------------------------


def test_an_unknown_flag_and_a_bad_nested_value_are_one_line(tmp_path):
    """Issue 28 section 5: an unknown top-level flag and `data show --n 0` printed a whole usage block."""
    for argv in (["--bogus"], ["--bogus", "train"], ["train", "--bogus"], ["data", "show", "sprites", "--n", "0"]):
        code, err = run_in(tmp_path, argv)
        assert code == 2 and "usage:" not in err, err
    assert files_in(tmp_path) == set()
