"""A stack of training runs in one process (the entry point ``latentquant sweep --stack K`` starts).

    python -m latentquant.train.cli_stack [--strategy auto|vmap|loop] [--checkpoint-seconds S] \\
        --member --dataset sprites --model qlae --seed 0 --out runs/q0 \\
        --member --resume runs/q1 --steps 6000 ...

Each ``--member`` is followed by that run's ``latentquant train`` flags, read
exactly as ``latentquant train`` reads them (``cli_train.build_config``: a
config file, ``--resume DIR`` with its config.yaml, flags over them); the
members are then trained as one stack (``stacked.train_stack``), each into its
own run directory. A member given ``--resume`` continues from its checkpoint
(all resumed members must be at one step; new members only join a stack at
step 0).

Exit codes, as ``latentquant train``'s: 0 every member done, 1 a member stopped
on a non-finite loss (the others finished), 2 bad input (one line), 130
interrupted (every member checkpointed first).
"""

from __future__ import annotations

import argparse
import os
import sys

from latentquant.train import cli_train
from latentquant.train.loop import TrainingInterrupted
from latentquant.train.scores import score_line
from latentquant.train.stacked import STRATEGIES, train_stack
from latentquant.validation import UserError

MEMBER = "--member"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def split_members(argv: list[str]) -> tuple[list[str], list[list[str]]]:
    """``argv`` -> (the stack's own flags, each member's train flags)."""
    if MEMBER not in argv:
        raise UserError(f"a stack needs its members: {MEMBER} FLAGS... for each run")
    first = argv.index(MEMBER)
    members, current = [], None
    for token in argv[first:]:
        if token == MEMBER:
            current = []
            members.append(current)
        else:
            current.append(token)
    return argv[:first], members


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[argparse.Namespace]]:
    own, members = split_members(argv)
    parser = _Parser(prog="latentquant stack")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto", help="vmap (GPU), loop (CPU) or auto")
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=None,
        help="also checkpoint every member when this many seconds passed since the last checkpoint",
    )
    member_parser = _Parser(prog="latentquant stack --member")
    cli_train.add_arguments(member_parser)
    return parser.parse_args(own), [member_parser.parse_args(m) for m in members]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, members = parse(argv)
        configs = [cli_train.build_config(m) for m in members]
        results = train_stack(
            configs,
            resume=[bool(m.resume) for m in members],
            overwrite=any(m.overwrite for m in members),
            strategy=args.strategy,
            checkpoint_seconds=args.checkpoint_seconds,
        )
    except TrainingInterrupted as err:
        print(f"latentquant stack: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("latentquant stack: interrupted; checkpoints written so far are kept", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as err:  # UserError among them: one line
        if os.environ.get("LATENTQUANT_DEBUG"):
            raise
        print(f"latentquant stack: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    code = 0
    for config, result in zip(configs, results):
        if isinstance(result, Exception):
            code = 1
            print(f"{config.out}: stopped: {result}")
        else:
            print(f"{config.out}: step {result['step']}: {score_line(result)}")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
