"""Tests of latentquant.LatentQuantize.

The first block pins the behaviours that vector-quantize-pytorch 1.32's
LatentQuantize gets wrong (values never trained, losses in the wrong space,
the implicit codebook built eagerly, inexact flat indices, frozen values
missing from the state_dict); the rest covers layouts, indices, gradients,
dtypes, compile and input validation.

The fused kernel is checked against the layer's definition written plainly
in src (``latentquant.quantize.reference_forward``: per-latent argmin and
ordinary autograd ops) and against the argmin and the mixed radix written
here, rather than against itself.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from latentquant import LatentQuantize
from latentquant import _quantize_kernel as kernel
from latentquant.quantize import reference_forward

# ----------------------------------------------------------------------------
# plain references


def value_table(lq: LatentQuantize) -> list[torch.Tensor]:
    return [v for v in lq.values_per_latent]


def ref_assign(z: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
    """Per-latent argmin over |z - value|: z (..., d) -> slot indices (..., d)."""
    cols = [torch.argmin((z[..., i, None] - v).abs(), dim=-1) for i, v in enumerate(values)]
    return torch.stack(cols, dim=-1)


def ref_flat(digits: torch.Tensor, levels) -> torch.Tensor:
    """Mixed radix, first latent least significant, in exact int64."""
    flat = torch.zeros(digits.shape[:-1], dtype=torch.int64)
    basis = 1
    for i, level in enumerate(levels):
        flat += digits[..., i].long() * basis
        basis *= level
    return flat


def ref_forward(lq: LatentQuantize, x: torch.Tensor):
    """The layer's definition in src, ``reference_forward``, as (quantized,
    per-latent slots (..., c, d), quantization, commitment)."""
    (out, indices, _), (quant, commit) = reference_forward(lq, x)
    if lq.flat_indices:
        indices = lq.indices_to_level_indices(indices if lq.keep_num_codebooks_dim else indices.unsqueeze(-1))
    elif not lq.keep_num_codebooks_dim:
        indices = indices.unsqueeze(-2)
    return out, indices, quant, commit


def perturb_values(lq: LatentQuantize, seed: int = 0, shuffle: bool = True) -> None:
    """Jitter every latent's values and permute them, so they are unsorted."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in lq.values_per_latent:
            new = v + 0.3 * (torch.rand(v.shape, generator=g) - 0.5) / v.numel()
            if shuffle:
                new = new[torch.randperm(v.numel(), generator=g)]
            v.copy_(new)


def big_input_numel(levels) -> int:
    """A latent count above which the kernel leaves the small-input argmin
    search for the sorted-midpoint one."""
    return 2 * (kernel.SMALL_DISTANCES // max(levels) + 1)


# ----------------------------------------------------------------------------
# upstream bugs


def test_quantization_loss_trains_values_only():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 7, 4], dim=3).train()
    x = torch.randn(64, 3, requires_grad=True)
    (_, _, _), bd = lq(x, return_loss_breakdown=True)
    bd.quantization.backward()
    assert x.grad is None or torch.count_nonzero(x.grad) == 0
    grad = lq.values.grad
    for i, level in enumerate([5, 7, 4]):
        assert torch.count_nonzero(grad[i, :level]) > 0
        assert torch.count_nonzero(grad[i, level:]) == 0  # padding of the packed table


def test_commitment_loss_trains_input_only():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 7, 4], dim=3).train()
    x = torch.randn(64, 3, requires_grad=True)
    _, bd = lq(x, return_loss_breakdown=True)
    bd.commitment.backward()
    assert torch.count_nonzero(x.grad) > 0
    assert lq.values.grad is None or torch.count_nonzero(lq.values.grad) == 0


def test_quantized_output_is_straight_through_to_input_only():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[6] * 4, dim=4).train()
    x = torch.randn(32, 4, requires_grad=True)
    out = lq(x)
    g = torch.randn_like(out.quantized)
    out.quantized.backward(g)
    torch.testing.assert_close(x.grad, g, rtol=0, atol=0)
    assert lq.values.grad is None or torch.count_nonzero(lq.values.grad) == 0


def test_values_learn_towards_their_cells():
    """Gradient descent on the quantization loss moves each value to the mean
    of the inputs assigned to it (the loss is a per-cell squared error)."""
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[4, 4], dim=2, quantization_loss_weight=1.0, commitment_loss_weight=0.0)
    x = torch.rand(4096, 2) - 0.5
    before = torch.stack(value_table(lq)).detach().clone()
    # d loss / d v = -2 n_cell / (N d) (mean_cell - v): lr 1.5 keeps the step
    # factor 3 n_cell / N below 2 for every cell, so this is a damped Lloyd step
    opt = torch.optim.SGD(lq.parameters(), lr=1.5)
    for _ in range(40):
        opt.zero_grad()
        lq(x).loss.backward()
        opt.step()
    after = torch.stack(value_table(lq)).detach()
    assert not torch.allclose(before, after)
    digits = ref_assign(x, value_table(lq))
    for i in range(2):
        for k in range(4):
            cell = x[digits[:, i] == k, i]
            # at the fixed point every value is the mean of its cell
            assert abs(after[i, k] - cell.mean()) < 0.02


def test_losses_are_measured_after_project_in_and_before_project_out():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5] * 3, dim=16).train()
    x = torch.randn(10, 16)
    out, bd = lq(x, return_loss_breakdown=True)
    z = lq.project_in(x)
    q = lq.indices_to_codes(out.indices, project_out=False)
    expected = ((z - q) ** 2).mean()
    torch.testing.assert_close(bd.quantization, expected)
    torch.testing.assert_close(bd.commitment, expected)
    torch.testing.assert_close(out.loss, 0.1 * expected + 0.1 * expected)


