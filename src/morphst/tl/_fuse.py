"""Fuse morphology with expression: representation stitching, weighted stitching, morphology-aware spatial graph.

The integration side of the translation–integration framework (Chelebian, Avenel & Wählby, *Nat. Commun.* 2025).
Everything is kept sparse: the spatial graph is a k-nearest-neighbour graph built per section, never an
``n_obs × n_obs`` dense matrix (peer methods such as SpaGCN build one and run out of memory at cell scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from .. import _logging as logg
from .._constants import Key
from .._utils import check_obs_column, check_obsm, get_adata, list_keys, records_params

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

FuseMethod = Literal["stitch", "weighted", "graph"]
_METHODS = ("stitch", "weighted", "graph")


def _rep_hint(key: str) -> str:
    if key == "X_pca":
        return "Run `sc.pp.pca` (on log-normalised expression) first."
    if key.startswith("X_"):
        return f"Run `mst.tl.embed_patches(sdata, model={key[2:]!r})` first (or the function that writes {key!r})."
    return ""


def resolve_library_key(adata: AnnData, library_key: str | None) -> str | None:
    """Return the ``obs`` column that holds the sections: ``library_key``, else ``"section"`` when present."""
    if library_key is not None:
        check_obs_column(adata, library_key)
        return library_key
    return Key.SECTION if Key.SECTION in adata.obs.columns else None


def spatial_knn(
    coords: np.ndarray, groups: np.ndarray | None = None, *, n_neighs: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric spatial k-nearest-neighbour edges, built within each group (section) only.

    Parameters
    ----------
    coords
        Coordinates, shape ``(n_obs, 2)``, in any unit (px or µm); distances come back in the same unit.
    groups
        Group (section) label per observation, shape ``(n_obs,)``; observations of different groups are never
        neighbours. ``None``: one group.
    n_neighs
        Neighbours per observation (fewer in a group with ``<= n_neighs`` observations).

    Returns
    -------
    ``(rows, cols, dist)``: the directed edge list of the symmetrised graph (each undirected edge appears in
    both directions, no self-loops), with the spatial distance of each edge.
    """
    from sklearn.neighbors import NearestNeighbors

    n = coords.shape[0]
    if groups is None:
        groups = np.zeros(n, dtype=np.int64)
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    rows_l, cols_l, dist_l = [], [], []
    for g in np.unique(codes):
        idx = np.flatnonzero(codes == g)
        k = min(n_neighs, idx.size - 1)
        if k < 1:
            continue
        nn = NearestNeighbors(n_neighbors=k + 1).fit(coords[idx])
        dist, ind = nn.kneighbors(coords[idx])
        # drop each point itself (the first neighbour, unless duplicates shuffled the order)
        src = np.repeat(np.arange(idx.size), k + 1)
        dst = ind.ravel()
        d = dist.ravel()
        keep = src != dst
        src, dst, d = src[keep], dst[keep], d[keep]
        rows_l.append(idx[src])
        cols_l.append(idx[dst])
        dist_l.append(d)
    if not rows_l:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0)
    rows = np.concatenate(rows_l)
    cols = np.concatenate(cols_l)
    dist = np.concatenate(dist_l)
    # symmetrise: union of i->j and j->i, each undirected edge once per direction
    r = np.concatenate([rows, cols])
    c = np.concatenate([cols, rows])
    d = np.concatenate([dist, dist])
    _, first = np.unique(r.astype(np.int64) * n + c, return_index=True)
    return r[first], c[first], d[first]


