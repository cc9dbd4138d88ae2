"""Tests of latentquant.metrics: known answers, exactness, invariances,
degenerate cases, bad input and the ``latentquant metrics`` command."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score
from sklearn.preprocessing import LabelEncoder

from latentquant.metrics import (
    DCI,
    InfoMEC,
    MetricWarning,
    _mi,
    active_latents,
    dci,
    explicitness,
    infomec,
    mig,
    normalized_mutual_info,
    sap,
)
from latentquant.metrics.dci import dci_scores
from latentquant.metrics.infomec import _logistic_log_loss, _normalized_max_share


def grid(*sizes, repeat=1):
    """Full factorial sources: every combination once per repeat, so the
    empirical joint of distinct sources is exactly a product (MI = 0)."""
    s = np.stack(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    return np.repeat(s, repeat, axis=0)


def relabelled_copy(sources, rng, n_constant=2):
    """Latents: the sources permuted, each mapped through a random injective
    relabelling, plus constant latents."""
    perm = rng.permutation(sources.shape[1])
    cols = []
    for i in perm:
        table = rng.choice(1000, size=sources[:, i].max() + 1, replace=False) - 500
        cols.append(table[sources[:, i]])
    cols += [np.full(len(sources), 7)] * n_constant
    return np.stack(cols, 1), perm


# ----------------------------------------------------------------- exact MI


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.float32, str])
def test_mutual_info_matrix_equals_sklearn(dtype):
    rng = np.random.default_rng(0)
    s = rng.integers(0, 7, (1500, 3))
    z = rng.integers(-4, 15, (1500, 8)) * 3
    z[:, 2] = s[:, 0] * 2 + (rng.random(1500) < 0.3)  # strongly dependent pair
    z[:, 5] = 4  # constant
    s, z = s.astype(dtype), z.astype(dtype)
    expected = np.array([[mutual_info_score(s[:, i], z[:, j]) for j in range(8)] for i in range(3)])
    s_codes, s_values = _mi.label_encode(s)
    z_codes, z_values = _mi.label_encode(z)
    got = _mi.mutual_info_matrix(s_codes, s_values, z_codes, z_values)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert expected[0, 2] > 0.5  # the test exercises a large value too
    h = _mi.entropy(s_codes, s_values)
    np.testing.assert_allclose(h, [mutual_info_score(s[:, i], s[:, i]) for i in range(3)], atol=1e-9)
    for j in range(8):
        np.testing.assert_array_equal(z_codes[:, j], LabelEncoder().fit_transform(z[:, j]))


@pytest.mark.parametrize("max_table,max_block", [(40, 1 << 23), (200, 2000), (1 << 24, 1000)])
def test_mutual_info_matrix_all_code_paths(monkeypatch, max_table, max_block):
    # small limits force the sort-based pairs and many latent blocks
    monkeypatch.setattr(_mi, "_MAX_TABLE", max_table)
    monkeypatch.setattr(_mi, "_MAX_BLOCK", max_block)
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, (600, 2))
    z = np.concatenate([rng.integers(0, 12, (600, 5)), s[:, :1] * 3 + rng.integers(0, 2, (600, 1))], 1)
    expected = np.array([[mutual_info_score(s[:, i], z[:, j]) for j in range(6)] for i in range(2)])
    got = _mi.mutual_info_matrix(*_mi.label_encode(s), *_mi.label_encode(z))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_label_encode_wide_integer_ranges_and_labels():
    rng = np.random.default_rng(2)
    for x in (
        rng.integers(0, 2**62, (50, 3)),
        np.array([[-(2**63), 0], [2**63 - 1, 1], [0, 2]]),
        rng.integers(0, 9, (40, 2)).astype(np.uint64),
        np.array([["b", "x"], ["a", "x"], ["b", "y"]]),
    ):
        codes, n_values = _mi.label_encode(x)
        for j in range(x.shape[1]):
            np.testing.assert_array_equal(codes[:, j], LabelEncoder().fit_transform(x[:, j]))
            assert n_values[j] == np.unique(x[:, j]).size


def test_nmi_discrete_matches_ratio_of_sklearn_calls():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, (800, 3))
    z = np.stack([s[:, 0] + 2 * (rng.random(800) < 0.2), rng.integers(0, 5, 800)], 1)
    nmi = normalized_mutual_info(s, z, discrete_latents=True)
    expected = np.array(
        [
            [mutual_info_score(s[:, i], z[:, j]) / mutual_info_score(s[:, i], s[:, i]) for j in range(2)]
            for i in range(3)
        ]
    )
    np.testing.assert_allclose(nmi, expected, atol=1e-9)


# ------------------------------------------------------------ known answers


def test_infomec_perfect_discrete_code():
    rng = np.random.default_rng(4)
    sources = grid(4, 3, 5, 2, repeat=2)
    latents, perm = relabelled_copy(sources, rng)
    r = infomec(sources, latents, discrete_latents=True)
    assert isinstance(r, InfoMEC)
    assert r.infom == pytest.approx(1.0, abs=1e-12)
    assert r.infoc == pytest.approx(1.0, abs=1e-12)
    assert r.infoe > 0.99
    np.testing.assert_array_equal(r.active, [True] * 4 + [False] * 2)
    assert r.nmi.shape == (4, 6)
    np.testing.assert_allclose(r.nmi[perm, np.arange(4)], 1.0, atol=1e-12)
    assert mig(sources, latents, discrete_latents=True) == pytest.approx(1.0, abs=1e-12)


def test_infomec_perfect_continuous_code():
    rng = np.random.default_rng(5)
    sources = grid(4, 3, 5, repeat=3)
    copy = sources[:, [2, 0, 1]] * [0.5, -3.0, 2.0] + 1.0  # affine, so bins never merge values
    latents = np.concatenate([copy + 0.01 * rng.standard_normal(copy.shape), np.zeros((len(copy), 1))], 1)
    r = infomec(sources, latents, discrete_latents=False)
    np.testing.assert_array_equal(r.active, [True, True, True, False])
    assert r.infom > 0.9 and r.infoc > 0.9 and r.infoe > 0.99
    h = infomec(sources, latents, discrete_latents=False, estimator="histogram", explicitness=False)
    assert h.infom > 0.95 and h.infoc > 0.95 and math.isnan(h.infoe)
    assert mig(sources, latents) > 0.95


def test_random_latents_score_near_zero():
    rng = np.random.default_rng(6)
    sources = grid(4, 4, 4, repeat=40)
    latents = rng.integers(0, 4, (len(sources), 5))
    r = infomec(sources, latents, discrete_latents=True)
    assert 0 <= r.infom < 0.3 and 0 <= r.infoc < 0.3
    assert abs(r.infoe) < 0.05
    assert mig(sources, latents, discrete_latents=True) < 0.02


def test_entangled_mixture_lies_between():
    rng = np.random.default_rng(7)
    sources = grid(4, 4, 4, 4, repeat=4)
    perfect, _ = relabelled_copy(sources, rng, n_constant=0)
    # two latents each carry two sources in one value; the other two are noise
    entangled = np.stack(
        [
            sources[:, 0] * 4 + sources[:, 1],
            sources[:, 2] * 4 + sources[:, 3],
            rng.integers(0, 4, len(sources)),
            rng.integers(0, 4, len(sources)),
        ],
        1,
    )
    random = rng.integers(0, 4, (len(sources), 4))
    scores = [infomec(sources, z, discrete_latents=True) for z in (perfect, entangled, random)]
    infom = [s.infom for s in scores]
    infoc = [s.infoc for s in scores]
    assert infom[0] > infom[1] > infom[2]
    assert 0.2 < infom[1] < 0.9
    # each source lives in one latent, so the entangled code stays compact
    assert infoc[1] > 0.9 > infoc[2]
    assert scores[1].infoe > 0.99 > 0.1 > scores[2].infoe


def test_dci_gbt_known_answers_on_tiny_data():
    rng = np.random.default_rng(8)
    sources = grid(3, 2, 3, repeat=6)  # 108 samples
    perfect, _ = relabelled_copy(sources, rng, n_constant=0)
    r = dci(sources, perfect.astype(float), seed=0)
    assert isinstance(r, DCI) and r.importance.shape == (3, 3)
    assert r.disentanglement > 0.99 and r.completeness > 0.99
    assert r.informativeness_train == 1.0 and r.informativeness_test == 1.0
    noise = rng.standard_normal((len(sources), 3))
    q = dci(sources, noise, seed=0, model="fast")
    assert q.disentanglement < 0.3 and q.informativeness_test < 0.7


def test_dci_fast_model_and_factory():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(9)
    sources = grid(3, 3, repeat=20)
    latents = np.concatenate(
        [sources[:, ::-1] + 0.1 * rng.standard_normal(sources.shape), rng.standard_normal((len(sources), 1))], 1
    )
    fast = dci(sources, latents, model="fast")
    assert fast.disentanglement > 0.95 and fast.completeness > 0.9
    assert fast.importance[0, 1] > 0.9 and fast.importance[1, 0] > 0.9
    lin = dci(sources, latents, model=lambda seed: LogisticRegression(max_iter=500))
    assert lin.importance.shape == (3, 2) and lin.disentanglement > 0.5

    class NoImportance:
        def fit(self, x, y):
            return self

    with pytest.raises(TypeError, match="feature_importances_"):
        dci(sources, latents, model=lambda seed: NoImportance())


def test_dci_scores_formula():
    assert dci_scores(np.eye(3)) == pytest.approx((1.0, 1.0))
    d, c = dci_scores(np.ones((4, 3)))
    assert d == pytest.approx(0.0, abs=1e-12) and c == pytest.approx(0.0, abs=1e-12)
    # one latent used for both of two sources: D = 0 for it; C = 1 for both
    r = np.array([[0.5, 0.5], [0.0, 0.0]])
    assert dci_scores(r) == pytest.approx((0.0, 1.0))
    # hand-computed: row weights 0.75 / 0.25, H_2 of (2/3, 1/3) and (0, 1)
    r = np.array([[0.5, 0.25], [0.0, 0.25]])
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / np.log(2)
    assert dci_scores(r)[0] == pytest.approx(0.75 * (1 - h) + 0.25 * 1.0)
    with pytest.warns(MetricWarning, match="zero"):
        assert dci_scores(np.zeros((2, 2))) == pytest.approx((0.0, 0.0))
    with pytest.warns(MetricWarning, match="2 non-constant sources"):
        d, c = dci_scores(np.array([[1.0], [0.0]]))
    assert math.isnan(d) and c == pytest.approx(1.0)


def test_sap_known_answers():
    rng = np.random.default_rng(10)
    sources = grid(2, 2, 2, repeat=40)  # binary factors, balanced
    latents = sources[:, [1, 2, 0]] + 0.05 * rng.standard_normal(sources.shape)
    # best latent is perfect, the others are chance for a balanced binary factor
    assert sap(sources, latents) == pytest.approx(0.5, abs=0.12)
    assert sap(sources, rng.standard_normal(sources.shape)) < 0.15


def test_mig_histogram_matches_direct_formula():
    rng = np.random.default_rng(11)
    sources = rng.integers(0, 5, (500, 3))
    latents = np.stack(
        [
            sources[:, 0] + 0.3 * rng.standard_normal(500),
            rng.standard_normal(500),
            sources[:, 2] * 0.5 + rng.standard_normal(500),
        ],
        1,
    )
    binned = [np.digitize(z, np.histogram(z, 20)[1][:-1]) for z in latents.T]
    m = np.array([[mutual_info_score(s, b) for b in binned] for s in sources.T])
    h = np.array([mutual_info_score(s, s) for s in sources.T])
    top = np.sort(m, axis=1)[:, ::-1]
    expected = np.mean((top[:, 0] - top[:, 1]) / h)
    assert mig(sources, latents) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- invariance


def test_invariance_to_latent_order_and_relabelling():
    rng = np.random.default_rng(12)
    sources = grid(3, 4, 2, repeat=5)
    latents = np.stack(
        [
            sources[:, 0] * 4 + sources[:, 1],
            sources[:, 2],
            (sources[:, 1] + rng.integers(0, 2, len(sources))) % 4,
            rng.integers(0, 3, len(sources)),
        ],
        1,
    )
    base = infomec(sources, latents, discrete_latents=True)
    order = np.array([2, 0, 3, 1])
    permuted = infomec(sources, latents[:, order], discrete_latents=True)
    for name in ("infom", "infoe", "infoc"):
        assert getattr(permuted, name) == pytest.approx(getattr(base, name), abs=1e-9)
    np.testing.assert_allclose(permuted.nmi, base.nmi[:, order], atol=1e-12)
    # relabel: latents through injective maps, sources as strings
    maps = [rng.permutation(100)[: latents[:, j].max() + 1] * 1.5 for j in range(4)]
    relabelled_z = np.stack([maps[j][latents[:, j]] for j in range(4)], 1)
    relabelled_s = np.char.add("v", (sources * 7 + 3).astype(str))
    other = infomec(relabelled_s, relabelled_z, discrete_latents=True)
    for name in ("infom", "infoe", "infoc"):
        assert getattr(other, name) == pytest.approx(getattr(base, name), abs=1e-6)
    np.testing.assert_allclose(other.nmi, base.nmi, atol=1e-12)
    assert mig(relabelled_s, relabelled_z, discrete_latents=True) == pytest.approx(
        mig(sources, latents, discrete_latents=True), abs=1e-12
    )


def test_torch_tensors_accepted():
    import torch

    rng = np.random.default_rng(13)
    sources = grid(3, 3, repeat=10)
    latents = sources[:, ::-1] + 0.1 * rng.standard_normal(sources.shape)
    a = infomec(sources, latents, discrete_latents=False, explicitness=False)
    b = infomec(
        torch.from_numpy(sources), torch.tensor(latents, requires_grad=True), discrete_latents=False, explicitness=False
    )
    assert a.infom == pytest.approx(b.infom) and a.infoc == pytest.approx(b.infoc)
    assert mig(torch.from_numpy(sources), torch.from_numpy(latents)) == pytest.approx(mig(sources, latents))


def test_import_does_not_pull_torch_or_sklearn():
    # the package imports its torch layer lazily, so the metrics stay numpy-only until called
    code = (
        "import sys; import latentquant.metrics, latentquant.metrics.cli, latentquant.metrics.plots; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn', 'matplotlib', 'scipy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ degenerate cases


def test_constant_source_is_excluded_with_warning():
    rng = np.random.default_rng(14)
    sources = grid(3, 4, repeat=6)
    latents = np.stack(
        [sources[:, 1], (sources[:, 0] + rng.integers(0, 2, len(sources))) % 3, rng.integers(0, 3, len(sources))], 1
    )
    with_constant = np.concatenate([sources[:, :1], np.full((len(sources), 1), 5), sources[:, 1:]], 1)
    with pytest.warns(MetricWarning, match=r"constant source\(s\) \[1\]"):
        r = infomec(with_constant, latents, discrete_latents=True)
    ref = infomec(sources, latents, discrete_latents=True)
    np.testing.assert_array_equal(r.nmi[1], 0.0)
    np.testing.assert_allclose(r.nmi[[0, 2]], ref.nmi, atol=1e-12)
    for name in ("infom", "infoe", "infoc"):
        assert getattr(r, name) == pytest.approx(getattr(ref, name), abs=1e-9)
    with pytest.warns(MetricWarning, match="excluded from MIG"):
        assert mig(with_constant, latents, discrete_latents=True) == pytest.approx(
            mig(sources, latents, discrete_latents=True)
        )
    with pytest.warns(MetricWarning, match="excluded from DCI"):
        d = dci(with_constant, latents, model="fast")
    np.testing.assert_array_equal(d.importance[:, 1], 0.0)


def test_all_sources_constant_gives_nan():
    latents = np.arange(20).reshape(10, 2)
    with pytest.warns(MetricWarning, match="no source varies"):
        r = infomec(np.zeros((10, 2)), latents, discrete_latents=True)
    assert math.isnan(r.infom) and math.isnan(r.infoe) and math.isnan(r.infoc)
    with pytest.warns(MetricWarning, match="no source varies"):
        assert math.isnan(mig(np.zeros((10, 2)), latents, discrete_latents=True))


def test_no_active_latent_gives_nan_infom_infoc():
    sources = grid(3, 3, repeat=2)
    with pytest.warns(MetricWarning, match="no active latent"):
        r = infomec(sources, np.ones((len(sources), 3)), discrete_latents=True)
    assert math.isnan(r.infom) and math.isnan(r.infoc)
    assert not r.active.any()
    assert r.infoe == pytest.approx(0.0, abs=1e-6)  # nothing to predict from


def test_one_active_latent_gives_nan_infoc():
    sources = grid(3, 3, repeat=2)
    latents = np.stack([sources[:, 0], np.zeros(len(sources))], 1)
    with pytest.warns(MetricWarning, match="only one active latent"):
        r = infomec(sources, latents, discrete_latents=True, explicitness=False)
    assert math.isnan(r.infoc)
    assert r.infom == pytest.approx(1.0)  # its only informative source is s0
    with pytest.warns(MetricWarning, match="only one non-constant source"):
        r = infomec(sources[:, :1], sources, discrete_latents=True, explicitness=False)
    assert math.isnan(r.infom) and r.infoc == pytest.approx(1.0)


def test_zero_information_slices_are_scored_at_chance():
    p = np.array([[0.8, 0.0, 0.3], [0.0, 0.0, 0.3]])
    # columns: share 1, chance 1/2, 1/2 -> mean 2/3 -> (2/3 - 1/2) / (1/2)
    assert _normalized_max_share(p, axis=0) == pytest.approx(1 / 3)
    p = np.array([[0.0, 0.0], [0.5, 0.0]])
    # rows: chance 1/2, share 1 -> (3/4 - 1/2) / (1/2)
    assert _normalized_max_share(p, axis=1) == pytest.approx(0.5)


def test_infoe_null_model_and_convention():
    rng = np.random.default_rng(15)
    y = rng.choice(4, size=400, p=[0.55, 0.25, 0.15, 0.05])
    # balanced weights make the intercept-only model uniform: H0 = log(C)
    assert _logistic_log_loss(np.zeros((400, 1)), y) == pytest.approx(np.log(4), abs=1e-6)
    sources = np.stack([y, rng.integers(0, 3, 400)], 1)
    latents = np.stack([y, rng.integers(0, 5, 400)], 1)
    value, per_source = explicitness(sources, latents, discrete_latents=True, return_per_source=True)
    assert per_source[0] > 0.99 and abs(per_source[1]) < 0.1
    assert value == pytest.approx(per_source.mean())
    r = infomec(sources, latents, discrete_latents=True, explicitness=False)
    assert math.isnan(r.infoe)


def test_active_latents_rule():
    z = np.stack([np.linspace(0, 10, 50), np.linspace(0, 0.4, 50), np.linspace(0, 0.6, 50), np.zeros(50)], 1)
    np.testing.assert_array_equal(active_latents(z, discrete_latents=False), [True, False, True, False])
    np.testing.assert_array_equal(active_latents(z, discrete_latents=True), [True, True, True, False])


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "sources,latents,match",
    [
        (np.zeros((10, 2)), np.zeros((9, 2)), "same number of samples"),
        (np.zeros(10), np.zeros((10, 2)), "sources must be a 2-D array"),
        (np.zeros((10, 2)), np.zeros(10), "latents must be a 2-D array"),
        (np.zeros((10, 2, 1)), np.zeros((10, 2)), "3-D"),
        (np.zeros((1, 2)), np.zeros((1, 2)), "at least 2 samples"),
        (np.zeros((10, 0)), np.zeros((10, 2)), "at least 1 column"),
        (np.zeros((10, 2)), np.full((10, 2), np.nan), "latents must be finite"),
        (np.array([[0.0], [np.inf]]), np.zeros((2, 1)), "sources must be finite"),
        (np.zeros((4, 1)), np.array([["a"], ["b"], ["a"], ["b"]]), "real numbers"),
        (np.zeros((2, 1)), np.zeros((2, 1), dtype=complex), "real numbers"),
    ],
)
def test_bad_input_raises(sources, latents, match):
    with pytest.raises(ValueError, match=match):
        infomec(sources, latents, discrete_latents=False)
    with pytest.raises(ValueError, match=match):
        dci(sources, latents)


def test_bad_options_raise():
    s, z = grid(3, 3, repeat=2), np.random.default_rng(0).standard_normal((18, 2))
    with pytest.raises(ValueError, match="estimator"):
        infomec(s, z, discrete_latents=False, estimator="kde")
    with pytest.raises(TypeError, match="discrete_latents must be True or False, got 'yes'"):
        infomec(s, z, discrete_latents="yes")
    with pytest.raises(TypeError, match="explicitness must be True or False"):
        infomec(s, z, discrete_latents=False, explicitness=None)
    with pytest.raises(ValueError, match="num_bins"):
        mig(s, z, num_bins=1)
    with pytest.raises(ValueError, match="at least 2 latents"):
        mig(s, z[:, :1])
    with pytest.raises(ValueError, match="at least 2 latents"):
        sap(s, z[:, :1])
    with pytest.raises(ValueError, match="test_fraction"):
        dci(s, z, test_fraction=1.5)
    with pytest.raises(ValueError, match="model must be one of"):
        dci(s, z, model="forest")
    # the only sample with value 1 falls in the 1-sample test split
    rare = np.zeros((10, 1), int)
    rare[_mi.split(10, 0.1, seed=3)[1]] = 1
    with pytest.raises(ValueError, match="single value in the training split"):
        dci(rare, np.arange(10.0)[:, None] * [1, 2], test_fraction=0.1, seed=3)
    with pytest.raises(ValueError, match="single value in the training split"):
        sap(rare, np.arange(10.0)[:, None] * [1, 2], test_fraction=0.1, seed=3)


# ------------------------------------------------------------------------ CLI


def test_cli_end_to_end(tmp_path, capsys):
    from latentquant import cli

    rng = np.random.default_rng(16)
    sources = grid(3, 2, 4, repeat=4)
    latents, _ = relabelled_copy(sources, rng, n_constant=1)
    path = tmp_path / "codes.npz"
    np.savez(path, sources=sources, latents=latents, source_names=np.array(["shape", "size", "hue"]))
    assert cli.main(["metrics", str(path), "--dci-model", "fast", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "InfoM" in out and "DCI disentanglement" in out and "SAP" in out
    report = json.loads((tmp_path / "codes.metrics.json").read_text())
    png = (tmp_path / "codes.nmi.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["discrete_latents"] is True and report["discrete_latents_from"] == "dtype"
    direct = infomec(sources, latents, discrete_latents=True, seed=1)
    assert report["infomec"]["infom"] == pytest.approx(direct.infom)
    assert report["infomec"]["infoe"] == pytest.approx(direct.infoe)
    np.testing.assert_allclose(report["infomec"]["nmi"], direct.nmi)
    assert report["infomec"]["active"] == direct.active.tolist()
    assert report["mig"] == pytest.approx(mig(sources, latents, discrete_latents=True))
    assert report["dci"]["model"] == "fast" and report["dci"]["disentanglement"] > 0.95
    assert report["source_names"] == ["shape", "size", "hue"]
    assert f"{report['infomec']['infom']:.4f}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.metrics.json", "codes.nmi.png", "codes.npz"]


def test_cli_flags_nan_and_discrete_inference(tmp_path, capsys):
    from latentquant import cli

    sources = grid(3, 3, repeat=3)
    latents = np.stack([sources[:, 0], np.zeros(len(sources))], 1).astype(np.float32)
    path = tmp_path / "one.npz"
    np.savez(path, sources=sources, latents=latents, discrete_latents=np.array(True))
    rc = cli.main(["metrics", str(path), "--no-dci", "--no-sap", "--no-explicitness", "--no-plot"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "only one active latent" in captured.err
    report = json.loads((tmp_path / "one.metrics.json").read_text())
    assert report["discrete_latents"] is True and report["discrete_latents_from"] == "file"
    assert report["infomec"]["infoc"] is None and report["infomec"]["infoe"] is None  # NaN -> null
    assert "dci" not in report and "sap" not in report and "mig" in report
    assert any("only one active latent" in w for w in report["warnings"])
    assert not (tmp_path / "one.nmi.png").exists()
    # the flag overrides the file
    assert (
        cli.main(
            ["metrics", str(path), "--continuous-latents", "--no-dci", "--no-sap", "--no-explicitness", "--no-plot"]
        )
        == 0
    )
    report = json.loads((tmp_path / "one.metrics.json").read_text())
    assert report["discrete_latents"] is False and report["discrete_latents_from"] == "flag"


def test_cli_errors(tmp_path, capsys):
    from latentquant import cli

    missing = tmp_path / "absent.npz"
    assert cli.main(["metrics", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, sources=np.zeros((4, 2)))
    assert cli.main(["metrics", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lacks array(s) ['latents']" in err and err.count("\n") == 1


def _metrics_error(argv, capsys) -> str:
    """The one stderr line of a ``latentquant metrics`` call that must fail with exit code 2."""
    from latentquant import cli

    try:
        code = cli.main(["metrics", *argv])
    except SystemExit as exit_:  # argparse's own one-line errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_files_that_are_no_npz_archive_say_what_the_file_should_hold(tmp_path, capsys):
    """Issue 28: a truncated archive raised BadZipFile; a text file printed numpy's advice to unpickle it."""
    good = tmp_path / "good.npz"
    np.savez(good, sources=grid(3, 2, repeat=4), latents=grid(3, 2, repeat=4))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.npz"
    text.write_text("sources,latents\n1,2\n")
    pickled = tmp_path / "pickled.npz"  # numpy.save of a list of arrays pickles it
    np.save(tmp_path / "pickled.npy", np.array([np.zeros(2), np.zeros(3)], dtype=object), allow_pickle=True)
    (tmp_path / "pickled.npy").rename(pickled)
    objects = tmp_path / "objects.npz"
    np.savez(objects, sources=np.array([[1], [2]], dtype=object), latents=np.zeros((2, 1)))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.npz"  # a header declaring 16 TB over 64 bytes: numpy would allocate it first
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
    with zipfile.ZipFile(huge, "w") as archive:
        archive.writestr("sources.npy", header.getvalue() + bytes(64))
        archive.writestr("latents.npy", header.getvalue() + bytes(64))
    for path, said in (
        (truncated, "is a damaged or truncated archive"),
        (text, "is not a zip archive"),
        (pickled, "holds one array (.npy)"),
        (objects, "'sources' in " + str(objects) + " is an array of Python objects"),
        (empty, "is empty"),
        (huge, "'sources' in " + str(huge) + " declares shape (1000000000000, 2) of float64"),
    ):
        err = _metrics_error([str(path)], capsys)
        assert str(path) in err and said in err, err
        assert "pickl" not in err.replace(str(path), "").lower(), err  # never advice to unpickle an untrusted file
        if path not in (objects, huge):
            assert "'sources' (N, K)" in err and "'latents' (N, L)" in err  # what the file should hold


