"""Translation benchmark on HER2ST patient C (../shared/PROTOCOL.md, "Translation").

Leave-one-section-out over C2–C6; target log1p(counts per 10k); the 50 most highly variable genes selected on the
training sections of each fold (honest) — and, labelled LEAKY, on all sections (as HEST-Benchmark does); default
patches 112 µm -> 224 px (0.5 µm/px); model: standardise -> PCA (≤256, fit on the training fold) -> ridge with the
penalty from inner leave-sections-out CV on the training fold. Metric: per-gene Pearson r within the held-out
section, mean over its 50 genes = the section's PCC; mean and range over the 5 sections; MAE/MSE/RMSE too.

Encoders: the training-mean predictor, a random-initialised DenseNet-121, the ImageNet DenseNet-121 of
../shared/weights (ST-Net backbone), the offline default EfficientNet-Lite0; each also with ``spatial_context``
(mean embedding of the 4 or 8 nearest spots of the same section). Extra variants: both encoders concatenated, an MLP
head, and the scanpy-default ``seurat`` HVG flavour instead of Pearson residuals (gene choice changes the numbers).

Usage: ``python benchmarks/translation_her2st.py [--data-dir DIR] [--weights-dir DIR] [--cache DIR]``.
Last line: ``RESULT densenet121_pcc=<x> default_pcc=<y> best_pcc=<z> best=<config>`` (train-fold selection).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

import morphst as mst
from morphst.tl import metrics

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def embeddings(sdata, weights_dir: Path, cache: Path | None) -> dict[str, np.ndarray]:
    """obsm arrays for each encoder (cached on disk by model, weights and patch geometry)."""
    dn_file = weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    specs = {
        "X_densenet121_random": ("densenet121", "random"),
        "X_densenet121": ("densenet121", str(dn_file)),
        "X_efficientnet_lite0": ("efficientnet_lite0", None),
    }
    adata = sdata.tables["table"]
    out = {}
    for key, (model, weights) in specs.items():
        tag = json.dumps([model, weights, 112.0, 224, list(adata.obs_names[:3]), adata.n_obs])
        f = cache / f"{key}_{hashlib.sha1(tag.encode()).hexdigest()[:10]}.npy" if cache else None
        if f is not None and f.is_file():
            out[key] = np.load(f)
            print(f"  {key}: cached {f}")
            continue
        t = time.perf_counter()
        mst.tl.embed_patches(sdata, model, weights=weights, key_added=key)
        out[key] = adata.obsm[key]
        p = adata.uns[key]["params"]
        print(f"  {key}: {out[key].shape[1]}-d, {time.perf_counter() - t:.0f} s, weights {p['weights']}, {p['dtype']}")
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, out[key])
    return out


def train_mean_baseline(adata) -> dict:
    """The training-mean predictor on each fold's train-selected genes (PCC undefined: constant prediction)."""
    y = adata.layers["log1p_cp10k"]
    sec = adata.obs["section"].astype(str).to_numpy()
    rows = {}
    for s in SECTIONS:
        test = sec == s
        b = mst.pp.select_genes(adata, 50, mask=~test, copy=True)
        cols = np.flatnonzero(b.var["morph_target"].to_numpy())
        yt = y[test][:, cols].toarray()
        mu = y[~test][:, cols].toarray().mean(axis=0)
        rows[s] = metrics.summarize(yt, np.tile(mu, (len(yt), 1)))
    return rows


