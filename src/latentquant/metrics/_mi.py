"""Shared helpers: input validation, label encoding, discrete entropy and MI.

Shapes: N samples, K sources (ground-truth factors), L latents. A *code*
array is an (N, C) array of non-negative integers produced by
``label_encode``; ``n_values[c]`` is the number of distinct values of
column ``c``, so ``codes[:, c]`` lies in ``[0, n_values[c])``.

All information quantities are plug-in estimates in nats on the empirical
joint distribution, exactly what ``sklearn.metrics.mutual_info_score``
computes:

    I(s; z) = sum_{a,b} p(a,b) log( p(a,b) / (p(a) p(b)) ),  p = counts / N
    H(s)    = I(s; s) = -sum_a p(a) log p(a)
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from latentquant.validation import check_flag, check_fraction, check_int

# Largest joint table (in cells) built with one bincount; larger pairs fall
# back to a sort-based count, so memory stays bounded for many-valued latents.
_MAX_TABLE = 1 << 24
# Largest (N x latents) block of combined codes built at once.
_MAX_BLOCK = 1 << 23


class MetricWarning(UserWarning):
    """A metric was computed on degenerate input and part of it is undefined or was excluded.

    Raised as a warning (``warnings.warn``) by ``infomec``,
    ``dci``, ``mig`` and
    ``sap`` for constant sources, too few active
    latents and the like; the score it concerns is NaN or leaves the culprit
    out, never a silent 0/0.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from latentquant.metrics import MetricWarning, mig
    >>> sources = np.column_stack([np.arange(100) % 4, np.zeros(100, int)])  # source 1 is constant
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     score = mig(sources, np.column_stack([sources[:, 0], np.arange(100) % 3]), discrete_latents=True)
    >>> [w.category.__name__ for w in caught]
    ['MetricWarning']
    """


def one_thread():
    """A context in which BLAS and OpenMP run on one thread (threadpoolctl), for the
    metrics' many small scikit-learn and SciPy calls (a logistic regression per
    source, a neighbour search per tiny class). Their thread pools spin between
    such calls; with torch's own pools loaded and the cores busy, a fit cost 2 to
    90 times its one-thread time (measured: ``_knn.knn_mutual_info``,
    ``infomec._explicitness``), and even on an idle 2-core machine InfoE of 10,000
    samples took 2.2 s at two threads against 1.1 s at one. One thread also makes
    the scores independent of the machine's core count. The limit is process-wide
    while it holds and is restored on exit."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def warn(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, MetricWarning, stacklevel=stacklevel)


def check_varying(varying: np.ndarray, metric: str) -> bool:
    """Warn about constant sources (excluded from ``metric``); False, with a
    warning that ``metric`` is NaN, when no source varies."""
    if not varying.any():
        warn(f"no source varies: {metric} is undefined (NaN)", stacklevel=4)
        return False
    if not varying.all():
        warn(f"constant source(s) {np.flatnonzero(~varying).tolist()} are excluded from {metric}", stacklevel=4)
    return True


# --------------------------------------------------------------------- input


def to_numpy(x, name: str) -> np.ndarray:
    """``x`` as a numpy array; torch tensors (anything with ``detach``) are
    detached and moved to the CPU without importing torch here."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {err}") from None


def check_2d(x, name: str, *, numeric: bool) -> np.ndarray:
    """Validate one (N, C) input. ``numeric`` requires real numbers (latents
    that are standardized or binned); otherwise any hashable labels pass."""
    x = to_numpy(x, name)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_columns), "
            f"got a {x.ndim}-D array of shape {x.shape}; reshape a single "
            f"column with x[:, None]"
        )
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 column, got shape {x.shape}")
    if x.dtype == bool:
        x = x.astype(np.int64)
    if numeric and not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers or labels, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} must be finite, found {int(bad.sum())} NaN/inf value(s), "
                f"first at [{row}, {col}] = {x[row, col]}"
            )
    elif x.dtype == object:
        for col in range(x.shape[1]):
            for v in x[:, col]:
                if isinstance(v, float) and not np.isfinite(v):
                    raise ValueError(f"{name} must be finite, found {v} in column {col}")
    return x


def check_inputs(sources, latents, *, discrete_latents: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``sources`` (N, K) labels and ``latents`` (N, L) together: numbers, or labels when
    ``discrete_latents`` (a flag, checked too)."""
    discrete_latents = check_flag("discrete_latents", discrete_latents)
    sources = check_2d(sources, "sources", numeric=False)
    latents = check_2d(latents, "latents", numeric=not discrete_latents)
    if len(sources) != len(latents):
        raise ValueError(
            f"sources and latents must have the same number of samples, got {len(sources)} "
            f"(sources {sources.shape}) and {len(latents)} (latents {latents.shape})"
        )
    if sources.shape[0] < 2:
        raise ValueError(f"at least 2 samples are needed, got {sources.shape[0]}")
    return sources, latents


