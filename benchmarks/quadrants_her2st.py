"""Quadrant framework on HER2ST C2–C6 (Chelebian et al. 2025, Box 2): ImageNet vs random DenseNet-121, and its use.

Protocol (../shared/PROTOCOL.md, "Quadrant framework"):

1. Embeddings with ``mst.tl.embed_patches`` (patches of 112 µm centred on each spot, resampled to 224 px, i.e.
   0.5 µm/px; the library's default precision): ImageNet DenseNet-121 (the ST-Net backbone, weights file from
   ``$MORPHST_WEIGHTS_DIR`` / ../shared/weights), the same architecture with a seeded random initialisation
   (``weights="random"``), and the offline default EfficientNet-Lite0 (``weights=None``). Cached on disk (``--cache``,
   default: a folder in the temp directory), so a rerun only recomputes the analysis.
2. Expression: log1p of counts per 10,000 (``mst.pp.normalize`` -> ``layers['log1p_cp10k']``). Genes: 50 HVGs of
   ``mst.pp.select_genes`` (analytic Pearson residuals on raw counts, among genes detected in >= 10% of the spots),
   the translation genes of the protocol and of ``morphst demo``. Annotation: the authors' expression clusters (7
   spots without a cluster are left out).
3. Descriptive: ``mst.tl.quadrants`` (permutation thresholds) on all 903 annotated spots with the 50 genes selected
   on ALL sections (descriptive, not an evaluation): share of features per quadrant and median of each axis.
4. Use, leave-one-section-out, no leakage: genes (``select_genes(mask=training spots)``) and quadrants are computed
   on the 4 training sections only:
   - translation: the default model of ``mst.tl.predict_expression`` (its own fold code: standardise, PCA <= 256,
     RidgeCV with the penalty chosen by section-grouped inner CV) on all features vs quadrant-I vs quadrant-II
     features; mean per-gene Pearson r over the fold's 50 genes in the held-out section. The all-feature column is
     checked against ``mst.tl.predict_expression`` itself (same numbers);
   - integration: domains in the held-out section from expression alone (PCA of the fold's genes) vs expression
     fused with all / I / II features (``mst.tl.fuse`` stitch + ``mst.tl.domains`` k-means with k = the number of
     reference clusters in the section); ARI against the authors' clusters. The reference comes from expression, so
     it favours expression-only domains.

Run: ``MORPHST_DATA_DIR=../shared/data MORPHST_WEIGHTS_DIR=../shared/weights python benchmarks/quadrants_her2st.py
[--cache DIR] [--n-perms N] [--n-perms-fold N] [--smoke]`` (``--smoke``: a synthetic 3-section table with 8-d
Gaussian features and 3 permutations; seconds, figures meaningless).

History: the first measured run (commit 44ae950) used an inline PIL/timm encoder and dispersion ("seurat") HVGs of
log1p-cp10k, which on this data are low-count noise genes (GGPS1, PFKP, POLL, ...); see the report of this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import morphst as mst
from morphst.tl._quadrants import QUADRANTS

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("MORPHST_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))
DATA = Path(os.environ.get("MORPHST_DATA_DIR", REPO.parent / "shared" / "data"))
DN_FILE = WEIGHTS / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
ENCODERS = {  # name -> (obsm key, registry model, weights argument of embed_patches)
    "imagenet": ("X_densenet121", "densenet121", str(DN_FILE)),
    "random": ("X_densenet121_random", "densenet121", "random"),
    "lite0": ("X_efficientnet_lite0", "efficientnet_lite0", None),
}
N_GENES = 50
TARGET = "log1p_cp10k"


# ------------------------------------------------------------------------------------------------------ embeddings
def embed(sdata, cache: Path) -> dict[str, str]:
    """Fill the table's ``obsm`` with the three encoders' ``mst.tl.embed_patches`` features; return how each was made.

    Cached per (model, weights, default patch geometry, spots) in ``cache`` with the ``uns`` parameters next to it.
    """
    adata = sdata.tables["table"]
    cache.mkdir(parents=True, exist_ok=True)
    how: dict[str, str] = {}
    for name, (key, model, weights) in ENCODERS.items():
        tag = json.dumps([model, weights, str(mst.settings.weights_dir), 112.0, 224, list(adata.obs_names)])
        f = cache / f"{key}_{hashlib.sha1(tag.encode()).hexdigest()[:10]}.npy"
        meta = f.with_suffix(".json")
        t = time.perf_counter()
        if f.is_file() and meta.is_file():
            adata.obsm[key] = np.load(f)
            p = json.loads(meta.read_text())
            src = f"cached {f}"
        else:
            mst.tl.embed_patches(sdata, model, weights=weights, key_added=key)
            p = {k: adata.uns[key]["params"][k] for k in ("model", "weights", "dtype", "patch_size_um", "target_px")}
            np.save(f, np.asarray(adata.obsm[key], dtype=np.float32))
            meta.write_text(json.dumps(p))
            src = f"computed in {time.perf_counter() - t:.0f} s, cached {f}"
        how[name] = (
            f"{p['model']}, {p['weights']}, {p['dtype']}, {p['patch_size_um']:g} µm -> {p['target_px']} px; {src}"
        )
    return how


# ------------------------------------------------------------------------------------------------------ use
def translate(adata, x: np.ndarray, y, gene_mask: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    """One fold of ``mst.tl.predict_expression``'s default model on features ``x``, through the public API.

    ``mst.tl.fit_translator`` runs the same recipe as one fold (fixed genes ``gene_mask``, selected on the training
    fold by the caller; inner CV grouped by section). Returns the mean per-gene Pearson r in the test section
    (genes with undefined r excluded), ``mst.tl.metrics.summarize``.
    """
    work = adata.copy()
    work.obsm["X_bench"] = np.asarray(x, dtype=np.float32)
    genes = list(work.var_names[gene_mask])
    t = mst.tl.fit_translator(work, "X_bench", genes=genes, target=TARGET, train=tr, library_key="section",
                              select_on_train=False)  # fmt: skip
    pred = t.predict(work[te])
    obs = y[np.flatnonzero(te)][:, np.flatnonzero(gene_mask)]
    obs = obs.toarray() if hasattr(obs, "toarray") else np.asarray(obs)
    return float(mst.tl.metrics.summarize(obs, pred)["pcc"])


def integrate(sub, morph_key: str | None, k: int) -> float:
    """Domains in one section: expression (X_pca) alone or fused with ``morph_key``; ARI vs the clusters."""
    from sklearn.metrics import adjusted_rand_score

    rep = "X_pca"
    if morph_key is not None:
        mst.tl.fuse(sub, use_rep=("X_pca", morph_key), method="stitch", n_comps=20, key_added="X_fused")
        rep = "X_fused"
    mst.tl.domains(sub, use_rep=rep, method="kmeans", n_domains=k, random_state=0, key_added="domain")
    lab = sub.obs["domain"].astype(str).to_numpy()
    ok = sub.obs["cluster"].notna().to_numpy()
    return float(adjusted_rand_score(sub.obs["cluster"].astype(str).to_numpy()[ok], lab[ok]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "morphst_bench_quadrants"))
    ap.add_argument("--n-perms", type=int, default=100, help="permutations of the all-spot quadrants")
    ap.add_argument("--n-perms-fold", type=int, default=50, help="permutations of the per-fold quadrants")
    ap.add_argument("--smoke", action="store_true", help="synthetic 3-section table, 3 permutations (seconds)")
    args = ap.parse_args()
    n_perms_all, n_perms_fold = (3, 3) if args.smoke else (args.n_perms, args.n_perms_fold)

    t0 = time.perf_counter()
    mst.settings.data_dir = DATA
    mst.settings.weights_dir = WEIGHTS
    mst._logging.logger.setLevel(logging.WARNING)
    mst.settings.progress_bar = False
    if args.smoke:  # the figures only show that the script runs
        from _smoke import her2st_like

        SECTIONS[:] = SECTIONS[:3]
        adata = her2st_like({key: 8 for key, _, _ in ENCODERS.values()}, sections=SECTIONS)
        how = dict.fromkeys(ENCODERS, "Gaussian features of a synthetic table (--smoke)")
    else:
        sdata = mst.datasets.her2st(data_dir=DATA)
        print(f"HER2ST patient C, sections {SECTIONS}: {sdata.tables['table'].n_obs} spots x "
              f"{sdata.tables['table'].n_vars} genes")  # fmt: skip
        how = embed(sdata, Path(args.cache))
        adata = sdata.tables["table"].copy()
    mst.pp.normalize(adata)  # layers['log1p_cp10k']
    y = adata.layers[TARGET].tocsr()
    print("embeddings (mst.tl.embed_patches):")
    for name, h in how.items():
        print(f"  {name:9s} {ENCODERS[name][0]:22s} {adata.obsm[ENCODERS[name][0]].shape}  {h}")

    # ---------------------------------------------------------------- quadrants on all annotated spots
    mst.pp.select_genes(adata, N_GENES)  # on ALL sections: descriptive only
    genes_all = adata.var_names[adata.var["morph_target"]].tolist()
    print(f"\n{N_GENES} genes selected on ALL sections (mst.pp.select_genes, Pearson residuals, detected in >= 10% "
          f"of spots; descriptive use only): {', '.join(genes_all)}")  # fmt: skip
    rows = []
    for name, (key, _, _) in ENCODERS.items():
        t = time.perf_counter()
        mst.tl.quadrants(
            adata, key, "cluster", genes=genes_all, layer=TARGET, n_perms=n_perms_all, key_added=f"quadrants_{name}"
        )
        res = adata.uns[f"quadrants_{name}"]
        df = res["features"]
        rows.append(
            {
                "encoder": name,
                "rep": key,
                "n_feat": len(df),
                **{q: res["shares"][q] for q in QUADRANTS},
                "median_relevance": float(df["relevance"].median()),
                "median_shared": float(df["shared"].median()),
                "thr_relevance": res["thresholds"]["relevance"],
                "thr_shared": res["thresholds"]["shared"],
                # features whose relevance lies within 10% of its threshold: how fragile the I/IV (II/III) split is
                "near_thr_rel": float((np.abs(df["relevance"] / res["thresholds"]["relevance"] - 1) < 0.1).mean()),
                "top_gene": df["best_gene"].value_counts().index[0],
                "s": round(time.perf_counter() - t, 1),
            }
        )
    tab = pd.DataFrame(rows).set_index("encoder")
    print(
        f"\nQuadrants (annotation = authors' clusters, {adata.uns['quadrants_imagenet']['params']['n_obs_used']} "
        f"spots, 7 without cluster left out; the {N_GENES} all-section select_genes genes, log1p-cp10k; permutation "
        f"thresholds, {n_perms_all} perms, 95th percentile; shares = fraction of features; relevance in nats, "
        "shared = max |r|; near_thr_rel = share of features whose relevance is within 10% of the relevance threshold, "
        "i.e. whose quadrant a small change of the threshold can flip):"
    )
    with pd.option_context("display.width", 220, "display.precision", 3):
        print(tab.to_string())
    print("top best_gene counts: " + "; ".join(
        f"{n}: " + ", ".join(f"{g} {c}" for g, c in
                             adata.uns[f"quadrants_{n}"]["features"]["best_gene"].value_counts().head(5).items())
        for n in ENCODERS
    ))  # fmt: skip

    # ---------------------------------------------------------------- use: leave-one-section-out
    sec = adata.obs["section"].astype(str).to_numpy()
    fold_rows = []
    for test in SECTIONS:
        tf = time.perf_counter()
        te = sec == test
        tr = ~te
        mst.pp.select_genes(adata, N_GENES, mask=tr, key_added="fold_genes")
        gmask = adata.var["fold_genes"].to_numpy(bool)
        hvg = adata.var_names[gmask].tolist()
        a_tr = adata[tr].copy()
        sub = adata[te, hvg].copy()
        sub.X = sub.layers[TARGET]
        sc.pp.pca(sub, n_comps=20, random_state=0)
        k = int(sub.obs["cluster"].dropna().nunique())
        ari_expr = integrate(sub, None, k)
        for name, (key, _, _) in ENCODERS.items():
            mst.tl.quadrants(a_tr, key, "cluster", genes=hvg, layer=TARGET, n_perms=n_perms_fold, key_added="q")
            quad = np.asarray(a_tr.uns["q"]["features"]["quadrant"], dtype=str)
            x = np.asarray(adata.obsm[key], dtype=np.float32)
            row = {"test": test, "encoder": name, "ari_expr": ari_expr}
            for label, cols in (
                ("all", np.arange(x.shape[1])),
                ("I", np.flatnonzero(quad == "translation")),
                ("II", np.flatnonzero(quad == "integration")),
            ):
                row[f"n_{label}"] = cols.size
                if cols.size == 0:
                    row[f"pcc_{label}"] = row[f"ari_{label}"] = np.nan
                    continue
                row[f"pcc_{label}"] = translate(adata, x[:, cols], y, gmask, tr, te)
                sub.obsm["X_morph"] = x[te][:, cols]
                row[f"ari_{label}"] = integrate(sub, "X_morph", k)
            fold_rows.append(row)
        print(f"  fold {test} done in {time.perf_counter() - tf:.0f} s ({time.perf_counter() - t0:.0f} s total)")
    folds = pd.DataFrame(fold_rows)
    agg = {c: (c, "mean") for c in ("n_all", "n_I", "n_II", "pcc_all", "pcc_I", "pcc_II")}
    agg |= {f"{c}_min": (c, "min") for c in ("pcc_all", "pcc_I")}
    agg |= {c: (c, "mean") for c in ("ari_expr", "ari_all", "ari_I", "ari_II")}
    summary = folds.groupby("encoder", sort=False).agg(**agg)

    # the all-feature column must be exactly what mst.tl.predict_expression gives (genes re-selected in each fold)
    check = {}
    for name, (key, _, _) in ENCODERS.items():
        mst.tl.predict_expression(adata, key, genes="morph_target", library_key="section", key_added="check")
        pf = adata.uns["check"]["per_fold"].set_index(adata.uns["check"]["per_fold"]["fold"].astype(str))
        mine = folds[folds["encoder"] == name].set_index("test")["pcc_all"]
        check[name] = float(np.max(np.abs(pf.loc[SECTIONS, "pcc"].to_numpy() - mine.loc[SECTIONS].to_numpy())))
    summary["pcc_all_predict_expression_maxdiff"] = pd.Series(check)

    print(
        "\nUse (leave-one-section-out; genes (select_genes on the training spots) and quadrants "
        f"({n_perms_fold} perms per fold, fewer than the {n_perms_all} of the all-spot table to keep the run short) "
        "from the 4 training sections; mean over 5 held-out sections; n_* = features kept, mean over folds):\n"
        "  translation: mean per-gene Pearson r (the fold's 50 genes) of predict_expression's default model "
        "(standardise, PCA <= 256, RidgeCV, section-grouped inner CV) on all / quadrant-I / quadrant-II features; "
        "*_min = worst section;\n"
        "  integration: ARI vs the authors' clusters of k-means domains (k = clusters in the section) on expression "
        "alone / fused with all / I / II features (the reference is expression-derived: it favours expression)"
    )
    with pd.option_context("display.width", 250, "display.precision", 3):
        print(summary.to_string())
        print("\nper fold:")
        print(folds.set_index(["test", "encoder"]).to_string())

    # ---------------------------------------------------------------- gene-level reading (tl.gene_quadrants)
    a = adata.copy()
    mst.tl.predict_expression(a, "X_densenet121", genes=genes_all, library_key="section", key_added="predicted")
    mst.tl.gene_quadrants(a, predicted_key="predicted", annotation_key="cluster", n_perms=n_perms_all)
    g = a.uns["gene_quadrants"]
    gdf = g["genes"].sort_values(["quadrant", "pcc"], ascending=[True, False])
    thr = ", ".join(f"{k} {v:.3f}" for k, v in g["thresholds"].items())
    print(
        "\nGene quadrants (mst.tl.predict_expression on X_densenet121, leave-one-section-out, the 50 all-section "
        "select_genes genes = the leaky gene choice, labelled as such; relevance = MI of log1p-cp10k with the "
        f"clusters; thresholds: {thr}):"
    )
    print("  shares: " + ", ".join(f"{q} {v:.0%}" for q, v in g["shares"].items()))
    for q in QUADRANTS:
        sel = gdf[gdf["quadrant"] == q]
        print(f"  {q:15s} " + ", ".join(f"{n} (r={r.pcc:.2f}, MI={r.relevance:.2f})" for n, r in sel.iterrows()))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    print(
        f"RESULT imagenet_noise_share={tab.loc['imagenet', 'noise']:.3f} "
        f"random_noise_share={tab.loc['random', 'noise']:.3f} "
        f"imagenet_translation_share={tab.loc['imagenet', 'translation']:.3f} "
        f"random_translation_share={tab.loc['random', 'translation']:.3f}"
    )


if __name__ == "__main__":
    main()