def test_flat_indices_exact_int64_from_argmin_digits():
    torch.manual_seed(1)
    lq = LatentQuantize(levels=[6, 6, 6], dim=3).eval()
    x = torch.randn(100_000, 3) * 0.4
    out = lq(x)
    assert out.indices.dtype == torch.int64
    expected = ref_flat(ref_assign(x, value_table(lq)), [6, 6, 6])
    assert torch.equal(out.indices, expected)


def test_paper_sized_codebook_builds_without_materializing():
    lq = LatentQuantize(levels=[10] * 18, dim=64)
    assert lq.codebook_size == 10**18 and isinstance(lq.codebook_size, int)
    total = sum(t.numel() for t in lq.parameters()) + sum(t.numel() for t in lq.buffers())
    assert total < 64 * 18 * 2 + 64 + 18 + 18 * 10 * 4  # projections + tiny tables only
    x = torch.randn(16, 64)
    out = lq(x)
    assert out.indices.shape == (16,)
    assert int(out.indices.min()) >= 0
    # the flat index of forward equals the mixed radix of its own digits
    digits = lq.indices_to_level_indices(out.indices)
    z = lq.project_in(x)
    assert torch.equal(digits, ref_assign(z, value_table(lq)))


def test_sixty_four_latents_per_latent_indices():
    lq = LatentQuantize(levels=[16] * 64, flat_indices=False)
    assert lq.codebook_size == 16**64
    total = sum(t.numel() for t in lq.parameters()) + sum(t.numel() for t in lq.buffers())
    assert total < 64 * 16 * 4
    x = torch.randn(8, 64, requires_grad=True)
    out = lq.train()(x)
    assert out.indices.shape == (8, 64)
    out.loss.backward()
    assert x.grad is not None


def test_int64_overflow_is_refused_with_a_pointer_to_flat_indices_false():
    with pytest.raises(ValueError, match="flat_indices=False"):
        LatentQuantize(levels=[10] * 19)
    with pytest.raises(ValueError, match="flat_indices=False"):
        LatentQuantize(levels=[2] * 64)
    LatentQuantize(levels=[2] * 63)  # 2**63 codes: largest index 2**63 - 1 fits
    LatentQuantize(levels=[10] * 19, flat_indices=False)


def test_flat_index_extremes_at_int64_limit():
    lq = LatentQuantize(levels=[2] * 63).eval()
    with torch.no_grad():
        for v in lq.values_per_latent:
            v.copy_(torch.tensor([-1.0, 1.0]))
    top = lq(torch.ones(1, 63)).indices
    assert int(top) == 2**63 - 1
    digits = lq.indices_to_level_indices(top)
    assert torch.equal(digits, torch.ones(1, 63, dtype=torch.int64))


@pytest.mark.parametrize("optimize_values", [True, False])
def test_state_dict_round_trip(optimize_values):
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[3, 5, 8], dim=6, optimize_values=optimize_values)
    perturb_values(lq)
    sd = lq.state_dict()
    assert sd["values"].shape == (3, 8)
    assert ("values" in dict(lq.named_parameters())) == optimize_values
    fresh = LatentQuantize(levels=[3, 5, 8], dim=6, optimize_values=optimize_values)
    fresh.load_state_dict(sd)
    x = torch.randn(20, 6)
    a, b = lq.eval()(x), fresh.eval()(x)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.indices, b.indices)
    # per-latent entries, as a ParameterList-based layer saves them, load too
    legacy = {k: v for k, v in sd.items() if k != "values"}
    legacy.update({f"values_per_latent.{i}": v.detach().clone() for i, v in enumerate(lq.values_per_latent)})
    other = LatentQuantize(levels=[3, 5, 8], dim=6, optimize_values=optimize_values)
    other.load_state_dict(legacy)
    assert torch.equal(other.eval()(x).indices, a.indices)


@pytest.mark.parametrize("optimize_values", [True, False])
def test_values_follow_dtype_conversion(optimize_values):
    lq = LatentQuantize(levels=[3, 4], optimize_values=optimize_values).to(torch.float64)
    assert all(v.dtype == torch.float64 for v in lq.values_per_latent)
    out = lq(torch.randn(5, 2, dtype=torch.float64))
    assert out.quantized.dtype == torch.float64
    lq.float()
    assert all(v.dtype == torch.float32 for v in lq.values_per_latent)
    lq.double()
    assert all(v.dtype == torch.float64 for v in lq.values_per_latent)


def test_frozen_values_get_no_gradient_but_input_does():
    lq = LatentQuantize(levels=[5, 5], optimize_values=False).train()
    assert not any(v.requires_grad for v in lq.values_per_latent)
    x = torch.randn(30, 2, requires_grad=True)
    lq(x).loss.backward()
    assert torch.count_nonzero(x.grad) > 0


# ----------------------------------------------------------------------------
# construction


def test_initial_values_are_linspace_for_every_level():
    lq = LatentQuantize(levels=[2, 3, 4, 10])
    for v, level in zip(lq.values_per_latent, [2, 3, 4, 10]):
        torch.testing.assert_close(v.detach(), torch.linspace(-0.5, 0.5, level), rtol=0, atol=0)