def test_cli_a_directory_is_named_as_one(tmp_path, capsys):
    err = _metrics_error([str(tmp_path)], capsys)
    assert f"{tmp_path} is a directory; expected an .npz archive" in err and "no such file" not in err


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--seed", "-1"], "--seed must be an integer in 0..4,294,967,295, got -1"),
        (["--seed", str(2**32)], "--seed must be an integer in 0..4,294,967,295"),
        (["--num-bins", "1000000000"], "--num-bins must be an integer in 2..10,000"),
        (["--test-fraction", "1"], "--test-fraction must be a number in (0, 1), got 1.0"),
    ],
)
def test_cli_bad_options_blame_the_option_not_the_file(tmp_path, capsys, flags, said):
    good = tmp_path / "good.npz"
    np.savez(good, sources=grid(3, 2, repeat=4), latents=grid(3, 2, repeat=4))
    err = _metrics_error([str(good), *flags], capsys)
    assert said in err and str(good) not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.npz"]


def test_cli_continuous_sources_are_refused_as_such(tmp_path, capsys):
    """Issue 28: continuous sources gave raw numpy/scikit-learn warnings, then zeros."""
    rng = np.random.default_rng(0)
    path = tmp_path / "continuous.npz"
    sources = np.concatenate([grid(4, repeat=50), rng.normal(size=(200, 1))], axis=1)
    np.savez(path, sources=sources, latents=rng.integers(0, 5, size=(200, 3)), source_names=np.array(["a", "b"]))
    err = _metrics_error([str(path), "--no-dci"], capsys)
    assert "source column 1 ('b')" in err and "200 distinct values in 200 samples" in err
    assert "sources must be discrete factor labels" in err and "warning" not in err.lower()
    assert not (tmp_path / "continuous.metrics.json").exists()
    # factor labels stored as floats are labels: scored
    np.savez(path, sources=grid(4, 5, repeat=10) / 4.0, latents=rng.integers(0, 5, size=(200, 3)))
    assert cli_main(["metrics", str(path), "--no-dci", "--no-plot", "--no-explicitness"]) == 0


def cli_main(argv):
    from latentquant import cli

    return cli.main(argv)


def test_plot_nmi_validates_and_leaves_no_temp_files(tmp_path):
    from latentquant.metrics.plots import plot_nmi

    out = plot_nmi(np.array([[0.9, 0.1], [np.nan, 0.5]]), tmp_path / "h.png", active=[True, False])
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["h.png"]
    with pytest.raises(ValueError, match="active must have shape"):
        plot_nmi(np.zeros((2, 2)), tmp_path / "x.png", active=[True])
    with pytest.raises(ValueError, match="2-D"):
        plot_nmi(np.zeros(3), tmp_path / "x.png")
