"""K-means labels: the one clustering rule of the offline stage and of DPSM's supply units."""

from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    """Cluster labels ``[n]`` of K-means on ``x [n, D]`` into at most ``k`` clusters (ids ``0..k'-1``).

    scikit-learn's Lloyd with ``n_init`` restarts and ``random_state=seed``. ``k`` is capped by the number
    of distinct rows; with one cluster (or one row) all labels are 0. Labels are renumbered in order of
    first appearance so they are canonical.
    """
    # scikit-learn (with SciPy) takes about 2 s to import; only clustering needs it.
    from sklearn.cluster import KMeans

    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = int(min(k, len(np.unique(x, axis=0))))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x).labels_
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # cluster id -> rank of its first appearance
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[np.unique(labels)] = order
    return remap[labels]
