"""Does Tripod leave its initialization on a backbone? Three measurements on the built-in shapes
(docs/training.md, "Tripod on `small`"):

1. codes per latent at initialization, on one batch of 64 images, per backbone, with and without
   the layer norm in the encoder's MLP (``encoder_norm``), seeds 0 1 2;
2. on ``--arch`` (``small``), the gradient norm at initialization of the reconstruction alone and
   of the whole loss at the published lambda_nhp 1e-2 (the same batch and probes);
3. with ``--steps N``, N steps at the published lr 2e-4 and batch 64 for each lambda_nhp of
   ``--nhp`` (published 1e-2, and 0), printing every 50 steps the BCE on 512 held-out images and the
   codes per latent there.

    python scripts/tripod_start_probe.py                   # 1 and 2: seconds
    python scripts/tripod_start_probe.py --steps 300       # and 3: about 7 minutes of one core
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from latentquant.data import get_dataset
from latentquant.models import ARCHS, DataInfo, build_model


def codes_per_latent(model, x):
    with torch.no_grad():
        code = model.eval().encode(x).code
    model.train()
    return [len(torch.unique(c)) for c in code.T]


def gradient_norm(model, x, lambda_nhp):
    model.zero_grad()
    model.lambda_nhp = lambda_nhp
    torch.manual_seed(1)  # the same probes
    model(x).loss.backward()
    return float(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="small", choices=ARCHS)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--nhp", type=float, nargs="+", default=[1e-2, 0.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = get_dataset("shapes")
    info = DataInfo("shapes", 3, data.num_factors, len(data))
    x = data.sample(64, np.random.default_rng(0))[0].float()
    for arch in ARCHS:
        for norm in (True, False):
            spreads = []
            for seed in (0, 1, 2):
                torch.manual_seed(seed)
                spreads.append(codes_per_latent(build_model("tripod", arch, info, encoder_norm=norm), x))
            print(f"init codes per latent  {arch:8s} encoder_norm={norm!s:5s} " + "  ".join(map(str, spreads)))
    for norm in (True, False):
        torch.manual_seed(args.seed)
        model = build_model("tripod", args.arch, info, encoder_norm=norm)
        with torch.no_grad():
            pre = model.encoder(x)
        bce, nhp = gradient_norm(model, x, 0.0), gradient_norm(model, x, 1e-2)
        torch.manual_seed(1)
        penalty = float(model(x).parts["hessian_normalized"])
        print(
            f"init {args.arch} encoder_norm={norm}: pre-tanh std over images {float(pre.std(0).mean()):.4f} "
            f"(mean over latents); gradient norm, BCE alone {bce:.3g}, with lambda_nhp 1e-2 {nhp:.3g}; "
            f"normalized Hessian penalty {penalty:.3g}"
        )
    if not args.steps:
        return
    held_out = data.sample(512, np.random.default_rng(123))[0].float()
    mean_bce = F.binary_cross_entropy(held_out.mean(0, keepdim=True).expand_as(held_out), held_out)
    print(f"the held-out images' mean image: BCE {float(mean_bce):.4f}")
    for lambda_nhp in args.nhp:
        torch.manual_seed(args.seed)
        model = build_model("tripod", args.arch, info, lambda_nhp=lambda_nhp)
        opts = model.configure_optimizers(lr=2e-4, weight_decay=0.0)
        rng = np.random.default_rng(args.seed)
        for step in range(args.steps + 1):
            if step % 50 == 0:
                spread = codes_per_latent(model, held_out)
                with torch.no_grad():
                    recon = model.eval().decode(model.encode(held_out).z)
                model.train()
                bce = float(F.binary_cross_entropy_with_logits(recon, held_out))
                print(f"lambda_nhp={lambda_nhp:g} step {step:4d}: BCE {bce:.4f}, codes per latent {spread}", flush=True)
            if step < args.steps:
                model.training_step(model, data.sample(64, rng)[0].float(), opts, step)


if __name__ == "__main__":
    main()
