"""Learned morphology features (issue 19, Box 1 of Chelebian et al. 2025): are they where the task needs them?

Translation (HER2ST patient C, C2–C6, ../shared/PROTOCOL.md "Translation": leave one section out, 50 HVGs chosen on
the training sections of each fold, mean over held-out sections of the per-section mean Pearson r):

- ridge on the spot's patch + the mean of its 8 nearest spots (the README's reference row);
- ridge on the same inputs as the head: own 112 µm patch, 224 µm and 448 µm context patches (embedded with
  ``context_index``), 8-neighbour mean, section mean;
- ``model="head"`` (:class:`morphst.tl.FeatureHead`) on those inputs, trained inside each training fold only (early
  stopping on one held-out training section, then refit on the fold's training sections).

Quadrants (HER2ST, authors' expression clusters as the annotation; 50 genes selected on the training sections):
``learn_features`` is fit on C2–C4 and the quadrants of its features are measured on the held-out C5–C6 spots only,
against the raw DenseNet-121 features on the same spots: the share of translation features in quadrant I, the
share of integration features in quadrant II and their max |r| with the genes.

Integration (synthetic section with morphology-only domains, DLPFC 151673/151674, 3 seeds):
``benchmarks/learned_integration.py``'s ``run()``, whose fields are appended to the RESULT line.

Last run (2026-12-04, this 2-core machine, load 3.6 at start; two runs gave the same figures)::

    RESULT dn_ridge8=0.462 dn_ridge_same=0.494 dn_head=0.515 dn_head_s=32.800 dn_head_worse_on=C2
    lite0_ridge8=0.395 lite0_ridge_same=0.447 lite0_head=0.455 lite0_head_s=23.922 lite0_head_worse_on=C2,C4
    q_raw_I=0.326 q_raw_II=0.022 q_raw_median_shared=0.240 q_translation_I=0.766 q_translation_II=0.000
    q_translation_median_shared=0.357 q_integration_I=0.000 q_integration_II=0.125
    q_integration_median_shared=0.237 synthetic_none=0.832 synthetic_raw=0.987 synthetic_learned=0.943
    synthetic_residual=0.999 dlpfc_none=0.489 dlpfc_stitch_none=0.385 dlpfc_raw=0.553 dlpfc_stitch_raw=0.301
    dlpfc_learned=0.549 dlpfc_stitch_learned=0.263 dlpfc_residual=0.551 dlpfc_stitch_residual=0.212
    integration_s=934.755

That run's integration features were ``method="hsic"`` (then the default). With ``method="moran"`` (the default
without labels since; ``--skip-integration``, load 8, 2026-12-04) the translation figures were identical and the
quadrants on C5–C6 gave ``q_integration_I=0.125 q_integration_II=0.000 q_integration_median_shared=0.205`` (hsic:
0.000 / 0.125 / 0.237): one feature of eight moves between quadrants I and II; both share less with the genes
than the raw features (0.240). ``benchmarks/learned_integration.py`` has the moran rows of the integration part.

Run: ``MORPHST_DATA_DIR=../shared/data MORPHST_WEIGHTS_DIR=../shared/weights python benchmarks/learned_features.py
[--cache DIR] [--skip-integration] [--smoke]``. Last line: ``RESULT ...``. ``--smoke``: 24 spots per section, the
handcrafted encoder in place of both CNNs, no integration part (``learned_integration.py --smoke`` runs it); seconds,
figures meaningless.
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

SECTIONS = ("C2", "C3", "C4", "C5", "C6")
CONTEXT_UM = (224.0, 448.0)
REPO = Path(__file__).resolve().parents[1]


def embeddings(sdata, weights_dir: Path, cache: Path | None, models=None) -> None:
    """Own-patch and context-patch embeddings of DenseNet-121 (ImageNet) and EfficientNet-Lite0 into ``obsm``
    (``models``: ``(name, weights)`` pairs in their place)."""
    adata = sdata.tables["table"]
    dn = weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    mst.pp.extract_patches(sdata, patch_size=112.0, target_px=224, context_sizes_um=CONTEXT_UM)
    for model, weights in models or (("densenet121", str(dn)), ("efficientnet_lite0", None)):
        for ci in (None, 0, 1):
            key = f"X_{model}" + ("" if ci is None else f"_ctx{ci}")
            tag = json.dumps([model, weights, 112.0, 224, CONTEXT_UM, ci, list(adata.obs_names)])
            f = cache / f"{key}_{hashlib.sha1(tag.encode()).hexdigest()[:10]}.npy" if cache else None
            if f is not None and f.is_file():
                adata.obsm[key] = np.load(f)
                continue
            t = time.perf_counter()
            mst.tl.embed_patches(sdata, model, weights=weights, context_index=ci, key_added=key)
            print(f"  {key}: {adata.obsm[key].shape[1]}-d, {time.perf_counter() - t:.0f} s")
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                np.save(f, adata.obsm[key])


def translation(adata, model: str) -> tuple[pd.DataFrame, float]:
    """Per-section PCC of the three rows for one encoder; returns the table and the head's seconds."""
    rep = f"X_{model}"
    ctx = [f"{rep}_ctx0", f"{rep}_ctx1"]
    full = {"spatial_context": 8, "context_rep": ctx, "global_context": True}
    rows, seconds = {}, 0.0
    for name, kw in (
        ("ridge, patch + 8 neighbours", {"spatial_context": 8}),
        ("ridge, same inputs as the head", full),
        ("head", {**full, "model": "head"}),
    ):
        t = time.perf_counter()
        mst.tl.predict_expression(adata, rep, key_added="bench", **kw)
        if name == "head":
            seconds = time.perf_counter() - t
        pf = adata.uns["bench"]["per_fold"]
        rows[name] = dict(zip(pf["fold"].astype(str), pf["pcc"], strict=True))
    df = pd.DataFrame(rows).T[list(SECTIONS)]
    df["mean"] = df.mean(axis=1)
    return df, seconds


