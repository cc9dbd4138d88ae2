"""The project's error type for input a user can fix, and the checks every layer shares.

``latentquant.cli`` prints a :class:`UserError` (and an ``OSError``: a missing
file, a full disk) as one line with exit code 2; anything else is a bug and
shows its traceback. ``UserError`` is a ``ValueError``, so code that catches
``ValueError`` keeps working.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["UserError", "arg_type", "check_choice", "check_fraction", "check_int", "check_number"]


class UserError(ValueError):
    """Bad input, named with what was expected: shown to the user as one line."""


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; UserError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high:,}"
        raise UserError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float = 0.0, *, low_open: bool = False) -> float:
    """``float(value)`` if it is a finite number >= ``low`` (> with ``low_open``); UserError otherwise."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
    )
    if not ok:
        raise UserError(f"{name} must be a finite number {'>' if low_open else '>='} {low:g}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; UserError naming them otherwise."""
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value


def check_fraction(name: str, value: Any) -> float:
    """``float(value)`` if it is a number strictly between 0 and 1; UserError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise UserError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def arg_type(convert: Callable[[str], Any], check: Callable[[Any], Any]) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text (``int``, ``float``), then ``check`` the value;
    either failing is argparse's one-line error, e.g. ``type=arg_type(int, partial(check_int, "--n", low=1))``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a{'n integer' if convert is int else ' number'}, got {text!r}"
            ) from None
        try:
            return check(value)
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse
