"""The faster paths of periodic evaluation give the same numbers as the plain
definitions they replace (kept here as short reference functions). Equality
only: nothing here is timed (benchmarks/evaluation.py times them)."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentquant.data import get_dataset
from latentquant.metrics import _knn, _mi, infomec
from latentquant.models import DataInfo, build_model
from latentquant.train.evaluate import encode_all, eval_indices


def reference_knn_mi(z, s_codes, s_values, seed):
    """The old definition: one mutual_info_classif call per non-constant source (one OpenMP
    thread, as ours: see ``_knn.knn_mutual_info``; its scores do not depend on it)."""
    from sklearn.feature_selection import mutual_info_classif
    from threadpoolctl import threadpool_limits

    mi = np.zeros((s_codes.shape[1], z.shape[1]))
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", UserWarning)  # "more classes than 50% of samples"
        for i in np.flatnonzero(s_values > 1):
            mi[i] = mutual_info_classif(z, s_codes[:, i], discrete_features=False, n_neighbors=10, random_state=seed)
    return mi


def random_case(seed: int):
    """Sources with 1 to 40 values (constant, singleton and brute-force-sized
    classes included) and latents of one of several awkward kinds."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([12, 30, 200, 1000]))
    num_sources, num_latents = 3, 5
    sizes = rng.integers(1, 41, num_sources)
    sources = np.stack([rng.integers(0, m, n) for m in sizes], 1)
    sources[:, 0] = sources[:, 0] * (seed % 3 != 0)  # a constant source in a third of the cases
    z = rng.standard_normal((n, num_latents))
    kind = seed % 6
    if kind == 1:  # a constant latent
        z[:, 0] = 3.0
    elif kind == 2:  # ties: few distinct values
        z = np.round(z, 1)
    elif kind == 3:  # one active latent
        z[:, 1:] = 0.0
    elif kind == 4:  # integer-valued latents, many exact ties
        z = rng.integers(0, 3, (n, num_latents)).astype(float)
    elif kind == 5:  # informative latents: sources plus noise, widely different scales
        z[:, :num_sources] = sources + 0.1 * z[:, :num_sources]
        z *= 10.0 ** rng.integers(-3, 4, num_latents)
    return sources, z


@pytest.mark.parametrize("seed", range(18))
def test_knn_mutual_info_is_sklearns(seed):
    sources, z = random_case(seed)
    s_codes, s_values = _mi.label_encode(sources)
    z = _mi.standardize(z)
    expected = reference_knn_mi(z, s_codes, s_values, seed)
    got = _knn.knn_mutual_info(z, s_codes, s_values, n_neighbors=10, seed=seed)
    np.testing.assert_array_equal(got, expected)  # bitwise


def _pool_threads():
    from threadpoolctl import threadpool_info

    pools = {(lib["user_api"], lib["num_threads"]) for lib in threadpool_info()}
    assert {api for api, _ in pools} >= {"openmp", "blas"}, pools  # torch's CPU build and scipy load both
    return pools


@pytest.mark.parametrize("where", ["knn", "explicitness"])
def test_the_metrics_small_sklearn_calls_run_on_one_thread(where, monkeypatch):
    """sklearn's brute-force searches of tiny classes and InfoE's logistic regressions run inside a
    one-thread BLAS and OpenMP limit (on a busy machine each call's thread pools cost 2 to 90 times
    the one-thread time: _mi.one_thread); the limit ends with the call."""
    infomec_module = importlib.import_module("latentquant.metrics.infomec")  # the package exports the function

    module, name = (_knn, "_brute_radius") if where == "knn" else (infomec_module, "_logistic_log_loss")
    seen, inner = [], getattr(module, name)

    def spy(*args):
        seen.append({threads for _, threads in _pool_threads()})
        return inner(*args)

    monkeypatch.setattr(module, name, spy)
    before = _pool_threads()
    sources, z = random_case(12)  # 200 samples, 39 and 38 classes: brute-force classes
    if where == "knn":
        s_codes, s_values = _mi.label_encode(sources)
        _knn.knn_mutual_info(_mi.standardize(z), s_codes, s_values, seed=12)
    else:
        infomec_module.explicitness(sources, z, discrete_latents=False)
    assert seen and all(threads == {1} for threads in seen)
    assert _pool_threads() == before


def test_knn_mutual_info_fortran_and_all_constant():
    rng = np.random.default_rng(0)
    sources = rng.integers(0, 5, (400, 2))
    z = _mi.standardize(np.asfortranarray(rng.standard_normal((400, 3))))
    s_codes, s_values = _mi.label_encode(sources)
    np.testing.assert_array_equal(
        _knn.knn_mutual_info(z, s_codes, s_values, seed=3), reference_knn_mi(z, s_codes, s_values, 3)
    )
    zeros = np.zeros((400, 3))  # every latent constant: distances are the 1e-10 jitter alone
    np.testing.assert_array_equal(
        _knn.knn_mutual_info(zeros, s_codes, s_values, seed=1), reference_knn_mi(zeros, s_codes, s_values, 1)
    )


def test_infomec_knn_scores_unchanged():
    """The whole InfoMEC of continuous latents against the reference NMI."""
    sources, z = random_case(5)
    s_codes, s_values = _mi.label_encode(sources)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = infomec(sources, z, discrete_latents=False, explicitness=False, seed=7)
    mi = reference_knn_mi(_mi.standardize(z), s_codes, s_values, 7)
    h = _mi.entropy(s_codes, s_values)
    nmi = np.where(h[:, None] > 0, mi / np.where(h > 0, h, 1.0)[:, None], 0.0)
    np.testing.assert_array_equal(got.nmi, nmi)


