"""MIG: the mutual information gap.

Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in
Variational Autoencoders", NeurIPS 2018; the discretized estimate of
Locatello et al., ICML 2019 (disentanglement_lib). Shapes: N samples,
K sources, L latents.
"""

from __future__ import annotations

import numpy as np

from . import _mi


def mig(sources, latents, *, num_bins: int = 20, discrete_latents: bool = False) -> float:
    """Mean over sources of the gap between the two most informative latents.

        MIG = mean_i (I(s_i; z_(1)) - I(s_i; z_(2))) / H(s_i)

    where z_(1), z_(2) are the latents with the largest and second largest
    MI with source i. Sources are label-encoded; each continuous latent is
    discretized into ``num_bins`` equal-width bins over its range,
    ``np.digitize(z, np.histogram(z, num_bins)[1][:-1])``; with
    ``discrete_latents=True`` the label-encoded latents are used as they are.
    MI and entropy are plug-in estimates in nats (as
    ``sklearn.metrics.mutual_info_score``).

    Degenerate cases: fewer than 2 latents raises ValueError (no second
    latent to compare with); constant sources (H = 0) are left out of the
    mean with a ``MetricWarning``, and if no source varies the result is
    NaN.

    Parameters
    ----------
    sources : array-like
        ``(N, K)`` labels of the ground-truth factors.
    latents : array-like
        ``(N, L)`` latents, ``L >= 2``: numbers, or labels when ``discrete_latents``.
    num_bins : int, default 20
        Equal-width bins per continuous latent.
    discrete_latents : bool, default False
        Use the latents' own values instead of binning them.

    Returns
    -------
    float
        MIG in [0, 1]; NaN when no source varies.

    Raises
    ------
    ValueError
        If ``sources`` or ``latents`` is not a 2-D array, their numbers of rows
        differ, there are fewer than 2 samples, or the latents are not finite
        real numbers.
        Also when there are fewer than 2 latents.

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
    >>> from latentquant.metrics import mig
    >>> round(mig(sources, latents), 2)
    0.94

    References
    ----------
    Chen et al., NeurIPS 2018; Locatello et al., ICML 2019.
    """
    latents, s_codes, s_values, z_codes = _mi.prepare(sources, latents, discrete_latents=discrete_latents)
    if latents.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 latents, got latents of shape {latents.shape}")
    if z_codes is None:
        z_codes = _mi.label_encode(_mi.histogram_discretize(latents, num_bins))
    mi = _mi.mutual_info_matrix(s_codes, s_values, *z_codes)  # (K, L)
    h = _mi.entropy(s_codes, s_values)
    varying = h > 0
    if not _mi.check_varying(varying, "MIG"):
        return float("nan")
    top = -np.sort(-mi[varying], axis=1)
    return float(np.mean((top[:, 0] - top[:, 1]) / h[varying]))
