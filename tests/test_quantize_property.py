"""Differential property test: LatentQuantize against its plain definition.

hypothesis draws a layer and an input (levels, shared or per-latent values,
projections, codebooks, index kind, layout, batch size, strides, memory
format, the input's and the module's dtypes, any pair of float16, bfloat16,
float32 and float64, a position mask or none, train/eval, grad/no_grad,
perturbed values) and every
draw must give what ``latentquant.quantize.reference_forward`` gives: the
output (in the input's dtype), the indices, both losses and the gradients of
the input, the values and the projections.

Profiles (registered in ``tests/conftest.py``): ``ci``, the default, runs 200
fixed examples in a few seconds; ``--hypothesis-profile=thorough`` runs 5,000
random ones:

    .venv/bin/python -m pytest -q tests/test_quantize_property.py --hypothesis-profile=thorough

Device: set ``LATENTQUANT_TEST_DEVICE`` (e.g. ``cuda``; default ``cpu``) to
run the layer and the reference on another device:

    LATENTQUANT_TEST_DEVICE=cuda .venv/bin/python -m pytest -q tests/test_quantize_property.py

Tolerances. float64: 1e-12. float32: 1e-6 (rtol and atol); the layer and the
reference sum in different orders (GEMM layouts, scatter_add against index
gradients), which moves float32 results by a few 1e-8. A half dtype (input
or module, bfloat16 or float16): the projections may run in bfloat16 (8-bit
mantissa, one rounding = 2**-8 relative),
and a projection computed as a batched GEMM here and as F.linear in the
reference rounds differently, so outputs and gradients are compared to 2**-5
relative (four roundings) plus an absolute 2**-5 times their scale.

Ties. The definition is "the nearest value"; when two values are equally near
z up to rounding, which one is taken is not part of it (the layer's two
searches break such ties differently). Where the layer's choice differs from
the reference's argmin, the test checks that both are equally near within the
rounding of z, then evaluates the reference with the layer's choice there.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from latentquant import LatentQuantize
from latentquant import _quantize_kernel as kernel
from latentquant.quantize import reference_forward

DEVICE = torch.device(os.environ.get("LATENTQUANT_TEST_DEVICE", "cpu"))


# ----------------------------------------------------------------------------
# the definition is latentquant.quantize.reference_forward; two views of its terms


def as_digits(lq: LatentQuantize, indices: torch.Tensor) -> torch.Tensor:
    """Indices as forward returns them -> per-latent slots (..., c, d)."""
    if lq.flat_indices:
        return lq.indices_to_level_indices(indices if lq.keep_num_codebooks_dim else indices.unsqueeze(-1))
    return indices if lq.keep_num_codebooks_dim else indices.unsqueeze(-2)


def latents(lq: LatentQuantize, x: torch.Tensor, channel_first: bool) -> torch.Tensor:
    """z, projected and in the search's dtype, (..., c, d)."""
    xl = x.movedim(1, -1) if channel_first else x
    z = lq.project_in(xl.to(lq.project_in.weight.dtype) if lq.has_projections else xl)
    dtype = torch.float64 if torch.float64 in (z.dtype, lq.values.dtype) else torch.float32
    return z.to(dtype).unflatten(-1, (lq.num_codebooks, lq.codebook_dim))


# ----------------------------------------------------------------------------
# draws

LAYOUTS = {"bd": 0, "bnd": 1, "bdhw": 2, "bdthw": 3}  # number of position axes besides the batch


