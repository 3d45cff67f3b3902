"""Scale check: spatial domains on ``mst.datasets.xenium_like`` cells against the generator's domain truth.

Rows (each then ``mst.tl.domains(method="gmm")`` with the true number of domains, seed 0):

- ``expression``: the PCA (30 components of log1p counts normalised to 10,000 per cell), nothing spatial.
- ``fuse smooth``: ``mst.tl.fuse(method="smooth")`` with its defaults (2 rings, 5 steps), expression alone.
- ``graph_encoder off / on``: ``mst.tl.graph_encoder`` (``"contrastive"``, its defaults: 6 neighbours, tiles of
  at most 20,000 cells, one step per tile); ``on`` weights edges by the cells' morphology (``cell_area``,
  ``nucleus_area``; the generator's domains differ in nucleus size).

The table is drawn once by the generator in a child process and cached as h5ad (``--cache``), so the peak resident
memory printed here is that of reading the table and the steps, not of drawing polygons. Per step: wall time, CPU
time (user + system) and the process' peak RSS after the step (monotone: the largest so far). The machine load
(``os.getloadavg``) is printed beside the times.

Usage: ``python benchmarks/integration_scale.py [--n-cells 100000] [--cache DIR] [--threads 2]
[--rows expression fuse encoder_off encoder_on] [--smoke]`` (``--smoke``: 2,000 cells, every row, the encoder trained 10 steps, a fresh cache; seconds,
figures meaningless). Last line: ``RESULT n=... ari_fuse=... ari_encoder=...
encoder_seconds=... peak_rss_gib=...``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GEN = """
import sys
import morphst as mst
a = mst.datasets.xenium_like(int(sys.argv[1]), random_state=0).tables["table"]
a.write_h5ad(sys.argv[2])
"""


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def table(n: int, cache: Path):
    import anndata as ad

    path = cache / f"xenium_like_{n}.h5ad"
    if not path.exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", GEN, str(n), str(path)], check=True)
        print(f"generated {n} cells in {time.perf_counter() - t:.0f}s (child process) -> {path}", flush=True)
    return ad.read_h5ad(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "morphst_scale")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", nargs="+", default=["expression", "fuse", "encoder_off", "encoder_on"])
    p.add_argument("--smoke", action="store_true", help="2,000 cells, every row, a fresh cache (seconds)")
    args = p.parse_args()
    if args.smoke:
        _smoke(args)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(args.threads):
        run(args)


def _smoke(args) -> None:
    """``--smoke``: the smallest run of every row, its table drawn into a temporary cache (removed at exit)."""
    import atexit
    import functools
    import shutil

    import morphst as mst

    mst.tl.graph_encoder = functools.partial(mst.tl.graph_encoder, n_epochs=10)  # 10 steps, not 300
    args.n_cells, args.cache = 2_000, Path(tempfile.mkdtemp(prefix="morphst_scale_smoke_"))
    atexit.register(shutil.rmtree, args.cache, ignore_errors=True)


def run(args) -> None:
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    import morphst as mst
    from morphst import _logging as logg

    mst.settings.progress_bar = False
    a = table(args.n_cells, args.cache)
    logg.logger.setLevel("WARNING")
    truth = a.obs["synthetic_domain"].astype(str).to_numpy()
    k = len(np.unique(truth))
    print(f"n={a.n_obs} cells, {a.n_vars} genes, {k} true domains; peak RSS after reading: {peak_gib():.2f} GiB")
    steps = []

    def step(name, fn):
        t, c = time.perf_counter(), cpu_s()
        out = fn()
        steps.append((name, time.perf_counter() - t, cpu_s() - c, peak_gib(), os.getloadavg()[0]))
        print(f"  {name}: {steps[-1][1]:.1f}s, {steps[-1][2]:.1f} CPU-s, peak RSS {steps[-1][3]:.2f} GiB", flush=True)
        return out

    def prep():
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.pca(a, n_comps=30, random_state=0)
        z = a.obs[["cell_area", "nucleus_area"]].to_numpy(dtype=float)
        a.obsm["X_morph"] = (z - z.mean(0)) / z.std(0)

    step("normalise + PCA", prep)
    aris = {}

    def rows(name, rep_fn):
        rep = step(f"{name}: representation", rep_fn)
        lab = step(f"{name}: domains gmm", lambda: gmm(a, rep, k))
        aris[name] = adjusted_rand_score(truth, lab)
        print(f"  {name}: ARI {aris[name]:.3f}, peak RSS so far {peak_gib():.2f} GiB", flush=True)

    def gmm(a, rep, k):
        mst.tl.domains(a, rep, method="gmm", n_domains=k, random_state=0, key_added="_d")
        return a.obs["_d"].to_numpy()

    enc = mst.tl.graph_encoder
    todo = {
        "expression": lambda: "X_pca",
        "fuse": lambda: mst.tl.fuse(a, ("X_pca",), method="smooth", library_key=None) or "X_fused",
        "encoder_off": lambda: enc(a, "X_pca", key_added="X_e0") or "X_e0",
        "encoder_on": lambda: enc(a, "X_pca", morphology_rep="X_morph", key_added="X_e1") or "X_e1",
    }
    for name in args.rows:
        rows(name, todo[name])
    print(f"\n{'step':<38}{'wall s':>9}{'CPU s':>9}{'peak RSS GiB':>14}{'load':>7}")
    for name, w, c, rss, load in steps:
        print(f"{name:<38}{w:>9.1f}{c:>9.1f}{rss:>14.2f}{load:>7.1f}")
    print("\nARI against the generator's domains:", {k_: round(v, 3) for k_, v in aris.items()})
    enc_s = sum(w for name, w, *_ in steps if name.startswith("encoder_off"))
    print(
        f"RESULT n={a.n_obs} ari_fuse={aris.get('fuse', float('nan')):.3f} "
        f"ari_encoder={aris.get('encoder_off', float('nan')):.3f} encoder_seconds={enc_s:.1f} "
        f"peak_rss_gib={peak_gib():.2f}"
    )


if __name__ == "__main__":
    main()
