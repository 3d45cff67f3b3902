"""Spatial domains from a representation: Leiden (with a resolution search for ``n_domains``), k-means, GMM."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, doc_library_key, doc_random_state, inject_docs
from ..._utils import check_coordinates, check_obsm, get_adata, records_params, save_results
from ..._utils._hints import rep_hint
from ..._utils._memory import release_freed_memory
from ..._utils._sections import section_groups

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
        """The kNN distance graph of ``x``: ``PyNNDescentTransformer.fit_transform`` without its index compression.

        ``fit_transform`` then calls ``compress_index``, which builds the search tree and search graph (for later
        queries, never made here): the same graph is read from the fitted index, which is then dropped. The first
        fit of a process leaves reference cycles (~900,000 objects, numba's first call into pynndescent) that kept
        large arrays alive (~0.6 GB at 10^6 observations) until a full garbage collection, which a session holding
        many objects runs rarely: they are collected here.
        """
        import gc

        from scipy import sparse

        self._t.fit(x, compress_index=False)
        try:
            return sparse.csr_matrix(self._t.transform(None))
        finally:
            del self._t.index_
            gc.collect()


def _knn_transformer(n_obs: int, n_neighbors: int, random_state: int = 0):
    """``None`` (scanpy's exact kNN) for small data, else :class:`_CsrMatrixNNDescent`."""
    return None if n_obs < 4096 else _CsrMatrixNNDescent(n_obs, n_neighbors, random_state)


def _leiden_graph(tmp: AnnData):
    """The igraph graph of ``obsp['connectivities']`` that Leiden clusters, one edge per pair, and its edge weights.

    scanpy's ``tl.leiden`` adds every stored entry as an undirected edge, so each pair of neighbours is joined by
    two parallel edges (``i–j`` and ``j–i``). Here each pair is one edge of weight ``w_ij + w_ji``: every sum that
    modularity and Leiden take over edges is the same up to float rounding, at half the edges (the graph and
    Leiden's working memory scale with them). The connectivities are taken out of ``tmp`` first; edges are added
    from one int64 array (no Python tuple per edge) and the weights kept as a float64 array.
    Returns ``(graph, weights)``, or ``None`` when scanpy's seeding helper is not importable: then
    ``sc.tl.leiden`` is called (and ``tmp`` keeps its connectivities).
    """
    try:
        from scanpy._utils.random import set_igraph_random_state  # noqa: F401
    except ImportError:  # another scanpy layout: let scanpy build its graph
        return None
    import igraph as ig
    from scipy import sparse

    a = sparse.csr_matrix(tmp.obsp.pop("connectivities"), dtype=np.float64)
    # each pair once (i <= j): w_ij + w_ji; a stored self-loop once, as scanpy adds it
    a = (sparse.triu(a, k=0, format="csr") + sparse.tril(a, k=-1, format="csr").T).tocsr()
    a.eliminate_zeros()
    a.sort_indices()
    edges = np.empty((a.nnz, 2), dtype=np.int64)
    edges[:, 0] = np.repeat(np.arange(tmp.n_obs, dtype=np.int64), np.diff(a.indptr))
    edges[:, 1] = a.indices
    weights = a.data
    del a
    g = ig.Graph(n=tmp.n_obs, directed=False)
    g.add_edges(edges)
    return g, weights


def _leiden_labels(tmp: AnnData, resolution: float, random_state: int, graph=None) -> np.ndarray:
    """Leiden (igraph flavour, 2 iterations, modularity, weighted) as scanpy's ``tl.leiden`` runs it."""
    if graph is not None:
        from scanpy._utils.random import set_igraph_random_state

        g, weights = graph
        with set_igraph_random_state(random_state):
            part = g.community_leiden(
                n_iterations=2, weights=weights, resolution=resolution, objective_function="modularity"
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


@inject_docs(data=doc_data, library_key=doc_library_key, random_state=doc_random_state, copy=doc_copy)
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
    refine_neighs: int = 0,
    spatial_key: str = Key.SPATIAL,
    library_key: str | None = Key.LIBRARY,
    table_key: str = Key.TABLE,
    random_state: int = 0,
    key_added: str = Key.DOMAIN,
    copy: bool = False,
) -> AnnData | None:
    """Spatial domains: cluster a (fused) representation.

    ``"leiden"`` runs Leiden as scanpy's ``tl.leiden`` does (Traag et al., *Sci. Rep.* 2019; igraph flavour,
    modularity, 2 iterations) on a kNN graph of ``use_rep`` (``sc.pp.neighbors``, computed on a scratch object: the
    neighbour graph of ``data`` is not touched), with each pair of neighbours joined by one edge of their summed
    connectivity where scanpy adds two parallel edges (the same modularity at half the memory; labels can differ
    from scanpy's only through float rounding).
    With ``n_domains`` set it bisects the resolution until Leiden returns exactly that many domains (where the
    count jumps over ``n_domains``, the search is repeated with seeds ``random_state + 1``, … up to 4 more times).
    ``"kmeans"`` and ``"gmm"`` are scikit-learn's ``KMeans`` and ``GaussianMixture`` (``n_init`` initialisations)
    (``covariance_type``, default ``"tied"``: one covariance shared by all components, like mclust's ``EEE``
    model that GraphST clusters with; ``"full"``, one covariance per component, is much slower), which need
    ``n_domains``. With ``refine_neighs=k``, the labels are then smoothed in space once: each observation takes the
    most frequent label among its ``k`` nearest observations in its section (itself excluded; a tie keeps its own
    label if tied, else goes to the tied label met nearest), the label refinement of GraphST (Long et al.,
    *Nat. Commun.* 2023). Labels are ``"0"``, ``"1"``, … by decreasing size.

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
        ``"leiden"`` only: neighbours of the kNN graph in ``use_rep`` space; at least ``n_obs`` is an error.
    covariance_type
        ``"gmm"`` only: covariance of each component (scikit-learn ``GaussianMixture``).
    n_init
        ``"kmeans"``/``"gmm"``: initialisations (k-means++ starts for ``"gmm"``); the best fit is kept (>= 1). A
        single fit depends strongly on its seed.
    refine_neighs
        Spatial neighbours of the majority vote that refines the labels (>= 0; 0: no refinement), capped at the
        section size - 1.
    spatial_key
        ``refine_neighs > 0`` only: ``obsm`` key of the coordinates, shape ``(n_obs, 2)``, any unit.
    {library_key}
        ``refine_neighs > 0`` only: votes stay within a section.
    {random_state}
        It seeds the clustering.
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
        (``[resolution, n_domains, seed]`` triples tried), ``random_state``, ``refine_neighs`` (and
        ``n_refined``, the observations whose label the vote changed).

    Raises
    ------
    KeyError
        If ``use_rep`` is not in ``obsm``, or with ``refine_neighs > 0`` ``spatial_key``/``library_key`` is missing
        (the message lists what is).
    ValueError
        If ``use_rep`` holds NaN/inf, ``method`` is unknown, ``n_domains`` is missing or out of range, or
        ``refine_neighs`` is negative. Nothing is written.
    """
    adata = get_adata(data, table_key)
    x = _check_options(adata, use_rep, method, n_domains, resolution, n_neighs, n_init, covariance_type)
    where = _check_refine(adata, refine_neighs, spatial_key, library_key)
    start = logg.info(f"finding domains in {use_rep!r} with {method}")
    # no release on entry here, unlike the other heavy steps: Leiden releases between its own phases (after the kNN
    # graph, whose NN-descent garbage is collected, and after the igraph graph is built)

    params: dict = {"method": method, "use_rep": use_rep, "random_state": random_state}
    notes: list[str] = []
    if method == "leiden":
        labels = _leiden(adata, x, use_rep, n_domains, resolution, n_neighs, random_state, params, notes)
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
    params["refine_neighs"] = int(refine_neighs)
    if where is not None:
        refined = refine_labels(np.asarray(labels), *where, int(refine_neighs))
        params.update(n_refined=int(np.sum(refined != np.asarray(labels))), spatial_key=spatial_key)
        labels = refined
    cat = _labels_by_size(np.asarray(labels))
    params["n_domains"] = len(cat.categories)
    params["n_domains_requested"] = n_domains
    params["notes"] = notes

    added = [
        ("obs", key_added, pd.Categorical(cat, categories=cat.categories)),
        ("uns", key_added, {"params": records_params(**params)}),
    ]
    return save_results(adata, added, copy=copy, start=start, summary=f"found {len(cat.categories)} domains")


def _check_options(adata, use_rep, method, n_domains, resolution, n_neighs, n_init, covariance_type) -> np.ndarray:
    """Check the options of :func:`domains`; return ``obsm[use_rep]``."""
    if method not in _METHODS:
        msg = f"`method` must be one of {list(_METHODS)}, got {method!r}."
        raise ValueError(msg)
    hint = rep_hint(use_rep)
    x = check_obsm(adata, use_rep, hint=hint)
    if adata.n_obs < 3:
        msg = f"Finding domains needs at least 3 observations, got {adata.n_obs}: pass the whole section(s)."
        raise ValueError(msg)
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
    if method == "leiden" and int(n_neighs) >= adata.n_obs:
        msg = (
            f"`n_neighs`={n_neighs} neighbours for the Leiden graph, but there are {adata.n_obs} observations (so at "
            f"most {adata.n_obs - 1} neighbours); choose a smaller `n_neighs`."
        )
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
    return x


def _check_refine(adata, refine_neighs, spatial_key, library_key):
    """``None`` without refinement, else ``(coords, groups)``; raise before anything is computed."""
    if int(refine_neighs) != refine_neighs or refine_neighs < 0:
        msg = f"`refine_neighs` must be an integer >= 0 (0: no refinement), got {refine_neighs!r}."
        raise ValueError(msg)
    if refine_neighs == 0:
        return None
    coords = check_coordinates(adata, spatial_key, needed_by="`refine_neighs`; or pass refine_neighs=0")
    return coords, section_groups(adata, library_key)


def refine_labels(labels: np.ndarray, coords: np.ndarray, groups: np.ndarray | None, k: int) -> np.ndarray:
    """One spatial majority vote over the ``k`` nearest observations of each observation's section.

    Each observation takes their most frequent label (itself excluded; ``k`` capped at the section size - 1). A tie
    keeps the observation's own label when it is among the tied ones, else goes to the tied label whose nearest
    holder is nearest.
    """
    from ..._utils._graph import knn_edges

    labels = np.asarray(labels)
    uniq, codes = np.unique(labels, return_inverse=True)
    out = codes.copy()
    rows, cols, _, _ = knn_edges(coords, groups, n_neighs=k)  # row-major, nearest first within a row
    if rows.size == 0:
        return labels.copy()
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    rank = np.arange(rows.size) - np.repeat(starts, np.diff(np.r_[starts, rows.size]))
    n_lab = uniq.size
    votes = np.zeros((labels.size, n_lab))
    np.add.at(votes, (rows, codes[cols]), 1.0)
    # tie-breaks worth < 1 vote: own label +0.5; the nearest holder of a label up to +0.25
    nearest = np.full((labels.size, n_lab), np.inf)
    np.minimum.at(nearest, (rows, codes[cols]), rank.astype(float))
    score = votes + 0.25 * np.where(np.isfinite(nearest), 1.0 / (1.0 + nearest), 0.0)
    score[np.arange(labels.size), codes] += 0.5
    has = np.zeros(labels.size, dtype=bool)
    has[rows] = True
    out[has] = np.argmax(score[has], axis=1)
    return uniq[out]


def _leiden(adata, x, use_rep, n_domains, resolution, n_neighs, random_state, params: dict, notes: list[str]):
    """Leiden labels (int64) on a kNN graph of ``x`` built on a scratch object; the search and caps go to ``params``."""
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
    del tmp.obsp["distances"]  # only the connectivities are clustered
    release_freed_memory()
    graph = _leiden_graph(tmp)  # takes the connectivities out of tmp (now in the igraph graph)
    release_freed_memory()
    if n_domains is None:
        labels = _leiden_labels(tmp, resolution, random_state, graph)
        res_used, trace = resolution, [[float(resolution), len(np.unique(labels)), random_state]]
    else:
        labels, res_used, seed, trace = _leiden_search(tmp, int(n_domains), resolution, random_state, graph=graph)
        params["leiden_random_state"] = seed
    params.update(resolution=float(res_used), resolution_search=trace, n_neighs=n_neighs)
    del graph, tmp
    release_freed_memory()
    return labels.astype(np.int64)