def test_constructor_defaults_and_projections():
    lq = LatentQuantize(levels=[4] * 6)
    assert lq.dim == 6 and isinstance(lq.project_in, nn.Identity)
    lq = LatentQuantize(levels=4, codebook_dim=3, num_codebooks=2)
    assert lq.levels == (4, 4, 4) and lq.dim == 6 and lq.keep_num_codebooks_dim
    lq = LatentQuantize(levels=[4, 5], dim=10, projection_has_bias=False)
    assert isinstance(lq.project_in, nn.Linear) and lq.project_in.bias is None
    assert "codebook_size=20" in repr(lq)


def test_constructor_signature_matches_vector_quantize_pytorch():
    import inspect

    params = inspect.signature(LatentQuantize).parameters
    expected = dict(
        levels=inspect.Parameter.empty,
        dim=None,
        commitment_loss_weight=0.1,
        quantization_loss_weight=0.1,
        num_codebooks=1,
        codebook_dim=None,
        keep_num_codebooks_dim=None,
        optimize_values=True,
        in_place_codebook_optimizer=None,
        channel_first=None,
        projection_has_bias=True,
        flat_indices=True,
        shared_values=False,  # ours, after the peer's arguments
        track_usage=False,
    )
    assert list(params) == list(expected)
    assert {k: p.default for k, p in params.items()} == expected


def test_repr_stays_readable_for_many_latents():
    text = repr(LatentQuantize(levels=[16] * 64, flat_indices=False))
    assert "levels=[16] * 64" in text and "codebook_size=16**64" in text
    assert len(text) < 300
    text = repr(LatentQuantize(levels=[10] * 9 + [4] * 9, dim=20, channel_first=True))
    assert "levels=[10] * 9 + [4] * 9" in text and "codebook_size~2.62e+14" in text and "channel_first=True" in text
    assert "levels=[3, 5, 8]" in repr(LatentQuantize(levels=[3, 5, 8]))


