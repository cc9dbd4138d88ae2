"""The kNN mutual information of continuous latents with discrete sources,
computed in one dimension by sorting: the numbers of
``sklearn.feature_selection.mutual_info_classif`` without its trees.

Shapes: N samples, K sources, L latents. For one latent column c and one
source d, ``mutual_info_classif`` (Ross 2014, ``_compute_mi_cd``) computes

    MI = psi(N') + mean psi(k) - mean psi(N_d) - mean psi(m),   clipped at 0

over the N' samples whose label occurs more than once: k = min(n_neighbors,
N_d - 1), N_d the size of the sample's label class, r the distance to its
k-th nearest neighbour within the class, and m the number of samples (any
label) at distance <= nextafter(r, 0). sklearn finds both with trees fitted
per (source, latent, label); in one dimension both are positions in a sorted
column, and the sort of a column serves every source:

- the k nearest class neighbours of a point are among the k before and the k
  after it in the class's sorted values, so r^2 is the k-th smallest of 2k
  squared differences;
- the points within r form a contiguous run of the sorted column, found by
  binary search and corrected value by value against the exact comparison.

Distances are compared as the trees compare them: the squared difference
``(x_i - x_j) ** 2`` against ``r * r``, r = ``nextafter(sqrt(r^2), 0)``;
the means are taken over arrays in sample order, as sklearn's. (The trees'
node bounds compare unsquared distances; they agree with the leaf test because
squaring keeps adjacent doubles apart.) The scores are therefore the same
floats as sklearn's (checked against ``mutual_info_classif``
in tests/test_evaluation_speed.py). Classes small enough that sklearn searches
them by brute force (k >= N_d // 2, where its distances are computed
differently) are passed to sklearn's own ``NearestNeighbors``.
"""

from __future__ import annotations

import numpy as np

from ._mi import one_thread


def perturb(latents: np.ndarray, seed: int) -> np.ndarray:
    """The latents as ``mutual_info_classif`` scores them: scaled to unit
    variance (no centring) and jittered by ``1e-10 * max(1, mean |x|)``
    Gaussian noise from ``RandomState(seed)``; the same for every source."""
    from sklearn.preprocessing import scale
    from sklearn.utils import check_random_state

    # sklearn's statements, indexing included: the memory layout of the
    # scaled block decides how its variance is summed, to the last bit
    x = np.asarray(latents).astype(np.float64, copy=True)
    continuous = np.ones(x.shape[1], dtype=bool)
    x[:, continuous] = scale(x[:, continuous], with_mean=False, copy=False)
    rng = check_random_state(seed)
    means = np.maximum(1, np.mean(np.abs(x[:, continuous]), axis=0))
    x[:, continuous] += 1e-10 * means * rng.standard_normal(size=(x.shape[0], int(np.sum(continuous))))
    return x


def knn_mutual_info(
    latents: np.ndarray, s_codes: np.ndarray, s_values: np.ndarray, *, n_neighbors: int = 10, seed: int = 0
) -> np.ndarray:
    """(K, L) kNN MI in nats: row i is ``mutual_info_classif(latents,
    s_codes[:, i], discrete_features=False, n_neighbors=n_neighbors,
    random_state=seed)``; rows of constant sources are 0.

    sklearn's brute-force searches (``_brute_radius``) run on one thread
    (``_mi.one_thread``): each opens an OpenMP region for a few dozen points,
    and on a busy machine with torch's OpenMP runtime loaded too, that cost up
    to 90 times the one-thread time (measured on 2 cores with two other
    processes: 16 s against 0.18 s for 15 latent-source pairs of 200 samples).
    The results do not depend on the thread count."""
    from scipy.special import digamma

    x = perturb(latents, seed)
    order = np.argsort(x, axis=0, kind="stable")  # (N, L), shared by all sources
    mi = np.zeros((s_codes.shape[1], x.shape[1]))
    with one_thread():
        for i in np.flatnonzero(s_values > 1):
            y = s_codes[:, i]
            counts = np.bincount(y)
            keep = counts[y] > 1  # samples whose label occurs more than once
            for j in range(x.shape[1]):
                k_all, label_counts, m_all = _neighbour_counts(x[:, j], order[:, j], y, counts, keep, n_neighbors)
                n = np.sum(keep)
                value = digamma(n) + np.mean(digamma(k_all)) - np.mean(digamma(label_counts)) - np.mean(digamma(m_all))
                mi[i, j] = max(0, value)
    return mi


