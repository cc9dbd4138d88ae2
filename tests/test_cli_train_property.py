"""A property of ``latentquant train`` (issue 28 section 6): random flag values and random config
files either train (a tiny run) or exit 2 with exactly one line on stderr; never a traceback,
never a file touched outside the run folder, never a long wait.

The values are drawn from pools of valid and invalid entries for every flag and config key;
the valid sizes are tiny (at most 2 steps of 8 images, 16 evaluation images, the small
backbone), so that a call that trains stays around a second or two. 25 calls by default
(about 25 s); more for a change to the command line, e.g.

    LATENTQUANT_PROPERTY_EXAMPLES=300 .venv/bin/python -m pytest -q tests/test_cli_train_property.py
"""

import contextlib
import io
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from latentquant.cli import main

# valid values kept tiny; invalid ones of every kind: wrong type, out of range, unbounded
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)
POOLS = {
    "dataset": ["sprites", "shapes", "mpi3d", "nosuch", ""],
    "model": ["qlae", "ae", "vae", "tcvae", "bioae", "vqvae", "qlinfowgan", "nosuch"],
    "arch": ["small", "large"],
    "steps": [1, 2, 0, -1, 10**12, "2", "1e400"],
    "batch_size": [4, 8, 0, 10**9],
    "lr": [1e-3, "1e-3", -1e-3, 0, "nan", "inf"],
    "weight_decay": [0, 0.1, -1.0, "nan"],
    "weight_decay_timescale": [0.5, 0, -2],
    "clip": [0, 1.0, -1],
    "num_latents": [2, 6, 1, 0, 10**9],
    "values_per_latent": [2, 5, 1, 10**9],
    "options": [{}, {"beta": 2}, {"nosuch": 1}, {"quantization_weight": "abc"}, {"num_embeddings": 10**9}, 3],
    "eval_every": [0, 1, -1],
    "eval_samples": [10, 16, 5, 10**12],
    "dci_model": ["fast", "nosuch"],
    "log_every": [1, 0],
    "checkpoint_every": [1, 0, None],
    "keep_checkpoints": [1, 0],
    "seed": [0, 3, -1, 10**30],
    "device": ["cpu", "auto", "tpu", "cuda:x"],
    "compile": [False, "yes"],
    "precision": ["fp32", "auto", "fp8"],
    "data_root": [None, "nowhere", 5, [1, 2], "a\0b"],
    "data_path": [None, "nowhere", {"a": 1}],
    "prefetch": [1, 2, 0, 10**9],
    "threads": [1, 0, 10**9],
    "logger": [["none"], ["tensorboard"], "none", ["bogus"], []],
}
BASE = {"arch": "small", "steps": 1, "batch_size": 8, "eval_samples": 16, "threads": 1, "logger": ["none"]}
# keys whose valid values could make a call slow: drawn from their pools only, never from JUNK
POOL_ONLY = {*BASE, "num_latents", "values_per_latent", "prefetch", "options"}
# random text of a flag holds no digits: no valid number slips in bigger than the pools'
TEXT = st.text(alphabet="ab-.=:/\u00e9 ", max_size=4)
RAW_FILES = [b"seed: 0\nmodel: qlae\xff\n", b"steps: [1\n", b"- 1\n- 2\n", b"", b"{1: 2}\n", b"nosuch: 1\n"]


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@st.composite
def flag_values(draw):
    """Flags as a user types them: a pool value in text, or random text."""
    keys = draw(st.lists(st.sampled_from(sorted(POOLS)), unique=True, max_size=5))
    argv = []
    for key in keys:
        if key == "options":
            argv += ["-o", draw(st.sampled_from(["beta=2", "nosuch=1", "=", "quantization_weight=abc", "n_critic=0"]))]
        elif key == "compile":
            argv += [draw(st.sampled_from(["--no-compile", "--compile=1"]))]
        else:
            value = draw(st.one_of(st.sampled_from(POOLS[key]), TEXT))
            argv += [_flag(key), *map(str, value if isinstance(value, list) else [value])]
    return argv


@st.composite
def config_files(draw):
    """A config file: the tiny base settings with some keys given pool or junk values, or raw bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(RAW_FILES))
    values = dict(BASE)
    for key in draw(st.lists(st.sampled_from(sorted(POOLS)), unique=True, max_size=4)):
        pool = st.sampled_from(POOLS[key])
        values[key] = draw(pool if key in POOL_ONLY else st.one_of(pool, JUNK))
    return yaml.safe_dump(values).encode()


def _files(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents
    }


PROGRESS = re.compile(r"\d+/\d+ \[|step/s|s/step")
LIMIT_SECONDS = 90  # a call that trains takes a few seconds; one past this has run away


class RanAway(BaseException):
    """Raised by the alarm in a call past ``LIMIT_SECONDS`` (a BaseException: main cannot turn it into exit 2)."""


def _ran_away(signum, frame):
    raise RanAway(f"a call ran past {LIMIT_SECONDS} s")


@settings(
    max_examples=int(os.environ.get("LATENTQUANT_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(config=st.one_of(st.none(), config_files()), flags=flag_values(), overwrite=st.booleans())
def test_train_trains_or_exits_2_with_one_line(config, flags, overwrite):
    threads = __import__("torch").get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "run"
        (root / "mine.txt").write_text("a user's file beside the run")
        base = [f"{_flag(k)}={v[0] if isinstance(v, list) else v}" for k, v in BASE.items()]
        if config is None:
            argv = base
        else:
            (root / "c.yaml").write_bytes(config)
            # a raw file (empty, say) may be a valid config of defaults: 200,000 steps; flags keep it tiny
            argv = ["--config", str(root / "c.yaml"), *(base if config in RAW_FILES else [])]
        argv = ["train", *argv, *flags, *(["--overwrite"] if overwrite else []), "--out", str(out)]
        before = _files(root, out)
        err, start = io.StringIO(), time.perf_counter()
        cwd = os.getcwd()
        os.chdir(root)  # anything written relative to the working folder lands here, and is seen
        previous = signal.signal(signal.SIGALRM, _ran_away)
        signal.alarm(LIMIT_SECONDS)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as exit_:  # argparse's own errors
                    code = exit_.code
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(cwd)
            __import__("torch").set_num_threads(threads)
        seconds = time.perf_counter() - start
        event(f"exit code {code}")  # --hypothesis-show-statistics: how many calls trained
        text = err.getvalue()
        assert "Traceback" not in text, (argv, text)
        lines = [line for line in re.split(r"[\r\n]", text) if line.strip() and not PROGRESS.search(line)]
        if code == 2:
            assert len(lines) == 1, (argv, lines)
            assert lines[0].startswith("latentquant"), (argv, lines)
        else:
            assert code == 0, (argv, code, text[-2000:])
            assert (out / "eval.json").is_file()
        assert _files(root, out) == before, argv  # nothing outside the run folder was touched
        assert seconds < LIMIT_SECONDS, (argv, seconds)
