"""The ``latentquant`` command line.

Each subcommand lives beside the code it drives and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires
them together, importing each lazily so ``latentquant --help`` stays fast.

The exception rule (see :mod:`latentquant.validation`): library code raises
``ValueError`` or ``TypeError`` naming the input and what was expected;
command-line code raises :class:`~latentquant.validation.UserError` (a
``ValueError``) for input it turns into calls. :func:`main` prints all of
these, an ``OSError`` (a missing file, a full disk, a permission) and a
:class:`~latentquant._optional.MissingExtra` as one line,
``latentquant: error: ...``, with exit code 2 and no traceback; bad flag
values are argparse's one line, also exit 2. Anything else is a bug and shows
its traceback; set ``LATENTQUANT_DEBUG=1`` to see the traceback of the errors
above too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from latentquant._optional import MissingExtra
from latentquant.validation import UserError

# what main prints as one line, exit code 2 (UserError and MissingExtra are ValueErrors, named for the reader)
ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (UserError, MissingExtra, ValueError, TypeError, OSError)

# name -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("latentquant.demo", "run the main job: a short QLAE training run on built-in data"),
    "train": ("latentquant.train.cli_train", "train a model on a dataset"),
    "evaluate": ("latentquant.train.cli_evaluate", "recompute eval.json and figures of a run"),
    "sweep": ("latentquant.results.sweep", "run a grid of training runs"),
    "table": ("latentquant.results.table", "tabulate the results of a sweep"),
    "compare": ("latentquant.results.compare", "the difference of two models' scores over seeds, with intervals"),
    "curves": ("latentquant.results.curves", "plot learning curves (scores against step) of runs or sweeps"),
    "metrics": ("latentquant.metrics.cli", "score latents against sources stored in an .npz file"),
    "data": ("latentquant.data.cli", "inspect and fetch datasets: list, info, sample grids, fetch"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported and asked for its arguments
    (the others are listed by name and help alone, so startup stays fast)."""
    parser = _OneLineErrors(
        prog="latentquant",
        description="Disentanglement via latent quantization (Hsu et al., NeurIPS 2023).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


class _OneLineErrors(argparse.ArgumentParser):
    """argparse whose errors are one line, ``latentquant [COMMAND]: error: ...``, exit code 2 (no usage
    block); subparsers, a subcommand's own (``data show``) included, are made of the same class."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        # argparse would report the missing command first, not the flag that is wrong
        parser.error(
            f"unrecognized argument {argv[0]} before the command; expected a command "
            f"({', '.join(SUBCOMMANDS)}), e.g. latentquant train --help"
        )
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ONE_LINE_ERRORS as err:
        if os.environ.get("LATENTQUANT_DEBUG"):
            raise
        print(f"latentquant: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    """The error's first line; an OSError names its file ("[Errno 28] No space left on device: 'x'")."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
