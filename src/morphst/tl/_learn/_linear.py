"""Linear algebra shared by the integration methods: statistics of the training rows, spatial neighbour lists."""

from __future__ import annotations

import numpy as np

from ..._utils._stats import column_scale, zscore


def standardise_on(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Column z-scores with the mean and std of ``rows`` (constant columns: scale 1)."""
    return zscore(x, rows)[0]


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


def section_labels(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Section of each row as strings (``"0"`` for every row without sections)."""
    return np.full(n, "0") if groups is None else np.asarray(groups).astype(str)


def section_statistics(
    x: np.ndarray, groups: np.ndarray | None, train: np.ndarray, scale: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-section mean (and standard deviation when ``scale``) of ``x`` ``(n, p)``.

    A section's statistics come from its training rows, or from all its rows when it has none (a new section's
    offset is its own). Returns ``(names, mean (n_sections, p), sd (n_sections, p))`` (``sd`` all ones without
    ``scale``; a constant column's sd is 1).
    """
    sec = section_labels(groups, len(x))
    names = np.unique(sec)
    mean = np.empty((len(names), x.shape[1]))
    sd = np.ones((len(names), x.shape[1]))
    for i, s in enumerate(names):
        here = sec == s
        rows = here & train if (here & train).any() else here
        mean[i], v, _ = column_scale(x, rows)
        if scale:
            sd[i] = v
    return names, mean, sd


def apply_section_statistics(
    x: np.ndarray, groups: np.ndarray | None, names: np.ndarray, mean: np.ndarray, sd: np.ndarray, scale: bool
) -> np.ndarray:
    """``x`` centred (and scaled) with the statistics of each row's section; a section not in ``names``: its own."""
    sec = section_labels(groups, len(x))
    out = np.empty(x.shape, dtype=np.float64)
    for s in np.unique(sec):
        here = sec == s
        hit = np.flatnonzero(names == s)
        if len(hit):
            mu, sc = mean[hit[0]], sd[hit[0]]
        else:
            mu, sc = section_statistics(x[here], None, np.ones(here.sum(), bool), scale)[1:]
            mu, sc = mu[0], sc[0]
        out[here] = (x[here] - mu) / sc
    return out
