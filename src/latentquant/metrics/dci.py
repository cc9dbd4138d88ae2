"""DCI: disentanglement, completeness and informativeness.

Eastwood and Williams, "A Framework for the Quantitative Evaluation of
Disentangled Representations", ICLR 2018; the gradient-boosted-trees variant
of Locatello et al., "Challenging Common Assumptions in the Unsupervised
Learning of Disentangled Representations", ICML 2019 (disentanglement_lib).
Shapes: N samples, K sources, L latents.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import _mi


class DCI(NamedTuple):
    """The scores ``dci`` returns, a named tuple.

    Attributes
    ----------
    disentanglement : float
        D in [0, 1]: 1 when each latent is important for one source only.
    completeness : float
        C in [0, 1]: 1 when each source is predicted from one latent only.
    informativeness_train : float
        Mean accuracy of the per-source classifiers on the training split.
    informativeness_test : float
        Mean accuracy of the per-source classifiers on the test split.
    importance : numpy.ndarray
        ``(L, K)`` importance ``R[j, i]`` of latent ``j`` for source ``i``.

    Examples
    --------
    >>> import numpy as np
    >>> from latentquant.metrics import DCI
    >>> d, c, i_train, i_test, r = DCI(0.9, 0.8, 1.0, 0.95, np.eye(2))
    >>> d, r.shape
    (0.9, (2, 2))
    """

    disentanglement: float
    completeness: float
    informativeness_train: float  # mean accuracy on the training split
    informativeness_test: float  # mean accuracy on the test split
    importance: np.ndarray  # (L, K) importance R of latent j for source i


MODELS = ("gbt", "fast")
Model = str | Callable[[int], object]


def _make_model(model: Model, seed: int):
    """A fresh classifier; ``model`` is a name in MODELS or ``factory(seed)``."""
    if callable(model):
        return model(seed)
    # deferred: scikit-learn is optional (the metrics extra) and slow to import
    from sklearn.ensemble import GradientBoostingClassifier

    if model == "gbt":
        # disentanglement_lib: GradientBoostingClassifier() with all defaults
        # (100 stages of depth-3 trees, learning rate 0.1); seeded here.
        return GradientBoostingClassifier(random_state=seed)
    # "fast" (dci checked the name): 5x fewer stages with a 5x larger step, close
    # to the default's importances at a fifth of the cost (agreement: docs/metrics.md).
    return GradientBoostingClassifier(n_estimators=20, learning_rate=0.5, random_state=seed)


def _importance(fitted, num_latents: int) -> np.ndarray:
    """(L,) absolute importances: ``feature_importances_`` (trees) or the
    mean absolute coefficient over classes (linear models)."""
    if hasattr(fitted, "feature_importances_"):
        imp = np.abs(np.asarray(fitted.feature_importances_, dtype=np.float64))
    elif hasattr(fitted, "coef_"):
        imp = np.abs(np.atleast_2d(np.asarray(fitted.coef_, dtype=np.float64))).mean(axis=0)
    else:
        raise TypeError(
            f"the DCI model {type(fitted).__name__} exposes neither feature_importances_ nor coef_ after fitting"
        )
    if imp.shape != (num_latents,):
        raise ValueError(f"the DCI model gave {imp.shape} importances, expected ({num_latents},)")
    return imp


def _entropy_base(p: np.ndarray, base: int) -> np.ndarray:
    """Row-wise entropy of the normalized rows of ``p`` (positive row sums),
    in units of log(base); 0 log 0 = 0."""
    q = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q), 0.0)
    return -terms.sum(axis=1) / np.log(base)


def _weighted_one_minus_entropy(r: np.ndarray) -> float:
    """``sum_j rho_j (1 - H_n(R_j.))`` over rows j of ``r`` (n = columns),
    rho_j = R_j. / sum R; rows with zero importance have weight 0."""
    total = r.sum(axis=1)
    keep = total > 0
    rho = total[keep] / total.sum()
    return float(np.sum(rho * (1.0 - _entropy_base(r[keep], r.shape[1]))))


def dci_scores(importance) -> tuple[float, float]:
    """(disentanglement, completeness) of an (L, K) importance matrix R.

        D = sum_j rho_j (1 - H_K(R_j.)),  rho_j = sum_i R_ji / sum R
        C = sum_i rho_i (1 - H_L(R_.i)),  rho_i = sum_j R_ji / sum R

    H_n is the entropy in base n of a row (column) normalized to sum 1.
    D needs K >= 2 and C needs L >= 2 (base-1 entropy), else NaN with a
    ``MetricWarning``. If R is all zero (no latent is used), the matrix
    is taken as uniform, as disentanglement_lib does: D = C = 0, with a
    warning.
    """
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2 or (r < 0).any() or not np.isfinite(r).all():
        raise ValueError(f"importance must be a finite, non-negative 2-D array, got shape {r.shape}")
    num_latents, num_sources = r.shape
    if r.sum() == 0:
        _mi.warn("all DCI importances are zero: taken as uniform, D = C = 0")
        r = np.ones_like(r)
    d = c = float("nan")
    if num_sources >= 2:
        d = _weighted_one_minus_entropy(r)
    else:
        _mi.warn("DCI disentanglement needs at least 2 non-constant sources; NaN")
    if num_latents >= 2:
        c = _weighted_one_minus_entropy(r.T)
    else:
        _mi.warn("DCI completeness needs at least 2 latents; NaN")
    return d, c


def dci(
    sources,
    latents,
    *,
    test_fraction: float = 1 / 3,
    seed: int = 0,
    model: Model = "gbt",
) -> DCI:
    """Disentanglement, completeness and informativeness (Eastwood & Williams).

    The samples are split at random (``seed``) into a training part and a
    test part of ``test_fraction`` of them. For each source i a classifier
    predicts its label-encoded values from the raw latents; the absolute
    feature importances form column i of R (L, K). Then

        D = sum_j rho_j (1 - H_K(R_j.)),  rho_j = R_j. / sum R
        C = sum_i rho_i (1 - H_L(R_.i)),  rho_i = R_.i / sum R
        I_train, I_test = mean over sources of the classifier accuracy.

    Models: ``'gbt'`` (default) is sklearn's
    ``GradientBoostingClassifier`` with its defaults,
    as in disentanglement_lib; it fits one tree per class per stage and is
    slow on many-valued sources. ``'fast'`` is the same model with 20
    stages and learning rate 0.5, about 5x faster; its agreement with
    ``'gbt'`` is measured in ``docs/metrics.md`` (``benchmarks/metrics.py``).
    A callable ``model(seed)`` may return any classifier exposing
    ``feature_importances_`` or ``coef_`` after ``fit`` (the importance of a
    linear model is its mean absolute coefficient over classes).

    Degenerate cases: constant sources (one value) are skipped: their column
    of R is 0 and they are left out of D's base K and of I (with a
    ``MetricWarning``); a source with a single value in the training
    split raises ValueError. With fewer than 2 varying sources D is NaN,
    with 1 latent C is NaN, and an all-zero R gives NaN for both (the
    ``dci_scores`` helper of this module). Unlike disentanglement_lib,
    entropies use 0 log 0 = 0 exactly instead of adding 1e-11 to R.

    Parameters
    ----------
    sources : array-like
        ``(N, K)`` labels of the ground-truth factors.
    latents : array-like
        ``(N, L)`` real-valued latents.
    test_fraction : float, default 1/3
        Fraction of the samples held out for ``informativeness_test``.
    seed : int, default 0
        Random state of the split and of the classifiers.
    model : {'gbt', 'fast'} or callable, default 'gbt'
        The classifier, as described above.

    Returns
    -------
    DCI
        ``(disentanglement, completeness, informativeness_train,
        informativeness_test, importance)``, ``importance`` of shape ``(L, K)``.

    Raises
    ------
    ValueError
        If ``sources`` or ``latents`` is not a 2-D array, their numbers of rows
        differ, there are fewer than 2 samples, or the latents are not finite
        real numbers.
        Also for an unknown ``model``, a ``test_fraction`` that leaves either
        split empty, or a source with a single value in the training split.
    TypeError
        If the fitted ``model`` exposes neither ``feature_importances_`` nor ``coef_``.

    Warns
    -----
    MetricWarning
        When a source is constant (it is left out).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sources = rng.integers(0, 3, size=(300, 2))
    >>> latents = np.column_stack([sources, rng.normal(size=300)])  # two faithful latents, one noise
    >>> from latentquant.metrics import dci
    >>> scores = dci(sources, latents, model="fast")
    >>> print(f"D {scores.disentanglement:.2f}, C {scores.completeness:.2f}, I {scores.informativeness_test:.2f}")
    D 1.00, C 1.00, I 1.00

    References
    ----------
    Eastwood, Williams, ICLR 2018; Locatello et al., ICML 2019.
    """
    latents, s_codes, s_values, _ = _mi.prepare(sources, latents, discrete_latents=False)
    if not callable(model) and model not in MODELS:
        raise ValueError(f"model must be one of {MODELS} or a callable factory(seed), got {model!r}")
    train, test = _mi.split(s_codes.shape[0], test_fraction, seed)
    x = np.asarray(latents, dtype=np.float64)
    num_latents, num_sources = x.shape[1], s_codes.shape[1]

    varying = s_values > 1
    importance = np.zeros((num_latents, num_sources))
    if not _mi.check_varying(varying, "DCI"):
        nan = float("nan")
        return DCI(nan, nan, nan, nan, importance)
    acc_train, acc_test = [], []
    for i in np.flatnonzero(varying):
        y = s_codes[:, i]
        if np.unique(y[train]).size < 2:
            raise ValueError(
                f"source {i} takes a single value in the training split of "
                f"{train.size} samples; use more samples or another seed"
            )
        fitted = _make_model(model, seed)
        with warnings.catch_warnings():
            from sklearn.exceptions import ConvergenceWarning  # deferred: optional, as above

            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted.fit(x[train], y[train])
        importance[:, i] = _importance(fitted, num_latents)
        acc_train.append(np.mean(fitted.predict(x[train]) == y[train]))
        acc_test.append(np.mean(fitted.predict(x[test]) == y[test]))

    d, c = dci_scores(importance[:, varying])
    return DCI(
        disentanglement=d,
        completeness=c,
        informativeness_train=float(np.mean(acc_train)),
        informativeness_test=float(np.mean(acc_test)),
        importance=importance,
    )