class Inputs(NamedTuple):
    """Checked inputs of a metric, encoded once (``prepare``)."""

    latents: np.ndarray  # (N, L) as given: numbers, or labels when discrete
    s_codes: np.ndarray  # (N, K) label codes of the sources
    s_values: np.ndarray  # (K,) distinct values per source
    z_codes: tuple[np.ndarray, np.ndarray] | None  # (codes (N, L), n_values (L,)) of discrete latents, else None


def prepare(sources, latents, *, discrete_latents: bool) -> Inputs:
    """The prologue every MI-based metric shares: ``check_inputs``, then ``label_encode`` of the
    sources and, when ``discrete_latents``, of the latents."""
    sources, latents = check_inputs(sources, latents, discrete_latents=discrete_latents)
    s_codes, s_values = label_encode(sources)
    return Inputs(latents, s_codes, s_values, label_encode(latents) if discrete_latents else None)


def split_sizes(test_fraction: float, n: int) -> tuple[int, int]:
    """(n_train, n_test) of a random split of ``n`` samples; both sides must be usable."""
    n_test = int(round(n * check_fraction("test_fraction", test_fraction)))
    n_train = n - n_test
    if n_test < 1 or n_train < 2:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} samples leaves {n_train} for "
            f"training and {n_test} for testing; need at least 2 and 1"
        )
    return n_train, n_test


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random train/test split."""
    n_train, _ = split_sizes(test_fraction, n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


# ----------------------------------------------------------- label encoding


def label_encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, map the sorted distinct values to 0, 1, 2, ...

    Returns ``codes`` (N, C) int64 and ``n_values`` (C,) int64. Same codes as
    ``sklearn.preprocessing.LabelEncoder`` applied column by column.
    Integer columns of moderate range are encoded in O(N) by counting;
    others by sorting (``np.unique``).
    """
    if np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint64:
        lo = x.min(axis=0).astype(np.int64)
        span = x.max(axis=0).astype(np.int64) - lo + 1  # no overflow below 2**63
        if (span > 0).all() and span.sum(dtype=np.float64) <= max(4 * x.size, 1 << 16):
            # all columns at once: shift column c into [offset_c, offset_c + span_c),
            # mark the values present, rank them within their column
            offset = np.concatenate([[0], np.cumsum(span)[:-1]])
            shifted = x.astype(np.int64) - (lo - offset)
            present = np.bincount(shifted.ravel(), minlength=int(span.sum())) > 0
            before = np.concatenate([[0], np.cumsum(present, dtype=np.int64)])
            codes = before[shifted] - before[offset]
            return codes, before[offset + span] - before[offset]
    codes = np.empty(x.shape, dtype=np.int64)
    n_values = np.empty(x.shape[1], dtype=np.int64)
    for c in range(x.shape[1]):
        uniq, inverse = np.unique(x[:, c], return_inverse=True)
        codes[:, c], n_values[c] = inverse.reshape(-1), uniq.size
    return codes, n_values


def histogram_discretize(z: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin each column into ``num_bins`` equal-width bins over its range, as
    disentanglement_lib does: ``np.digitize(z, np.histogram(z, num_bins)[1][:-1])``
    (bin labels 1..num_bins; the maximum falls in the last bin)."""
    num_bins = check_int("num_bins", num_bins, 2)
    z = np.asarray(z, dtype=np.float64)
    out = np.empty(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        edges = np.histogram(z[:, j], bins=num_bins)[1]
        out[:, j] = np.digitize(z[:, j], edges[:-1])
    return out


def standardize(z: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (population std, as
    ``sklearn.preprocessing.StandardScaler``); constant columns become 0."""
    z = np.asarray(z, dtype=np.float64)
    std = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)


