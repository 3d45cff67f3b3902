"""Scale check: `mst.tl.fuse(method="graph")` + `mst.tl.domains` on a synthetic 200,000-cell table, 64-d features.

Peer methods build dense n x n matrices (SpaGCN #72: 932 GiB for 353k cells). morphst keeps the spatial graph sparse
(kNN per section), so memory grows linearly. Prints time and peak resident memory per step; the last line is
``RESULT n=<n> peak_rss_mb=<peak RSS of the whole process, MiB> seconds=<fuse + domains wall time>``.
`domains` includes the first-call compilation of pynndescent (numba) for the kNN graph.

Usage: ``python benchmarks/integration_scale.py [n_cells]`` (default 200000).
"""

from __future__ import annotations

import resource
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

import morphst as mst


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def synthetic(n: int, d: int = 64, n_sections: int = 4, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    sec = np.repeat(np.arange(n_sections), int(np.ceil(n / n_sections)))[:n]
    side = np.sqrt(n / n_sections) * 10.0  # ~10 µm between cells
    xy = rng.uniform(0, side, size=(n, 2))
    # 6 regions: 3 vertical stripes (seen by expression) x 2 halves (seen by morphology)
    stripe = np.minimum((xy[:, 0] / side * 3).astype(int), 2)
    half = (xy[:, 1] > side / 2).astype(int)
    expr = rng.normal(size=(n, d)).astype(np.float32)
    expr[:, :3] += 2.0 * np.eye(3, dtype=np.float32)[stripe]
    morph = rng.normal(size=(n, d)).astype(np.float32)
    morph[:, :2] += 2.0 * np.eye(2, dtype=np.float32)[half]
    obs = pd.DataFrame(
        {"section": pd.Categorical([f"S{s}" for s in sec]), "truth": pd.Categorical((stripe * 2 + half).astype(str))},
        index=pd.RangeIndex(n).astype(str),
    )
    a = ad.AnnData(obs=obs)
    a.obsm["X_pca"] = expr
    a.obsm["X_morph"] = morph
    a.obsm["spatial"] = xy
    return a


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    a = synthetic(n)
    base = peak_rss_mb()
    print(f"synthetic table: n={n}, features 64 + 64, 4 sections; peak RSS after building it: {base:.0f} MiB")
    t0, c0 = time.perf_counter(), cpu_seconds()
    mst.tl.fuse(a, ("X_pca", "X_morph"), method="graph", n_comps=30, n_neighs=6)
    t1, c1 = time.perf_counter(), cpu_seconds()
    rss_fuse = peak_rss_mb()
    mst.tl.domains(a, "X_fused", method="leiden", resolution=0.2)
    t2, c2 = time.perf_counter(), cpu_seconds()
    rss_dom = peak_rss_mb()
    g = a.obsp["X_fused_connectivities"]
    if not sparse.issparse(g):
        msg = "the fused graph is dense"
        raise RuntimeError(msg)
    from sklearn.metrics import adjusted_rand_score

    ari = adjusted_rand_score(a.obs["truth"], a.obs["domain"])
    dense_gib = n * n * 8 / 2**30
    print()
    print(f"{'step':<28}{'wall s':>10}{'CPU s':>10}{'peak RSS MiB':>15}")
    print(f"{'fuse(method=graph)':<28}{t1 - t0:>10.1f}{c1 - c0:>10.1f}{rss_fuse:>15.0f}")
    print(f"{'domains(leiden, res 0.2)':<28}{t2 - t1:>10.1f}{c2 - c1:>10.1f}{rss_dom:>15.0f}")
    print("(wall time depends on machine load; CPU time is user + system of this process)")
    print()
    print(
        f"graph: sparse {type(g).__name__}, {g.nnz} stored edges ({g.nnz / n:.1f} per cell), "
        f"{(g.data.nbytes + g.indices.nbytes + g.indptr.nbytes) / 2**20:.0f} MiB; "
        f"a dense float64 n x n matrix would need {dense_gib:.0f} GiB"
    )
    print(
        f"domains found: {a.obs['domain'].nunique()} (ARI vs the 6 synthetic regions: {ari:.3f}; "
        "graph smoothing uses expression, so the 3 expression stripes are what it can find)"
    )
    print(f"RESULT n={n} peak_rss_mb={rss_dom:.0f} seconds={t2 - t0:.1f}")


if __name__ == "__main__":
    main()
