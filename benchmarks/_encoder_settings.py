"""Try one ``graph_encoder`` setting on DLPFC 151673/151674 (3 seeds, morphology off): GMM labels and ARI.

A helper of ``integration_dlpfc.py`` for the setting search (its ``prepare``/``gmm``/``scores``): run as
``python benchmarks/_encoder_settings.py NAME [--n-comps 30] [--kw key=value ...] [--refine K ...]``; saves the
representation and labels under ``--out`` and prints one ``SETTING`` line per section and a mean.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scanpy as sc

import morphst as mst
from morphst import _logging as logg

import integration_dlpfc as bench


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--samples", nargs="+", default=["151673", "151674"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-comps", type=int, default=30)
    p.add_argument("--kw", nargs="*", default=[], help="graph_encoder keyword=value (JSON values)")
    p.add_argument("--refine", nargs="*", type=int, default=[], help="domains(refine_neighs=K) variants also scored")
    p.add_argument("--out", type=Path, default=Path("/work/notes/runs/enc"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    mst.settings.progress_bar = False
    kw = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.kw)}
    res: dict[str, list[float]] = {}
    for sample in args.samples:
        _, a = bench.prepare(sample, bench.DEFAULT_DATA)
        logg.logger.setLevel("WARNING")
        if args.n_comps != 30:
            sc.pp.pca(a, n_comps=args.n_comps, random_state=0)
        for seed in range(args.seeds):
            t = time.perf_counter()
            mst.tl.graph_encoder(a, "X_pca", random_state=seed, key_added="X_e", **kw)
            t_enc = time.perf_counter() - t
            np.save(args.out / f"{args.name}_{sample}_s{seed}.npy", a.obsm["X_e"])
            for k in [0, *args.refine]:
                extra = {"refine_neighs": k} if k else {}
                mst.tl.domains(a, "X_e", method="gmm", n_domains=7, random_state=seed, key_added="d", **extra)
                ari = bench.scores(a, a.obs["d"].to_numpy())["ari"]
                res.setdefault(f"refine={k}", []).append(ari)
                print(f"SETTING {args.name} refine={k} {sample} seed={seed} ari={ari:.4f} s={t_enc:.0f}", flush=True)
    for key, v in res.items():
        print(f"SETTING_MEAN {args.name} {key} ari={np.mean(v):.4f} n={len(v)} {np.round(v, 3).tolist()}")


if __name__ == "__main__":
    main()