@st.composite
def cases(draw):
    d = draw(st.integers(1, 8))
    equal = draw(st.booleans())
    if equal:
        levels = [draw(st.integers(2, 16))] * d
    else:
        levels = draw(st.lists(st.integers(2, 16), min_size=d, max_size=d))
    shared = len(set(levels)) == 1 and draw(st.booleans())
    c = draw(st.integers(1, 3))
    keep = True if c > 1 else draw(st.booleans())
    projection = draw(st.booleans())
    dim = c * d
    if projection:  # any other size
        dim = draw(st.integers(1, 19))
        dim += dim >= c * d
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    forced = draw(st.sampled_from([None, True, False]))
    channel_first = (layout in ("bdhw", "bdthw")) if forced is None else forced
    batch = draw(st.sampled_from([0, 1, 1, 2, 3, 5]))
    positions = draw(st.lists(st.integers(1, 4), min_size=LAYOUTS[layout], max_size=LAYOUTS[layout]))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.bfloat16, torch.float16]))
    # the module's dtype (its values, and its projections, which the input is cast to): any
    module_dtype = draw(st.sampled_from([dtype, dtype, torch.float32, torch.float64, torch.bfloat16, torch.float16]))
    shape = [batch, dim, *positions] if channel_first else [batch, *positions, dim]
    strides = ["contiguous", "transposed", "sliced", "expanded"]
    if len(shape) in (4, 5) and channel_first:
        strides.append("channels_last")
    return dict(
        levels=levels,
        shared_values=shared,
        num_codebooks=c,
        keep_num_codebooks_dim=keep,
        dim=dim,
        channel_first=forced,
        resolved_channel_first=channel_first,
        flat_indices=draw(st.booleans()),
        shape=shape,
        dtype=dtype,
        module_dtype=module_dtype,
        strides=draw(st.sampled_from(strides)),
        training=draw(st.booleans()),
        grad=draw(st.booleans()),
        input_grad=draw(st.booleans()),
        breakdown=draw(st.booleans()),
        perturb=draw(st.booleans()),
        masked=draw(st.booleans()),
        scale=draw(st.sampled_from([0.3, 1.0, 3.0])),
        seed=draw(st.integers(0, 2**31 - 1)),
        # the kernel's midpoint-count search runs on large inputs only; force it on small ones too
        count_search=draw(st.booleans()),
        weights=(draw(st.sampled_from([0.0, 0.1, 0.7])), draw(st.sampled_from([0.0, 0.1, 1.3]))),
    )


