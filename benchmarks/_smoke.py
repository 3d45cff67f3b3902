"""Tiny synthetic data for the benchmarks' ``--smoke`` runs (imported by the scripts; not a benchmark itself).

``--smoke`` runs only show that a script still runs end to end in seconds; their figures mean nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def her2st_like(
    features: dict[str, int],
    *,
    sections=SECTIONS,
    side: int = 6,
    n_genes: int = 120,
    n_clusters: int = 3,
    seed: int = 0,
):
    """An AnnData shaped like the HER2ST table: ``side × side`` spots per section on a 200 µm grid.

    Raw counts (CSR) in ``X`` follow a 4-d latent factor that every ``obsm[key]`` (width ``features[key]``) also
    sees with noise; ``obs['section']``, ``obs['cluster']`` (k-means-free: the sign pattern of the first latent
    factors, one spot per section left without a cluster) and ``obsm['spatial']`` (µm) as the dataset writes them.
    """
    import anndata as ad
    from scipy import sparse

    rng = np.random.default_rng(seed)
    n_per = side * side
    xy = np.array([(i, j) for i in range(side) for j in range(side)], dtype=float) * 200.0
    n = n_per * len(sections)
    latent = rng.standard_normal((n, 4))
    counts = rng.poisson(np.exp(1.5 + latent @ (rng.standard_normal((4, n_genes)) * 0.4)))
    cluster = pd.Series(np.digitize(latent[:, 0], np.quantile(latent[:, 0], np.linspace(0, 1, n_clusters + 1)[1:-1])))
    cluster = cluster.astype(str).astype(object)
    cluster.iloc[::n_per] = np.nan
    obs = pd.DataFrame(
        {"section": pd.Categorical(np.repeat(list(sections), n_per)), "cluster": pd.Categorical(cluster)},
        index=[f"s{i}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(n_genes)])
    adata = ad.AnnData(sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.obsm["spatial"] = np.tile(xy, (len(sections), 1))
    for key, d in features.items():
        adata.obsm[key] = (latent @ rng.standard_normal((4, d)) + rng.standard_normal((n, d))).astype(np.float32)
    return adata
