"""The ``latentquant`` command line.

Each subcommand lives beside the code it drives and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires
them together, importing each lazily so ``latentquant --help`` stays fast.

Errors a user can fix (bad flag values, missing files, unknown names) are
printed as one line, ``latentquant: error: ...``, with exit code 2 and no
traceback. Set ``LATENTQUANT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("latentquant.demo", "run the main job: a short QLAE training run on built-in data"),
    "train": ("latentquant.train.cli_train", "train a model on a dataset"),
    "evaluate": ("latentquant.train.cli_evaluate", "recompute eval.json and figures of a run"),
    "sweep": ("latentquant.results.sweep", "run a grid of training runs"),
    "table": ("latentquant.results.table", "tabulate the results of a sweep"),
    "curves": ("latentquant.results.curves", "plot learning curves (scores against step) of runs or sweeps"),
    "metrics": ("latentquant.metrics.cli", "score latents against sources stored in an .npz file"),
    "data": ("latentquant.data.cli", "inspect datasets: info and sample grids"),
}


class CLIError(Exception):
    """An error the user can fix; shown as one line, exit code 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported and asked for its arguments
    (the others are listed by name and help alone, so startup stays fast)."""
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, OSError) as err:
        if os.environ.get("LATENTQUANT_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"latentquant: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
