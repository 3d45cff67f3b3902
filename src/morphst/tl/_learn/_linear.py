"""Linear algebra shared by the integration methods: statistics of the training rows, spatial neighbour lists."""

from __future__ import annotations

import numpy as np


def standardise_on(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Column z-scores with the mean and std of ``rows`` (constant columns: scale 1)."""
    mu = x[rows].mean(axis=0)
    sd = x[rows].std(axis=0)
    sd[~(sd > 1e-12)] = 1.0
    return (x - mu) / sd


def whiten_on(e: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``e`` centred and whitened (PCA whitening, directions of near-zero variance dropped) on ``rows``."""
    ec = e - e[rows].mean(axis=0)
    _, s, vt = np.linalg.svd(ec[rows], full_matrices=False)
    keep = s > 1e-8 * max(s.max(), 1e-300)
    return ec @ vt[keep].T / (s[keep] / np.sqrt(len(rows)))


def neighbour_lists(edges, keep: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR-like neighbour lists ``(indptr, nbrs)`` of the edges with both ends in ``keep`` (boolean ``(n,)``)."""
    rows, cols = (np.asarray(e, dtype=np.int64) for e in edges)
    ok = keep[rows] & keep[cols] & (rows != cols)
    rows, cols = rows[ok], cols[ok]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols
