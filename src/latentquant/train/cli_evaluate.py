"""``latentquant evaluate DIR``: recompute a run's eval.json, figures and report from its checkpoint.

    latentquant evaluate runs/q                       # the newest checkpoint, the run's settings
    latentquant evaluate runs/q --eval-samples 20000 --dci-model gbt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="a run directory written by latentquant train")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="a checkpoint file (default: the newest in DIR/checkpoints)")
    parser.add_argument("--eval-samples", type=int, default=None, help="held-out images (default: the run's)")
    parser.add_argument("--dci-model", default=None, help="DCI classifier (default: the run's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, mps (default: the run's)")

    def error(message: str):
        print(f"latentquant evaluate: error: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = error


def evaluate_dir(run_dir: str | Path, checkpoint: str | Path | None = None, **overrides) -> dict:
    """Rebuild the run's model from its config and checkpoint and evaluate it (writes files)."""
    import torch

    from latentquant.data import get_dataset
    from latentquant.models import DataInfo, build_model
    from latentquant.train.checkpoint import latest_checkpoint, load_model_state, load_model_weights
    from latentquant.train.config import load_config
    from latentquant.train.loop import evaluate_run, resolve_device

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"no config.yaml in {run_dir}: not a run directory")
    cfg = load_config(run_dir / "config.yaml")
    cfg = cfg.replace(out=str(run_dir), **{k: v for k, v in overrides.items() if v is not None})
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir / "checkpoints")
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}" if path is None
                                else f"checkpoint not found: {path}")
    dataset = get_dataset(cfg.dataset, root=cfg.data_root, path=cfg.data_path)
    cfg = cfg.resolve(dataset.num_factors)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = DataInfo(cfg.dataset, dataset.num_channels, dataset.num_factors, len(dataset))
    state, doc = load_model_state(path)
    model = build_model(cfg.model, cfg.arch, info, **cfg.model_kwargs())
    load_model_weights(model, state)
    model.to(device)
    return evaluate_run(model, dataset, cfg, int(doc["step"]), device)


def run(args: argparse.Namespace) -> int:
    scores = evaluate_dir(args.run_dir, args.checkpoint, eval_samples=args.eval_samples,
                          dci_model=args.dci_model, device=args.device)
    for key in ("infom", "infoe", "infoc", "dci_d", "dci_c", "dci_i", "mig", "psnr", "step"):
        value = scores.get(key)
        print(f"{key:>6}  {value:.4f}" if isinstance(value, float) else f"{key:>6}  {value}")
    print(f"wrote {Path(args.run_dir) / 'eval.json'}, figures/ and report.md")
    return 0
