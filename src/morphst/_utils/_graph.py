"""Spatial neighbour graphs built section by section (the one place morphst builds them).

Used by :func:`morphst.tl.fuse` (kNN and radius graphs) and :func:`morphst.tl.evaluate_domains` (squidpy's
generic kNN graph, reproduced here so that a million cells need no per-section AnnData). Everything is an edge list
or a sparse matrix: memory grows with ``n_obs × n_neighs``, never ``n_obs²``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def sections(groups: np.ndarray | None, n: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(label, positions)`` of each section; ``groups=None`` is one section ``"0"``. Labels in sorted order."""
    if groups is None:
        yield "0", np.arange(n)
        return
    labels, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(labels.size + 1))
    for g, lab in enumerate(labels):
        yield str(lab), order[bounds[g] : bounds[g + 1]]


def knn_edges(
    coords: np.ndarray, groups: np.ndarray | None = None, *, n_neighs: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Directed k-nearest-neighbour edges ``i -> j`` within each section (scikit-learn, each point itself excluded).

    The graph of squidpy's ``gr.spatial_neighbors_knn`` (generic coordinates), built per section: ``n_neighs`` is
    capped at ``n - 1`` in a section of ``n`` observations. Returns ``(rows, cols, dist, caps)``, ``caps`` the
    sections whose count was capped (label -> neighbours used; 0 for a one-observation section, which has no edge).
    """
    from sklearn.neighbors import NearestNeighbors

    rows_l, cols_l, dist_l, caps = [], [], [], {}
    for lab, idx in sections(groups, coords.shape[0]):
        k = min(int(n_neighs), idx.size - 1)
        if k < n_neighs:
            caps[lab] = max(k, 0)
        if k < 1:
            continue
        dist, ind = NearestNeighbors(n_neighbors=k).fit(coords[idx]).kneighbors()
        rows_l.append(np.repeat(idx, k))
        cols_l.append(idx[ind.ravel()])
        dist_l.append(dist.ravel())
    if not rows_l:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0), caps
    return np.concatenate(rows_l), np.concatenate(cols_l), np.concatenate(dist_l), caps


def symmetrise(
    rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of ``i -> j`` and ``j -> i``: each undirected edge once per direction, sorted by ``(row, col)``."""
    r = np.concatenate([rows, cols])
    c = np.concatenate([cols, rows])
    d = np.concatenate([dist, dist])
    _, first = np.unique(r.astype(np.int64) * n + c, return_index=True)
    return r[first], c[first], d[first]


def spot_spacing(coords: np.ndarray) -> float:
    """Centre-to-centre spot spacing: the median distance of each observation to its nearest neighbour.

    In the unit of ``coords`` (px or µm). Visium: 100 µm; legacy ST: 200 µm.
    """
    from sklearn.neighbors import NearestNeighbors

    if coords.shape[0] < 2:
        return 1.0
    dist, _ = NearestNeighbors(n_neighbors=2).fit(coords).kneighbors(coords)
    d = dist[:, 1]
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def radius_edges(
    coords: np.ndarray, groups: np.ndarray | None = None, *, n_rings: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Symmetric edges within ``(n_rings + 0.1) × spacing`` of each observation, per section; no self-loops.

    The spacing is estimated per section by :func:`spot_spacing`, so the radius is in spots, not in a fixed unit:
    on a hexagonal Visium grid, ``n_rings=1`` reaches the 6 nearest spots (100 µm), ``n_rings=2`` the 18 spots of
    the first two rings (up to 200 µm). Returns ``(rows, cols, dist, spacing per section)``.
    """
    from sklearn.neighbors import NearestNeighbors

    rows_l, cols_l, dist_l, spacing = [], [], [], {}
    for lab, idx in sections(groups, coords.shape[0]):
        if idx.size < 2:
            continue
        sp = spot_spacing(coords[idx])
        spacing[lab] = sp
        radius = (n_rings + 0.1) * sp
        graph = NearestNeighbors(radius=radius).fit(coords[idx]).radius_neighbors_graph(mode="distance").tocoo()
        keep = graph.row != graph.col
        rows_l.append(idx[graph.row[keep]])
        cols_l.append(idx[graph.col[keep]])
        dist_l.append(graph.data[keep])
    if not rows_l:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0), spacing
    return np.concatenate(rows_l), np.concatenate(cols_l), np.concatenate(dist_l), spacing


__all__ = ["knn_edges", "radius_edges", "sections", "spot_spacing", "symmetrise"]
