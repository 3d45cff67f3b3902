"""Fuse morphology with expression: representation stitching, weighted stitching, morphology-aware spatial graph.

The integration side of the translation–integration framework (Chelebian, Avenel & Wählby, *Nat. Commun.* 2025).
Everything is kept sparse: the spatial graph is a k-nearest-neighbour graph built per section, never an
``n_obs × n_obs`` dense matrix (peer methods such as SpaGCN build one and run out of memory at cell scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, doc_library_key, doc_random_state, inject_docs
from ..._utils import check_coordinates, check_obsm, get_adata, records_params, save_results
from ..._utils._hints import rep_hint
from ..._utils._memory import release_freed_memory
from ..._utils._sections import resolve_library_key, section_groups
from ._fuse_blocks import FuseInputs, balanced, modality_block
from ._fuse_graph import graph_fusion, smooth_fusion

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

FuseMethod = Literal["smooth", "stitch", "weighted", "graph"]
_METHODS = ("smooth", "stitch", "weighted", "graph")
#: methods that take expression alone (no morphology) as well, for the "morphology off" control
_SPATIAL_METHODS = ("smooth", "graph")


@inject_docs(data=doc_data, library_key=doc_library_key, random_state=doc_random_state, copy=doc_copy)
def fuse(
    data: SpatialData | AnnData,
    use_rep: Sequence[str] = ("X_pca", Key.DEFAULT_REP),
    *,
    method: FuseMethod = "smooth",
    weights: Sequence[float] | None = None,
    n_comps: int | Sequence[int] | None = None,
    n_rings: float = 2.0,
    morph_weight: float = 0.3,
    n_neighs: int = 6,
    n_steps: int | None = None,
    spatial_key: str = Key.SPATIAL,
    library_key: str | None = Key.LIBRARY,
    table_key: str = Key.TABLE,
    key_added: str = Key.FUSED,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Fuse expression with morphology into one representation for spatial domains.

    Four strategies, all sparse and linear in the number of observations:

    - ``"smooth"`` (default): morphology-weighted spatial smoothing, the idea of stLearn's SME (Pham et al.,
      *Nat. Commun.* 2023) and of the iterated neighbourhood averaging of BANKSY (Singhal et al., *Nat. Genet.*
      2024). Each section's spots are joined to all spots within ``(n_rings + 0.1)`` spot spacings (the median
      nearest-neighbour distance of the section; on Visium ``n_rings=2`` reaches the first two hexagonal rings),
      each edge weighted by ``exp(−morph_weight · d_m² / 2σ_m²)``, ``d_m`` the Euclidean distance of the two spots'
      morphology features (``use_rep[1:]``, each feature standardised, each representation divided by the square
      root of its width; ``σ_m`` the median of ``d_m`` over edges). With a self-loop of weight 1 and rows
      normalised, the expression block is averaged ``n_steps`` times over this graph; with expression alone (or
      ``morph_weight=0``), the same smoothing without morphology (the control that shows what morphology adds).
    - ``"stitch"``: representation stitching as in SpaCell (Tan et al., *Bioinformatics* 2020). Each modality is
      centred and scaled to unit total variance (features keep their relative variances), reduced by PCA to
      ``n_comps``, and the blocks are concatenated.
    - ``"weighted"``: the same blocks, each rescaled so that its total variance equals its share of ``weights``
      (with equal shares, as ``"stitch"`` up to one overall scale when each PCA keeps most of its block's variance).
    - ``"graph"``: the idea of SpaGCN (Hu et al., *Nat. Methods* 2021) without dense matrices: a spatial
      k-nearest-neighbour graph per section, each edge weighted by ``exp(-d_s² / 2σ_s²) · exp(-d_m² / 2σ_m²)``
      (``d_s`` the spatial distance, ``d_m`` that of the balanced morphology blocks, ``σ`` the median over edges),
      with a self-loop of weight 1 and rows normalised, smooths the expression block (``use_rep[0]``) ``n_steps``
      times: over spatial neighbours that look alike, not across morphological borders.

    On cell-level data (spacing ~10 µm) raise ``n_rings`` until the radius covers ~100–200 µm.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` keys of the modalities, expression first (e.g. ``"X_pca"`` from ``sc.pp.pca``), then morphology
        (``"X_<model>"`` from :func:`morphst.tl.embed_patches`). At least two, except for ``"smooth"`` and
        ``"graph"``, which accept expression alone (spatial smoothing without morphology). A morphology
        representation whose ``uns[key]['components']`` has a boolean ``significant`` column (as
        :func:`morphst.tl.learn_integration_features` writes) enters with its significant columns only; one
        without any is left out (``params['left_out']`` records both).
    method
        Fusion strategy, see above.
    weights
        ``"weighted"`` only: one non-negative weight per modality (normalised to sum 1); ``None``: equal weights.
    n_comps
        Principal components kept per modality (one value, or one per modality); capped at the number of
        features and ``n_obs - 1``. ``None``: 20 for ``"smooth"`` (the expression block), 30 otherwise.
    n_rings
        ``"smooth"`` only: neighbourhood radius in spot spacings (``(n_rings + 0.1) ×`` spacing), > 0.
    morph_weight
        ``"smooth"`` only: how strongly morphological dissimilarity down-weights an edge (>= 0; 0 ignores it).
    n_neighs
        ``"graph"`` only: spatial neighbours per observation, within its section (capped at the section size - 1
        with a warning, recorded in ``params["notes"]``; at least the size of the largest section is an error).
    n_steps
        ``"smooth"`` and ``"graph"``: smoothing steps (>= 1). ``None``: 5 for ``"smooth"``, 1 for ``"graph"``.
    spatial_key
        ``"smooth"``/``"graph"``: ``obsm`` key of the spatial coordinates, shape ``(n_obs, 2)``, in px or µm (radius
        and kernel bandwidth are relative to the spot spacing / median edge length, so the unit does not matter).
    {library_key}
        ``"smooth"``/``"graph"`` only: spots of different sections are never neighbours.
    key_added
        ``obsm`` key of the result; also the ``uns`` key of the parameters.
    {random_state}
        It seeds the PCA solver.
    {copy}

    Returns
    -------
    ``None``, or with ``copy=True`` the modified AnnData. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_fused)``
        The fused representation: the concatenated blocks (``"stitch"``, ``"weighted"``, ``n_fused`` = the sum of
        the kept components), or the smoothed expression block (``"smooth"``, ``"graph"``, ``n_fused`` = its
        components).
    ``.obsp[f"{key_added}_connectivities"]`` : sparse CSR, shape ``(n_obs, n_obs)``
        ``"smooth"``/``"graph"``: the symmetric (morphology-weighted) spatial graph (no self-loops).
    ``.uns[key_added]["connectivities_key"]`` : str
        ``"smooth"``/``"graph"``: the ``obsp`` key of that graph (scanpy's ``neighbors`` contract).
    ``.uns[key_added]["params"]`` : dict
        The parameters, the components and variance captured per modality; for ``"smooth"``/``"graph"`` the
        bandwidths, the spot spacing per section (``"smooth"``, unit of ``obsm[spatial_key]``), the number of edges
        and ``notes`` (caps applied).

    Raises
    ------
    KeyError
        If a ``use_rep`` key, ``spatial_key`` or ``library_key`` is missing (the message lists what is there).
    ValueError
        If fewer than two representations are given (one for ``"smooth"``/``"graph"``), a representation holds
        NaN/inf or is constant, ``method``, ``weights``, ``n_rings``, ``morph_weight``, ``n_neighs`` or ``n_steps``
        are out of range.
    """
    start = logg.info(f"fusing {list(use_rep)} with method={method!r}")
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    adata = get_adata(data, table_key)
    inputs = _check_inputs(adata, use_rep, method, n_comps, weights, spatial_key, library_key)
    n_steps = _check_spatial_options(method, n_rings, morph_weight, n_neighs, n_steps)
    if method == "graph":
        _check_n_neighs(n_neighs, inputs.groups, inputs.n_obs)

    # --- compute everything before writing anything ---
    blocks, infos = [], []
    for x, c in zip(inputs.reps, inputs.comps, strict=True):
        b, info = modality_block(x, c, random_state)
        blocks.append(b)
        infos.append(info)
    params = {
        "left_out": inputs.left_out,
        "use_rep": inputs.use_rep,
        "method": method,
        "n_comps": [i["n_comps"] for i in infos],
        "variance_captured": [i["variance_captured"] for i in infos],
        "random_state": random_state,
    }
    graph = None
    notes: list[str] = []
    if method == "smooth":
        fused, graph, method_params = smooth_fusion(inputs, blocks, n_rings, morph_weight, n_steps, spatial_key)
    elif method == "stitch":
        fused, method_params = np.hstack(blocks), {}
    elif method == "weighted":
        fused = np.hstack([balanced(b, wi) for b, wi in zip(blocks, inputs.weights, strict=True)])
        method_params = {"weights": inputs.weights.tolist()}
    else:
        fused, graph, method_params = graph_fusion(inputs, blocks, n_neighs, n_steps, spatial_key, notes)
    params.update(method_params)
    params["notes"] = notes

    # --- write ---
    added = [("obsm", key_added, np.ascontiguousarray(fused, dtype=np.float32))]
    uns: dict = {"params": records_params(**params)}
    if graph is not None:
        conn_key = f"{key_added}_connectivities"
        added.append(("obsp", conn_key, graph))
        uns = {"connectivities_key": conn_key, **uns}
    added.append(("uns", key_added, uns))
    summary = f"fused {len(use_rep)} representation(s)"
    return save_results(adata, added, copy=copy, start=start, summary=summary)


