"""``latentquant demo``: a short tour of the LatentQuantize layer.

Replaced by a real training run once the training command exists.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run(args) -> int:
    import torch

    from latentquant import LatentQuantize

    torch.manual_seed(args.seed)
    lq = LatentQuantize(levels=[10] * 12, dim=64)
    x = torch.randn(8, 64)
    out = lq(x)
    print(lq)
    print(f"codebook size: {lq.codebook_size:,} codes, none of them allocated")
    print(f"input {tuple(x.shape)} -> quantized {tuple(out.quantized.shape)}, "
          f"indices {tuple(out.indices.shape)} {out.indices.dtype}, loss {out.loss.item():.4f}")
    return 0
