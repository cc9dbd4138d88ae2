"""The checks every layer shares, and the one exception rule.

The rule:

- Library layers (``data``, ``models``, ``metrics``, ``quantize``) raise
  ``ValueError`` for a bad value and ``TypeError`` for an object of the wrong
  kind, as scikit-learn does; the message names the input and what was
  expected, and shows what was found: ``"batch_size must be an integer >= 1,
  got 0"``.
- :class:`UserError` (a ``ValueError``) is raised only where command-line code
  turns a user's input into calls (the subcommand modules, the training
  config and run folder they resolve).
- ``latentquant.cli.main`` prints ``ValueError``, ``TypeError`` (so
  ``UserError`` too), ``OSError`` and ``MissingExtra`` as one line with exit
  code 2; ``LATENTQUANT_DEBUG=1`` shows their traceback. Anything else is a
  bug and shows its traceback.

The primitives below are the only check helpers in the package: every module
calls these rather than writing its own ``isinstance``/range test. Each returns
the checked value (converted where said), so a check reads as an assignment:
``n = check_int("n", n, 1)``.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "UserError",
    "arg_type",
    "check_choice",
    "check_flag",
    "check_fraction",
    "check_instance",
    "check_int",
    "check_number",
]


class UserError(ValueError):
    """Bad command-line input, named with what was expected: shown to the user as one line."""


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``int(value)`` if it is an integer (Python or NumPy, not a bool) in ``[low, high]``; ValueError otherwise."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integral or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high:,}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float = 0.0, *, low_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number (Python or NumPy, not a bool) >= ``low`` (> with
    ``low_open``); ValueError otherwise."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
    )
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low:g}, got {value!r}")
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """``float(value)`` if it is a real number (not a bool) strictly between 0 and 1; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; ValueError naming them otherwise."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``bool(value)`` if it is True or False (NumPy's bool too); TypeError otherwise (1 and "yes" are not flags)."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not (isinstance(value, bool) or numpy_bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_instance(name: str, value: Any, kind: type | tuple[type, ...], expected: str | None = None) -> Any:
    """``value`` if it is an instance of ``kind``; TypeError naming ``expected`` (default: the type names) otherwise."""
    if not isinstance(value, kind):
        if expected is None:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            expected = " or ".join(f"{k.__module__}.{k.__qualname__}".removeprefix("builtins.") for k in kinds)
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    return value


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
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse
