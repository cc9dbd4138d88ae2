"""``latentquant demo`` (``make demo``): the main job, small enough for a laptop CPU.

Trains QLAE on the built-in dSprites-like ``sprites`` with the ``small``
backbone for a few minutes, evaluates it (InfoMEC, DCI, MIG, PSNR) and
leaves a complete run directory (default ``runs/demo``): config.yaml,
metrics.jsonl, eval.json, checkpoints/, figures/ and report.md. It is an
ordinary ``latentquant train`` run, so ``latentquant train --resume runs/demo
--steps N`` continues it and ``latentquant evaluate runs/demo`` re-scores it.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

from latentquant.train.config import MAX_SEED, MAX_STEPS, TrainConfig, check_device
from latentquant.train.loop import train
from latentquant.train.scores import score_line
from latentquant.validation import arg_type, check_int

# The demo's settings; everything else is QLAE's published default
# (AdamW lr 1e-3, weight decay 0.1, clip 1; 10 latents x 10 values; 0.01 / 0.01).
DEMO = dict(
    dataset="sprites",
    model="qlae",
    arch="small",
    steps=2500,
    batch_size=32,
    eval_every=0,
    eval_samples=5000,
    log_every=50,
    checkpoint_every=1000,
)


def _threads() -> int | None:
    """One torch thread when the machine is already busy: OpenMP threads that wait on
    each other slow a step down several-fold when the cores are oversubscribed."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    return 1 if cores <= 4 and load >= cores - 0.5 else None


def add_arguments(parser) -> None:
    parser.add_argument(
        "--out",
        default="runs/demo",
        help="run directory (default runs/demo); a demo run already there is replaced, "
        "any other run or non-empty folder refused",
    )
    parser.add_argument(
        "--steps",
        type=arg_type(int, partial(check_int, "--steps", low=1, high=MAX_STEPS)),
        default=DEMO["steps"],
        help=f"training steps (default {DEMO['steps']})",
    )
    parser.add_argument(
        "--seed",
        type=arg_type(int, partial(check_int, "--seed", low=0, high=MAX_SEED)),
        default=0,
        help="random seed (default 0)",
    )
    parser.add_argument(
        "--device",
        type=arg_type(str, partial(check_device, "--device")),
        default="auto",
        help="auto, cpu, cuda (default auto)",
    )


def run(args) -> int:
    out = Path(args.out)
    threads = _threads() if args.device in ("auto", "cpu") else None
    config = TrainConfig(
        **{**DEMO, "steps": args.steps}, seed=args.seed, out=str(out), device=args.device, threads=threads
    )
    if threads:
        print(
            f"the machine is busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): "
            "training with 1 torch thread",
            flush=True,
        )
    print(
        f"latentquant demo: QLAE on sprites (small arch), {config.steps:,} steps of {config.batch_size} "
        f"images, then evaluation on {config.eval_samples:,} images -> {out}",
        flush=True,
    )
    start = time.time()
    # the demo starts afresh: a demo run already in --out is replaced (only the files it wrote), any other refused
    scores = train(config, overwrite=True, kind="demo")
    minutes = (time.time() - start) / 60
    print(f"\ndone in {minutes:.1f} min. Run directory: {out.resolve()}")
    print("  " + score_line(scores))
    figures = ",".join(sorted(p.stem for p in (out / "figures").glob("*.png")))
    print(f"  report: {out / 'report.md'}   figures: {out / 'figures'}/{{{figures}}}.png")
    sys.stdout.flush()
    return 0
