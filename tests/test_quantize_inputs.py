"""LatentQuantize's inputs as a careless or hostile caller gives them (issue 28 section 2, issue 25 section 3).

Sizes are bounded before anything is allocated; every floating dtype works,
with and without projections, under the stated rule; the search runs in
float32 under autocast. NaN inputs are tested in test_quantize.py, every
dtype pair against the reference in test_quantize_property.py.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
import torch

from latentquant import LatentQuantize
from latentquant.models import DataInfo, build_model

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


# ----------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(levels=10, codebook_dim=10**9), r"codebook_dim: 1,000,000,000 latents, .*\(65,536 = 2\*\*16\)"),
        (dict(levels=[10] * 70_000), r"levels: 70,000 latents, .*\(65,536 = 2\*\*16\)"),
        (dict(levels=(10 for _ in range(10**9))), r"levels: more than 65,536 latents"),
        (dict(levels=range(2, 10**9)), r"levels: 999,999,998 latents"),
        (dict(levels=torch.full((10**6,), 4)), r"levels: 1,000,000 latents"),
        (dict(levels=10**9, codebook_dim=3), r"levels: 3,000,000,000 values \(3 latents x 1,000,000,000\).*2\*\*26"),
        (dict(levels=[2**25, 2**25, 2]), r"levels: 100,663,296 values in the table"),
        (dict(levels=[4, 4], dim=10**9), r"dim: 1,000,000,000 features, .*2\*\*24"),
        (dict(levels=[4, 4], num_codebooks=10**8), r"num_codebooks: 200,000,000 latent features"),
        (dict(levels=[4] * 3000, dim=10**5), r"dim: 300,000,000 weights in each projection .*2\*\*28"),
    ],
)
def test_sizes_are_bounded_before_anything_is_allocated(kwargs, pattern):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=pattern):
            LatentQuantize(**kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 2**20  # not a list of 10**9 levels (16 GB)


def test_the_largest_allowed_sizes_build():
    assert LatentQuantize(2, codebook_dim=2**16, flat_indices=False).values.shape == (2**16, 2)
    assert LatentQuantize([2**25, 2]).values.shape == (2, 2**25)


def test_qlae_names_num_latents_and_fails_before_its_backbone_allocates():
    info = DataInfo("sprites", 1, 5, 100)
    build_model("qlae", "small", info, num_latents=2)  # imports done
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"num_latents must be an integer in 1\.\.65,536, got 1000000000"):
            build_model("qlae", "small", info, num_latents=10**9)
        with pytest.raises(ValueError, match=r"values_per_latent must be an integer in 2\.\.6,710,886, got 10000000"):
            build_model("qlae", "small", info, num_latents=10, values_per_latent=10**7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


# ----------------------------------------------------------------------------
# dtypes


def test_the_issue_example_half_input_through_float32_projections():
    lq = LatentQuantize([5, 5, 5], dim=8)
    out = lq(torch.randn(4, 8, dtype=torch.float16))
    assert out.quantized.dtype == torch.float16 and out.loss.dtype == torch.float32
    ref = lq(torch.randn(4, 8, dtype=torch.float16).float())
    assert ref.quantized.dtype == torch.float32


@pytest.mark.parametrize("projections", [False, True])
@pytest.mark.parametrize("module_dtype", FLOATS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_every_dtype_pair_follows_the_rule(dtype, module_dtype, projections):
    torch.manual_seed(0)
    lq = LatentQuantize([5, 6, 7], dim=8 if projections else None).to(module_dtype).train()
    x = torch.randn(3, 8 if projections else 3, 4, 4, dtype=dtype, requires_grad=True)  # channel-first
    out, parts = lq(x, return_loss_breakdown=True)
    search = torch.float64 if torch.float64 in (module_dtype, dtype if not projections else module_dtype) else None
    search = search or torch.float32
    assert out.quantized.dtype == dtype and out.quantized.shape == x.shape
    assert out.loss.dtype == parts.quantization.dtype == search
    (out.quantized.float().square().sum() + out.loss).backward()
    assert x.grad.dtype == dtype and lq.values.grad.dtype == module_dtype
    assert bool(x.grad.isfinite().all()) and bool(lq.values.grad.isfinite().all())
    # indices_to_codes decodes in the module's dtype, equal to the eval output cast there
    lq.eval()
    with torch.no_grad():
        ev = lq(x)
    assert torch.equal(lq.indices_to_codes(ev.indices).to(dtype), ev.quantized)


def test_autocast_searches_in_float32_near_midpoints():
    """The projected latents come out of autocast's bfloat16 GEMM; the search
    must compare them with the float32 values, not with values rounded to
    bfloat16, which sends inputs near a midpoint to the other side."""
    torch.manual_seed(0)
    lq = LatentQuantize([6, 6], dim=3)
    with torch.no_grad():
        lq.values.copy_(torch.tensor([[-0.47, -0.2903, -0.1017, 0.0931, 0.3059, 0.4513]] * 2))
        lq.project_in.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        lq.project_in.bias.zero_()
    values = lq.values.detach()[0]
    mids = (values[1:] + values[:-1]) / 2
    # bfloat16 numbers within 4 of their steps of each midpoint: exact through the bfloat16 GEMM
    near = []
    for m in mids.bfloat16():
        x = m
        for _ in range(4):
            near.append(x.float())
            x = torch.nextafter(x.float(), torch.tensor(2.0)).bfloat16()
        x = m
        for _ in range(4):
            x = torch.nextafter(x.float(), torch.tensor(-2.0)).bfloat16()
            near.append(x.float())
    z = torch.stack(near)
    x = torch.stack([z, z.flip(0), torch.zeros_like(z)], -1)
    expected = lq.eval()(x).indices  # float32 throughout
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lq.project_in(x).dtype == torch.bfloat16
        out = lq(x)
    assert torch.equal(out.indices, expected) and out.quantized.dtype == torch.float32
    # the test has teeth: a search against bfloat16 values disagrees somewhere
    in_bf16 = (z.bfloat16()[:, None] - values.bfloat16()).abs().argmin(-1)
    in_f32 = (z[:, None] - values).abs().argmin(-1)
    assert not torch.equal(in_bf16, in_f32)
