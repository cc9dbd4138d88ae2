"""``latentquant evaluate DIR``: recompute a run's eval.json, figures and report from its checkpoint.

latentquant evaluate runs/q                       # the newest readable checkpoint, the run's settings
latentquant evaluate runs/q --eval-samples 20000 --dci-model gbt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from latentquant.train.checkpoint import load_latest, load_model_weights, model_state, read_checkpoint
from latentquant.train.config import resolve
from latentquant.train.distributed import resolve_device
from latentquant.train.evaluate import evaluate_run
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


def evaluate_dir(run_dir: str | Path, checkpoint: str | Path | None = None, **overrides) -> dict:
    """Rebuild the run's model from its config and checkpoint and evaluate it (writes files).

    The checkpoint must be this run's (``RunDir.check_checkpoint``, the rule of
    ``--resume`` too): written by this run, under its config.yaml, or the
    scores would be filed under another run's name. Without ``checkpoint``, the
    newest readable one (an unreadable newer file is skipped, and named)."""
    run = RunDir(run_dir)
    with run.acquire(new=False, flag="DIR"):
        saved = run.read_config()
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
        cfg = saved.replace(out=str(run.path), **{k: v for k, v in overrides.items() if v is not None})
        resolved = resolve(cfg)
        cfg, model = resolved.config, resolved.model
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = resolve_device(cfg.device)
        load_model_weights(model, model_state(tensors))
        del tensors
        model.to(device)
        scores, _ = evaluate_run(model, resolved.dataset, cfg, int(doc["step"]), device, run)
        return scores


def run(args: argparse.Namespace) -> int:
    scores = evaluate_dir(
        args.run_dir, args.checkpoint, eval_samples=args.eval_samples, dci_model=args.dci_model, device=args.device
    )
    for key in (*SCORE_KEYS, "step"):
        print(f"{key:>6}  {format_score(scores.get(key), 4)}")
    print(f"wrote {Path(args.run_dir) / 'eval.json'}, figures/ and report.md")
    return 0
