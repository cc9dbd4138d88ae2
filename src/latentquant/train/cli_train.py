"""``latentquant train``: train a model on a dataset (see docs/training.md).

    latentquant train --dataset sprites --model qlae --arch small --steps 3000 --out runs/q
    latentquant train --resume runs/q --steps 6000          # continue, here to a later step
    latentquant train --config my.yaml --seed 3             # a YAML config, flags override it
    torchrun --nproc_per_node=2 -m latentquant train ...    # DistributedDataParallel

Every field of :class:`~latentquant.train.config.TrainConfig` is a flag
(``weight_decay`` -> ``--weight-decay``), with the field's help text.

Exit codes: 0 done, 1 stopped on a non-finite loss, 2 bad input (one line on
stderr), 130 interrupted (a checkpoint was written first).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import fields

import torch

from latentquant.train.config import MAX_BATCH, TrainConfig, load_config, parse_option
from latentquant.train.loop import TrainingDiverged, TrainingInterrupted, train
from latentquant.train.rundir import RunDir
from latentquant.train.scores import score_line
from latentquant.validation import UserError

_TYPES = {"int": int, "float": float, "str": str, "list[str]": str}
# what argparse takes for a negative number rather than a flag: "-1e-3", "-.5", "-inf" too (its
# own pattern, r"^-\d+$|^-\d*\.\d+$", reads "--lr -1e-3" as a flag -1e-3 and the value as missing),
# so that a negative value reaches the range check and its message
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)
OUT_OF_MEMORY = (MemoryError, torch.cuda.OutOfMemoryError)


def config_flags() -> dict[str, tuple[str, type | None, str]]:
    """``{'--weight-decay': ('weight_decay', float, help), ...}`` from the config's fields
    (``None`` type: an on/off flag; a ``list[str]`` field takes one or more values)."""
    flags = {}
    for f in fields(TrainConfig):
        if "help" in f.metadata:
            typ = None if f.type == "bool" else _TYPES[f.type.split(" ")[0]]
            flags["--" + f.name.replace("_", "-")] = (f.name, typ, f.metadata["help"])
    return flags


_LIST_FIELDS = {f.name for f in fields(TrainConfig) if f.type.startswith("list")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # a private attribute of argparse (3.9 to 3.13); no public way to widen its pattern
    parser._negative_number_matcher = NEGATIVE_NUMBER
    # every flag defaults to "not given", so that YAML values and published defaults
    # are only overridden by what the user typed
    for flag, (dest, typ, text) in config_flags().items():
        if typ is None:
            parser.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
        else:
            parser.add_argument(
                flag,
                dest=dest,
                type=typ,
                default=argparse.SUPPRESS,
                help=text,
                nargs="+" if dest in _LIST_FIELDS else None,
            )
    parser.add_argument(
        "--option",
        "-o",
        dest="option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model-specific hyperparameter, e.g. -o beta=4 (repeatable)",
    )
    parser.add_argument(
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE.yaml",
        help="load a config file (e.g. a run's config.yaml); flags override it",
    )
    parser.add_argument(
        "--resume",
        dest="resume",
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint (only a larger --steps, "
        "and how it runs: --device, --threads..., may change)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (deletes only the files a run writes)",
    )


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the parsed flags: defaults <- file (or resumed run) <- flags."""
    overrides = {dest: getattr(args, dest) for dest, *_ in config_flags().values() if hasattr(args, dest)}
    if args.resume and args.config_file:
        raise UserError("use either --resume DIR (its config.yaml) or --config FILE, not both")
    if args.resume:
        run = RunDir(args.resume)
        base = run.read_config()
        if "out" in overrides and RunDir(overrides["out"]).path.resolve() != run.path.resolve():
            raise UserError(f"--out {overrides['out']} differs from the resumed run {run.path}")
        overrides["out"] = str(run.path)
    elif args.config_file:
        base = load_config(args.config_file)
    else:
        base = TrainConfig()
    options = dict(base.options)
    options.update(parse_option(text) for text in args.option)
    if "model" in overrides and overrides["model"] != base.model and not args.option:
        options = {}  # options of another model do not carry over
    return base.override(**overrides, options=options)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    try:
        scores = train(config, resume=bool(args.resume), overwrite=args.overwrite)
    except OUT_OF_MEMORY:
        raise UserError(
            "out of memory; lower --batch-size (at most "
            f"{MAX_BATCH:,}), --eval-samples or --num-latents, or use a device with more memory"
        ) from None
    except TrainingDiverged as err:
        print(f"latentquant train: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"latentquant train: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one during the final evaluation
        print(
            "latentquant train: interrupted; checkpoints written so far are kept "
            f"(latentquant train --resume {config.out or 'DIR'})",
            file=sys.stderr,
        )
        return 130
    if scores is not None:
        print(f"step {scores['step']}: {score_line(scores)}")
    return 0