def run(adata, name: str, use_rep: str, **kw) -> dict:
    t = time.perf_counter()
    mst.tl.predict_expression(adata, use_rep, key_added="bench", **kw)
    pf = adata.uns["bench"]["per_fold"].set_index(adata.uns["bench"]["per_fold"]["fold"].astype(str))
    row = {"config": name}
    row.update({s: pf.loc[s, "pcc"] for s in SECTIONS})
    row.update(
        {
            "mean_pcc": pf["pcc"].mean(),
            "min": pf["pcc"].min(),
            "max": pf["pcc"].max(),
            "mae": pf["mae"].mean(),
            "mse": pf["mse"].mean(),
            "rmse": pf["rmse"].mean(),
            "excluded": int(pf["n_excluded"].sum()),
            "seconds": time.perf_counter() - t,
        }
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MORPHST_DATA_DIR", "../shared/data"))
    ap.add_argument("--weights-dir", default=os.environ.get("MORPHST_WEIGHTS_DIR", "../shared/weights"))
    ap.add_argument("--cache", default=None, help="folder to cache embeddings in (default: no cache)")
    args = ap.parse_args()
    logging.getLogger("morphst").setLevel(logging.WARNING)
    mst.settings.progress_bar = False
    t0 = time.perf_counter()

    sdata = mst.datasets.her2st(library_id=SECTIONS, data_dir=args.data_dir)
    adata = sdata.tables["table"]
    mpp = adata.uns["morphst_dataset"]["um_per_px"]
    print("HER2ST patient C, sections", ", ".join(SECTIONS), f"({adata.n_obs} spots, {adata.n_vars} genes in all)")
    print("µm/px derived from the 200 µm spot grid:", {k: round(v, 4) for k, v in mpp.items() if k in SECTIONS})
    print("Patches: 112 µm -> 224 px (0.5 µm/px); embeddings:")
    emb = embeddings(sdata, Path(args.weights_dir), Path(args.cache) if args.cache else None)
    for k, v in emb.items():
        adata.obsm[k] = v
    adata.obsm["X_densenet121+efficientnet_lite0"] = np.hstack([emb["X_densenet121"], emb["X_efficientnet_lite0"]])
    mst.pp.normalize(adata)

    # ---- honest: genes selected on the training sections of each fold -------------------------------------------
    rows = []
    base = train_mean_baseline(adata)
    rows.append(
        {
            "config": "training-mean predictor",
            **{s: np.nan for s in SECTIONS},
            "mean_pcc": np.nan,
            "min": np.nan,
            "max": np.nan,
            "mae": np.mean([b["mae"] for b in base.values()]),
            "mse": np.mean([b["mse"] for b in base.values()]),
            "rmse": np.mean([b["rmse"] for b in base.values()]),
            "excluded": int(sum(b["n_excluded"] for b in base.values())),
            "seconds": 0.0,
        }
    )
    encoders = {
        "densenet121_random": "X_densenet121_random",
        "densenet121": "X_densenet121",
        "efficientnet_lite0 (default)": "X_efficientnet_lite0",
    }
    for name, rep in encoders.items():
        rows.append(run(adata, name, rep))
        for k in (4, 8):
            rows.append(run(adata, f"{name} + spatial_context={k}", rep, spatial_context=k))
    rep = "X_densenet121+efficientnet_lite0"
    rows.append(run(adata, "densenet121+efficientnet_lite0", rep))
    rows.append(run(adata, "densenet121+efficientnet_lite0 + spatial_context=8", rep, spatial_context=8))
    rows.append(run(adata, "densenet121, model=mlp", "X_densenet121", model="mlp"))
    honest = pd.DataFrame(rows).set_index("config")

    # ---- variants, labelled ------------------------------------------------------------------------------------------
    var_rows = []
    mst.pp.select_genes(adata, 50, hvg_flavor="seurat", key_added="hvg_seurat")
    var_rows.append(run(adata, "densenet121, seurat-flavour HVGs (train-fold)", "X_densenet121", genes="hvg_seurat"))
    mst.pp.select_genes(adata, 50)  # on ALL sections: leaky
    for name, rep in encoders.items():
        var_rows.append(run(adata, f"LEAKY all-section HVGs: {name}", rep, select_on_train=False))
    var_rows.append(
        run(
            adata,
            "LEAKY all-section HVGs: densenet121 + spatial_context=8",
            "X_densenet121",
            select_on_train=False,
            spatial_context=8,
        )
    )
    variants = pd.DataFrame(var_rows).set_index("config")

    fmt = {c: "{:.3f}".format for c in [*SECTIONS, "mean_pcc", "min", "max", "mae", "mse", "rmse"]}
    fmt["seconds"] = "{:.0f}".format
    pd.set_option("display.width", 220)
    pd.set_option("display.max_colwidth", 60)
    print("\nPCC per held-out section — 50 HVGs selected on the TRAINING sections of each fold (honest):")
    print(honest.to_string(formatters=fmt))
    print("  training-mean predictor: a constant, so Pearson r is undefined for every gene (excluded and counted);")
    print("  compare its MSE with the models'.")
    print("\nVariants (labelled):")
    print(variants.to_string(formatters=fmt))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")

    h = honest.drop(index="training-mean predictor")
    best = h["mean_pcc"].idxmax()
    print(
        f"RESULT densenet121_pcc={h.loc['densenet121', 'mean_pcc']:.3f} "
        f"default_pcc={h.loc['efficientnet_lite0 (default)', 'mean_pcc']:.3f} "
        f"best_pcc={h.loc[best, 'mean_pcc']:.3f} best={best.replace(' ', '')}"
    )


if __name__ == "__main__":
    main()