def test_values_per_latent_is_a_live_sequence_of_views():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[3, 5, 4], dim=6)
    vpl = lq.values_per_latent
    assert len(vpl) == 3 and [v.shape for v in vpl] == [(3,), (5,), (4,)]
    assert torch.equal(vpl[-1], vpl[2]) and [v.shape for v in vpl[1:]] == [(5,), (4,)]
    held = vpl[1]
    opt = torch.optim.Adam(lq.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        lq.train()(torch.randn(40, 6)).loss.backward()
        opt.step()
    assert not torch.equal(held.detach(), torch.linspace(-0.5, 0.5, 5))
    assert torch.equal(held, lq.values[1, :5]) and torch.equal(lq.values_per_latent[1], held)
    with pytest.raises(IndexError):
        vpl[3]


# ----------------------------------------------------------------------------
# assignment, round trips, indices


@pytest.mark.parametrize("levels", [[2], [6], [7], [11], [2] * 3, [6] * 4, [7] * 2, [11] * 3, [3, 9, 2, 5], [11, 2, 6]])
@pytest.mark.parametrize("large", [False, True])
def test_round_trips_with_perturbed_unsorted_values(levels, large):
    torch.manual_seed(len(levels) * 100 + sum(levels))
    d = len(levels)
    lq = LatentQuantize(levels=levels).eval()
    perturb_values(lq, seed=sum(levels))
    n = big_input_numel(levels) // d + 1 if large else 37
    x = torch.randn(n, d) * 0.5
    out = lq(x)
    digits = ref_assign(x, value_table(lq))
    assert torch.equal(out.indices, ref_flat(digits, levels))
    assert torch.equal(lq.indices_to_codes(out.indices), out.quantized)
    assert torch.equal(lq.codes_to_indices(out.quantized), out.indices)
    assert torch.equal(lq.indices_to_level_indices(out.indices), digits)
    assert torch.equal(lq.level_indices_to_indices(digits), out.indices)
    # per-latent mode on the same values gives the digits
    lq.flat_indices = False
    out2 = lq(x)
    assert torch.equal(out2.indices, digits)
    assert torch.equal(lq.indices_to_codes(out2.indices), out.quantized)
    assert torch.equal(lq.codes_to_indices(out.quantized), digits)


def test_small_and_large_feature_maps_agree_with_reference():
    torch.manual_seed(3)
    levels = [8, 3, 8, 5]
    lq = LatentQuantize(levels=levels).eval()
    perturb_values(lq, seed=3)
    small = torch.randn(2, 4, 3, 3)  # argmin search
    side = int(math.sqrt(big_input_numel(levels) / 8)) + 1
    large = torch.randn(2, 4, side, side)  # midpoint count search
    many = torch.randn(big_input_numel(levels) // 36 + 1, 4, 3, 3)  # count, many short maps
    for x in (small, large, many):
        out = lq(x)
        z = x.movedim(1, -1)
        digits = ref_assign(z, value_table(lq))
        assert torch.equal(out.indices, ref_flat(digits, levels))
        expected_q = torch.stack([value_table(lq)[i][digits[..., i]] for i in range(4)], -1).movedim(-1, 1)
        assert torch.equal(out.quantized, expected_q)


def test_duplicate_and_extreme_values_still_pick_a_nearest_value():
    lq = LatentQuantize(levels=[4, 3]).eval()
    with torch.no_grad():
        lq.values_per_latent[0].copy_(torch.tensor([0.2, -0.3, 0.2, 0.9]))  # duplicate 0.2
        lq.values_per_latent[1].copy_(torch.tensor([1e4, -1e4, 0.0]))
    x = torch.tensor([[0.2, 0.0], [0.21, 6000.0], [-5.0, -1e9], [0.6, float("inf")], [0.5, float("-inf")]])
    out = lq(x)
    vals = value_table(lq)
    digits = lq.indices_to_level_indices(out.indices)
    for i in range(2):
        chosen = vals[i][digits[:, i]]
        best = (x[:, i, None] - vals[i]).abs().min(dim=-1).values
        assert torch.equal((x[:, i] - chosen).abs(), best)


# the CPU's look-up first (in training: the loss's sum of squares), or the marking a GPU always runs
@pytest.mark.parametrize("always", [False, True])
@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("large", [False, True])  # the argmin search, and the midpoint count
def test_nan_input_gives_nan_and_an_index_no_code_has(flat, large, always, monkeypatch):
    """Issue 28 section 2: a NaN never comes out as a finite, valid-looking value and code."""
    if large:
        monkeypatch.setattr(kernel, "SMALL_DISTANCES", 0)
    if always:
        monkeypatch.setattr(kernel, "_can_sync", lambda z: False)
    lq = LatentQuantize(levels=[4, 7, 3], flat_indices=flat).eval()
    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    out = lq(x)
    nan = torch.zeros(6, 3, dtype=torch.bool)
    nan[2, 1] = True
    assert torch.equal(out.quantized.isnan(), nan)  # only the NaN latent
    if flat:
        assert out.indices.tolist()[2] == -1 and bool((out.indices[[0, 1, 3, 4, 5]] >= 0).all())
    else:
        assert torch.equal(out.indices == -1, nan) and bool((out.indices[~nan] >= 0).all())
    with pytest.raises(ValueError, match=r"index -1 .*out of range.*-1 for a NaN input"):
        lq.indices_to_codes(out.indices)
    ok = [0, 1, 3, 4, 5]
    assert torch.equal(lq.indices_to_codes(out.indices[ok]), out.quantized[ok])
    assert torch.equal(lq.codes_to_indices(x), out.indices)  # the same rule
    # a codebook of 2**63 codes: 63 x 2**63 overflows int64, so the count search marks flat indices by a reduction
    huge = LatentQuantize(levels=[2] * 63, flat_indices=flat).eval()
    xh = torch.rand(3, 63) - 0.5
    xh[1, 5] = float("nan")
    huge_out = huge(xh)
    assert (huge_out.indices[1] == -1).any() and bool((huge_out.indices[[0, 2]] >= 0).all())
    assert torch.equal(huge_out.quantized.isnan().any(-1), torch.tensor([False, True, False]))
    # with projections: the position's every feature is NaN, the others untouched
    proj = LatentQuantize(levels=[4, 7, 3], dim=5, flat_indices=flat).eval()
    xp = torch.randn(4, 5)
    xp[1, 0] = float("nan")
    outp = proj(xp)
    assert bool(outp.quantized[1].isnan().all()) and bool(outp.quantized[[0, 2, 3]].isfinite().all())
    assert bool((outp.indices[1] == -1).all()) and bool((outp.indices[[0, 2, 3]] >= 0).all())
    # training does not hide it: the loss and the input's gradient there turn NaN; the NaN latent is
    # assigned no value, so the values' gradient is the one of the other positions
    x.requires_grad_(True)
    out = lq.train()(x)
    assert torch.isnan(out.loss) and torch.equal(out.quantized.isnan(), nan)
    out.loss.backward()
    assert torch.isnan(x.grad[2, 1]) and bool(x.grad[~nan].isfinite().all())
    expected = torch.zeros_like(lq.values)
    z, values = x.detach(), lq.values.detach()
    for p in range(6):
        for i, level in enumerate([4, 7, 3]):
            if not nan[p, i]:
                s = int((z[p, i] - values[i, :level]).abs().argmin())
                expected[i, s] -= 2 / z.numel() * 0.1 * (z[p, i] - values[i, s])
    torch.testing.assert_close(lq.values.grad, expected)


def test_infinite_input_gets_an_extreme_value_and_an_infinite_loss():
    lq = LatentQuantize(levels=[4, 5])
    for n in (3, big_input_numel([5]) // 2 + 1):
        x = torch.zeros(n, 2)
        x[0] = float("inf")
        x[1] = -float("inf")  # their sum is NaN: the small search then looks for NaN, finds none
        out = lq(x)
        assert bool(out.quantized.isfinite().all()) and math.isinf(float(out.loss.detach()))
        assert bool((out.indices >= 0).all())


def test_indices_to_codes_uses_current_learned_values():
    lq = LatentQuantize(levels=[5, 5]).eval()
    idx = torch.tensor([0, 7, 24])
    before = lq.indices_to_codes(idx)
    with torch.no_grad():
        lq.values_per_latent[0].mul_(2.0)
    after = lq.indices_to_codes(idx)
    torch.testing.assert_close(after[:, 0], before[:, 0] * 2)
    torch.testing.assert_close(after[:, 1], before[:, 1])


# ----------------------------------------------------------------------------
# layouts and codebooks


@pytest.mark.parametrize(
    "shape, channel_first, idx_shape",
    [
        ((7, 4), None, (7,)),
        ((3, 5, 4), None, (3, 5)),
        ((2, 4, 3, 5), None, (2, 3, 5)),
        ((2, 4, 2, 3, 5), None, (2, 2, 3, 5)),
        ((3, 4, 5), True, (3, 5)),
        ((2, 3, 5, 4), False, (2, 3, 5)),
    ],
)
@pytest.mark.parametrize("dim", [4, 9])
def test_layouts_match_channel_last_reference(shape, channel_first, idx_shape, dim):
    torch.manual_seed(0)
    shape = tuple(dim if s == 4 else s for s in shape)
    lq = LatentQuantize(levels=[5, 3, 6, 4], dim=dim, channel_first=channel_first).train()
    perturb_values(lq)
    x = torch.randn(shape, requires_grad=True)
    out, bd = lq(x, return_loss_breakdown=True)
    assert out.quantized.shape == x.shape and out.indices.shape == idx_shape
    ref_out, digits, quant, commit = ref_forward(lq, x)
    torch.testing.assert_close(out.quantized, ref_out, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.indices, ref_flat(digits[..., 0, :], [5, 3, 6, 4]))
    torch.testing.assert_close(bd.quantization, quant)
    torch.testing.assert_close(bd.commitment, commit)
    lq.eval()
    with torch.no_grad():
        ev = lq(x)
    assert torch.equal(lq.indices_to_codes(ev.indices), ev.quantized)
    assert torch.equal(ev.indices, out.indices)


@pytest.mark.parametrize("shape", [(6, 8), (2, 8, 4, 4), (2, 8, 9, 9)])
@pytest.mark.parametrize("flat", [True, False])
def test_num_codebooks_share_values_and_keep_their_dim(shape, flat):
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[4, 5, 3, 6], num_codebooks=2, flat_indices=flat).train()
    perturb_values(lq)
    x = torch.randn(shape, requires_grad=True)
    out = lq(x)
    cf = len(shape) >= 4
    lead = (shape[0],) + tuple(shape[2:]) if cf else shape[:-1]
    assert out.indices.shape == lead + ((2,) if flat else (2, 4))
    ref_out, digits, quant, commit = ref_forward(lq, x)
    expected = ref_flat(digits, [4, 5, 3, 6]) if flat else digits
    assert torch.equal(out.indices, expected)
    torch.testing.assert_close(out.loss, 0.1 * quant + 0.1 * commit)
    lq.eval()
    with torch.no_grad():
        ev = lq(x)
    assert torch.equal(lq.indices_to_codes(ev.indices), ev.quantized)


def test_num_codebooks_without_codebook_dim_is_refused():
    with pytest.raises(ValueError, match="keep_num_codebooks_dim"):
        LatentQuantize(levels=[4, 4], num_codebooks=2, keep_num_codebooks_dim=False)


@pytest.mark.parametrize(
    "shape, channel_first",
    [((9, 11), None), ((2, 700, 11), None), ((2, 11, 30, 30), None), ((2, 11, 5), True), ((2, 30, 30, 11), False)],
)
@pytest.mark.parametrize("flat", [True, False])
def test_indices_to_codes_equals_eval_output_with_projections_and_codebooks(shape, channel_first, flat):
    """Exact equality also when project_out runs: the decoded codes must reach
    it in the same memory layout as forward's quantized latents (a transposed
    operand changes the GEMM's rounding). Inputs cover both searches."""
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[4, 5, 3, 6], dim=11, num_codebooks=2, flat_indices=flat, channel_first=channel_first)
    perturb_values(lq)
    lq.eval()
    x = torch.randn(shape)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = lq(x.requires_grad_(grad))
        assert torch.equal(lq.indices_to_codes(out.indices), out.quantized.detach())
    cf = channel_first if channel_first is not None else x.ndim >= 4
    z = lq.indices_to_codes(out.indices, project_out=False)
    assert torch.equal(lq.codes_to_indices(z.movedim(1, -1) if cf else z), out.indices)


# ----------------------------------------------------------------------------
# gradients of the fused Function


@pytest.mark.parametrize("levels", [[4, 6, 3], [5] * 3])
@pytest.mark.parametrize("search", ["argmin", "count"])
def test_gradcheck_float64(levels, search, monkeypatch):
    torch.manual_seed(0)
    d = len(levels)
    lq = LatentQuantize(levels=levels).double()
    perturb_values(lq)
    table = lq._values_table().detach()
    if search == "count":
        monkeypatch.setattr(kernel, "SMALL_DISTANCES", 0)
    shape = (2, d, 7)
    x = torch.randn(shape, dtype=torch.float64) * 0.6

    def fn(z, t, quant_weight, commit_weight):
        options = kernel.Options(quant_weight, commit_weight, True, False, basis=lq._basis, last=lq._last)
        return kernel.QuantizeFn.apply(z, t, z.shape, options)[2]

    def commit_only(z):
        return fn(z, table, 0.0, 1.0)

    def quant_only(t):
        return fn(x, t, 1.0, 0.0)

    assert torch.autograd.gradcheck(commit_only, (x.clone().requires_grad_(),))
    # pads (+inf in unequal tables) get zero gradient; check the real entries
    mask = torch.isfinite(table)

    def quant_real(real):
        t = table.clone()
        t[mask] = real
        return quant_only(t)

    assert torch.autograd.gradcheck(quant_real, (table[mask].clone().requires_grad_(),))


@pytest.mark.parametrize("levels", [[5, 3, 8], [4] * 6])
@pytest.mark.parametrize("layout", ["rows", "planes", "cf-batched", "cf-planes"])
def test_gradients_match_plain_reference(levels, layout):
    torch.manual_seed(1)
    d = len(levels)
    lq = LatentQuantize(levels=levels, dim=d + 2, quantization_loss_weight=0.3, commitment_loss_weight=0.7)
    perturb_values(lq)
    lq = lq.double().train()  # float64: summation order may differ from the reference
    big = big_input_numel(levels) // d + 1
    shape = {
        "rows": (23, d + 2),
        "planes": (big, d + 2),
        "cf-batched": (2, d + 2, 8, big // 16 + 8),
        "cf-planes": (big // 4 + 1, d + 2, 2, 2),
    }[layout]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)

    out, bd = lq(x, return_loss_breakdown=True)
    total = (out.quantized * g).sum() + 3 * out.loss + 2 * bd.quantization - bd.commitment
    params = [x] + list(lq.parameters())
    ours = torch.autograd.grad(total, params)

    ref_out, _, quant, commit = ref_forward(lq, x)
    ref_loss = 0.3 * quant + 0.7 * commit
    ref_total = (ref_out * g).sum() + 3 * ref_loss + 2 * quant - commit
    theirs = torch.autograd.grad(ref_total, params, allow_unused=True)
    for a, b in zip(ours, theirs):
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_deterministic():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[8] * 6).train()
    x = torch.randn(4, 6, 32, 32, requires_grad=True)
    runs = []
    for _ in range(2):
        lq.zero_grad()
        x.grad = None
        out = lq(x)
        (out.quantized.square().mean() + out.loss).backward()
        runs.append((out.quantized, out.indices, out.loss, x.grad, lq.values.grad.clone()))
    a, b = runs
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert torch.equal(a[4], b[4])


# ----------------------------------------------------------------------------
# eval, sampling, dtypes, compile


def test_eval_loss_is_zero_without_grad_or_sync():
    lq = LatentQuantize(levels=[4, 4], dim=8).eval()
    out, bd = lq(torch.randn(3, 8), return_loss_breakdown=True)
    for t in (out.loss, bd.quantization, bd.commitment):
        assert t.shape == () and float(t.detach()) == 0.0 and t.device.type == "cpu"


def test_eval_keeps_straight_through_gradient_when_asked():
    lq = LatentQuantize(levels=[4, 4]).eval()
    x = torch.randn(5, 2, requires_grad=True)
    out = lq(x)
    out.quantized.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with torch.no_grad():
        assert torch.equal(lq(x).quantized, out.quantized)


@pytest.mark.parametrize(
    "shape", [(0, 7), (0, 3, 7), (2, 0, 7), (0, 7, 5, 5), (0, 7, 40, 40), (2, 7, 0, 3), (0, 7, 2, 3, 3)]
)
@pytest.mark.parametrize("train", [True, False])
def test_empty_input_gives_empty_outputs_and_zero_loss(shape, train):
    lq = LatentQuantize(levels=[3, 5, 4], dim=7).train(train)
    x = torch.randn(shape, requires_grad=True)
    out, bd = lq(x, return_loss_breakdown=True)
    cf = len(shape) >= 4
    lead = (shape[0],) + shape[2:] if cf else shape[:-1]
    assert out.quantized.shape == shape and out.indices.shape == lead
    for t in (out.loss, bd.quantization, bd.commitment):
        assert t.shape == () and float(t.detach()) == 0.0
    (out.loss + out.quantized.sum()).backward()
    assert x.grad.shape == shape
    assert lq.indices_to_codes(out.indices).shape == shape
    with torch.no_grad():
        assert float(lq(x).loss) == 0.0


def test_training_without_grad_still_reports_the_loss():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[4, 4]).train()
    x = torch.randn(50, 2)
    with torch.no_grad():
        out = lq(x)
    _, _, quant, commit = ref_forward(lq, x)
    torch.testing.assert_close(out.loss, 0.1 * quant + 0.1 * commit)


