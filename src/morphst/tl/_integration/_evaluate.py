"""`evaluate_domains`: agreement with reference labels (ARI, NMI) and spatial coherence (Moran's I, Geary's C)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, doc_library_key, inject_docs
from ..._utils import (
    check_coordinates,
    check_obs_column,
    get_adata,
    list_keys,
    records_params,
    save_results,
)
from ..._utils._graph import knn_edges
from ..._utils._hints import run_first
from ..._utils._memory import release_freed_memory
from ..._utils._sections import resolve_library_key, section_groups

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _spatial_graph_per_section(
    coords: np.ndarray, sections: np.ndarray, n_neighs: int
) -> tuple[object, list[str], np.ndarray]:
    """Squidpy's generic kNN graph (binary, directed; ``gr.spatial_neighbors_knn``), built section by section.

    ``n_neighs`` is capped at ``n - 1`` in a section of ``n`` observations (noted); sections of one observation
    have no neighbours and are flagged in ``dropped``. Returns ``(connectivities CSR, notes, dropped)``.
    """
    from scipy import sparse

    n = coords.shape[0]
    rows, cols, _, caps = knn_edges(np.asarray(coords, dtype=float), sections, n_neighs=n_neighs)
    notes = []
    dropped = np.zeros(n, dtype=bool)
    for sec in pd.unique(sections):  # notes in order of appearance
        k = caps.get(str(sec))
        if k is None:
            continue
        idx = np.flatnonzero(sections == sec)
        if k < 1:
            dropped[idx] = True
            notes.append(f"section {sec!r}: 1 observation, left out of the autocorrelation")
        else:
            notes.append(f"section {sec!r}: n_neighs capped at {k} ({idx.size} observations)")
    graph = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    return graph, notes, dropped


def _geary_pval_calibrated(version: str) -> bool:
    """Squidpy >= 1.8.2 uses Geary's own normality variance (scverse/squidpy#1197)."""
    from packaging.version import Version

    return Version(version) >= Version("1.8.2")


def _is_raw_counts(x) -> bool:
    vals = x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else np.asarray(x).ravel()
    vals = np.asarray(vals[:100_000])
    return bool(vals.size) and bool(np.all(vals >= 0)) and bool(np.allclose(vals, np.round(vals)))