def quadrant_shift(adata, rep: str = "X_densenet121") -> dict[str, float]:
    """Quadrants of raw vs learned features on C5–C6 spots, the features learned on C2–C4 only."""
    train = ["C2", "C3", "C4"]
    held = ~adata.obs["section"].astype(str).isin(train).to_numpy()
    sel = mst.pp.select_genes(adata, 50, mask=~held, copy=True)
    genes = sel.var_names[sel.var["morph_target"]].tolist()
    mst.tl.learn_features(
        adata, rep, objective="translation", genes=genes, context_rep=[f"{rep}_ctx0", f"{rep}_ctx1"], train=train
    )
    import scanpy as sc

    sc.pp.pca(adata, layer="log1p_cp10k", n_comps=30, mask_var=adata.var_names.isin(genes))
    mst.tl.learn_features(adata, rep, objective="integration", expression_rep="X_pca", train=train)
    learned = {"translation": "X_learned_translation", "integration": "X_learned_integration"}
    # control: Gaussian features of the integration features' shape (their quadrants are chance's)
    width = adata.obsm["X_learned_integration"].shape[1]
    out = {"integration_n_significant": float(width)}
    if width == 0:  # no significant component (learn_integration_features' default): nothing to place
        del learned["integration"]
    else:
        adata.obsm["X_random_integration"] = np.random.default_rng(0).normal(size=(adata.n_obs, width))
        learned["random_integration"] = "X_random_integration"
    sub = adata[held].copy()
    for name, key in {"raw": rep, **learned}.items():
        mst.tl.quadrants(sub, key, "cluster", genes=genes, layer="log1p_cp10k", key_added=f"q_{name}")
        q = sub.uns[f"q_{name}"]
        out[f"{name}_I"] = float(q["shares"].get("translation", 0.0))
        out[f"{name}_II"] = float(q["shares"].get("integration", 0.0))
        out[f"{name}_median_shared"] = float(np.median(q["features"]["shared"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MORPHST_DATA_DIR", str(REPO.parent / "shared" / "data")))
    ap.add_argument(
        "--weights-dir", default=os.environ.get("MORPHST_WEIGHTS_DIR", str(REPO.parent / "shared" / "weights"))
    )
    ap.add_argument("--cache", default=None, help="folder to cache embeddings in (default: no cache)")
    ap.add_argument("--skip-integration", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="24 spots per section, handcrafted encoder (seconds)")
    args = ap.parse_args()
    logging.getLogger("morphst").setLevel(logging.WARNING)
    mst.settings.progress_bar = False
    print(f"load at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    sdata = mst.datasets.her2st(library_id=SECTIONS, data_dir=args.data_dir)
    encoders = (("densenet121", "dn"), ("efficientnet_lite0", "lite0"))
    if args.smoke:  # the figures only show that the script runs
        t = sdata.tables["table"]
        sdata.tables["table"] = t[t.obs.groupby("section", observed=True).cumcount().to_numpy() < 24].copy()
        encoders, args.cache, args.skip_integration = (("handcrafted", "hc"),), None, True
    adata = sdata.tables["table"]
    models = [(m, None) for m, _ in encoders] if args.smoke else None
    embeddings(sdata, Path(args.weights_dir), Path(args.cache) if args.cache else None, models)
    mst.pp.normalize(adata)

    result = {}
    pd.set_option("display.width", 200)
    for model, tag in encoders:
        df, secs = translation(adata, model)
        print(f"\nHER2ST C2–C6 leave-one-section-out, {model}: mean PCC per held-out section")
        print(df.to_string(float_format="{:.3f}".format))
        worse = [s for s in SECTIONS if df.loc["head", s] < df.loc["ridge, same inputs as the head", s]]
        print(f"  head below ridge (same inputs) on: {worse or 'no section'}; head {secs:.0f} s for 5 folds")
        result[f"{tag}_ridge8"] = df.loc["ridge, patch + 8 neighbours", "mean"]
        result[f"{tag}_ridge_same"] = df.loc["ridge, same inputs as the head", "mean"]
        result[f"{tag}_head"] = df.loc["head", "mean"]
        result[f"{tag}_head_s"] = secs
        result[f"{tag}_head_worse_on"] = ",".join(worse) or "none"

    shift = quadrant_shift(adata, f"X_{encoders[0][0]}")
    print("\nQuadrants on C5–C6 (features learned on C2–C4):", {k: round(v, 3) for k, v in shift.items()})
    result.update({f"q_{k}": v for k, v in shift.items()})
    print(f"load at end: {os.getloadavg()[0]:.1f}")

    if not args.skip_integration:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import learned_integration  # benchmarks/learned_integration.py: synthetic section and DLPFC, 3 seeds

        t = time.perf_counter()
        result.update({k: v for k, v in learned_integration.run().items() if not k.endswith("_s")})
        result["integration_s"] = time.perf_counter() - t
    fields = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    print(f"RESULT {fields}")


if __name__ == "__main__":
    main()
