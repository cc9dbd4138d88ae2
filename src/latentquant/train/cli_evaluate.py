"""``latentquant evaluate DIR``: recompute a run's eval.json, figures and report from its checkpoint.

latentquant evaluate runs/q                       # the newest readable checkpoint, the run's settings
latentquant evaluate runs/q --eval-samples 20000 --dci-model gbt
latentquant evaluate runs/q --initial             # add the step-0 evaluation to evals.jsonl

``--initial`` scores the run's model as it was before its first step: rebuilt
from config.yaml right after ``torch.manual_seed(seed)``, as ``train`` built it
(``config.resolve``). The loop evaluates at step 0 itself when it evaluates at
all; this fills that record in for runs trained before it did (or with
``--eval-every 0``). It writes only that line of evals.jsonl (a step-0 record
already there is replaced), never eval.json, figures or the report, which
belong to the run's last evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from latentquant.train.checkpoint import load_latest, load_model_weights, model_state, read_checkpoint
from latentquant.train.config import Resolved, resolve
from latentquant.train.distributed import resolve_device
from latentquant.train.evaluate import evaluate_run, own_stream, score_run
from latentquant.train.rundir import RunDir
from latentquant.train.scores import SCORE_KEYS, format_score
from latentquant.validation import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="a run directory written by latentquant train")
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="a checkpoint of this run (default: the newest readable one in DIR/checkpoints)",
    )
    parser.add_argument("--eval-samples", type=int, default=None, help="evaluation images (default: the run's)")
    parser.add_argument("--dci-model", default=None, help="DCI classifier (default: the run's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, mps (default: the run's)")
    parser.add_argument(
        "--initial",
        action="store_true",
        help="evaluate the model at its seeded initialization (step 0) and add that record to evals.jsonl only",
    )


def evaluate_dir(run_dir: str | Path, checkpoint: str | Path | None = None, **overrides) -> dict:
    """Rebuild the run's model from its config and checkpoint and evaluate it (writes files).

    The checkpoint must be this run's (``RunDir.check_checkpoint``, the rule of
    ``--resume`` too): written by this run, under its config.yaml, or the
    scores would be filed under another run's name. Without ``checkpoint``, the
    newest readable one (an unreadable newer file is skipped, and named)."""
    run = RunDir(run_dir)
    with run.acquire(new=False, flag="DIR"):
        if checkpoint is None:
            found = load_latest(run.checkpoints)
            if found is None:
                raise UserError(f"no checkpoint in {run.checkpoints}")
            path, tensors, doc = found
        else:
            path = Path(checkpoint)
            if not path.is_file():
                raise UserError(f"checkpoint not found: {path}")
            tensors, doc = read_checkpoint(path)
        run.check_checkpoint(path, doc)
        resolved, device = _rebuild(run, overrides)
        load_model_weights(resolved.model, model_state(tensors))
        del tensors
        resolved.model.to(device)
        scores, _ = evaluate_run(resolved.model, resolved.dataset, resolved.config, int(doc["step"]), device, run)
        return scores


def evaluate_initial(run_dir: str | Path, **overrides) -> dict:
    """Score the run's model at its seeded initialization and put that step-0 record into
    evals.jsonl (replacing one already there); eval.json, figures and report are left as they are."""
    run = RunDir(run_dir)
    with run.acquire(new=False, flag="DIR"):
        resolved, device = _rebuild(run, overrides)  # built right after torch.manual_seed(seed): step 0
        resolved.model.to(device)
        with own_stream(resolved.config.seed, device):
            scores, _ = score_run(resolved.model, resolved.dataset, resolved.config, 0, device)
        run.insert_eval(scores)
        return scores


def _rebuild(run: RunDir, overrides: dict) -> tuple[Resolved, torch.device]:
    """The run's config.yaml with ``overrides`` (those not None), resolved: its data and its
    model at initialization; and the device to evaluate on."""
    cfg = run.read_config().replace(out=str(run.path), **{k: v for k, v in overrides.items() if v is not None})
    resolved = resolve(cfg)
    if resolved.config.threads:
        torch.set_num_threads(resolved.config.threads)
    return resolved, resolve_device(resolved.config.device)


def run(args: argparse.Namespace) -> int:
    overrides = {"eval_samples": args.eval_samples, "dci_model": args.dci_model, "device": args.device}
    if args.initial and args.checkpoint is not None:
        raise UserError("--initial evaluates the model before training; it takes no --checkpoint")
    if args.initial:
        scores = evaluate_initial(args.run_dir, **overrides)
    else:
        scores = evaluate_dir(args.run_dir, args.checkpoint, **overrides)
    for key in (*SCORE_KEYS, "step"):
        print(f"{key:>6}  {format_score(scores.get(key), 4)}")
    if args.initial:
        print(f"wrote the step-0 record of {Path(args.run_dir) / 'evals.jsonl'}")
    else:
        print(f"wrote {Path(args.run_dir) / 'eval.json'}, figures/ and report.md")
    return 0
