"""Does FactorQVAE leave its initialization on ``small``? (docs/training.md, "FactorQVAE on `small`")

For each seed, with the shared backbone as it is (``plain``) and with a layer norm after each
linear layer of the encoder's MLP (``norm``, Tripod's :func:`~latentquant.models.tripod.layer_normed`),
train FactorQVAE at its published settings (batch 512, lr 1e-3, the comparison's schedules:
``temperature_decay`` 1e-4, ``lr_period`` 10,000) and print, at step 0 and every 50 steps, on 512
held-out images:

- the model half's MSE and the assignments' KL to uniform at that step (log 64 = 4.159 when every
  assignment is one-hot, ``softmax(-d)`` saturated, and no gradient reaches the encoder);
- the largest ``|pre_z|`` and the fraction of ``pre_z`` more than 1 beyond the codebook's range;
- the number of codes each latent takes.

    python scripts/factorqvae_start_probe.py --dataset sprites --steps 200          # 6 runs
    python scripts/factorqvae_start_probe.py --dataset sprites --seeds 0 1 --steps 1000 --variants norm

A FactorQVAE step at batch 512 costs about 0.5 s of one core here: 200 steps about 2 minutes a run.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from latentquant.data import get_dataset
from latentquant.models import DataInfo, build_model
from latentquant.models.tripod import layer_normed


def build(info: DataInfo, seed: int, norm: bool):
    torch.manual_seed(seed)
    model = build_model(
        "factorqvae", "small", info, num_latents=2 * info.num_factors, temperature_decay=1e-4, lr_period=10_000
    )
    if norm:
        model.encoder.mlp = layer_normed(model.encoder.mlp)
    return model


def report(model, held_out: torch.Tensor, head: str, parts: dict[str, float]) -> None:
    model.eval()
    with torch.no_grad():
        pre = model.encoder(held_out)
    codes = model.distances(pre).argmin(-1)  # what model.encode reads, without a second encoder pass
    model.train()
    values = model.codebook.detach()
    outside = ((pre > values.max() + 1) | (pre < values.min() - 1)).float().mean()
    per_latent = [len(torch.unique(c)) for c in codes.T]
    step = f"mse {parts['mse']:.4f} kl {parts['kl']:.3f} " if parts else ""
    print(
        f"{head}: {step}max|pre_z| {float(pre.abs().max()):.1f} outside {float(outside):.2f} "
        f"codes per latent {per_latent}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sprites")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--variants", nargs="+", choices=("plain", "norm"), default=["plain", "norm"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = get_dataset(args.dataset)
    held_out = data.sample(512, np.random.default_rng(123))[0].float()
    info = DataInfo(data.name, data.num_channels, data.num_factors, len(data))
    for variant in args.variants:
        for seed in args.seeds:
            model = build(info, seed, variant == "norm")
            optimizers = model.configure_optimizers(1e-3, 0.0, 1.0)
            rng = np.random.default_rng(seed + 100)
            head = f"{args.dataset} seed {seed} {variant}"
            report(model, held_out, f"{head} step 0", {})
            for step in range(args.steps):
                parts = model.training_step(model, data.sample(512, rng)[0].float(), optimizers, step)
                if (step + 1) % 50 == 0:
                    report(model, held_out, f"{head} step {step + 1}", {k: float(v) for k, v in parts.items()})


if __name__ == "__main__":
    main()