@torch.no_grad()
def reference_encode_all(model, dataset, indices, batch_size=256):
    """The old encode_all: batches of 256, PSNR summed batch by batch."""
    model.eval()
    codes, psnr_sum, z_first = [], 0.0, None
    for start in range(0, len(indices), batch_size):
        x = dataset.get_images(indices[start : start + batch_size])
        enc = model.encode(x)
        logits = model.decode(enc.z)
        mse = (torch.sigmoid(logits.float()) - x).square().flatten(1).mean(1).clamp_min(1e-10)
        psnr_sum += float((-10 * torch.log10(mse)).sum())
        code = enc.code.detach()
        codes.append((code.float() if code.is_floating_point() else code).cpu())
        if z_first is None:
            z_first = enc.z.detach().float().cpu()[:16]
    return torch.cat(codes), psnr_sum / len(indices), z_first


class _Exact(torch.nn.Module):
    """A stand-in model whose code and decoder input are the image itself and
    whose decoder ignores its input: no float is summed, so any difference
    from the reference is a lost, reordered or duplicated image."""

    discrete_latents = False

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        from types import SimpleNamespace

        flat = x.flatten(1)
        return SimpleNamespace(z=flat, code=flat)

    def decode(self, z):
        return torch.zeros(len(z), 1, 64, 64) + self.anchor


def test_encode_all_batches_lose_reorder_and_duplicate_nothing():
    """What batching in encode_all could break, asserted exactly: 600 samples
    (a last partial batch) at batch sizes 64, 256 and 7 give row for row the
    images in ``indices`` order, and the mean PSNR of the same per-image values."""

    dataset = get_dataset("sprites")
    idx = eval_indices(dataset, 600, seed=0)
    images = dataset.get_images(idx).flatten(1)
    assert len(images.unique(dim=0)) > 500  # distinct images: a swap would show
    ref_codes, ref_psnr, ref_z = reference_encode_all(_Exact(), dataset, idx)
    assert torch.equal(ref_codes, images)
    for batch_size in (None, 64, 256, 7):
        codes, psnr, z_first = encode_all(_Exact(), dataset, idx, torch.device("cpu"), batch_size=batch_size)
        assert torch.equal(codes, images) and torch.equal(z_first, images[:16])
        assert psnr == pytest.approx(ref_psnr, rel=1e-12)


# Float tolerance of real models at batch 64 against batch 256. Their
# convolutions sum the same products in another order at another batch size or
# thread count (oneDNN picks its blocking by shape and threads), so the library
# promises no bitwise equality there. For K-term float32 dot products the
# reordering error is of order sqrt(K) * 2^-24 * sum|terms|; with K <= 1,024
# through the encoder's layers that is ~1e-6 of the activations' scale: 1e-4
# relative, 1e-6 absolute leaves a margin of about ten.
RTOL, ATOL = 1e-4, 1e-6


@pytest.mark.parametrize("name", ["qlae", "ae"])
def test_encode_all_same_as_batches_of_256(name):
    """Batches of 64 (CPU default) give the codes, decoder inputs and mean PSNR
    of the old batches of 256 to float tolerance (RTOL, ATOL); a quantized
    latent within rounding of a midpoint may take its neighbour value, in a
    few entries at most. 600 samples: a last partial batch."""

    torch.manual_seed(0)
    model = build_model(name, "small", DataInfo("sprites", 1, 5, 737_280))
    dataset = get_dataset("sprites")
    idx = eval_indices(dataset, 600, seed=0)
    codes, psnr, z_first = encode_all(model, dataset, idx, torch.device("cpu"))
    ref_codes, ref_psnr, ref_z = reference_encode_all(model, dataset, idx)
    torch.testing.assert_close(z_first, ref_z, rtol=RTOL, atol=ATOL)
    assert codes.dtype == ref_codes.dtype and codes.shape == ref_codes.shape
    if codes.is_floating_point():
        torch.testing.assert_close(codes, ref_codes, rtol=RTOL, atol=ATOL)
    else:
        differ = codes != ref_codes
        assert differ.float().mean() <= 1e-3 and ((codes - ref_codes).abs()[differ] <= 1).all()
    # a relative 1e-4 change of an image's mse moves its PSNR by 4e-4 dB at most
    assert psnr == pytest.approx(ref_psnr, abs=1e-3)


@settings(max_examples=100)
@given(
    st.lists(st.sampled_from([-1.0, -0.1, 0.0, 1e-10, 0.1, 0.3, 1.0, 2.5]), min_size=1, max_size=40),
    st.lists(st.sampled_from([0.0, 1e-10, 0.1, 0.2, 0.7, 1.0, 5.0]), min_size=1, max_size=40),
)
def test_count_within_is_the_definition(values, radii):
    """Counts within a radius, ties and exact boundaries included, against
    the leaf test of sklearn's KD tree written out: (x_q - x_j)^2 <= r_q^2."""
    c = np.sort(np.asarray(values))
    r = np.resize(np.asarray(radii), c.size)
    expected = [int(np.sum(np.square(c[q] - c) <= r[q] * r[q])) for q in range(c.size)]
    assert _knn._count_within(c, r).tolist() == expected