@inject_docs(data=doc_data, library_key=doc_library_key, copy=doc_copy)
def evaluate_domains(
    data: SpatialData | AnnData,
    domain_key: str = Key.DOMAIN,
    annotation_key: str | None = None,
    *,
    genes: Sequence[str] | None = None,
    n_markers: int = 3,
    layer: str | None = None,
    normalize: bool | None = None,
    spatial_key: str = Key.SPATIAL,
    library_key: str | None = Key.LIBRARY,
    n_neighs: int = 6,
    table_key: str = Key.TABLE,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Evaluate spatial domains: agreement with a reference and spatial coherence of their marker genes.

    - ARI and NMI (scikit-learn ``adjusted_rand_score``, ``normalized_mutual_info_score``) between ``obs[domain_key]``
      and ``obs[annotation_key]``, on the observations where both are set (the others are excluded and counted).
    - Moran's I (Moran, *Biometrika* 1950) and Geary's C (Geary, 1954), scaled as ``1 − C`` so that, like
      Moran's I, positive means spatially coherent and negative means checkerboard-like, for the domains' marker
      genes on a spatial kNN graph built per section (squidpy ``gr.spatial_neighbors`` + ``gr.spatial_autocorr``,
      row-normalised weights). Markers are the top ``n_markers`` genes per domain of scanpy's
      ``rank_genes_groups`` (t-test), unless ``genes`` are given.

    Parameters
    ----------
    {data}
    domain_key
        ``obs`` column of the domains (from :func:`morphst.tl.domains`).
    annotation_key
        ``obs`` column of the reference labels (e.g. pathologist layers); ``None`` (default): no reference, so
        only the spatial coherence of the markers is reported (logged), no ARI/NMI.
    genes
        Genes whose autocorrelation is reported. ``None``: marker genes of the domains.
    n_markers
        Marker genes per domain when ``genes`` is ``None`` (>= 1).
    layer
        Layer of expression values; ``None``: ``X``.
    normalize
        Normalise to 10,000 per observation and ``log1p`` before ranking markers and measuring autocorrelation.
        ``None``: when the values look like raw counts (non-negative integers).
    spatial_key
        ``obsm`` key of the spatial coordinates, in px or µm (only neighbour ranks matter).
    {library_key}
        Spots of different sections are never neighbours.
    n_neighs
        Spatial neighbours per observation (>= 1), within its section; capped at ``n - 1`` in a section of ``n``
        observations with a warning (a section of one observation is left out of the autocorrelation); caps are
        recorded in ``params["notes"]``; at least the size of the largest section is an error.
    key_added
        ``uns`` key of the result; ``None``: ``f"{domain_key}_evaluation"``.
    {copy}

    Notes
    -----
    The p-values are squidpy's analytic ``pval_norm`` (normality assumption, Cliff & Ord 1981), **one-sided, in the
    direction of the observed deviation** from the null expectation (``E[I] = −1/(n−1)``, ``E[C] = 1``): with
    ``z = (statistic − E) / sd``, ``p = P(Z ≥ z)`` when ``z > 0`` and ``P(Z ≤ z)`` otherwise, not doubled (squidpy's
    ``two_tailed=False``) and not corrected for multiple testing. For a spatially coherent gene (``I > E[I]``,
    ``C < 1``) it is the one-sided p-value of positive autocorrelation. Geary's C p-values need squidpy >= 1.8.2
    (the version checked here; earlier versions applied Moran's variance to Geary's C, scverse/squidpy#1183, fixed
    in #1197): with an older squidpy ``geary_pval`` is NaN and a note says why.

    Returns
    -------
    ``None``, or with ``copy=True`` the modified AnnData. Sets ``.uns[key_added]`` (default ``f"{domain_key}_evaluation"``) : dict with

    ``"ari"``, ``"nmi"`` : float
        Agreement with ``annotation_key`` (absent when ``annotation_key`` is ``None``).
    ``"n_evaluated"``, ``"n_excluded"`` : int
        Observations compared, and those left out because the reference or the domain is missing.
    ``"autocorr"`` : DataFrame, one row per gene
        ``domain`` (the domain it marks, or ``""`` for given ``genes``), ``moran_I``, ``moran_pval``,
        ``geary_C``, ``geary_1mC`` (``1 − C``), ``geary_pval``.
    ``"mean_moran_I"``, ``"mean_geary_1mC"`` : float
        Means over those genes.
    ``"params"`` : dict
        The parameters.

    Raises
    ------
    KeyError
        If ``domain_key``, ``annotation_key``, ``spatial_key``, ``layer`` or a gene is missing (the message lists what is there).
    ValueError
        If the reference has fewer than two categories, markers are asked of fewer than two domains, ``n_markers``
        < 1, ``n_neighs`` < 1 or ``n_neighs`` >= the largest section, or section labels of mixed types.
    """
    adata = get_adata(data, table_key)
    key, reference = domain_key, annotation_key
    key_added = f"{key}_evaluation" if key_added is None else key_added
    dom = check_obs_column(adata, key, hint=f"For domains, {run_first('tl.domains', 'adata, use_rep=...', key=key)}.")
    out = {} if reference is None else _agreement(adata, dom, key, reference)
    coords = check_coordinates(adata, spatial_key, needed_by="Moran's I and Geary's C")
    lib = resolve_library_key(adata, library_key)
    genes = _check_genes(adata, dom, key, genes, layer, n_markers, n_neighs)
    from ..._utils._checks import check_expression

    check_expression(adata, "mst.tl.evaluate_domains")  # after the label checks: they need no expression
    section_groups(adata, lib)  # no missing section
    sections = adata.obs[lib].astype(str).to_numpy() if lib is not None else np.zeros(adata.n_obs, dtype=str)
    _check_n_neighs(int(n_neighs), sections)

    start = logg.info(
        f"evaluating domains {key!r}"
        + (
            f" against {reference!r}"
            if reference
            else ": no `annotation_key`, so spatial coherence only (pass `annotation_key=` for ARI/NMI)"
        )
    )
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    table, marker_of, do_norm, notes = _autocorrelation(
        adata, dom, coords, sections, genes, layer, n_markers, normalize, n_neighs
    )
    out.update(
        autocorr=table,
        mean_moran_I=float(table["moran_I"].mean()),
        mean_geary_1mC=float(table["geary_1mC"].mean()),
        params=records_params(
            domain_key=key,
            annotation_key=reference,
            genes=None if marker_of else genes,
            n_markers=n_markers,
            layer=layer,
            normalized=bool(do_norm),
            spatial_key=spatial_key,
            library_key=lib,
            n_neighs=n_neighs,
            notes=notes,
            pval="one-sided normal approximation (squidpy pval_norm), in the direction of the observed deviation",
        ),
    )
    summary = f"ARI={out['ari']:.3f} NMI={out['nmi']:.3f} " if "ari" in out else ""
    summary += f"mean Moran's I={out['mean_moran_I']:.3f}"
    return save_results(adata, [("uns", key_added, out)], copy=copy, start=start, summary=summary)


def _agreement(adata: AnnData, dom: pd.Series, key: str, reference: str) -> dict:
    """ARI and NMI of the domains ``dom`` against ``obs[reference]``, over the spots where both are set."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    ref = check_obs_column(adata, reference, min_categories=2)
    ok = (~pd.isna(ref.to_numpy())) & (~pd.isna(dom.to_numpy()))
    r = ref.to_numpy()[ok].astype(str)
    if len(np.unique(r)) < 2:
        msg = f"`adata.obs[{reference!r}]` has fewer than 2 categories where {key!r} is set; ARI/NMI need 2."
        raise ValueError(msg)
    d = dom.to_numpy()[ok].astype(str)
    return {
        "ari": float(adjusted_rand_score(r, d)),
        "nmi": float(normalized_mutual_info_score(r, d)),
        "n_evaluated": int(ok.sum()),
        "n_excluded": int((~ok).sum()),
    }


def _check_n_neighs(n_neighs: int, sections: np.ndarray) -> None:
    """As :func:`morphst.tl.fuse`: refuse ``n_neighs`` that no section can honour; warn when some sections cap it."""
    labels, sizes = np.unique(sections, return_counts=True)
    if n_neighs >= sizes.max():
        msg = (
            f"`n_neighs`={n_neighs} spatial neighbours, but the largest section has {sizes.max()} observations (so "
            f"at most {sizes.max() - 1} neighbours); choose a smaller `n_neighs` (6 on Visium, 4 on the legacy ST "
            "grid)."
        )
        raise ValueError(msg)
    capped = [
        f"section {str(g)!r}: capped at {c - 1} ({c} observations)"
        for g, c in zip(labels, sizes, strict=True)
        if 1 < c <= n_neighs
    ]
    if capped:
        logg.warning(f"`n_neighs`={n_neighs} is more than some sections allow: {'; '.join(capped[:5])}.")


def _check_genes(adata, dom, key, genes, layer, n_markers, n_neighs) -> list[str] | None:
    """Check ``layer``, ``genes`` (returned as a list, or ``None``: markers), ``n_markers`` and ``n_neighs``."""
    if layer is not None and layer not in adata.layers:
        msg = f"Layer {layer!r} not found. Available layers: {list_keys(adata.layers.keys())}."
        raise KeyError(msg)
    if genes is not None:
        genes = [str(g) for g in ([genes] if isinstance(genes, str) else genes)]
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            msg = f"Genes not in `adata.var_names`: {missing[:10]}{' …' if len(missing) > 10 else ''}."
            raise KeyError(msg)
    elif dom.dropna().nunique() < 2:
        msg = f"`adata.obs[{key!r}]` has fewer than 2 domains: no marker genes to rank; pass `genes=`."
        raise ValueError(msg)
    if genes is None and int(n_markers) < 1:
        msg = f"`n_markers` must be >= 1 (marker genes per domain), got {n_markers}."
        raise ValueError(msg)
    if int(n_neighs) < 1:
        msg = f"`n_neighs` must be >= 1, got {n_neighs}."
        raise ValueError(msg)
    return genes


def _autocorrelation(adata, dom, coords, sections, genes, layer, n_markers, normalize, n_neighs):
    """Moran's I and Geary's C of ``genes`` (``None``: each domain's top markers) on the per-section kNN graph.

    Returns ``(table, marker_of, normalized, notes)``: one row per gene, the domain each marker gene marks, whether
    the values were log-normalised first, and the notes (caps, dropped sections, squidpy version).
    """
    import anndata as ad
    import scanpy as sc

    from ..._utils._quiet import import_squidpy

    sq = import_squidpy()

    x = adata.layers[layer] if layer is not None else adata.X
    tmp = ad.AnnData(
        X=x.copy(), obs=pd.DataFrame(index=adata.obs_names.copy()), var=pd.DataFrame(index=adata.var_names)
    )
    tmp.obsm["spatial"] = coords
    do_norm = _is_raw_counts(x) if normalize is None else normalize
    if do_norm:
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
    marker_of: dict[str, str] = {}
    if genes is None:
        counts = dom.value_counts()
        groups = [str(g) for g in counts.index[counts >= 2]]
        tmp.obs["_dom"] = pd.Categorical(dom.astype(str).where(~pd.isna(dom.to_numpy()), None))
        sc.tl.rank_genes_groups(tmp, "_dom", groups=groups, method="t-test", n_genes=n_markers, key_added="_rgg")
        names = tmp.uns["_rgg"]["names"]
        for g in names.dtype.names:
            for gene in names[g][:n_markers]:
                marker_of.setdefault(str(gene), str(g))
        genes = list(marker_of)
    sub = tmp[:, genes].copy()
    graph, notes, dropped = _spatial_graph_per_section(coords, sections, n_neighs)
    if dropped.any():  # sections of one observation: no neighbours, no autocorrelation
        sub = sub[~dropped].copy()
        graph = graph[~dropped][:, ~dropped]
    sub.obsp["spatial_connectivities"] = graph
    sub.uns["spatial_neighbors"] = {"connectivities_key": "spatial_connectivities", "params": {}}
    moran = sq.gr.spatial_autocorr(sub, mode="moran", genes=genes, copy=True, show_progress_bar=False)
    geary = sq.gr.spatial_autocorr(sub, mode="geary", genes=genes, copy=True, show_progress_bar=False)
    table = pd.DataFrame(
        {
            "domain": [marker_of.get(g, "") for g in genes],
            "moran_I": moran.loc[genes, "I"].to_numpy(dtype=float),
            "moran_pval": moran.loc[genes, "pval_norm"].to_numpy(dtype=float),
            "geary_C": geary.loc[genes, "C"].to_numpy(dtype=float),
        },
        index=pd.Index(genes, name="gene"),
    )
    table["geary_1mC"] = 1.0 - table["geary_C"]
    table["geary_pval"] = geary.loc[genes, "pval_norm"].to_numpy(dtype=float)
    if not _geary_pval_calibrated(sq.__version__):
        table["geary_pval"] = np.nan
        notes.append(f"squidpy {sq.__version__} < 1.8.2: Geary's C p-values miscalibrated (squidpy#1183), set to NaN")
    return table, marker_of, do_norm, notes
