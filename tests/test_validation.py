"""The shared check primitives (latentquant.validation) and the exception rule of ``cli.main``."""

import argparse
import math
import sys
import types
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentquant import cli
from latentquant._optional import MissingExtra
from latentquant.validation import (
    UserError,
    arg_type,
    check_choice,
    check_flag,
    check_fraction,
    check_instance,
    check_int,
    check_number,
)

ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3), st.lists(st.integers()))


@given(value=ANYTHING, low=st.integers(-5, 5), span=st.one_of(st.none(), st.integers(0, 10)))
def test_check_int_accepts_exactly_the_ints_in_range(value, low, span):
    high = None if span is None else low + span
    ok = type(value) is int and value >= low and (high is None or value <= high)
    if ok:
        assert check_int("n", value, low, high) == value
    else:
        with pytest.raises(ValueError, match=r"^n must be an integer (>=|in) .*, got ") as info:
            check_int("n", value, low, high)
        assert type(info.value) is ValueError  # a library error, not the CLI's UserError


@given(value=ANYTHING, low=st.floats(-2, 2), low_open=st.booleans())
def test_check_number_accepts_exactly_the_finite_numbers_above_low(value, low, low_open):
    number = type(value) in (int, float) and math.isfinite(value)
    ok = number and (value > low if low_open else value >= low)
    if ok:
        out = check_number("lr", value, low, low_open=low_open)
        assert type(out) is float and out == value
    else:
        with pytest.raises(ValueError, match=r"^lr must be a finite number >=? "):
            check_number("lr", value, low, low_open=low_open)


@given(value=ANYTHING)
def test_check_fraction_is_the_open_unit_interval(value):
    if type(value) in (int, float) and 0 < value < 1:
        assert check_fraction("f", value) == value
    else:
        with pytest.raises(ValueError, match=r"^f must be a number in \(0, 1\), got "):
            check_fraction("f", value)


def test_numpy_scalars_are_numbers_and_ints_are_converted():
    assert type(check_int("n", np.int32(3), 1)) is int and check_int("n", np.int64(3), 1) == 3
    assert type(check_number("lr", np.float32(0.5))) is float and check_fraction("f", np.float16(0.25)) == 0.25
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got "):
        check_int("n", np.bool_(True), 1)
    with pytest.raises(ValueError, match=r"^lr must be a finite number >= 0, got "):
        check_number("lr", np.float64("nan"))


def test_check_choice_and_flag_and_instance_name_the_input():
    assert check_choice("arch", "small", ("paper", "small")) == "small"
    with pytest.raises(ValueError, match=r"^unknown arch 'tiny'; valid choices: paper, small$"):
        check_choice("arch", "tiny", ("paper", "small"))
    assert check_flag("pad", np.bool_(True)) is True and check_flag("pad", False) is False
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match=r"^pad must be True or False, got "):
            check_flag("pad", bad)
    rng = np.random.default_rng(0)
    assert check_instance("rng", rng, np.random.Generator) is rng
    with pytest.raises(TypeError, match=r"^rng must be numpy\.random\._generator\.Generator, got int$"):
        check_instance("rng", 3, np.random.Generator)
    with pytest.raises(TypeError, match=r"^rng must be a numpy\.random\.Generator, got int$"):
        check_instance("rng", 3, np.random.Generator, "a numpy.random.Generator")


def test_arg_type_turns_any_check_failure_into_argparse_one_line():
    parse = arg_type(int, partial(check_int, "--n", low=1))
    assert parse("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--n must be an integer >= 1, got 0$"):
        parse("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected an integer, got 'x'$"):
        parse("x")
    flag = arg_type(str, partial(check_flag, "--on"))  # a TypeError is the user's mistake here too
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--on must be True or False"):
        flag("yes")


def _command(monkeypatch, exc: BaseException) -> None:
    """Register a subcommand ``boom`` whose run raises ``exc``."""

    def run(args):
        raise exc

    module = types.ModuleType("_boom_subcommand")
    module.add_arguments = lambda parser: None
    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "boom", (module.__name__, "raise an error"))


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("batch_size must be an integer >= 1, got 0\nsecond line"),
        TypeError("rng must be a numpy.random.Generator, got int"),
        UserError("--out is not a run folder"),
        MissingExtra("submit needs the submitit package: pip install 'latentquant[cluster]'"),
        FileNotFoundError(2, "No such file or directory", "x.npz"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_main_prints_input_errors_as_one_line_exit_2(monkeypatch, capsys, exc):
    monkeypatch.delenv("LATENTQUANT_DEBUG", raising=False)
    _command(monkeypatch, exc)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("latentquant: error: ") and str(exc).splitlines()[0] in err


def test_main_shows_the_traceback_of_a_bug_and_of_anything_under_debug(monkeypatch):
    monkeypatch.delenv("LATENTQUANT_DEBUG", raising=False)
    _command(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["boom"])
    monkeypatch.setenv("LATENTQUANT_DEBUG", "1")
    _command(monkeypatch, TypeError("shown in full"))
    with pytest.raises(TypeError, match="shown in full"):
        cli.main(["boom"])


@pytest.mark.parametrize("argv", [["--bogus"], ["--bogus", "train"], ["-x"], ["nosuch"], []])
def test_main_names_a_bad_top_level_argument_in_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "usage" not in err
    assert (argv[0] if argv else "COMMAND") in err


def test_metrics_check_their_options_with_the_shared_primitives():
    from latentquant.metrics import dci, infomec, mig, normalized_mutual_info

    rng = np.random.default_rng(0)
    sources = rng.integers(0, 3, size=(60, 2))
    latents = sources + rng.normal(0, 0.1, size=(60, 2))
    with pytest.raises(TypeError, match=r"^discrete_latents must be True or False, got 1$"):
        mig(sources, latents, discrete_latents=1)
    with pytest.raises(ValueError, match=r"^num_bins must be an integer >= 2, got (np.int64\()?1\)?$"):
        mig(sources, latents, discrete_latents=False, num_bins=np.int64(1))
    with pytest.raises(ValueError, match=r"^test_fraction must be a number in \(0, 1\), got True$"):
        dci(sources, latents, test_fraction=True)
    # one check of the estimator, whatever the latents (discrete latents used to skip it)
    for discrete in (False, True):
        with pytest.raises(ValueError, match=r"^unknown estimator 'kde'; valid choices: knn, histogram$"):
            normalized_mutual_info(sources, sources, discrete_latents=discrete, estimator="kde")
        with pytest.raises(ValueError, match=r"^unknown estimator 'kde'"):
            infomec(sources, sources, discrete_latents=discrete, estimator="kde", explicitness=False)
    # numpy ints and bools are accepted as they were
    assert np.isfinite(mig(sources, latents, discrete_latents=np.bool_(False), num_bins=np.int64(5)))
