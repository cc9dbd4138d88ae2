"""LatentQuantize(x, mask=...) (issue 25 section 2): padded positions count for nothing.

A bool mask over the input's positions (True: the position counts) excludes
the others from both losses (means over the kept positions only) and from the
values' gradient; the output there is still quantized. The property test draws
masks against ``reference_forward`` as well.
"""

from __future__ import annotations

import copy

import pytest
import torch

from latentquant import LatentQuantize


def layer(**kwargs):
    torch.manual_seed(0)
    lq = LatentQuantize([5, 6, 7], quantization_loss_weight=0.3, commitment_loss_weight=0.7, **kwargs)
    with torch.no_grad():
        lq.values.add_(0.05 * torch.randn(lq.values.shape))
    return lq


@pytest.mark.parametrize("dim", [None, 5])
def test_masked_sequence_equals_the_kept_positions_alone(dim):
    """(b, n, d) with padding: the loss and every gradient are those of the kept rows alone."""
    lq = layer(dim=dim)
    twin = copy.deepcopy(lq)
    e = dim or 3
    x = torch.randn(4, 9, e, requires_grad=True)
    mask = torch.rand(4, 9, generator=torch.Generator().manual_seed(1)) < 0.6
    out, parts = lq(x, True, mask)
    kept = x.detach()[mask].clone().requires_grad_()
    ref, ref_parts = twin(kept, True)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(parts.quantization, ref_parts.quantization)
    torch.testing.assert_close(out.quantized[mask], ref.quantized)
    torch.testing.assert_close(out.indices[mask], ref.indices)
    # the output at padded positions is still quantized, as without a mask
    plain = lq(x)
    assert torch.equal(out.quantized, plain.quantized) and torch.equal(out.indices, plain.indices)
    upstream = torch.randn(x.shape)
    (out.quantized * upstream).sum().add(out.loss).backward()
    (ref.quantized * upstream[mask]).sum().add(ref.loss).backward()
    torch.testing.assert_close(lq.values.grad, twin.values.grad)
    torch.testing.assert_close(x.grad[mask], kept.grad)
    if dim is None:  # padded positions: the straight-through gradient only
        torch.testing.assert_close(x.grad[~mask], upstream[~mask])


def test_padding_holding_nan_does_not_reach_the_loss_or_the_values():
    lq = layer()
    x = torch.randn(2, 6, 3)
    x[1, 4:] = float("nan")  # padding filled with garbage
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    out = lq(x.requires_grad_(), mask=mask)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert bool(lq.values.grad.isfinite().all()) and bool(x.grad[mask].isfinite().all())


@pytest.mark.parametrize("num_codebooks", [1, 2])
def test_channel_first_feature_map_mask(num_codebooks):
    lq = layer(num_codebooks=num_codebooks)
    x = torch.randn(2, 3 * num_codebooks, 4, 5)
    mask = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(2)) < 0.5
    out, parts = lq(x, True, mask)
    rows = x.movedim(1, -1)[mask]  # (kept, c d) as a channel-last batch
    ref, ref_parts = copy.deepcopy(lq)(rows, True)
    torch.testing.assert_close(parts.commitment, ref_parts.commitment)
    torch.testing.assert_close(out.indices[mask], ref.indices)


def test_everything_masked_or_empty_gives_a_zero_loss():
    lq = layer()
    x = torch.randn(3, 3, requires_grad=True)
    out = lq(x, mask=torch.zeros(3, dtype=torch.bool))
    assert float(out.loss) == 0.0
    out.loss.backward()
    assert float(lq.values.grad.abs().sum()) == 0.0
    assert float(lq(torch.randn(0, 3), mask=torch.zeros(0, dtype=torch.bool)).loss) == 0.0


def test_in_place_optimizer_steps_on_the_kept_positions_only():
    def sgd(params):
        return torch.optim.SGD(params, lr=0.5)

    lq = layer(in_place_codebook_optimizer=sgd)
    twin = copy.deepcopy(lq)
    twin.in_place_codebook_optimizer = sgd([twin.values])
    x = torch.randn(20, 3)
    mask = torch.arange(20) % 3 != 0
    lq(x, mask=mask)
    twin(x[mask])
    torch.testing.assert_close(lq.values, twin.values)


@pytest.mark.parametrize(
    "mask, exc, pattern",
    [
        (torch.ones(4, 5), TypeError, r"mask must be a bool tensor.*float32"),
        ([True] * 4, TypeError, r"mask must be a bool tensor.*list"),
        (
            torch.ones(4, dtype=torch.bool),
            ValueError,
            r"mask must have the input's shape less its feature axis, \(4, 5\)",
        ),
    ],
)
def test_bad_masks(mask, exc, pattern):
    with pytest.raises(exc, match=pattern):
        layer()(torch.randn(4, 5, 3), mask=mask)
