"""How ``LatentQuantize`` uses its values (private): counts, perplexity, dead values.

The layer counts, per codebook and latent, how many positions each value was
assigned in a forward (masked positions and NaN latents count nowhere), as one
``index_add_`` of ones into a small (c, d, L) table. ``summarize`` turns counts
into the figures a tokenizer builder reads: per latent the perplexity exp(H)
of the assignment frequencies (L when all values are used alike, 1 when one
value takes everything) and the number of values never used, per codebook and
over all codebooks together.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

USAGE_BUFFERS = ("usage_counts", "last_usage_counts")  # the layer's buffers of counts, (c, d, L) int64


class Usage(NamedTuple):
    """Value usage; ``c`` codebooks, ``d`` latents, ``L`` = max(levels)."""

    counts: Tensor  # (c, d, L) int64: assignments of each latent's values (0 past its levels)
    perplexity: Tensor  # (c, d) float32: exp(entropy) of each latent's frequencies; 0 with no assignment
    dead: Tensor  # (c, d) int64: values of each latent never assigned
    perplexity_all: Tensor  # (d,): the same over all codebooks' assignments together
    dead_all: Tensor  # (d,)


def count(slots: Tensor, num_codebooks: int, width: int, mask: Tensor | None) -> Tensor:
    """slots (k, d, n) int64, k = (outer c), -1 for NaN; mask (k, 1, n) bool or
    None -> counts (c, d, width) int64."""
    k, d, n = slots.shape
    c = num_codebooks
    bins = width + 1  # the last bin takes NaN latents and masked positions, and is dropped
    s = slots.masked_fill(slots < 0, width)
    if mask is not None:
        s = s.masked_fill(~mask, width)
    codebook = torch.arange(c, device=slots.device).repeat(k // c).view(k, 1, 1)
    latent = torch.arange(d, device=slots.device).view(1, d, 1)
    at = ((codebook * d + latent) * bins + s).reshape(-1)
    out = torch.zeros(c * d * bins, dtype=torch.int64, device=slots.device)
    out.index_add_(0, at, torch.ones_like(at))
    return out.view(c, d, bins)[..., :width]


def summarize(counts: Tensor, num_values: Tensor) -> Usage:
    """counts (c, d, L) and the levels (d,) -> ``Usage``."""

    def figures(cnt: Tensor) -> tuple[Tensor, Tensor]:  # (..., d, L) -> perplexity, dead (..., d)
        total = cnt.sum(-1, keepdim=True)
        p = cnt.double() / total.clamp(min=1)
        entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
        perplexity = torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy)).float()
        real = torch.arange(cnt.shape[-1], device=cnt.device) < num_values.to(cnt.device).unsqueeze(-1)
        dead = ((cnt == 0) & real).sum(-1)
        return perplexity, dead

    perplexity, dead = figures(counts)
    perplexity_all, dead_all = figures(counts.sum(0))
    return Usage(counts, perplexity, dead, perplexity_all, dead_all)
