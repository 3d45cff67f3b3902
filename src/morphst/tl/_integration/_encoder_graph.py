"""The graph of :func:`morphst.tl.graph_encoder`: per-section spatial kNN edges, morphology edge weights, tiles.

Everything is an edge list (``n_obs × n_neighs`` entries): no ``n_obs × n_obs`` matrix is ever built. Tiles cut a
large section into spatially compact pieces of at most ``tile_size`` observations; training steps run on one
tile's induced subgraph at a time, so the memory of a step does not grow with the section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._utils._graph import knn_edges, sections, symmetrise
from ._fuse_blocks import standardised


@dataclass(frozen=True)
class EdgeGraph:
    """Symmetric weighted edges ``rows -> cols`` (no self-loops) over ``n`` observations."""

    rows: np.ndarray
    cols: np.ndarray
    weight: np.ndarray
    n: int

    @property
    def n_edges(self) -> int:
        """Number of undirected edges."""
        return int(self.rows.size // 2)


def spatial_graph(coords: np.ndarray, groups: np.ndarray | None, n_neighs: int) -> EdgeGraph:
    """The union of each observation's ``n_neighs`` nearest neighbours within its section, weights 1."""
    rows, cols, dist, _ = knn_edges(coords, groups, n_neighs=n_neighs)
    rows, cols, _ = symmetrise(rows, cols, dist, coords.shape[0])
    return EdgeGraph(rows.astype(np.int64), cols.astype(np.int64), np.ones(rows.size), coords.shape[0])


def morphology_weights(graph: EdgeGraph, morph: np.ndarray, morph_weight: float) -> tuple[EdgeGraph, float]:
    """Down-weight edges between spots that look different: ``w = exp(−morph_weight · d_m² / 2σ_m²)``.

    ``d_m`` is the Euclidean distance of the two spots' standardised morphology features (each feature to unit
    variance, the whole block divided by the square root of its width), ``σ_m`` its median over edges. Returns the
    re-weighted graph and ``σ_m``.
    """
    x = standardised(morph)
    d = np.empty(graph.rows.size)
    chunk = 1 << 16
    for s in range(0, d.size, chunk):
        diff = x[graph.rows[s : s + chunk]] - x[graph.cols[s : s + chunk]]
        d[s : s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    sigma = float(np.median(d)) if d.size else 1.0
    sigma = sigma if sigma > 0 else 1.0
    w = np.exp(-morph_weight * d**2 / (2 * sigma**2))
    return EdgeGraph(graph.rows, graph.cols, w, graph.n), sigma


def tiles(coords: np.ndarray, groups: np.ndarray | None, tile_size: int) -> list[np.ndarray]:
    """Positions of the observations of each tile: every section, cut into ``≈ tile_size`` spatial blocks.

    A section of ``n <= tile_size`` observations is one tile. A larger one is cut into ``s`` vertical strips by
    x, each strip into blocks by y, with ``s = ceil(sqrt(n / tile_size))``, so tiles are compact and hold at most
    ``tile_size`` observations. Sections never share a tile.
    """
    out = []
    for _, idx in sections(groups, coords.shape[0]):
        n = idx.size
        if n <= tile_size:
            out.append(idx)
            continue
        n_strips = int(np.ceil(np.sqrt(n / tile_size)))
        by_x = idx[np.argsort(coords[idx, 0], kind="stable")]
        for strip in np.array_split(by_x, n_strips):
            by_y = strip[np.argsort(coords[strip, 1], kind="stable")]
            out.extend(np.array_split(by_y, int(np.ceil(strip.size / tile_size))))
    return out


def subgraph(graph: EdgeGraph, indptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges induced by the observations ``idx``: local ``(rows, cols)`` (numbered by position in ``idx``) and
    the positions of those edges in ``graph``'s edge list.

    ``indptr`` is the row pointer of ``graph`` (edges sorted by row, as :func:`symmetrise` returns them).
    """
    local = np.full(graph.n, -1, dtype=np.int64)
    local[idx] = np.arange(idx.size)
    starts, ends = indptr[idx], indptr[idx + 1]
    counts = ends - starts
    pos = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
    r, c = local[graph.rows[pos]], local[graph.cols[pos]]
    keep = c >= 0
    return r[keep], c[keep], pos[keep]


def halo(graph: EdgeGraph, indptr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` followed by its neighbours outside ``idx`` (one hop), each once, in increasing order."""
    starts, ends = indptr[idx], indptr[idx + 1]
    counts = ends - starts
    pos = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
    extra = np.setdiff1d(graph.cols[pos], idx)
    return np.concatenate([idx, extra])


def row_pointer(graph: EdgeGraph) -> np.ndarray:
    """CSR row pointer of the (row-sorted) edge list."""
    return np.searchsorted(graph.rows, np.arange(graph.n + 1))


__all__ = ["EdgeGraph", "halo", "morphology_weights", "row_pointer", "spatial_graph", "subgraph", "tiles"]
