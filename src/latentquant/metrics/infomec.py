"""InfoMEC: information-based modularity, explicitness and compactness.

Hsu, Dorrell, Whittington, Wu, Finn, "Disentanglement via Latent
Quantization", NeurIPS 2023 (arXiv 2305.18378), Section 5 and Appendix.
Shapes: N samples, K sources, L latents, L' active latents.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from latentquant.validation import check_choice, check_flag

from . import _knn, _mi

ESTIMATORS = ("knn", "histogram")  # of the MI of continuous latents


class InfoMEC(NamedTuple):
    """The scores ``infomec`` returns, a named tuple.

    Attributes
    ----------
    infom : float
        Modularity in [0, 1]: 1 when each active latent carries information
        about one source only.
    infoe : float
        Explicitness in [0, 1]: how much of each source a linear probe reads
        from the latents; NaN when not computed.
    infoc : float
        Compactness in [0, 1]: 1 when each source is carried by one latent only.
    nmi : numpy.ndarray
        ``(K, L)`` normalized mutual information ``I(s_i; z_j) / H(s_i)``.
    active : numpy.ndarray
        ``(L,)`` bool, the latents that vary enough to count.

    Examples
    --------
    >>> import numpy as np
    >>> from latentquant.metrics import InfoMEC
    >>> scores = InfoMEC(infom=0.8, infoe=0.9, infoc=0.5, nmi=np.zeros((2, 3)), active=np.ones(3, bool))
    >>> infom, infoe, infoc, nmi, active = scores
    >>> scores.infoc
    0.5
    """

    infom: float  # modularity in [0, 1]
    infoe: float  # explicitness, NaN when not computed
    infoc: float  # compactness in [0, 1]
    nmi: np.ndarray  # (K, L) normalized mutual information I(s_i; z_j) / H(s_i)
    active: np.ndarray  # (L,) bool, latents that vary enough to count


def active_latents(latents, *, discrete_latents: bool) -> np.ndarray:
    """Which latents vary enough to count in InfoM and InfoC.

    A discrete latent is active when it takes 2 or more distinct values (any
    labels); a continuous one when its range exceeds 1/20 of the largest
    latent range.

    Parameters
    ----------
    latents : array-like
        ``(N, L)`` latents: numbers, or labels when ``discrete_latents``.
    discrete_latents : bool
        Whether the latents take a finite set of values.

    Returns
    -------
    numpy.ndarray
        ``(L,)`` bool, True for an active latent.

    Raises
    ------
    ValueError
        If ``latents`` is not a 2-D array, or continuous latents are not
        finite real numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from latentquant.metrics import active_latents
    >>> latents = np.array([[0.0, 1.0, 5.0], [0.0, 1.01, 9.0], [0.0, 1.02, 1.0]])
    >>> active_latents(latents, discrete_latents=False).tolist()
    [False, False, True]
    >>> active_latents(latents, discrete_latents=True).tolist()
    [False, True, True]
    """
    discrete_latents = check_flag("discrete_latents", discrete_latents)
    latents = _mi.check_2d(latents, "latents", numeric=not discrete_latents)
    if discrete_latents:
        return _mi.label_encode(latents)[1] > 1
    return _active_continuous(latents)


def _active_continuous(latents: np.ndarray) -> np.ndarray:
    ranges = latents.max(axis=0) - latents.min(axis=0)
    return ranges > ranges.max() / 20


def normalized_mutual_info(
    sources,
    latents,
    *,
    discrete_latents: bool,
    estimator: str = "knn",
    num_bins: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """The ``(K, L)`` matrix ``I(s_i; z_j) / H(s_i)`` that InfoM and InfoC read.

    Mutual information and entropy are in nats; the estimators are those of
    ``infomec``. Rows of constant sources (``H(s_i) = 0``) are 0.

    Parameters
    ----------
    sources : array-like
        ``(N, K)`` labels of the ground-truth factors.
    latents : array-like
        ``(N, L)`` latents: numbers, or labels when ``discrete_latents``.
    discrete_latents : bool
        Whether the latents take a finite set of values (exact plug-in MI).
    estimator : {'knn', 'histogram'}, default 'knn'
        MI estimator for continuous latents.
    num_bins : int, default 20
        Equal-width bins per latent for ``estimator='histogram'``.
    seed : int, default 0
        Random state of the kNN estimator.

    Returns
    -------
    numpy.ndarray
        ``(K, L)`` float array; entries are in [0, 1] for discrete latents
        (the kNN estimate may slightly exceed 1).

    Raises
    ------
    ValueError
        If ``sources`` or ``latents`` is not a 2-D array, their numbers of rows
        differ, there are fewer than 2 samples, or continuous latents are not
        finite real numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from latentquant.metrics import normalized_mutual_info
    >>> sources = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 25)
    >>> latents = sources[:, ::-1]  # latent 0 is source 1, latent 1 is source 0
    >>> normalized_mutual_info(sources, latents, discrete_latents=True).round(3)
    array([[0., 1.],
           [1., 0.]])
    """
    latents, s_codes, s_values, z_codes = _mi.prepare(sources, latents, discrete_latents=discrete_latents)
    return _nmi(s_codes, s_values, latents, z_codes, check_choice("estimator", estimator, ESTIMATORS), num_bins, seed)


def _nmi(s_codes, s_values, latents, z_codes, estimator, num_bins, seed):
    """``z_codes`` is (codes, n_values) of discrete latents, None if continuous."""
    h = _mi.entropy(s_codes, s_values)
    if z_codes is not None:
        mi = _mi.mutual_info_matrix(s_codes, s_values, *z_codes)
    elif estimator == "histogram":
        z_codes, z_values = _mi.label_encode(_mi.histogram_discretize(latents, num_bins))
        mi = _mi.mutual_info_matrix(s_codes, s_values, z_codes, z_values)
    else:  # "knn" (the caller checked the estimator):
        # mutual_info_classif(z, s_codes[:, i], discrete_features=False,
        # n_neighbors=10, random_state=seed) for every source, by sorting
        mi = _knn.knn_mutual_info(_mi.standardize(latents), s_codes, s_values, n_neighbors=10, seed=seed)
    safe_h = np.where(h > 0, h, 1.0)
    return np.where(h[:, None] > 0, mi / safe_h[:, None], 0.0)


def _normalized_max_share(p: np.ndarray, axis: int) -> float:
    """``(mean(max/sum) - 1/n) / (1 - 1/n)`` along ``axis`` (n = its length).

    A slice with zero total carries no information about anything and is
    scored at chance, max/sum := 1/n, i.e. it contributes 0 after
    normalization, instead of dividing 0 by 0."""
    n = p.shape[axis]
    total = p.sum(axis=axis)
    share = np.where(total > 0, p.max(axis=axis) / np.where(total > 0, total, 1.0), 1.0 / n)
    return float((share.mean() - 1.0 / n) / (1.0 - 1.0 / n))


def _logistic_log_loss(x, y: np.ndarray) -> float:
    """Unweighted mean log loss, on the training samples, of a multinomial
    logistic regression fitted with balanced class weights and no penalty."""
    # deferred: scikit-learn is optional (the metrics extra) and slow to import
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    model = LogisticRegression(
        C=np.inf,  # no penalty (penalty=None is deprecated since sklearn 1.8)
        class_weight="balanced",
        fit_intercept=True,
        solver="lbfgs",
        max_iter=100,
        tol=1e-4,
    )
    with warnings.catch_warnings():
        # 100 lbfgs iterations is part of the definition; unpenalized fits on
        # separable data never converge, so the warning would always fire.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return float(log_loss(y, model.predict_proba(x), labels=model.classes_))


def _one_hot(codes: np.ndarray, n_values: np.ndarray):
    """Sparse (N, sum n_values) one-hot matrix of a code array."""
    from scipy import sparse  # deferred: optional (the metrics extra)

    n, c = codes.shape
    cols = codes + np.concatenate([[0], np.cumsum(n_values)[:-1]])[None, :]
    data = np.ones(n * c)
    indptr = np.arange(0, n * c + 1, c)
    return sparse.csr_matrix((data, cols.ravel(), indptr), shape=(n, int(n_values.sum())))


def explicitness(sources, latents, *, discrete_latents: bool, return_per_source: bool = False):
    """InfoE, the normalized predictive information of a linear probe.

        InfoE = mean_i (H0_i - CE_i) / H0_i

    ``CE_i`` is the mean log loss of a multinomial logistic regression that
    predicts source ``i`` from one-hot latents (discrete) or standardized
    latents (continuous), ``H0_i`` the same from an all-zero input (the
    intercept-only model); see ``infomec`` for the fit. Constant sources
    are skipped.

    Parameters
    ----------
    sources : array-like
        ``(N, K)`` labels of the ground-truth factors.
    latents : array-like
        ``(N, L)`` latents: numbers, or labels when ``discrete_latents``.
    discrete_latents : bool
        Whether the latents take a finite set of values.
    return_per_source : bool, default False
        Also return the per-source values.

    Returns
    -------
    float or tuple of (float, numpy.ndarray)
        InfoE in [0, 1], NaN when no source varies; with
        ``return_per_source``, also the ``(K,)`` per-source values (NaN for
        constant sources).

    Raises
    ------
    ValueError
        If ``sources`` or ``latents`` is not a 2-D array, their numbers of rows
        differ, there are fewer than 2 samples, or continuous latents are not
        finite real numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from latentquant.metrics import explicitness
    >>> sources = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 25)
    >>> round(explicitness(sources, sources, discrete_latents=True), 2)
    1.0
    """
    latents, s_codes, s_values, z_codes = _mi.prepare(sources, latents, discrete_latents=discrete_latents)
    per_source = _explicitness(s_codes, s_values, latents, z_codes)
    value = float(np.mean(per_source[s_values > 1])) if (s_values > 1).any() else float("nan")
    return (value, per_source) if return_per_source else value


def _explicitness(s_codes, s_values, latents, z_codes) -> np.ndarray:
    if z_codes is not None:
        x = _one_hot(*z_codes)
    else:
        x = _mi.standardize(latents)
    zeros = np.zeros((s_codes.shape[0], 1))
    out = np.full(s_codes.shape[1], np.nan)
    with _mi.one_thread():  # many small fits: thread pools only spin (see _mi.one_thread)
        for i in np.flatnonzero(s_values > 1):
            y = s_codes[:, i]
            h0 = _logistic_log_loss(zeros, y)
            out[i] = (h0 - _logistic_log_loss(x, y)) / h0
    return out


def infomec(
    sources,
    latents,
    *,
    discrete_latents: bool,
    explicitness: bool = True,
    seed: int = 0,
    estimator: str = "knn",
    num_bins: int = 20,
) -> InfoMEC:
    """InfoM, InfoE and InfoC of ``latents`` (N, L) against ``sources`` (N, K).

    **Normalized mutual information.** ``nmi[i, j] = I(s_i; z_j) / H(s_i)``,
    plug-in estimates in nats. Sources are label-encoded per column (any
    labels). Discrete latents are label-encoded too and the MI is the exact
    plug-in value (equal to ``sklearn.metrics.mutual_info_score``),
    counted in one vectorized pass. Continuous latents are standardized and
    ``estimator='knn'`` uses the k-nearest-neighbour estimator of
    ``sklearn.feature_selection.mutual_info_classif`` with
    ``n_neighbors=10`` and ``random_state=seed`` (as the authors do; it can
    slightly exceed ``H(s_i)``, values are not clipped), while
    ``estimator='histogram'`` bins each latent into ``num_bins`` equal-width
    bins (as ``latentquant.metrics.mig``) and uses the plug-in value.

    **Active latents.** Range > 0 when discrete (2+ distinct values); range >
    (largest range) / 20 when continuous.

    **Modularity and compactness.** With P the NMI restricted to the K'
    non-constant sources and the L' active latents:

        InfoM = (mean_j [max_i P_ij / sum_i P_ij] - 1/K') / (1 - 1/K')
        InfoC = (mean_i [max_j P_ij / sum_j P_ij] - 1/L') / (1 - 1/L')

    **Explicitness.** ``InfoE = mean_i (H0_i - CE_i) / H0_i``: CE_i is the
    mean log loss of a multinomial logistic regression (no penalty, balanced
    class weights, intercept, lbfgs, 100 iterations, tol 1e-4) fitted and
    scored on the same samples, with one-hot (discrete) or standardized
    (continuous) latents as inputs; H0_i is the same with an all-zero input.
    The log loss is the plain (unweighted) sample mean, as in the authors'
    code; with balanced weights the intercept-only model predicts the uniform
    distribution, so ``H0_i = log(n_classes_i)``. ``explicitness=False``
    skips these fits and leaves ``infoe`` NaN.

    **Degenerate cases** (each raises a ``MetricWarning``, never a
    silent 0/0):

    - a constant source (``H(s_i) = 0``): its ``nmi`` row is 0 and it is
      left out of InfoM, InfoC and InfoE (K' counts the others); when no
      source varies, all three scores are NaN;
    - no active latent: ``infom`` and ``infoc`` are NaN;
    - one active latent (L' = 1): ``infoc`` is NaN (1 - 1/L' = 0);
      one non-constant source (K' = 1): ``infom`` is NaN likewise;
    - an active latent with zero NMI to every source (or a source with zero
      NMI to every active latent) is scored at chance, max/sum := 1/K'
      (1/L'), so it adds 0 to the normalized mean; no warning, as the kNN
      estimator clips to exactly 0 routinely.

    Parameters
    ----------
    sources : array-like
        ``(N, K)`` labels of the ground-truth factors (any labels).
    latents : array-like
        ``(N, L)`` latents: numbers, or labels when ``discrete_latents``.
    discrete_latents : bool
        Whether the latents take a finite set of values.
    explicitness : bool, default True
        Compute InfoE (K logistic fits, the slow part).
    seed : int, default 0
        Random state of the kNN estimator.
    estimator : {'knn', 'histogram'}, default 'knn'
        MI estimator for continuous latents.
    num_bins : int, default 20
        Bins per latent for ``estimator='histogram'``.

    Returns
    -------
    InfoMEC
        ``(infom, infoe, infoc, nmi, active)``: the three scores, the
        ``(K, L)`` NMI matrix and the ``(L,)`` active mask.

    Raises
    ------
    ValueError
        If ``sources`` or ``latents`` is not a 2-D array, their numbers of rows
        differ, there are fewer than 2 samples, or continuous latents are not
        finite real numbers.
        Also for an unknown ``estimator``.

    Warns
    -----
    MetricWarning
        For the degenerate cases above.

    Examples
    --------
    Two sources carried by one latent each, and a third latent that is noise
    (the noise latent costs modularity: its small, spurious information is
    spread over both sources):

    >>> import numpy as np
    >>> from latentquant.metrics import infomec
    >>> rng = np.random.default_rng(0)
    >>> sources = rng.integers(0, 4, size=(1000, 2))
    >>> latents = np.column_stack([sources, rng.integers(0, 4, size=1000)])
    >>> scores = infomec(sources, latents, discrete_latents=True)
    >>> print(f"InfoM {scores.infom:.2f}, InfoE {scores.infoe:.2f}, InfoC {scores.infoc:.2f}")
    InfoM 0.73, InfoE 1.00, InfoC 0.99
    >>> scores.nmi.shape, scores.active.tolist()
    ((2, 3), [True, True, True])

    References
    ----------
    Hsu et al., "Disentanglement via Latent Quantization", NeurIPS 2023.
    Kraskov, Stoegbauer, Grassberger, "Estimating mutual information", 2004;
    Ross, "Mutual information between discrete and continuous data sets", 2014.
    """
    latents, s_codes, s_values, z_codes = _mi.prepare(sources, latents, discrete_latents=discrete_latents)
    explicitness = check_flag("explicitness", explicitness)
    check_choice("estimator", estimator, ESTIMATORS)
    active = _active_continuous(latents) if z_codes is None else z_codes[1] > 1
    nmi = _nmi(s_codes, s_values, latents, z_codes, estimator, num_bins, seed)

    varying = s_values > 1
    if varying.any() and not varying.all():
        _mi.warn(
            f"constant source(s) {np.flatnonzero(~varying).tolist()} have zero entropy; "
            f"their NMI rows are 0 and they are excluded from InfoM/InfoC/InfoE"
        )
    p = nmi[np.ix_(varying, active)]
    k, l = p.shape
    infom = infoc = float("nan")
    if k == 0:
        _mi.warn("no source varies: InfoM, InfoC and InfoE are undefined (NaN)")
    elif l == 0:
        _mi.warn("no active latent: InfoM and InfoC are undefined (NaN)")
    else:
        if k >= 2:
            infom = _normalized_max_share(p, axis=0)
        else:
            _mi.warn("only one non-constant source: InfoM is undefined (1 - 1/K' = 0), NaN")
        if l >= 2:
            infoc = _normalized_max_share(p, axis=1)
        else:
            _mi.warn("only one active latent: InfoC is undefined (1 - 1/L' = 0), NaN")

    infoe = float("nan")
    if explicitness and k > 0:
        per_source = _explicitness(s_codes, s_values, latents, z_codes)
        infoe = float(np.mean(per_source[varying]))
    return InfoMEC(infom=infom, infoe=infoe, infoc=infoc, nmi=nmi, active=active)
