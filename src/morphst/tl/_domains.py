"""Spatial domains from a (fused) representation, and their evaluation: ARI/NMI, Moran's I, Geary's C."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._constants import Key
from .._docs import doc_copy, doc_data, inject_docs
from .._utils import check_obs_column, check_obsm, get_adata, list_keys, records_params
from .._utils._graph import knn_edges
from ._fuse import _rep_hint, resolve_library_key

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

DomainMethod = Literal["leiden", "kmeans", "gmm"]
_METHODS = ("leiden", "kmeans", "gmm")
CovarianceType = Literal["full", "tied", "diag", "spherical"]
_COVARIANCES = ("full", "tied", "diag", "spherical")


def _n_distinct_rows(x: np.ndarray, at_least: int) -> int:
    """Number of distinct rows of ``x``, counted up to ``at_least`` (cheap for the usual case)."""
    x = np.asarray(x)
    if x.shape[0] == 0:
        return 0
    if np.all(np.ptp(x, axis=0) == 0):
        return 1
    return int(np.unique(x, axis=0).shape[0]) if x.shape[0] <= 100 * at_least else at_least


def _labels_by_size(labels: np.ndarray) -> pd.Categorical:
    """Relabel integer labels ``"0"``, ``"1"``, … by decreasing size; natsorted string categories."""
    from natsort import natsorted

    uniq, counts = np.unique(labels, return_counts=True)
    order = uniq[np.argsort(-counts, kind="stable")]
    mapping = {u: str(i) for i, u in enumerate(order)}
    out = np.array([mapping[v] for v in labels], dtype=object)
    return pd.Categorical(out, categories=natsorted(mapping.values()))


class _CsrMatrixNNDescent:
    """scanpy's default large-data kNN (pynndescent, UMAP's settings), returning a ``scipy.sparse.csr_matrix``.

    pynndescent >= 0.6 returns a ``csr_array``, which scanpy 1.11 cannot read (``getnnz``); this wrapper converts.
    """

    def __init__(self, n_obs: int, n_neighbors: int, random_state: int) -> None:
        from pynndescent import PyNNDescentTransformer

        self._t = PyNNDescentTransformer(
            n_neighbors=n_neighbors,
            n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
            n_iters=max(5, round(np.log2(n_obs))),
            random_state=random_state,
        )

    def get_params(self, deep: bool = True) -> dict:
        return self._t.get_params(deep)

    def fit_transform(self, x, y=None):
        from scipy import sparse

        return sparse.csr_matrix(self._t.fit_transform(x))


def _knn_transformer(n_obs: int, n_neighbors: int, random_state: int = 0):
    """``None`` (scanpy's exact kNN) for small data, else :class:`_CsrMatrixNNDescent`."""
    return None if n_obs < 4096 else _CsrMatrixNNDescent(n_obs, n_neighbors, random_state)


def _leiden_graph(tmp: AnnData):
    """The igraph graph scanpy's ``tl.leiden`` clusters (``obsp['connectivities']``), built once per call.

    The same edges in the same order with the same weights as scanpy's ``get_igraph_from_adjacency``, from the
    arrays of the sparse matrix instead of a Python tuple per edge (+0.7 GiB per 200,000 cells there), so the
    labels are the same. ``None`` when scanpy's seeding helper is not importable: then ``sc.tl.leiden`` is called.
    """
    try:
        from scanpy._utils.random import set_igraph_random_state  # noqa: F401
    except ImportError:  # another scanpy layout: let scanpy build its graph
        return None
    import igraph as ig

    a = tmp.obsp["connectivities"].tocoo()
    nz = a.data != 0  # scipy's nonzero(): row-major order, explicit zeros left out
    g = ig.Graph(n=tmp.n_obs, edges=np.column_stack([a.row[nz], a.col[nz]]), directed=False)
    g.es["weight"] = a.data[nz]
    return g


def _leiden_labels(tmp: AnnData, resolution: float, random_state: int, graph=None) -> np.ndarray:
    """Leiden (igraph flavour, 2 iterations, modularity, weighted) as scanpy's ``tl.leiden`` runs it."""
    if graph is not None:
        from scanpy._utils.random import set_igraph_random_state

        with set_igraph_random_state(random_state):
            part = graph.community_leiden(
                n_iterations=2, weights="weight", resolution=resolution, objective_function="modularity"
            )
        return np.array(part.membership).astype("U")
    import scanpy as sc

    sc.tl.leiden(
        tmp,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=random_state,
        key_added="_leiden",
    )
    return tmp.obs["_leiden"].to_numpy().astype(str)


def _bisect(tmp: AnnData, k: int, resolution: float, seed: int, trace: list, max_steps: int, graph=None):
    """Bisect the resolution for one seed; returns ``(off_by, resolution, labels)`` of the closest run."""

    def run(res: float) -> tuple[np.ndarray, int]:
        lab = _leiden_labels(tmp, res, seed, graph)
        n = len(np.unique(lab))
        trace.append([float(res), n, seed])
        return lab, n

    lab, n = run(resolution)
    best = (abs(n - k), resolution, lab)
    lo, hi = (0.0, resolution) if n > k else (resolution, None)
    res = resolution
    for _ in range(max_steps):
        if best[0] == 0:
            break
        res = (lo + hi) / 2 if hi is not None else res * 2
        lab, n = run(res)
        if abs(n - k) < best[0]:
            best = (abs(n - k), res, lab)
        if n > k:
            hi = res
        else:
            lo = res
        if hi is not None and hi - lo < 1e-4 * max(hi, 1e-3):
            break
    return best


def _leiden_search(
    tmp: AnnData, k: int, resolution: float, random_state: int, max_steps: int = 40, n_seeds: int = 5, graph=None
):
    """Bisect the Leiden resolution until it gives ``k`` clusters.

    The number of clusters is not strictly monotone in the resolution: where it jumps over ``k``, the search is
    repeated with the next seeds (``random_state + 1``, …). Returns ``(labels, resolution, seed, trace)``.
    """
    trace: list[list[float]] = []
    best = None
    for seed in range(random_state, random_state + n_seeds):
        cand = _bisect(tmp, k, resolution, seed, trace, max_steps, graph)
        if best is None or cand[0] < best[0]:
            best = (*cand, seed)
        if best[0] == 0:
            break
    off, res, lab, seed = best
    if off:
        msg = (
            f"Leiden could not reach exactly {k} domains; using resolution {res:.4g} (off by {off}). Pass another "
            "`resolution` to start from, or use `method='kmeans'`/`'gmm'` for an exact number of domains."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
    return lab, res, seed, trace


@inject_docs(data=doc_data, copy=doc_copy)
def domains(
    data: SpatialData | AnnData,
    use_rep: str = Key.FUSED,
    *,
    method: DomainMethod = "leiden",
    n_domains: int | None = None,
    resolution: float = 1.0,
    n_neighs: int = 15,
    covariance_type: CovarianceType = "tied",
    n_init: int = 10,
    table_key: str = Key.TABLE,
    random_state: int = 0,
    key_added: str = Key.DOMAIN,
    copy: bool = False,
) -> AnnData | None:
    """Spatial domains: cluster a (fused) representation.

    ``"leiden"`` runs scanpy's Leiden (Traag et al., *Sci. Rep.* 2019; igraph flavour) on a kNN graph of
    ``use_rep`` (``sc.pp.neighbors``, computed on a scratch object: the neighbour graph of ``data`` is not touched).
    With ``n_domains`` set it bisects the resolution until Leiden returns exactly that many domains (where the
    count jumps over ``n_domains``, the search is repeated with seeds ``random_state + 1``, … up to 4 more times).
    ``"kmeans"`` and ``"gmm"`` are scikit-learn's ``KMeans`` and ``GaussianMixture`` (``n_init`` initialisations)
    (``covariance_type``, default ``"tied"``: one covariance shared by all components, like mclust's ``EEE``
    model that GraphST clusters with; a ``"full"`` covariance per component takes 20–45 s per fit on 60 dimensions
    and 3,600 spots on 2 CPU cores, ``"tied"`` and ``"diag"`` a few seconds), which need ``n_domains``. Labels are ``"0"``, ``"1"``, … by decreasing
    size.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the representation (e.g. from :func:`morphst.tl.fuse`, or ``"X_pca"``).
    method
        Clustering method.
    n_domains
        Number of domains. Required for ``"kmeans"`` and ``"gmm"``; for ``"leiden"``, the resolution is searched.
    resolution
        Leiden resolution (the start of the search when ``n_domains`` is set).
    n_neighs
        ``"leiden"`` only: neighbours of the kNN graph in ``use_rep`` space; capped at ``n_obs - 1`` (the cap is
        recorded in ``uns[key_added]["params"]["notes"]``).
    covariance_type
        ``"gmm"`` only: covariance of each component (scikit-learn ``GaussianMixture``).
    n_init
        ``"kmeans"``/``"gmm"``: initialisations (k-means++ starts for ``"gmm"``); the best fit is kept (>= 1). One
        start is not enough on DLPFC: single GMM fits landed on solutions 0.2 ARI apart from seed to seed.
    random_state
        Seed of the clustering.
    key_added
        ``obs`` column of the domains; also the ``uns`` key of the parameters.
    {copy}

    Returns
    -------
    ``None``, or with ``copy=True`` the modified AnnData. Sets:

    ``.obs[key_added]`` : categorical, shape ``(n_obs,)``
        Domain of each observation, natsorted string categories.
    ``.uns[key_added]["params"]`` : dict
        ``method``, ``use_rep``, ``n_domains`` (found), ``resolution`` (used; for a search, the one that hit
        ``n_domains``), ``leiden_random_state`` (the seed of that run, for a search), ``resolution_search``
        (``[resolution, n_domains, seed]`` triples tried), ``random_state``.

    Raises
    ------
    KeyError
        If ``use_rep`` is not in ``obsm`` (the message lists what is).
    ValueError
        If ``use_rep`` holds NaN/inf, ``method`` is unknown, or ``n_domains`` is missing or out of range.
    """
    adata = get_adata(data, table_key)
    if method not in _METHODS:
        msg = f"`method` must be one of {list(_METHODS)}, got {method!r}."
        raise ValueError(msg)
    hint = "Run `mst.tl.fuse` first." if use_rep.startswith("X_fused") else _rep_hint(use_rep)
    x = check_obsm(adata, use_rep, hint=hint)
    if n_domains is None and method != "leiden":
        msg = f"`method={method!r}` needs `n_domains`."
        raise ValueError(msg)
    if n_domains is not None and not (2 <= int(n_domains) <= adata.n_obs):
        msg = f"`n_domains` must be between 2 and n_obs={adata.n_obs}, got {n_domains}."
        raise ValueError(msg)
    if resolution <= 0:
        msg = f"`resolution` must be positive, got {resolution}."
        raise ValueError(msg)
    if int(n_neighs) < 1:
        msg = f"`n_neighs` must be >= 1, got {n_neighs}."
        raise ValueError(msg)
    if int(n_init) < 1:
        msg = f"`n_init` must be >= 1, got {n_init}."
        raise ValueError(msg)
    if covariance_type not in _COVARIANCES:
        msg = f"`covariance_type` must be one of {list(_COVARIANCES)}, got {covariance_type!r}."
        raise ValueError(msg)
    if method in ("kmeans", "gmm"):
        n_distinct = _n_distinct_rows(x, int(n_domains))
        if n_distinct < int(n_domains):
            what = "is constant (all rows equal)" if n_distinct == 1 else f"has only {n_distinct} distinct rows"
            msg = (
                f"`adata.obsm[{use_rep!r}]` {what}: {method} cannot find n_domains={n_domains} domains in it. "
                "Check that the representation was computed (e.g. not all zero)."
            )
            raise ValueError(msg)
    start = logg.info(f"finding domains in {use_rep!r} with {method}")

    params: dict = {"method": method, "use_rep": use_rep, "random_state": random_state}
    notes: list[str] = []
    if method == "leiden":
        import anndata as ad
        import scanpy as sc

        tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()), obsm={use_rep: x})
        k = min(int(n_neighs), adata.n_obs - 1)
        if k < n_neighs:
            notes.append(f"n_neighs capped at n_obs - 1 = {k}")
        sc.pp.neighbors(
            tmp,
            use_rep=use_rep,
            n_neighbors=k,
            transformer=_knn_transformer(adata.n_obs, k, random_state),
            random_state=random_state,
        )
        graph = _leiden_graph(tmp)
        if graph is not None:
            del tmp.obsp["distances"]  # only the connectivities are clustered
        if n_domains is None:
            labels = _leiden_labels(tmp, resolution, random_state, graph)
            res_used, trace = resolution, [[float(resolution), len(np.unique(labels)), random_state]]
        else:
            labels, res_used, seed, trace = _leiden_search(tmp, int(n_domains), resolution, random_state, graph=graph)
            params["leiden_random_state"] = seed
        params.update(resolution=float(res_used), resolution_search=trace, n_neighs=n_neighs)
        labels = labels.astype(np.int64)
    elif method == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=int(n_domains), n_init=int(n_init), random_state=random_state).fit_predict(x)
        params["n_init"] = int(n_init)
    else:
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(
            n_components=int(n_domains),
            covariance_type=covariance_type,
            n_init=int(n_init),
            random_state=random_state,
        )
        labels = gm.fit(x).predict(x)
        params.update(covariance_type=covariance_type, n_init=int(n_init))
    cat = _labels_by_size(np.asarray(labels))
    params["n_domains"] = len(cat.categories)
    params["n_domains_requested"] = n_domains
    params["notes"] = notes

    if copy:
        adata = adata.copy()
    adata.obs[key_added] = pd.Categorical(cat, categories=cat.categories)
    adata.uns[key_added] = {"params": records_params(**params)}
    logg.info(
        f"    finished: found {len(cat.categories)} domains, added 'obs[{key_added!r}]' (categorical)", time=start
    )
    return adata if copy else None


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


