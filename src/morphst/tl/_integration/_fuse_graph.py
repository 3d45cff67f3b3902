"""The spatial strategies of :func:`fuse`: ``"smooth"`` (radius graph) and ``"graph"`` (kNN graph), both sparse."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ... import _logging as logg
from ..._utils._graph import knn_edges, radius_edges, symmetrise
from ._fuse_blocks import FuseInputs, balanced, standardised


def spatial_knn(
    coords: np.ndarray, groups: np.ndarray | None = None, *, n_neighs: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric spatial k-nearest-neighbour edges, built within each group (section) only.

    ``(rows, cols, dist)``: the directed edge list of the symmetrised graph (each undirected edge in both
    directions, no self-loops) with the distance of each edge, in the unit of ``coords``; observations of different
    groups are never neighbours; ``n_neighs`` is capped at the group size - 1.
    """
    rows, cols, dist, _ = knn_edges(coords, groups, n_neighs=n_neighs)
    return symmetrise(rows, cols, dist, coords.shape[0])


def smooth_fusion(inputs: FuseInputs, blocks, n_rings, morph_weight, n_steps, spatial_key):
    """``"smooth"``: the morphology-weighted radius graph and the smoothed expression block, with its parameters."""
    reps, n_obs = inputs.reps, inputs.n_obs
    rows, cols, _, spacing = radius_edges(inputs.coords, inputs.groups, n_rings=n_rings)
    ew = np.ones(rows.size)
    sigma_m = None
    if len(reps) > 1 and morph_weight > 0 and rows.size:
        morph = np.hstack([standardised(x) for x in reps[1:]])
        dm = _edge_distances(morph, rows, cols)
        sigma_m = float(np.median(dm))
        sigma_m = sigma_m if sigma_m > 0 else 1.0
        ew = np.exp(-morph_weight * dm**2 / (2 * sigma_m**2))
    graph = sparse.csr_matrix((ew, (rows, cols)), shape=(n_obs, n_obs))
    fused = _propagate(blocks[0], graph, n_steps)
    params = {
        "n_rings": float(n_rings),
        "morph_weight": float(morph_weight) if len(blocks) > 1 else 0.0,
        "n_steps": int(n_steps),
        "spatial_key": spatial_key,
        "library_key": inputs.library_key,
        "spot_spacing": spacing,
        "sigma_morph": sigma_m,
        "n_edges": int(rows.size // 2),
        "mean_neighbours": float(rows.size / n_obs),
    }
    return fused, graph, params


def graph_fusion(inputs: FuseInputs, blocks, n_neighs, n_steps, spatial_key, notes: list[str]):
    """``"graph"``: the spatial × morphology kNN graph and the smoothed expression block; caps go to ``notes``."""
    groups, n_obs = inputs.groups, inputs.n_obs
    rows, cols, ds = spatial_knn(inputs.coords, groups, n_neighs=n_neighs)
    sizes = np.unique(np.asarray(groups).astype(str), return_counts=True) if groups is not None else None
    if sizes is not None:
        notes += [
            f"section {str(g)!r}: n_neighs capped at {c - 1} ({c} observations)"
            for g, c in zip(*sizes, strict=True)
            if c - 1 < n_neighs
        ]
    elif n_obs - 1 < n_neighs:
        notes.append(f"n_neighs capped at {n_obs - 1} ({n_obs} observations)")
    if notes:
        logg.warning(f"`n_neighs`={n_neighs} is more than some sections allow: {'; '.join(notes[:5])}.")
    sigma_s = float(np.median(ds)) if ds.size else 1.0
    sigma_s = sigma_s if sigma_s > 0 else 1.0
    ew = np.exp(-(ds**2) / (2 * sigma_s**2))
    sigma_m = None
    if len(blocks) > 1:
        morph = np.hstack([balanced(b, 1.0) for b in blocks[1:]])
        dm = _edge_distances(morph, rows, cols)
        sigma_m = float(np.median(dm)) if dm.size else 1.0
        sigma_m = sigma_m if sigma_m > 0 else 1.0
        ew = ew * np.exp(-(dm**2) / (2 * sigma_m**2))
    graph = sparse.csr_matrix((ew, (rows, cols)), shape=(n_obs, n_obs))
    fused = _propagate(blocks[0], graph, n_steps)
    params = {
        "n_neighs": n_neighs,
        "n_steps": n_steps,
        "spatial_key": spatial_key,
        "library_key": inputs.library_key,
        "sigma_spatial": sigma_s,
        "sigma_morph": sigma_m,
        "n_edges": int(rows.size // 2),
    }
    return fused, graph, params


def _edge_distances(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    d = np.empty(rows.size)
    chunk = 1 << 16
    for s in range(0, rows.size, chunk):
        diff = x[rows[s : s + chunk]] - x[cols[s : s + chunk]]
        d[s : s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return d


def _propagate(x: np.ndarray, graph: sparse.csr_matrix, n_steps: int) -> np.ndarray:
    """``n_steps`` of ``x <- D⁻¹ (G + I) x`` (row-normalised graph with a unit self-loop)."""
    n = graph.shape[0]
    prop = graph + sparse.identity(n, format="csr")
    prop = sparse.diags(1.0 / np.asarray(prop.sum(axis=1)).ravel()) @ prop
    out = x
    for _ in range(n_steps):
        out = prop @ out
    return out


__all__ = ["graph_fusion", "smooth_fusion", "spatial_knn"]
