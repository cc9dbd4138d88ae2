"""SAP: the separated attribute predictability score, discrete factors.

Kumar, Sattigeri, Balakrishnan, "Variational Inference of Disentangled
Latent Concepts from Unlabeled Observations", ICLR 2018, Section 3; the
classification variant of Locatello et al., ICML 2019 (disentanglement_lib).
Shapes: N samples, K sources, L latents.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _mi


def sap_matrix(sources, latents, *, test_fraction: float = 1 / 3, seed: int = 0) -> np.ndarray:
    """(L, K) test accuracy of a one-latent linear classifier per pair.

    For latent j and source i: ``LinearSVC(C=0.01, class_weight='balanced')``
    fitted on the raw values of z_j (no scaling, as disentanglement_lib) of
    the training split, scored by accuracy on the test split. Columns of
    constant sources are NaN.
    """
    latents, s_codes, s_values, _ = _mi.prepare(sources, latents, discrete_latents=False)
    return _sap_matrix(s_codes, s_values, np.asarray(latents, dtype=np.float64), test_fraction, seed)


def _sap_matrix(s_codes, s_values, z, test_fraction, seed):
    # deferred: scikit-learn is optional (the metrics extra) and slow to import
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    train, test = _mi.split(z.shape[0], test_fraction, seed)
    scores = np.full((z.shape[1], s_codes.shape[1]), np.nan)
    for i in np.flatnonzero(s_values > 1):
        y = s_codes[:, i]
        if np.unique(y[train]).size < 2:
            raise ValueError(
                f"source {i} takes a single value in the training split of "
                f"{train.size} samples; use more samples or another seed"
            )
        for j in range(z.shape[1]):
            clf = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():
                # the default 1000 iterations, as the reference, may not converge
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(z[train, j : j + 1], y[train])
            scores[j, i] = np.mean(clf.predict(z[test, j : j + 1]) == y[test])
    return scores


def sap(sources, latents, *, test_fraction: float = 1 / 3, seed: int = 0) -> float:
    """Mean over sources of the gap between the two best single-latent accuracies.

        SAP = mean_i (A_(1)i - A_(2)i)

    where A_ji is the test accuracy of a linear SVM
    (``LinearSVC(C=0.01, class_weight='balanced')``) predicting source i from
    latent j alone, and A_(1)i >= A_(2)i are the two
    largest in column i. The samples are split at random (``seed``) into
    training and test parts (``test_fraction`` for testing); disentanglement_lib
    draws two independent sample sets instead.

    Degenerate cases: fewer than 2 latents raises ValueError; constant
    sources are left out with a ``MetricWarning``, NaN if none varies;
    a source with a single value in the training split raises ValueError.

    Parameters
    ----------
    sources : array-like
        ``(N, K)`` labels of the ground-truth factors.
    latents : array-like
        ``(N, L)`` real-valued latents, ``L >= 2``.
    test_fraction : float, default 1/3
        Fraction of the samples held out to measure the accuracies.
    seed : int, default 0
        Random state of the split.

    Returns
    -------
    float
        SAP in [0, 1]; NaN when no source varies.

    Raises
    ------
    ValueError
        If ``sources`` or ``latents`` is not a 2-D array, their numbers of rows
        differ, there are fewer than 2 samples, or the latents are not finite
        real numbers.
        Also when there are fewer than 2 latents, a ``test_fraction`` leaves
        either split empty, or a source has a single value in the training split.

    Warns
    -----
    MetricWarning
        When a source is constant (it is left out), or no source varies.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sources = rng.integers(0, 3, size=(300, 2))
    >>> latents = np.column_stack([sources, rng.normal(size=300)])  # two faithful latents, one noise
    >>> from latentquant.metrics import sap
    >>> round(sap(sources, latents), 2)  # one linear SVM per latent reads 3 ordered values only in part
    0.33

    References
    ----------
    Kumar et al., ICLR 2018; Locatello et al., ICML 2019.
    """
    latents, s_codes, s_values, _ = _mi.prepare(sources, latents, discrete_latents=False)
    if latents.shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 latents, got latents of shape {latents.shape}")
    varying = s_values > 1
    if not _mi.check_varying(varying, "SAP"):
        return float("nan")
    scores = _sap_matrix(s_codes, s_values, np.asarray(latents, dtype=np.float64), test_fraction, seed)
    top = -np.sort(-scores[:, varying], axis=0)
    return float(np.mean(top[0] - top[1]))
