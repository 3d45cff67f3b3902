"""Transfer options for translation, measured on HER2ST patient C (../shared/PROTOCOL.md, "Translation"; issue 14 §2).

Leave-one-section-out over C2–C6 (5 folds), target log1p(counts per 10k), 50 HVGs selected on the training sections
of each fold, patches 112 µm -> 224 px, model standardise -> PCA (≤256) -> ridge (inner leave-sections-out CV).
Options, alone and combined, each as the Translator stores and applies it to new data:

(a) ``scale_per_library=True``: features z-scored within each section (training sections and the held-out one);
(b) stain normalisation with squidpy (``squidpy.experimental.im.detect_tissue``, ``fit_stain_reference`` (Macenko)
    on one *training* section, ``normalize_stains`` of every section's full-resolution image to it), then the same
    patches and encoder; the reference is the first training section of the fold (C2, or C3 when C2 is held out);
(c) colour augmentation averaged at embedding time: ``n_views`` random HED jitters per patch (Tellez et al., *Med.
    Image Anal.* 2019, "HED-light": per-stain scale and shift in [-σ, σ], σ=0.05, in Ruifrok–Johnston stain space),
    embeddings of the views averaged. Measured with a callable encoder wrapped around the same weights (``embed_patches``
    takes any callable), as morphst has no built-in option for it.

For each option and section: mean PCC over the fold's 50 genes, MSE against the training-mean predictor's MSE, and
the applicability-domain verdict of a translator fit on the four training sections (share of the held-out section's
spots scoring above 1; in domain at ≤ 10 %). Seconds: time to make each option's features (stain normalisation and
embedding, as run on this machine; compare rows only when the load was the same), and the cross-validation time.

Only patient C has images here, so these are within-patient figures (serial sections of one tumour); what transfers
to a new patient is not measured by this script.

Usage: ``python benchmarks/transfer_her2st.py [--data-dir DIR] [--weights-dir DIR] [--cache DIR] [--models ...]``
(``--smoke``: 8 spots per section, the handcrafted encoder, without option (b); seconds).
Last line: ``RESULT base_pcc=<x> best_pcc=<y> best=<option> default=<option> model=<first encoder> models=<all>``
(``default``: an option that wins clearly, +0.01 mean PCC and no section 0.01 worse, for every encoder run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import morphst as mst

SECTIONS = ("C2", "C3", "C4", "C5", "C6")
SIGMA = 0.05
SMOKE_HELP = (
    "8 spots per section, the handcrafted encoder, no cache, option (b) left out (squidpy's tissue detection and "
    "Macenko normalisation of the full-resolution images take minutes); seconds, figures meaningless"
)

# Ruifrok & Johnston (2001) H&E-DAB optical-density vectors (rows), as skimage.color.rgb_from_hed
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED[2] = np.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


class HEDJitterMean:
    """Callable encoder: the mean embedding of ``n_views`` HED-jittered views of each patch (input RGB in [0, 1])."""

    def __init__(self, encoder, n_views: int, sigma: float = SIGMA, seed: int = 0):
        import torch

        self.enc, self.n_views, self.sigma, self.seed = encoder, n_views, sigma, seed
        self.m = torch.as_tensor(_HED_FROM_RGB, dtype=torch.float32)
        self.minv = torch.as_tensor(_RGB_FROM_HED, dtype=torch.float32)
        self.__name__ = f"{encoder.name}_hedjitter{n_views}"

    def __call__(self, x):
        import torch

        g = torch.Generator().manual_seed(self.seed)
        od = -torch.log(x.clamp(1e-6, 1.0)).permute(0, 2, 3, 1)  # (B, H, W, 3)
        hed = od @ self.m
        out = 0
        for _ in range(self.n_views):
            a = 1 + (torch.rand(x.shape[0], 1, 1, 3, generator=g) * 2 - 1) * self.sigma
            b = (torch.rand(x.shape[0], 1, 1, 3, generator=g) * 2 - 1) * self.sigma
            rgb = torch.exp(-((hed * a + b) @ self.minv)).clamp(0, 1).permute(0, 3, 1, 2)
            if self.enc.name == "handcrafted":  # (--smoke) it computes in numpy, which has no bfloat16
                rgb = rgb.float()
            with torch.inference_mode():
                z = self.enc.encode(self.enc.transform((rgb * 255).round()))
            out = out + torch.as_tensor(z).float()
        return out / self.n_views


def _cache_file(cache: Path | None, key: str, tag: list) -> Path | None:
    if cache is None:
        return None
    return cache / f"{key}_{hashlib.sha1(json.dumps(tag).encode()).hexdigest()[:10]}.npy"


def embed(sdata, key: str, model, weights, tag: list, cache: Path | None) -> tuple[np.ndarray, float]:
    """``obsm[key]`` (cached by tag); returns (features, seconds spent embedding, NaN when read from the cache)."""
    adata = sdata.tables["table"]
    f = _cache_file(cache, key, [*tag, list(adata.obs_names[:3]), adata.n_obs])
    if f is not None and f.is_file():
        t = json.loads(f.with_suffix(".json").read_text())["seconds"] if f.with_suffix(".json").is_file() else np.nan
        print(f"  {key}: cached ({t:.0f} s when made)")
        return np.load(f), t
    t = time.perf_counter()
    mst.tl.embed_patches(sdata, model, weights=weights, key_added=key)
    t = time.perf_counter() - t
    x = np.asarray(sdata.tables["table"].obsm[key])
    print(f"  {key}: {x.shape[1]}-d, {t:.0f} s")
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, x)
        f.with_suffix(".json").write_text(json.dumps({"seconds": t}))
    return x, t


def stain_normalised(sdata, ref_section: str) -> tuple[object, float]:
    """A SpatialData whose images are the sections' images Macenko-normalised (squidpy) to ``ref_section``."""
    import spatialdata as sd
    import squidpy.experimental.im as sqe
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    t = time.perf_counter()
    for s in SECTIONS:
        if f"{s}_he_tissue" not in sdata.labels:
            sqe.detect_tissue(sdata, f"{s}_he")
    ref = sqe.fit_stain_reference(sdata, f"{ref_section}_he")
    images = {}
    for s in SECTIONS:
        da = sqe.normalize_stains(sdata, f"{s}_he", ref, inplace=False).compute()
        images[f"{s}_he"] = Image2DModel.parse(
            da.data,
            dims=("c", "y", "x"),
            transformations=get_transformation(sdata.images[f"{s}_he"], get_all=True),
            scale_factors=[2, 2, 2, 2],
            chunks=(3, 1024, 1024),
        )
    out = sd.SpatialData(images=images, shapes=dict(sdata.shapes.items()), tables={"table": sdata.tables["table"]})
    out.attrs.update(sdata.attrs)
    return out, time.perf_counter() - t