def _check_inputs(adata, use_rep, method, n_comps, weights, spatial_key, library_key) -> FuseInputs:
    """Check the representations, ``n_comps``, ``weights`` and (spatial methods) the coordinates and sections."""
    if method not in _METHODS:
        msg = f"`method` must be one of {list(_METHODS)}, got {method!r}."
        raise ValueError(msg)
    if isinstance(use_rep, str):
        use_rep = (use_rep,)
    min_reps = 1 if method in _SPATIAL_METHODS else 2
    if len(use_rep) < min_reps:
        msg = f"`use_rep` needs at least two `obsm` keys (expression first, then morphology), got {use_rep!r}."
        raise ValueError(msg)
    use_rep = [str(k) for k in use_rep]
    reps = [check_obsm(adata, k, hint=rep_hint(k)) for k in use_rep]
    n_obs = adata.n_obs
    if n_obs < 3:
        msg = f"At least 3 observations are needed to fuse, got {n_obs}."
        raise ValueError(msg)
    if n_comps is None:
        n_comps = 20 if method == "smooth" else 30
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
    use_rep, reps, comps, w, left_out = _significant_only(adata, use_rep, reps, comps, w)
    coords = groups = lib = None
    if method in _SPATIAL_METHODS:
        coords = check_coordinates(adata, spatial_key, needed_by=f"method={method!r}")
        lib = resolve_library_key(adata, library_key)
        groups = section_groups(adata, lib)
    return FuseInputs(use_rep, reps, comps, w, coords, groups, lib, left_out)