# -------------------------------------------------------- entropy and MI


def entropy(codes: np.ndarray, n_values: np.ndarray) -> np.ndarray:
    """(C,) plug-in entropies in nats of the columns of a code array."""
    n = codes.shape[0]
    out = np.empty(codes.shape[1])
    for c in range(codes.shape[1]):
        counts = np.bincount(codes[:, c], minlength=int(n_values[c]))
        counts = counts[counts > 0]
        out[c] = np.log(n) - np.dot(counts, np.log(counts)) / n
    return np.clip(out, 0.0, None)


def _mi_sorted_pair(s: np.ndarray, ns: int, z: np.ndarray, nz: int) -> float:
    """MI of one pair whose joint table is too large to allocate densely."""
    n = s.size
    joint, n_sz = np.unique(s * nz + z, return_counts=True)
    cs = np.bincount(s, minlength=ns)[joint // nz]
    cz = np.bincount(z, minlength=nz)[joint % nz]
    n_sz = n_sz.astype(np.float64)
    return float(np.sum(n_sz * (np.log(n_sz) + np.log(n) - np.log(cs) - np.log(cz))) / n)


def _latent_blocks(z_values: np.ndarray, n: int, max_ks: int) -> list[np.ndarray]:
    """Consecutive groups of latent columns whose joint tables with any
    source fit in _MAX_TABLE cells and whose codes fit in _MAX_BLOCK."""
    blocks, current, cells = [], [], 0
    for j, lz in enumerate(z_values.tolist()):
        if current and (max_ks * (cells + lz) > _MAX_TABLE or n * (len(current) + 1) > _MAX_BLOCK):
            blocks.append(np.array(current))
            current, cells = [], 0
        current.append(j)
        cells += lz
    blocks.append(np.array(current))
    return blocks


def mutual_info_matrix(
    s_codes: np.ndarray, s_values: np.ndarray, z_codes: np.ndarray, z_values: np.ndarray
) -> np.ndarray:
    """(K, L) matrix of plug-in MI in nats between code columns.

    Latent j's values get global codes ``g = start_j + z_j`` (start_j =
    sum of the value counts of the latents before it), so for source s one
    ``np.bincount`` of ``s * sum(Lz) + g`` over all N x L entries yields the
    (Ks, sum Lz) table whose column block j is the contingency table of
    (s, z_j). With n_ab its cells and n_a, n_b the marginal counts,

        I(s; z_j) = (1/N) sum_{a, b in block j} n_ab (log n_ab + log N - log n_a - log n_b)

    (empty cells contribute 0). Latents are grouped so that tables and code
    arrays stay bounded; a pair whose table alone is too large is counted by
    sorting instead.
    """
    n, num_sources = s_codes.shape
    z_values = z_values.astype(np.int64)
    s_values = s_values.astype(np.int64)
    mi = np.zeros((num_sources, z_codes.shape[1]))
    log_n = np.log(n)
    s_counts = [np.bincount(s_codes[:, i], minlength=int(s_values[i])) for i in range(num_sources)]
    for cols in _latent_blocks(z_values, n, int(s_values.max())):
        lz = z_values[cols]
        start = np.concatenate([[0], np.cumsum(lz)[:-1]])
        total = int(lz.sum())
        g = z_codes[:, cols[0] : cols[-1] + 1] + start  # (N, B) global codes, C order
        log_nz = np.log(np.maximum(np.bincount(g.ravel(), minlength=total), 1))
        for i in range(num_sources):
            ks = int(s_values[i])
            if ks * total > _MAX_TABLE:  # only for a single huge latent
                for j in cols:
                    mi[i, j] = _mi_sorted_pair(s_codes[:, i], ks, z_codes[:, j], int(z_values[j]))
                continue
            combined = (s_codes[:, i] * total)[:, None] + g
            table = np.bincount(combined.ravel(), minlength=ks * total).reshape(ks, total)
            log_ns = np.log(np.maximum(s_counts[i], 1))
            c = table.astype(np.float64)
            terms = c * (np.log(np.maximum(c, 1.0)) + log_n - log_ns[:, None] - log_nz[None, :])
            mi[i, cols] = np.add.reduceat(terms.sum(axis=0), start) / n
    return np.clip(mi, 0.0, None)