def fold_rows(adata, use_rep: str, **kw) -> tuple[pd.DataFrame, float]:
    t = time.perf_counter()
    mst.tl.predict_expression(adata, use_rep, key_added="bench", **kw)
    pf = adata.uns["bench"]["per_fold"].copy()
    pf.index = pf["fold"].astype(str)
    return pf, time.perf_counter() - t


def verdicts(adata, use_rep: str, **kw) -> pd.Series:
    """Share of each held-out section's spots beyond the applicability threshold (translator on the other four)."""
    out = {}
    sec = adata.obs["section"].astype(str)
    for s in SECTIONS:
        train = [x for x in SECTIONS if x != s]
        tr = mst.tl.fit_translator(adata, use_rep, train=train, **kw)
        _, v = tr.applicability_scores(adata[(sec == s).to_numpy()])
        out[s] = float(v["frac_beyond"].iloc[0])
    return pd.Series(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MORPHST_DATA_DIR", "../shared/data"))
    ap.add_argument("--weights-dir", default=os.environ.get("MORPHST_WEIGHTS_DIR", "../shared/weights"))
    ap.add_argument("--cache", default=None, help="folder to cache embeddings in (default: no cache)")
    ap.add_argument("--models", nargs="+", default=["densenet121"], choices=["densenet121", "efficientnet_lite0"])
    ap.add_argument("--n-views", type=int, default=2, help="colour-jittered views averaged in option (c)")
    ap.add_argument("--embed-only", action="store_true", help="fill the cache and stop")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.models, args.cache = ["handcrafted"], None
    logging.getLogger("morphst").setLevel(logging.WARNING)
    logging.getLogger("squidpy").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)  # out-of-domain warnings: the verdicts are printed
    mst.settings.progress_bar = False
    cache = Path(args.cache) if args.cache else None
    t0 = time.perf_counter()

    sdata = mst.datasets.her2st(library_id=SECTIONS, data_dir=args.data_dir)
    if args.smoke:
        t = sdata.tables["table"]
        sdata.tables["table"] = t[t.obs.groupby("section", observed=True).cumcount().to_numpy() < 8].copy()
    adata = sdata.tables["table"]
    print("HER2ST patient C, sections", ", ".join(SECTIONS), f"({adata.n_obs} spots); patches 112 µm -> 224 px")
    mst.pp.extract_patches(sdata)
    weights = {
        "densenet121": str(Path(args.weights_dir) / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"),
        "efficientnet_lite0": None,
        "handcrafted": None,
    }
    from morphst.tl.models import get_model

    feats, secs = {}, {}
    stain_sdata = {}
    for m in args.models:
        print(f"embedding with {m}:")
        feats[f"X_{m}"], secs[f"X_{m}"] = embed(sdata, f"X_{m}", m, weights[m], [m, weights[m]], cache)
        enc = get_model(m, weights=weights[m])
        jit = HEDJitterMean(enc, args.n_views)
        key = f"X_{m}_hed{args.n_views}"
        feats[key], secs[key] = embed(sdata, key, jit, None, [m, weights[m], "hed", args.n_views, SIGMA], cache)
        for r in () if args.smoke else ("C2", "C3"):
            key = f"X_{m}_stain{r}"
            f = _cache_file(cache, key, [m, weights[m], "macenko", r, list(adata.obs_names[:3]), adata.n_obs])
            if f is not None and f.is_file():
                feats[key], secs[key] = embed(sdata, key, m, weights[m], [m, weights[m], "macenko", r], cache)
                continue
            if r not in stain_sdata:
                stain_sdata[r] = stain_normalised(sdata, r)
                print(f"  Macenko normalisation of the 5 images to {r}: {stain_sdata[r][1]:.0f} s")
            sd_r, t_norm = stain_sdata[r]
            x, t_emb = embed(sd_r, key, m, weights[m], [m, weights[m], "macenko", r], cache)
            feats[key], secs[key] = x, t_emb + t_norm
            if f is not None:
                f.with_suffix(".json").write_text(json.dumps({"seconds": t_emb + t_norm}))
    stain_sdata.clear()
    if args.embed_only:
        print(f"total {time.perf_counter() - t0:.0f} s")
        return
    for k, v in feats.items():
        adata.obsm[k] = v
    mst.pp.normalize(adata)

    # training-mean predictor on each fold's train-selected genes
    y = adata.layers["log1p_cp10k"]
    sec = adata.obs["section"].astype(str).to_numpy()
    base_mse = {}
    for s in SECTIONS:
        b = mst.pp.select_genes(adata, 50, mask=sec != s, copy=True)
        cols = np.flatnonzero(b.var["morph_target"].to_numpy())
        yt, yr = y[sec == s][:, cols].toarray(), y[sec != s][:, cols].toarray()
        base_mse[s] = float(np.mean((yt - yr.mean(axis=0)) ** 2))

    rows = []
    for m in args.models:
        opts = {
            "none": (f"X_{m}", {}, None),
            "(a) scale_per_library": (f"X_{m}", {"scale_per_library": True}, None),
            **({} if args.smoke else {"(b) Macenko (squidpy)": (None, {}, "stain")}),
            **({} if args.smoke else {"(a)+(b)": (None, {"scale_per_library": True}, "stain")}),
            f"(c) HED jitter x{args.n_views}": (f"X_{m}_hed{args.n_views}", {}, None),
            "(a)+(c)": (f"X_{m}_hed{args.n_views}", {"scale_per_library": True}, None),
        }
        for name, (rep, kw, stain) in opts.items():
            if stain is None:
                pf, t_cv = fold_rows(adata, rep, **kw)
                frac = verdicts(adata, rep, **kw)
                prep = secs[rep]
            else:  # per fold the reference is its first training section
                pf2, t2 = fold_rows(adata, f"X_{m}_stainC2", **kw)
                pf3, t3 = fold_rows(adata, f"X_{m}_stainC3", **kw)
                pf = pd.concat([pf3.loc[["C2"]], pf2.drop(index="C2")])
                t_cv = (t2 + t3) / 2
                v2 = verdicts(adata, f"X_{m}_stainC2", **kw)
                v3 = verdicts(adata, f"X_{m}_stainC3", **kw)
                frac = pd.concat([v3.loc[["C2"]], v2.drop(index="C2")])
                prep = secs[f"X_{m}_stainC2"]
            row = {"model": m, "option": name}
            row.update({s: pf.loc[s, "pcc"] for s in SECTIONS})
            row["mean_pcc"] = pf.loc[list(SECTIONS), "pcc"].mean()
            row["mse/base"] = np.mean([pf.loc[s, "mse"] / base_mse[s] for s in SECTIONS])
            row["ood%"] = " ".join(f"{100 * frac[s]:.0f}" for s in SECTIONS)
            row["n_ood"] = int((frac > 0.10).sum())
            row["prep_s"] = prep
            row["cv_s"] = t_cv
            rows.append(row)
            print(f"  {m:18s} {name:24s} mean PCC {row['mean_pcc']:.3f}", flush=True)
    tab = pd.DataFrame(rows)
    pd.set_option("display.width", 220)
    fmt = {c: "{:.3f}".format for c in [*SECTIONS, "mean_pcc", "mse/base"]}
    fmt.update({"prep_s": "{:.0f}".format, "cv_s": "{:.0f}".format})
    print("\nPCC per held-out section (50 train-selected HVGs); mse/base = model MSE / training-mean MSE (mean over")
    print("sections); ood% = share of the held-out section's spots beyond the applicability threshold (per section,")
    print("C2..C6; out of domain above 10); prep_s = seconds to make the option's features for the 5 sections (stain")
    print("normalisation + embedding, as run on this machine; load varies between rows); cv_s = the cross-validation")
    print(tab.to_string(index=False, formatters=fmt))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    # a default changes only on a clear win for every encoder measured: +0.01 mean PCC and no section worse by more
    # than 0.01 than without options
    wins, parts = None, []
    for m in args.models:
        sub = tab[tab["model"] == m].set_index("option")
        base = sub.loc["none", list(SECTIONS)]
        ok = {
            o
            for o in sub.index
            if sub.loc[o, "mean_pcc"] - base.mean() >= 0.01 and (sub.loc[o, list(SECTIONS)] - base).min() >= -0.01
        }
        wins = ok if wins is None else wins & ok
        best = sub["mean_pcc"].idxmax()
        parts.append(f"{m}: base_pcc={base.mean():.3f} best_pcc={sub.loc[best, 'mean_pcc']:.3f} best={best}")
        print(f"  {m}: options with a clear win: {sorted(ok) or 'none'}")
    default = max(wins, key=lambda o: tab[tab["option"] == o]["mean_pcc"].mean()) if wins else "none"
    for p in parts:
        print("  " + p)
    first = tab[tab["model"] == args.models[0]].set_index("option")
    best = first["mean_pcc"].idxmax()
    print(
        f"RESULT base_pcc={first.loc['none', 'mean_pcc']:.3f} best_pcc={first.loc[best, 'mean_pcc']:.3f} "
        f"best={best.replace(' ', '')} default={default.replace(' ', '')} model={args.models[0]} "
        f"models={'+'.join(args.models)}"
    )


if __name__ == "__main__":
    main()