def _significant_only(adata, use_rep, reps, comps, w):
    """Keep the significant columns of morphology representations that flag them; drop those with none."""
    keep, left_out = [0], {}
    for i in range(1, len(reps)):
        entry = adata.uns.get(use_rep[i])
        table = entry.get("components") if isinstance(entry, dict) else None
        flags = table["significant"] if isinstance(table, pd.DataFrame) and "significant" in table else None
        if flags is None or len(flags) != reps[i].shape[1]:
            keep.append(i)
            continue
        flags = np.asarray(flags, dtype=bool)
        if not flags.all() or not flags.any():
            left_out[use_rep[i]] = [int(j) for j in np.flatnonzero(~flags)]
        if flags.any():
            reps[i] = reps[i][:, flags]
            keep.append(i)
    if left_out:
        logg.info(f"    left out components flagged as not significant: {left_out}")
    w = w[keep] / w[keep].sum()
    return [use_rep[i] for i in keep], [reps[i] for i in keep], [comps[i] for i in keep], w, left_out


def _check_spatial_options(method, n_rings, morph_weight, n_neighs, n_steps) -> int:
    """Check the options of ``"smooth"``/``"graph"``; return ``n_steps`` with its default filled in."""
    if n_steps is None:
        n_steps = 5 if method == "smooth" else 1
    if method in _SPATIAL_METHODS:
        if n_neighs < 1 or n_steps < 1:
            msg = f"`n_neighs` and `n_steps` must be >= 1, got {n_neighs} and {n_steps}."
            raise ValueError(msg)
        if not (np.isfinite(n_rings) and n_rings > 0):
            msg = f"`n_rings` must be a positive number of spot spacings, got {n_rings}."
            raise ValueError(msg)
        if not (np.isfinite(morph_weight) and morph_weight >= 0):
            msg = f"`morph_weight` must be >= 0, got {morph_weight}."
            raise ValueError(msg)
    return n_steps


def _check_n_neighs(n_neighs: int, groups, n_obs: int) -> None:
    """Refuse ``n_neighs`` that no section can honour (as ``spatial_context`` does); smaller sections are capped."""
    largest = (
        int(np.unique(np.asarray(groups).astype(str), return_counts=True)[1].max()) if groups is not None else n_obs
    )
    if int(n_neighs) >= largest:
        msg = (
            f"`n_neighs`={n_neighs} spatial neighbours, but the largest section has {largest} observations (so at "
            f"most {largest - 1} neighbours); choose a smaller `n_neighs` (6 on Visium, 4 on the legacy ST grid)."
        )
        raise ValueError(msg)