def test_sample_draws_each_latents_values_uniformly_and_is_differentiable():
    torch.manual_seed(0)
    levels = [2, 5, 3]
    lq = LatentQuantize(levels=levels, dim=7)
    perturb_values(lq)
    codes = lq.sample((6000,), project_out=False)
    assert codes.shape == (6000, 3)
    digits = lq.codes_to_indices(codes)
    per = lq.indices_to_level_indices(digits)
    for i, level in enumerate(levels):
        counts = torch.bincount(per[:, i], minlength=level).float()
        assert counts.min() > 0.8 * 6000 / level and counts.max() < 1.2 * 6000 / level
    out = lq.sample(4)
    assert out.shape == (4, 7)
    lq.sample((10, 2), project_out=False).sum().backward()
    assert float(lq.values.grad.sum()) == pytest.approx(20 * 3)


def test_autocast_bfloat16_quantizes_in_float32_and_returns_input_dtype():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 6, 7], dim=16).train()
    x = torch.randn(40, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, bd = lq(x, return_loss_breakdown=True)
        z = lq.project_in(x)
    assert z.dtype == torch.bfloat16
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32
    digits = ref_assign(z.float(), value_table(lq))
    assert torch.equal(out.indices, ref_flat(digits, [5, 6, 7]))
    q = torch.stack([value_table(lq)[i][digits[:, i]] for i in range(3)], -1)
    torch.testing.assert_close(bd.commitment, ((z.float() - q) ** 2).mean())
    # a bfloat16 module and input: quantized in float32, returned in bfloat16
    lqb = LatentQuantize(levels=[5, 6, 7], dim=16).bfloat16()
    xb = torch.randn(2, 16, 3, 3, dtype=torch.bfloat16)
    out = lqb(xb)
    assert out.quantized.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    zb = lqb.project_in(xb.movedim(1, -1)).float()
    assert torch.equal(out.indices, ref_flat(ref_assign(zb, [v.float() for v in lqb.values_per_latent]), [5, 6, 7]))
    plain = LatentQuantize(levels=[5, 6, 7])
    assert plain(torch.randn(4, 3, dtype=torch.bfloat16)).quantized.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "shape, eval_too", [((3, 5, 4, 4), True), ((2, 5, 64, 64), False)]
)  # argmin search; midpoint count
def test_compile_fullgraph_matches_eager(shape, eval_too):
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 3, 4], dim=5).train()
    perturb_values(lq)
    compiled = torch.compile(lq, fullgraph=True, backend="aot_eager")
    x = torch.randn(shape, requires_grad=True)
    for module in (compiled, lq):
        x.grad = None
        lq.zero_grad()
        out = module(x)
        (out.quantized.square().sum() + out.loss).backward()
        if module is compiled:
            got = (out.quantized.detach(), out.indices, x.grad.clone(), lq.values.grad.clone())
    torch.testing.assert_close(got[0], out.quantized.detach())
    assert torch.equal(got[1], out.indices)
    torch.testing.assert_close(got[2], x.grad)
    torch.testing.assert_close(got[3], lq.values.grad)
    if not eval_too:
        return
    # eval under no_grad: the other branch of forward, also one graph
    lq.eval()
    with torch.no_grad():
        ev, ev_ref = compiled(x), lq(x)
    assert torch.equal(ev.indices, ev_ref.indices) and float(ev.loss) == 0.0
    torch.testing.assert_close(ev.quantized, ev_ref.quantized)


