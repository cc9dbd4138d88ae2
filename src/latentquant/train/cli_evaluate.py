"""``latentquant evaluate DIR``: recompute a run's eval.json, figures and report from its checkpoint.

latentquant evaluate runs/q                       # the newest checkpoint, the run's settings
latentquant evaluate runs/q --eval-samples 20000 --dci-model gbt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentquant.validation import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="a run directory written by latentquant train")
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="a checkpoint of this run (default: the newest in DIR/checkpoints)",
    )
    parser.add_argument("--eval-samples", type=int, default=None, help="evaluation images (default: the run's)")
    parser.add_argument("--dci-model", default=None, help="DCI classifier (default: the run's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, mps (default: the run's)")


def evaluate_dir(run_dir: str | Path, checkpoint: str | Path | None = None, **overrides) -> dict:
    """Rebuild the run's model from its config and checkpoint and evaluate it (writes files).

    A checkpoint given explicitly must have been written by this run: its own
    recorded config must match the run's (the step aside), or the scores would
    be filed under another model's name."""
    import torch

    from latentquant.data import get_dataset
    from latentquant.models import DataInfo, build_model
    from latentquant.train.checkpoint import load_model_state, load_model_weights
    from latentquant.train.config import RUNTIME_FIELDS, TrainConfig, resolve
    from latentquant.train.evaluate import evaluate_run
    from latentquant.train.loop import resolve_device
    from latentquant.train.rundir import RunDir

    run = RunDir(run_dir)
    with run.acquire(new=False, flag="DIR"):
        saved = run.read_config()
        path = Path(checkpoint) if checkpoint else run.latest_checkpoint()
        if path is None or not path.is_file():
            raise UserError(f"no checkpoint in {run.checkpoints}" if path is None else f"checkpoint not found: {path}")
        state, doc = load_model_state(path)
        recorded = TrainConfig.from_dict(doc.get("config") or {}, source=f"{path} (its config)")
        changed = recorded.differences(saved, ignore=RUNTIME_FIELDS + ("steps",))
        if changed:
            shown = ", ".join(f"{k} {a!r} (the run has {b!r})" for k, (a, b) in changed.items())
            raise UserError(f"{path} was written by another run: {shown}")
        cfg = saved.replace(out=str(run.path), **{k: v for k, v in overrides.items() if v is not None})
        dataset = get_dataset(cfg.dataset, root=cfg.data_root, path=cfg.data_path)
        info = DataInfo(cfg.dataset, dataset.num_channels, dataset.num_factors, len(dataset))
        cfg = resolve(cfg, info)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = resolve_device(cfg.device)
        model = build_model(cfg.model, cfg.arch, info, **cfg.model_kwargs())
        load_model_weights(model, state)
        model.to(device)
        return evaluate_run(model, dataset, cfg, int(doc["step"]), device, run)


def run(args: argparse.Namespace) -> int:
    from latentquant.train.evaluate import SCORE_KEYS

    scores = evaluate_dir(
        args.run_dir, args.checkpoint, eval_samples=args.eval_samples, dci_model=args.dci_model, device=args.device
    )
    for key in (*SCORE_KEYS, "step"):
        value = scores.get(key)
        print(f"{key:>6}  {value:.4f}" if isinstance(value, float) else f"{key:>6}  {value}")
    print(f"wrote {Path(args.run_dir) / 'eval.json'}, figures/ and report.md")
    return 0