@inject_docs(data=doc_data, copy=doc_copy)
def evaluate_domains(
    data: SpatialData | AnnData,
    domain_key: str = Key.DOMAIN,
    annotation_key: str | None = Key.ANNOTATION,
    *,
    genes: Sequence[str] | None = None,
    n_markers: int = 3,
    layer: str | None = None,
    normalize: bool | None = None,
    spatial_key: str = Key.SPATIAL,
    library_key: str | None = None,
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
        ``obs`` column of the reference labels; ``None`` skips ARI/NMI.
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
    library_key
        ``obs`` column of the sections (spots of different sections are never neighbours). ``None``:
        ``"section"`` when present.
    n_neighs
        Spatial neighbours per observation (>= 1), within its section; capped at ``n - 1`` in a section of ``n``
        observations (a section of one observation is left out of the autocorrelation); caps are recorded in
        ``params["notes"]``.
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
        < 1 or ``n_neighs`` < 1.
    """
    import anndata as ad
    import scanpy as sc
    import squidpy as sq
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    adata = get_adata(data, table_key)
    key, reference = domain_key, annotation_key
    key_added = f"{key}_evaluation" if key_added is None else key_added
    dom = check_obs_column(adata, key)
    out: dict = {}
    if reference is not None:
        ref = check_obs_column(adata, reference, min_categories=2)
        ok = (~pd.isna(ref.to_numpy())) & (~pd.isna(dom.to_numpy()))
        r = ref.to_numpy()[ok].astype(str)
        if len(np.unique(r)) < 2:
            msg = f"`adata.obs[{reference!r}]` has fewer than 2 categories where {key!r} is set; ARI/NMI need 2."
            raise ValueError(msg)
        d = dom.to_numpy()[ok].astype(str)
        out.update(
            ari=float(adjusted_rand_score(r, d)),
            nmi=float(normalized_mutual_info_score(r, d)),
            n_evaluated=int(ok.sum()),
            n_excluded=int((~ok).sum()),
        )
    if spatial_key not in adata.obsm:
        msg = f"{spatial_key!r} not found in `adata.obsm`. Available: {list_keys(adata.obsm.keys())}."
        raise KeyError(msg)
    coords = check_obsm(adata, spatial_key)[:, :2]
    lib = resolve_library_key(adata, library_key)
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

    start = logg.info(f"evaluating domains {key!r}" + (f" against {reference!r}" if reference else ""))
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
    sections = adata.obs[lib].astype(str).to_numpy() if lib is not None else np.zeros(adata.n_obs, dtype=str)
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
    if copy:
        adata = adata.copy()
    adata.uns[key_added] = out
    summary = f"ARI={out['ari']:.3f} NMI={out['nmi']:.3f} " if "ari" in out else ""
    logg.info(
        f"    finished: {summary}mean Moran's I={out['mean_moran_I']:.3f}, added 'uns[{key_added!r}]'",
        time=start,
    )
    return adata if copy else None