def make_input(case, g: torch.Generator):
    """A leaf (what gradients are compared on) and the input, a view of it
    with the drawn strides."""
    shape, kind = list(case["shape"]), case["strides"]
    randn = lambda s: torch.randn(s, generator=g) * case["scale"]  # noqa: E731
    if kind == "transposed":
        leaf = randn(shape[:-2] + shape[-2:][::-1])
        view = lambda t: t.transpose(-1, -2)  # noqa: E731
    elif kind == "sliced":
        axis = int(torch.randint(len(shape), (), generator=g))
        leaf = randn(shape[:axis] + [2 * shape[axis] + 1] + shape[axis + 1 :])
        view = lambda t: t[(slice(None),) * axis + (slice(1, None, 2),)]  # noqa: E731
    elif kind == "expanded":
        leaf = randn([1] + shape[1:])
        view = lambda t: t.expand(shape)  # noqa: E731
    else:
        leaf = randn(shape)
        if kind == "channels_last":
            leaf = leaf.to(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
        view = lambda t: t  # noqa: E731
    leaf = leaf.to(DEVICE, case["dtype"])
    if kind == "channels_last":
        leaf = leaf.to(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    leaf.requires_grad_(case["input_grad"] and case["grad"])
    x = view(leaf)
    assert list(x.shape) == shape
    return leaf, x


def make_layer(case) -> LatentQuantize:
    torch.manual_seed(case["seed"])
    lq = LatentQuantize(
        levels=case["levels"],
        shared_values=case["shared_values"],
        dim=case["dim"],
        num_codebooks=case["num_codebooks"],
        keep_num_codebooks_dim=case["keep_num_codebooks_dim"],
        channel_first=case["channel_first"],
        flat_indices=case["flat_indices"],
        quantization_loss_weight=case["weights"][0],
        commitment_loss_weight=case["weights"][1],
    )
    if case["perturb"]:  # as after training: moved, unsorted
        with torch.no_grad():
            for v in lq.values_per_latent:
                v.add_(0.4 * (torch.rand(v.shape) - 0.5) / v.numel())
                v.copy_(v[torch.randperm(v.numel())])
    return lq.to(DEVICE, case["module_dtype"]).train(case["training"])


HALF = (torch.bfloat16, torch.float16)


def tolerances(case):
    if case["dtype"] in HALF or case["module_dtype"] in HALF:
        return dict(rtol=2**-5, atol=2**-5)
    if case["dtype"] == torch.float64 and case["module_dtype"] == torch.float64:
        return dict(rtol=1e-12, atol=1e-12)
    return dict(rtol=1e-6, atol=1e-6)


def close(a, b, what, tol, scale=1.0):
    if a is None and b is None:
        return
    a = torch.zeros_like(b) if a is None else a
    b = torch.zeros_like(a) if b is None else b
    torch.testing.assert_close(
        a.double(), b.double(), rtol=tol["rtol"], atol=tol["atol"] * scale, msg=lambda m: f"{what}: {m}"
    )


# ----------------------------------------------------------------------------
# the property


@given(case=cases())
def test_layer_equals_reference(case):
    small = kernel.SMALL_DISTANCES
    try:
        kernel.SMALL_DISTANCES = 0 if case["count_search"] else small
        check(case)
    finally:
        kernel.SMALL_DISTANCES = small


def check(case):
    g = torch.Generator().manual_seed(case["seed"])
    lq = make_layer(case)
    leaf, x = make_input(case, g)
    cf = case["resolved_channel_first"]
    tol = tolerances(case)
    mask = None
    if case["masked"]:  # a position mask: True where the position counts
        lead = (x.shape[0], *x.shape[2:]) if cf else x.shape[:-1]
        mask = (torch.rand(lead, generator=g) < 0.6).to(DEVICE)
    with torch.set_grad_enabled(case["grad"]):
        out, parts = lq(x, True, mask) if case["breakdown"] else (lq(x, mask=mask), None)
        ref, ref_parts = reference_forward(lq, x, mask=mask)
        # the layer's per-latent choices against the reference's argmin
        ours, digits = as_digits(lq, out.indices), as_digits(lq, ref.indices)
        if not torch.equal(ours, digits):
            # equally near up to the rounding of z (projections round differently here and there)
            zq = latents(lq, x, cf).detach()
            values = [v.detach().to(zq.dtype) for v in lq.values_per_latent]
            pick = lambda dg: torch.stack([v[dg[..., i]] for i, v in enumerate(values)], -1)  # noqa: E731
            gap = ((zq - pick(ours)).abs() - (zq - pick(digits)).abs()).abs()
            eps = max(torch.finfo(t).eps for t in (x.dtype, lq.values.dtype, zq.dtype))
            slack = 64 * eps * (1 + zq.abs().max())
            assert bool((gap <= slack).all()), f"not a tie: ours {ours[gap > slack]} reference {digits[gap > slack]}"
            event("tie between two equally near values")
            ref, ref_parts = reference_forward(lq, x, digits=ours, mask=mask)
        ref_out, ref_indices, ref_loss = ref
        ref_quant, ref_commit = ref_parts

    assert out.quantized.shape == x.shape and out.quantized.dtype == x.dtype
    assert out.indices.dtype == torch.int64 and torch.equal(out.indices, ref_indices)
    scale = 1.0 + float(ref_out.detach().abs().max()) if ref_out.numel() else 1.0
    close(out.quantized.detach(), ref_out.detach(), "quantized", tol, scale)
    close(out.loss.detach(), ref_loss.detach(), "loss", tol)
    if parts is not None:
        close(parts.quantization.detach(), ref_quant.detach(), "quantization", tol)
        close(parts.commitment.detach(), ref_commit.detach(), "commitment", tol)
    if not case["grad"]:
        assert not out.quantized.requires_grad and not out.loss.requires_grad
        return

    params = [leaf, lq.values] + [p for p in (lq.project_in, lq.project_out) for p in p.parameters()]
    wanted = [p for p in params if p.requires_grad]
    upstream = torch.randn(x.shape, generator=g).to(DEVICE, x.dtype)

    def objective(o, loss, quant, commit):
        total = (o.double() * upstream.double()).sum() + 0.6 * loss.double()
        if parts is not None:
            total = total + 0.3 * quant.double() - 0.2 * commit.double()
        return total

    ours_total = objective(out.quantized, out.loss, *(parts or (None, None)))
    ref_total = objective(ref_out, ref_loss, ref_quant, ref_commit)
    if not wanted or not ref_total.requires_grad:
        assert not ours_total.requires_grad or not wanted
        return
    grads = torch.autograd.grad(ours_total, wanted, allow_unused=True)
    ref_grads = torch.autograd.grad(ref_total, wanted, allow_unused=True)
    names = ["input", "values"] + [f"projection {i}" for i in range(4)]
    for p, a, b in zip(wanted, grads, ref_grads):
        name = names[[id(q) for q in params].index(id(p))]
        gscale = 1.0 + (float(b.abs().max()) if b is not None and b.numel() else 0.0)
        close(a, b, f"gradient of {name}", tol, gscale)
    if not lq.training and lq.values.requires_grad:  # eval mode: the values get no gradient
        assert grads[[id(p) for p in wanted].index(id(lq.values))] is None


def test_the_issue_examples_run():
    """Issue 11's two lines: batch size 1 on a feature map (was a view error)."""
    lq = LatentQuantize(levels=[5, 5, 8], dim=16)
    assert lq(torch.randn(1, 16, 32, 32)).quantized.shape == (1, 16, 32, 32)
    assert lq(torch.randn(1, 16, 4, 4)).indices.shape == (1, 4, 4)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