def _modality_block(x: np.ndarray, n_comps: int, random_state: int) -> tuple[np.ndarray, dict]:
    """Centre, scale the block to unit total variance (keeps relative feature variances), PCA to ``n_comps``."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    total_sd = float(np.sqrt((x**2).sum() / max(x.shape[0] - 1, 1)))
    if total_sd == 0:
        msg = "A representation is constant over all observations; it carries no information to fuse."
        raise ValueError(msg)
    x /= total_sd
    k = int(min(n_comps, x.shape[1], x.shape[0] - 1))
    pca = PCA(n_components=k, random_state=random_state, svd_solver="auto")
    scores = pca.fit_transform(x)
    info = {"n_comps": k, "variance_captured": float(pca.explained_variance_ratio_.sum())}
    return scores, info


def _balanced(block: np.ndarray, weight: float) -> np.ndarray:
    """Rescale ``block`` so its total variance equals ``weight``."""
    var = float(block.var(axis=0, ddof=1).sum())
    return block * np.sqrt(weight / var) if var > 0 else block


def fuse(
    data: SpatialData | AnnData,
    use_rep: Sequence[str] = ("X_pca", "X_efficientnet_lite0"),
    *,
    method: FuseMethod = "stitch",
    weights: Sequence[float] | None = None,
    n_comps: int | Sequence[int] = 30,
    n_neighs: int = 6,
    n_steps: int = 1,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    table_key: str = Key.TABLE,
    key_added: str = "X_fused",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Fuse expression with morphology into one representation for spatial domains.

    Three strategies, all sparse and linear in the number of observations:

    - ``"stitch"``: representation stitching as in SpaCell (Tan et al., *Bioinformatics* 2020). Each modality is
      centred and scaled to unit total variance (so features keep their relative variances and an input that is
      already a PCA keeps its structure), reduced by PCA to ``n_comps``, and the blocks are concatenated. A modality
      whose variance is spread over many dimensions contributes less of the fused variance.
    - ``"weighted"``: the same blocks, each rescaled so that its total variance equals its share of ``weights``
      (``None``: balanced, each modality contributes the same variance).
    - ``"graph"``: the idea of SpaGCN (Hu et al., *Nat. Methods* 2021) without dense matrices. A spatial k-nearest-
      neighbour graph is built per section from ``obsm[spatial_key]``; each edge ``(i, j)`` is weighted by
      ``exp(-d_s² / 2σ_s²) · exp(-d_m² / 2σ_m²)``, where ``d_s`` is the spatial distance, ``d_m`` the distance of
      the two spots' morphology blocks (``use_rep[1:]``, balanced) and ``σ`` the median over edges. With a self-loop
      of weight 1 and rows normalised, the graph smooths the expression block (``use_rep[0]``) ``n_steps`` times,
      so expression is averaged over spatial neighbours that look alike, and not across morphological borders.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    use_rep
        ``obsm`` keys of the modalities, expression first (e.g. ``"X_pca"`` from ``sc.pp.pca``), then morphology
        (``"X_<model>"`` from :func:`morphst.tl.embed_patches`). At least two.
    method
        Fusion strategy, see above.
    weights
        One non-negative weight per modality for ``"weighted"`` (normalised to sum 1). ``None``: equal weights.
        Not used by the other methods.
    n_comps
        Principal components kept per modality (one value, or one per modality); capped at the number of
        features and ``n_obs - 1``.
    n_neighs
        ``"graph"`` only: spatial neighbours per observation, within its section.
    n_steps
        ``"graph"`` only: smoothing steps.
    spatial_key
        ``"graph"`` only: ``obsm`` key of the spatial coordinates, shape ``(n_obs, 2)``, in px or µm (the kernel
        bandwidth is the median edge length, so the unit does not matter).
    library_key
        ``"graph"`` only: ``obs`` column with the section of each observation; spots of different sections are
        never neighbours. ``None``: ``"section"`` when that column exists, else one section.
    table_key
        Table of a SpatialData.
    key_added
        ``obsm`` key of the result; also the ``uns`` key of the parameters.
    random_state
        Seed of the PCA solver.
    copy
        Return a modified copy instead of writing to ``data``.

    Returns
    -------
    ``None``, or with ``copy=True`` the modified AnnData. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_fused)``
        The fused representation: the concatenated blocks (``"stitch"``, ``"weighted"``, ``n_fused`` = the sum of
        the kept components), or the smoothed expression block (``"graph"``, ``n_fused`` = its components).
    ``.obsp[f"{key_added}_connectivities"]`` : sparse CSR, shape ``(n_obs, n_obs)``
        ``"graph"`` only: the symmetric morphology-weighted spatial kNN graph (no self-loops).
    ``.uns[key_added]["params"]`` : dict
        The parameters, the components and variance captured per modality, and for ``"graph"`` the bandwidths.

    Raises
    ------
    KeyError
        If a ``use_rep`` key, ``spatial_key`` or ``library_key`` is missing (the message lists what is there).
    ValueError
        If fewer than two representations are given, a representation holds NaN/inf, ``method`` or ``weights``
        are invalid.
    """
    start = logg.info(f"fusing {list(use_rep)} with method={method!r}")
    adata = get_adata(data, table_key)
    if method not in _METHODS:
        msg = f"`method` must be one of {list(_METHODS)}, got {method!r}."
        raise ValueError(msg)
    if isinstance(use_rep, str) or len(use_rep) < 2:
        msg = f"`use_rep` needs at least two `obsm` keys (expression first, then morphology), got {use_rep!r}."
        raise ValueError(msg)
    use_rep = [str(k) for k in use_rep]
    reps = [check_obsm(adata, k, hint=_rep_hint(k)) for k in use_rep]
    n_obs = adata.n_obs
    if n_obs < 3:
        msg = f"At least 3 observations are needed to fuse, got {n_obs}."
        raise ValueError(msg)
    comps = [int(n_comps)] * len(reps) if np.isscalar(n_comps) else [int(c) for c in n_comps]
    if len(comps) != len(reps) or min(comps) < 1:
        msg = f"`n_comps` must be a positive int or one positive int per modality ({len(reps)}), got {n_comps!r}."
        raise ValueError(msg)
    if weights is None:
        w = np.full(len(reps), 1.0 / len(reps))
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(reps),) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            msg = f"`weights` must be {len(reps)} non-negative numbers with a positive sum, got {weights!r}."
            raise ValueError(msg)
        w = w / w.sum()
    if method == "graph":
        if spatial_key not in adata.obsm:
            msg = f"{spatial_key!r} not found in `adata.obsm`. Available: {list_keys(adata.obsm.keys())}."
            raise KeyError(msg)
        coords = check_obsm(adata, spatial_key)[:, :2]
        lib = resolve_library_key(adata, library_key)
        groups = None if lib is None else adata.obs[lib].to_numpy()
        if n_neighs < 1 or n_steps < 1:
            msg = f"`n_neighs` and `n_steps` must be >= 1, got {n_neighs} and {n_steps}."
            raise ValueError(msg)

    # --- compute everything before writing anything ---
    blocks, infos = [], []
    for x, c in zip(reps, comps, strict=True):
        b, info = _modality_block(x, c, random_state)
        blocks.append(b)
        infos.append(info)
    params = {
        "use_rep": use_rep,
        "method": method,
        "n_comps": [i["n_comps"] for i in infos],
        "variance_captured": [i["variance_captured"] for i in infos],
        "random_state": random_state,
    }
    graph = None
    if method == "stitch":
        fused = np.hstack(blocks)
    elif method == "weighted":
        fused = np.hstack([_balanced(b, wi) for b, wi in zip(blocks, w, strict=True)])
        params["weights"] = w.tolist()
    else:
        morph = np.hstack([_balanced(b, 1.0) for b in blocks[1:]])
        rows, cols, ds = spatial_knn(coords, groups, n_neighs=n_neighs)
        dm = np.empty(rows.size)
        chunk = 1 << 16
        for s in range(0, rows.size, chunk):
            diff = morph[rows[s : s + chunk]] - morph[cols[s : s + chunk]]
            dm[s : s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        sigma_s = float(np.median(ds)) if ds.size else 1.0
        sigma_m = float(np.median(dm)) if dm.size else 1.0
        sigma_s = sigma_s if sigma_s > 0 else 1.0
        sigma_m = sigma_m if sigma_m > 0 else 1.0
        ew = np.exp(-(ds**2) / (2 * sigma_s**2)) * np.exp(-(dm**2) / (2 * sigma_m**2))
        graph = sparse.csr_matrix((ew, (rows, cols)), shape=(n_obs, n_obs))
        prop = graph + sparse.identity(n_obs, format="csr")
        prop = sparse.diags(1.0 / np.asarray(prop.sum(axis=1)).ravel()) @ prop
        fused = blocks[0]
        for _ in range(n_steps):
            fused = prop @ fused
        params.update(
            n_neighs=n_neighs,
            n_steps=n_steps,
            spatial_key=spatial_key,
            library_key=lib,
            sigma_spatial=sigma_s,
            sigma_morph=sigma_m,
            n_edges=int(rows.size // 2),
        )

    # --- write ---
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = np.ascontiguousarray(fused, dtype=np.float32)
    if graph is not None:
        adata.obsp[f"{key_added}_connectivities"] = graph
    adata.uns[key_added] = {"params": records_params(**params)}
    slots = f"'obsm[{key_added!r}]'" + (f", 'obsp[{key_added + '_connectivities'!r}]'" if graph is not None else "")
    logg.info(f"    finished: added {slots} {fused.shape} and 'uns[{key_added!r}]'", time=start)
    return adata if copy else None