def _neighbour_counts(c, order, y, counts, keep, n_neighbors):
    """k, N_d and m (see the module docstring) of the kept samples, in sample order."""
    n, k = c.size, n_neighbors
    k_per_label = np.minimum(k, counts - 1)
    radius = np.empty(n)
    # samples grouped by label, each group sorted by value (g: grouped positions, w: window)
    grouped = order[np.argsort(y[order], kind="stable")]
    ends = np.cumsum(counts)
    tree = (counts > 1) & (k_per_label < counts // 2)  # labels sklearn searches with a KD tree
    for label in np.flatnonzero((counts > 1) & ~tree):
        radius[y == label] = _brute_radius(c, y, label, int(k_per_label[label]))
    if tree.any():
        values = c[grouped]
        g_lo, g_hi = np.repeat(ends - counts, counts), np.repeat(ends, counts)
        gw = np.arange(n)[:, None] + np.concatenate([np.arange(-k, 0), np.arange(1, k + 1)])
        d2 = np.square(values[:, None] - values[np.clip(gw, 0, n - 1)])  # (x_i - x_j) ** 2 as the trees
        d2[(gw < g_lo[:, None]) | (gw >= g_hi[:, None])] = np.inf
        kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
        sel = tree[y[grouped]]
        radius[grouped[sel]] = np.nextafter(np.sqrt(kth[sel]), 0)
    kept = order[keep[order]]  # kept samples in value order
    m_all = np.empty(n, dtype=np.int64)
    m_all[kept] = _count_within(c[kept], radius[kept])
    return (k_per_label[y][keep].astype(np.float64), counts[y][keep].astype(np.float64), m_all[keep])


def _brute_radius(c, y, label, k):
    """sklearn's own search for a label class it searches by brute force."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k).fit(c[y == label].reshape(-1, 1))
    return np.nextafter(nn.kneighbors()[0][:, -1], 0)


def _count_within(sorted_c, radius):
    """(N,) int64: #{j : (sorted_c[q] - sorted_c[j]) ** 2 <= radius[q] ** 2} (the
    queries sorted too, which keeps the binary searches in cache)."""
    query = sorted_c
    r2 = radius * radius

    def inside(idx, q):
        return np.square(query[q] - sorted_c[idx]) <= r2[q]

    m = sorted_c.size
    hi = np.searchsorted(sorted_c, query + radius, side="right")
    lo = np.searchsorted(sorted_c, query - radius, side="left")
    # searchsorted compares rounded sums; step over whole values until exact
    while True:
        q = np.flatnonzero(hi < m)
        q = q[inside(hi[q], q)]
        if q.size:
            hi[q] = np.searchsorted(sorted_c, sorted_c[hi[q]], side="right")
        p = np.flatnonzero(hi > 0)
        p = p[~inside(hi[p] - 1, p)]
        if p.size:
            hi[p] = np.searchsorted(sorted_c, sorted_c[hi[p] - 1], side="left")
        if not (q.size or p.size):
            break
    while True:
        q = np.flatnonzero(lo > 0)
        q = q[inside(lo[q] - 1, q)]
        if q.size:
            lo[q] = np.searchsorted(sorted_c, sorted_c[lo[q] - 1], side="left")
        p = np.flatnonzero(lo < m)
        p = p[~inside(lo[p], p)]
        if p.size:
            lo[p] = np.searchsorted(sorted_c, sorted_c[lo[p]], side="right")
        if not (q.size or p.size):
            break
    return (hi - lo).astype(np.int64)