def test_sample_compiles_with_dynamic_batch_shape():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 3, 4], dim=5)
    sample = torch.compile(
        lambda n: lq.sample((n, 2), project_out=False), fullgraph=True, backend="aot_eager", dynamic=True
    )
    for n in (3, 4):
        codes = sample(n)
        assert codes.shape == (n, 2, 3)
        # every entry is one of its latent's values
        assert torch.equal(lq.indices_to_codes(lq.codes_to_indices(codes), project_out=False), codes)


def test_demo_configuration():
    lq = LatentQuantize(levels=[10] * 12, dim=64)
    out = lq(torch.randn(8, 64))
    assert lq.codebook_size == 10**12
    assert out.quantized.shape == (8, 64) and out.indices.shape == (8,)
    assert out.loss.ndim == 0


def test_import_stays_light():
    code = (
        "import sys, latentquant; print('sklearn' in sys.modules, 'matplotlib' in sys.modules, latentquant.__version__)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy_sklearn, heavy_mpl, version = res.stdout.split()
    assert heavy_sklearn == "False" and heavy_mpl == "False" and version


# ----------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(levels=[4, 1]), ValueError, r"levels.*1"),
        (dict(levels=[4, 0]), ValueError, r"levels.*0"),
        (dict(levels=[4, 2.5]), TypeError, r"2\.5"),
        (dict(levels=["4"]), TypeError, r"'4'"),
        (dict(levels=[True, 3]), TypeError, r"True"),
        (dict(levels=[]), ValueError, r"levels"),
        (dict(levels=4), ValueError, r"codebook_dim"),
        (dict(levels=1, codebook_dim=3), ValueError, r"levels.*1"),
        (dict(levels=[4, 4, 4], codebook_dim=2), ValueError, r"codebook_dim=2.*3"),
        (dict(levels=[4], num_codebooks=0), ValueError, r"num_codebooks"),
        (dict(levels=[4], dim=0), ValueError, r"dim"),
        (dict(levels=[4], commitment_loss_weight=-1.0), ValueError, r"commitment_loss_weight"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        LatentQuantize(**kwargs)


def test_bad_forward_inputs():
    lq = LatentQuantize(levels=[4, 4, 4], dim=5)
    with pytest.raises(ValueError, match=r"expected 5 .*got 6"):
        lq(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"expected 5 .*got 3"):
        lq(torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match=r"torch.int64"):
        lq(torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"1-D|ndim|dimensions"):
        lq(torch.randn(5))
    with pytest.raises(TypeError, match=r"Tensor"):
        lq([[0.0] * 5])


def test_bad_indices():
    lq = LatentQuantize(levels=[4, 5, 3])
    with pytest.raises(ValueError, match=r"60"):
        lq.indices_to_codes(torch.tensor([0, 60]))
    with pytest.raises(ValueError, match=r"-1"):
        lq.indices_to_codes(torch.tensor([-1, 3]))
    with pytest.raises(TypeError, match=r"float"):
        lq.indices_to_codes(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected 3 .*got 2"):
        lq.codes_to_indices(torch.zeros(4, 2))
    per = LatentQuantize(levels=[4, 5, 3], flat_indices=False)
    with pytest.raises(ValueError, match=r"latent 1.*5"):
        per.indices_to_codes(torch.tensor([[0, 5, 0]]))
    with pytest.raises(ValueError, match=r"expected 3 .*got 2"):
        per.indices_to_codes(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"latent 2.*3"):
        lq.level_indices_to_indices(torch.tensor([[0, 0, 3]]))


@pytest.mark.parametrize("batch_shape", [2.5, -1, (2, -3), "4", (2, 1.0), torch.tensor([3])])
def test_bad_sample_shape(batch_shape):
    lq = LatentQuantize(levels=[4, 5, 3])
    with pytest.raises(TypeError, match=r"batch_shape.*" + re.escape(repr(batch_shape))):
        lq.sample(batch_shape)


def test_forward_and_backward_run_on_the_meta_device():
    """The meta device has no data, so any host synchronisation (``.item()``,
    ``int(t)``, data-dependent Python control flow) raises: forward in both
    modes, both searches and backward must not need one, and the losses live
    on the input's device."""
    for train in (True, False):
        for shape in [(4, 7), (3, 5, 7), (2, 7, 64, 64)]:
            lq = LatentQuantize(levels=[3, 5, 4], dim=7).train(train).to("meta")
            x = torch.empty(shape, device="meta", requires_grad=True)
            out, bd = lq(x, return_loss_breakdown=True)
            assert out.quantized.shape == shape and out.loss.device.type == "meta"
            assert bd.quantization.device.type == "meta" and out.indices.device.type == "meta"
            (out.loss + out.quantized.sum()).backward()
            assert x.grad.shape == shape


# ----------------------------------------------------------------------------
# second derivatives, state dicts of other levels, dependencies (issue 12.5)


@pytest.mark.parametrize("levels", [[4, 6, 3], [5] * 3])
@pytest.mark.parametrize("search", ["argmin", "count"])
def test_gradgradcheck_float64(levels, search, monkeypatch):
    """Double backward through the fused Function: the commitment term's
    second derivative in z, the quantization term's in the values, and the
    straight-through output's (zero) are all checked numerically."""
    if search == "count":
        monkeypatch.setattr(kernel, "SMALL_DISTANCES", 0)
    torch.manual_seed(0)
    lq = LatentQuantize(levels=levels).double()
    perturb_values(lq)
    table = lq._values_table().detach()
    mask = torch.isfinite(table)
    x = torch.randn(2, len(levels), 5, dtype=torch.float64) * 0.6
    g = torch.randn_like(x)

    def fn(z, real):
        t = table.clone()
        t[mask] = real
        options = kernel.Options(0.3, 0.7, True, True, basis=lq._basis, last=lq._last)
        q, _, loss, quant, commit = kernel.QuantizeFn.apply(z, t, z.shape, options)
        return (q * g).sum() + loss + 2 * quant - commit

    inputs = (x.clone().requires_grad_(), table[mask].clone().requires_grad_())
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_gradient_penalty_through_the_layer_matches_the_plain_reference():
    """torch.autograd.grad(..., create_graph=True) gives a gradient with a
    graph, and the penalty's gradient in the input and the projections equals
    the plain reference's. (In the values it differs on purpose: the reference's
    .detach() drops how the commitment gradient z - q moves with q; the
    values' second derivatives are checked by gradgradcheck above.)"""
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 7, 4], dim=6, quantization_loss_weight=0.4, commitment_loss_weight=0.9).double()
    perturb_values(lq)
    x = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    params = [x] + [p for p in lq.parameters() if p is not lq.values]

    def penalty_grads(forward):
        out, loss = forward(x)
        (gx,) = torch.autograd.grad((out.sin()).sum() + loss, x, create_graph=True)
        assert gx.grad_fn is not None
        return torch.autograd.grad((gx**2).sum(), params, allow_unused=True)

    ours = penalty_grads(lambda x: (lambda o: (o.quantized, o.loss))(lq.train()(x)))
    theirs = penalty_grads(lambda x: (lambda r: (r[0], 0.4 * r[2] + 0.9 * r[3]))(ref_forward(lq, x)))
    for a, b in zip(ours, theirs):
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert ours[0].abs().sum() > 0  # second-order terms are there, not silently zero


def test_state_dict_of_other_levels_is_refused():
    sd = LatentQuantize(levels=[3, 5, 8], dim=6).state_dict()
    assert sd["num_values"].tolist() == [3, 5, 8]
    for other in ([8, 5, 3], [8, 8, 8], [3, 8, 5]):  # the same (3, 8) table of values
        with pytest.raises(
            RuntimeError, match=r"num_values.*levels \[3, 5, 8\].*levels \[" + ", ".join(map(str, other))
        ):
            LatentQuantize(levels=other, dim=6).load_state_dict(sd)
    # per-latent entries of other lengths too
    legacy = {k: v for k, v in sd.items() if k not in ("values", "num_values")}
    legacy.update({f"values_per_latent.{i}": torch.zeros(n) for i, n in enumerate([3, 5, 8])})
    with pytest.raises(RuntimeError, match=r"lengths \[3, 5, 8\].*levels \[8, 5, 3\]"):
        LatentQuantize(levels=[8, 5, 3], dim=6).load_state_dict(legacy)


def test_state_dict_without_num_values_of_the_same_levels_still_loads():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[3, 5, 8], dim=6)
    perturb_values(lq)
    old = {k: v for k, v in lq.state_dict().items() if k != "num_values"}  # written before num_values existed
    fresh = LatentQuantize(levels=[3, 5, 8], dim=6)
    fresh.load_state_dict(old)  # strict
    assert torch.equal(fresh.values, lq.values) and fresh.num_values.tolist() == [3, 5, 8]
    # also nested in a model, under a prefix
    model, other = (
        nn.Sequential(nn.Linear(2, 6), lq),
        nn.Sequential(nn.Linear(2, 6), LatentQuantize(levels=[3, 5, 8], dim=6)),
    )
    other.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("num_values")})
    assert torch.equal(other[1].values, lq.values)


def test_layer_imports_only_torch_einops_numpy_and_the_standard_library():
    import ast
    from pathlib import Path

    root = Path(lqmod_file()).parent
    allowed = {"torch", "einops", "numpy", "latentquant"}
    for name in ("quantize.py", "_quantize_kernel.py"):
        tree = ast.parse((root / name).read_text())
        found = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        found |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        third_party = found - set(sys.stdlib_module_names) - {"__future__"}
        assert third_party <= allowed, (name, third_party)
    assert "einops" in (root / "quantize.py").read_text()


def lqmod_file() -> str:
    import latentquant.quantize

    return latentquant.quantize.__file__
