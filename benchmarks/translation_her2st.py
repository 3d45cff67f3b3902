"""Translation benchmark on HER2ST patient C (../shared/PROTOCOL.md, "Translation" and "Controls").

Leave-one-section-out over C2–C6; target log1p(counts per 10k); the 50 most highly variable genes selected on the
training sections of each fold (honest) — and, labelled LEAKY, on all sections (as HEST-Benchmark does); default
patches 112 µm -> 224 px (0.5 µm/px); model: standardise -> PCA (≤256, fit on the training fold) -> ridge with the
penalty from inner leave-sections-out CV on the training fold. Metric: per-gene Pearson r within the held-out
section, mean over its 50 genes = the section's PCC; mean and range over the 5 sections; MAE/MSE/RMSE too.

Encoders: the training-mean predictor, a random-initialised DenseNet-121, the ImageNet DenseNet-121 of
../shared/weights (ST-Net backbone), the offline default EfficientNet-Lite0; each also with ``spatial_context``
(mean embedding of the 4 or 8 nearest spots of the same section). Extra variants: both encoders concatenated, an MLP
head, and the scanpy-default ``seurat`` HVG flavour instead of Pearson residuals (gene choice changes the numbers).

Controls printed from the same run (PROTOCOL "Controls"):

- the noise ceiling of each held-out section (``noise_ceiling``: binomial thinning of the counts into two halves,
  Spearman–Brown to full depth): reliability ρ and ceiling √ρ, averaged over the fold's genes, beside the PCCs;
- random Gaussian features of the same shape as each encoder's features through the same model (``--seeds`` seeds,
  mean ± sd); a morphology figure is a gain only outside that spread;
- head vs ridge on IDENTICAL inputs, genes and folds (own patch + 224/448 µm context patches + 8 neighbours + section
  mean; DenseNet-121 and EfficientNet-Lite0): ridge once, ``regressor="head"`` with ``--seeds`` seeds (mean ± sd), the
  PCC of the mean of those seeds' predictions, and the seconds of each five-fold head run.

Run of the head-vs-ridge part with the ensembled head (the default: one head per training section held out for
early stopping, predictions averaged), ``--head-only --cache DIR``, 2026-12-05, this 2-core machine with the test
suite running beside it (load 2–5); seeds 0, 1, 2::

    RESULT ceiling=0.825 reliability=0.689 ceiling_per_section=0.815,0.826,0.835,0.819,0.827 dn_ridge=0.494
    dn_head=0.525±0.000 dn_head_mean3=0.528 dn_gain=+0.031±0.000 dn_random_ridge=-0.010 dn_random_head=-0.013
    dn_head_5folds_s=138 dn_head_below_ridge_on=none lite0_ridge=0.447 lite0_head=0.470±0.002 lite0_head_mean3=0.473
    lite0_gain=+0.023±0.002 lite0_random_ridge=-0.002 lite0_random_head=-0.011 lite0_head_5folds_s=83
    lite0_head_below_ridge_on=none

Earlier run (single head) of the head-vs-ridge part (``--head-only --cache DIR``, 2026-12-05, this 2-core machine shared with other
jobs, load 13–20; ``model="head"`` was then one early-stopped head per fold; seeds 0, 1, 2)::

    RESULT ceiling=0.825 reliability=0.689 ceiling_per_section=0.815,0.826,0.835,0.819,0.827 dn_ridge=0.494
    dn_head=0.509±0.005 dn_head_mean3=0.527 dn_gain=+0.016±0.005 dn_random_ridge=-0.010 dn_random_head=-0.016
    dn_head_5folds_s=48 dn_head_below_ridge_on=C2 lite0_ridge=0.447 lite0_head=0.447±0.008 lite0_head_mean3=0.468
    lite0_gain=-0.000±0.008 lite0_random_ridge=-0.002 lite0_random_head=-0.000 lite0_head_5folds_s=36
    lite0_head_below_ridge_on=C2,C4

DenseNet-121 head seeds 0.515 / 0.505 / 0.508, the mean of their predictions 0.527 (per section 0.508 / 0.567 /
0.586 / 0.523 / 0.449); ridge on the same inputs 0.491 / 0.520 / 0.564 / 0.489 / 0.405. Random Gaussian features of
the same shapes: −0.026 to 0.019 (ridge) and −0.027 to −0.001 (head) over 3 seeds. The noise ceiling √ρ of the
fold's 50 genes is 0.82–0.84 in every section (ρ 0.67–0.71): the best mean PCC (0.527) reaches about 64 % of it.
Seconds are wall time of one five-fold ``predict_expression`` at that load. The full run (``--skip-variants``, same
day, load 14 falling to 5, 991 s; its head figures were identical to the line above) added::

    RESULT densenet121_pcc=0.423 default_pcc=0.348 random_like_densenet121=-0.003±0.021 best_pcc=0.462
    best=densenet121+spatial_context=8 ...

Random Gaussian features of the encoders' shapes through ridge: −0.003 ± 0.021 (DenseNet-121 shape), 0.008 ± 0.005
(Lite0), −0.007 with 8 neighbours; the random-initialised DenseNet-121 0.322 (0.365 with 8 neighbours).

Usage: ``python benchmarks/translation_her2st.py [--data-dir DIR] [--weights-dir DIR] [--cache DIR] [--seeds N]
[--skip-variants] [--head-only] [--smoke]``. ``--smoke``: synthetic five-section table, random features, fewer rows,
two seeds of a 3-epoch head on DenseNet-121-shaped features only (seconds; checks that the script runs, its figures
mean nothing).
Last line: ``RESULT ...`` (see ``result_line``).
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
from morphst.tl import noise_ceiling

SECTIONS = ("C2", "C3", "C4", "C5", "C6")
CONTEXT_UM = (224.0, 448.0)
ENCODERS = {"densenet121": "X_densenet121", "efficientnet_lite0": "X_efficientnet_lite0"}


def embeddings(sdata, weights_dir: Path, cache: Path | None, *, random_encoder: bool = True) -> None:
    """Own-patch (and 224/448 µm context) embeddings into ``obsm``, cached as benchmarks/learned_features.py does."""
    adata = sdata.tables["table"]
    dn = str(weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors")
    mst.pp.extract_patches(sdata, patch_size=112.0, target_px=224, context_sizes_um=CONTEXT_UM)
    specs = [("densenet121", dn, ci) for ci in (None, 0, 1)]
    specs += [("efficientnet_lite0", None, ci) for ci in (None, 0, 1)]
    specs += [("densenet121", "random", None)] if random_encoder else []
    for model, weights, ci in specs:
        key = f"X_{model}" + ("_random" if weights == "random" else "") + ("" if ci is None else f"_ctx{ci}")
        tag = json.dumps([model, weights, 112.0, 224, CONTEXT_UM, ci, list(adata.obs_names)])
        f = cache / f"{key}_{hashlib.sha1(tag.encode()).hexdigest()[:10]}.npy" if cache else None
        if f is not None and f.is_file():
            adata.obsm[key] = np.load(f)
            print(f"  {key}: cached {f}")
            continue
        t = time.perf_counter()
        mst.tl.embed_patches(sdata, model, weights=weights, context_index=ci, key_added=key)
        print(f"  {key}: {adata.obsm[key].shape[1]}-d, {time.perf_counter() - t:.0f} s")
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, adata.obsm[key])


def fold_genes(adata, key: str) -> dict[str, list[str]]:
    """The genes each fold of the run ``key`` predicted (its train-selected genes)."""
    fm = adata.uns[key]["fold_metrics"]
    return {str(f): g["gene"].astype(str).tolist() for f, g in fm.groupby("fold", observed=True)}


def section_pcc(adata, pred: np.ndarray, genes: dict[str, list[str]]) -> dict[str, float]:
    """Per held-out section, the mean Pearson r of ``pred`` (n_obs × n_vars, e.g. averaged layers) on its genes."""
    y = adata.layers["log1p_cp10k"]
    sec = adata.obs["section"].astype(str).to_numpy()
    out = {}
    for s, g in genes.items():
        rows, cols = np.flatnonzero(sec == s), adata.var_names.get_indexer(g)
        out[s] = metrics.summarize(y[rows][:, cols], pred[np.ix_(rows, cols)])["pcc"]
    return out


def run(adata, name: str, use_rep: str, *, key: str = "bench", **kw) -> dict:
    t = time.perf_counter()
    mst.tl.predict_expression(adata, use_rep, key_added=key, **kw)
    pf = adata.uns[key]["per_fold"].set_index(adata.uns[key]["per_fold"]["fold"].astype(str))
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


def train_mean_baseline(adata) -> dict:
    """The training-mean predictor on each fold's train-selected genes (PCC undefined: constant prediction)."""
    y = adata.layers["log1p_cp10k"]
    sec = adata.obs["section"].astype(str).to_numpy()
    base = {}
    for s in SECTIONS:
        test = sec == s
        b = mst.pp.select_genes(adata, 50, mask=~test, copy=True)
        cols = np.flatnonzero(b.var["morph_target"].to_numpy())
        mu = y[~test][:, cols].toarray().mean(axis=0)
        base[s] = metrics.summarize(y[test][:, cols], np.tile(mu, (int(test.sum()), 1)))
    row = {"config": "training-mean predictor", **{s: np.nan for s in SECTIONS}}
    row.update({"mean_pcc": np.nan, "min": np.nan, "max": np.nan, "seconds": 0.0})
    row.update({m: np.mean([b[m] for b in base.values()]) for m in ("mae", "mse", "rmse")})
    row["excluded"] = int(sum(b["n_excluded"] for b in base.values()))
    return row


def random_like(adata, keys: list[str], seed: int) -> list[str]:
    """Gaussian features of the same shape as each ``obsm[key]``, stored as ``obsm[key + '_gauss']``."""
    rng = np.random.default_rng(1000 + seed)
    for k in keys:
        adata.obsm[f"{k}_gauss"] = rng.standard_normal(adata.obsm[k].shape).astype(np.float32)
    return [f"{k}_gauss" for k in keys]


def spread(rows: list[dict], name: str) -> dict:
    """Mean ± sd over seeds of the per-section and mean PCC of ``rows``, as one table row."""
    df = pd.DataFrame(rows)[[*SECTIONS, "mean_pcc", "seconds"]]
    row = {"config": name, **df.mean().to_dict(), "sd": df["mean_pcc"].std(ddof=1) if len(df) > 1 else np.nan}
    row.update({"min": df["mean_pcc"].min(), "max": df["mean_pcc"].max(), "n_seeds": len(df)})
    return row


def honest_table(adata, seeds: list[int], *, smoke: bool = False) -> pd.DataFrame:
    """The protocol's table (genes selected on the training sections) with the random-feature controls.

    ``smoke``: the own-patch rows and one control only.
    """
    rows = [train_mean_baseline(adata)]
    encoders = {
        "densenet121_random": "X_densenet121_random",
        "densenet121": "X_densenet121",
        "efficientnet_lite0 (default)": "X_efficientnet_lite0",
    }
    for name, rep in encoders.items():
        rows.append(run(adata, name, rep))
        for k in () if smoke else (4, 8):
            rows.append(run(adata, f"{name} + spatial_context={k}", rep, spatial_context=k))
    for name, rep in list(ENCODERS.items())[: 1 if smoke else None]:
        for sc in (None,) if smoke else (None, 8):
            ctl = []
            for s in seeds:
                (g,) = random_like(adata, [rep], s)
                ctl.append(run(adata, "", g, spatial_context=sc))
            tail = "" if sc is None else f" + spatial_context={sc}"
            rows.append(spread(ctl, f"CONTROL random Gaussian, shape of {name}{tail}"))
    rep = "X_densenet121+efficientnet_lite0"
    if not smoke:
        rows.append(run(adata, "densenet121+efficientnet_lite0", rep))
        rows.append(run(adata, "densenet121+efficientnet_lite0 + spatial_context=8", rep, spatial_context=8))
        rows.append(run(adata, "densenet121, model=mlp", "X_densenet121", regressor="mlp"))
    return pd.DataFrame(rows).set_index("config")


def variants_table(adata) -> pd.DataFrame:
    rows = []
    mst.pp.select_genes(adata, 50, hvg_flavor="seurat", key_added="hvg_seurat")
    rows.append(run(adata, "densenet121, seurat-flavour HVGs (train-fold)", "X_densenet121", genes="hvg_seurat"))
    leaky = mst.pp.select_genes(adata, 50, copy=True).var["morph_target"]  # on ALL sections: leaky
    adata.var["leaky_hvg"] = leaky.to_numpy()
    kw = {"genes": "leaky_hvg", "select_on_train": False}
    for name, rep in {"densenet121_random": "X_densenet121_random", **ENCODERS}.items():
        rows.append(run(adata, f"LEAKY all-section HVGs: {name}", rep, **kw))
    rows.append(run(adata, "LEAKY all-section HVGs: densenet121 + spatial_context=8", "X_densenet121",
                    spatial_context=8, **kw))  # fmt: skip
    return pd.DataFrame(rows).set_index("config")


def seeded(head, seed: int):
    """``"head"`` as it is (``predict_expression`` seeds it with ``random_state``), or a copy of an estimator with
    ``random_state=seed`` (an estimator passed as ``regressor=`` keeps its own seed)."""
    if isinstance(head, str):
        return head
    from sklearn.base import clone

    return clone(head).set_params(random_state=seed)


def head_vs_ridge(adata, rep: str, seeds: list[int], head) -> tuple[pd.DataFrame, dict]:
    """Ridge and the head on identical inputs, genes and folds; the head over seeds; random-feature controls."""
    ctx = [f"{rep}_ctx0", f"{rep}_ctx1"]
    full = {"spatial_context": 8, "global_context": True}
    ridge = run(adata, "ridge", rep, context_rep=ctx, **full)
    genes = fold_genes(adata, "bench")
    heads, preds = [], []
    for s in seeds:
        heads.append(run(adata, f"head seed {s}", rep, context_rep=ctx, regressor=seeded(head, s), random_state=s, **full))
        if fold_genes(adata, "bench") != genes:
            raise RuntimeError("the head's folds chose other genes than ridge's: inputs are not identical")
        preds.append(adata.layers["bench"].astype(np.float64))
        check = section_pcc(adata, preds[-1], genes)
        if not np.allclose([check[k] for k in SECTIONS], [heads[-1][k] for k in SECTIONS], atol=1e-6):
            raise RuntimeError("recomputed per-section PCC differs from predict_expression's per_fold table")
    ens = section_pcc(adata, np.mean(preds, axis=0), genes)
    rows = [ridge, *heads, spread(heads, f"head, {len(seeds)} seeds, mean ± sd")]
    rows.append({"config": f"mean of {len(seeds)} heads' predictions", **ens, "mean_pcc": np.mean(list(ens.values()))})
    ctl_r, ctl_h = [], []
    for s in seeds:
        g = random_like(adata, [rep, *ctx], s)
        ctl_r.append(run(adata, "", g[0], context_rep=g[1:], **full))
        ctl_h.append(run(adata, "", g[0], context_rep=g[1:], regressor=seeded(head, s), random_state=s, **full))
    rows += [spread(ctl_r, "CONTROL random Gaussian, same shapes -> ridge")]
    rows += [spread(ctl_h, "CONTROL random Gaussian, same shapes -> head")]
    gain = np.array([h["mean_pcc"] - ridge["mean_pcc"] for h in heads])
    worse = [s for s in SECTIONS if np.mean([h[s] for h in heads]) < ridge[s]]
    summary = {
        "ridge": ridge["mean_pcc"],
        "head": float(np.mean([h["mean_pcc"] for h in heads])),
        "head_sd": float(np.std([h["mean_pcc"] for h in heads], ddof=1)) if len(heads) > 1 else np.nan,
        "head_ens": float(np.mean(list(ens.values()))),
        "gain": float(gain.mean()),
        "gain_sd": float(gain.std(ddof=1)) if len(gain) > 1 else np.nan,
        "head_s": float(np.mean([h["seconds"] for h in heads])),
        "ridge_s": float(ridge["seconds"]),
        "random_ridge": float(np.mean([c["mean_pcc"] for c in ctl_r])),
        "random_head": float(np.mean([c["mean_pcc"] for c in ctl_h])),
        "worse_on": ",".join(worse) or "none",
    }
    return pd.DataFrame(rows).set_index("config"), {"genes": genes, "ens": ens, **summary}


def ceiling_rows(adata, genes: dict[str, list[str]]) -> pd.DataFrame:
    """Per held-out section, the mean reliability ρ and ceiling √ρ over that fold's genes."""
    rel, ceil = adata.varm["noise_ceiling_reliability"], adata.varm["noise_ceiling"]
    out = {"noise reliability ρ (same genes)": {}, "NOISE CEILING √ρ (same genes)": {}}
    for s, g in genes.items():
        out["noise reliability ρ (same genes)"][s] = rel.loc[g, s].mean()
        out["NOISE CEILING √ρ (same genes)"][s] = ceil.loc[g, s].mean()
    df = pd.DataFrame(out).T[list(SECTIONS)]
    df["mean_pcc"] = df.mean(axis=1)
    return df


def load(args):
    """The table with embeddings, counts in X and the target layer; the FeatureHead to use; the seeds."""
    seeds = list(range(args.seeds))
    if args.smoke:
        from morphst.tl import FeatureHead

        from _smoke import her2st_like

        dims = (("X_densenet121", 16), ("X_efficientnet_lite0", 12))
        feats = {k + c: d for k, d in dims for c in ("", "_ctx0", "_ctx1")}
        adata = her2st_like({**feats, "X_densenet121_random": 16})
        return adata, FeatureHead(n_hidden=8, max_epochs=3, patience=2), seeds[:2]
    sdata = mst.datasets.her2st(library_id=SECTIONS, data_dir=args.data_dir)
    adata = sdata.tables["table"]
    mpp = adata.uns["morphst_dataset"]["um_per_px"]
    print("HER2ST patient C, sections", ", ".join(SECTIONS), f"({adata.n_obs} spots, {adata.n_vars} genes in all)")
    print("µm/px derived from the 200 µm spot grid:", {k: round(v, 4) for k, v in mpp.items() if k in SECTIONS})
    print("Patches: 112 µm -> 224 px (0.5 µm/px), context 224/448 µm; embeddings:")
    cache = Path(args.cache) if args.cache else None
    embeddings(sdata, Path(args.weights_dir), cache, random_encoder=not args.head_only)
    return adata, "head", seeds


def show(title: str, df: pd.DataFrame) -> None:
    fmt = {c: "{:.3f}".format for c in [*SECTIONS, "mean_pcc", "sd", "min", "max", "mae", "mse", "rmse"]}
    fmt["seconds"] = "{:.0f}".format
    cols = [c for c in [*SECTIONS, "mean_pcc", "sd", "min", "max", "mae", "mse", "rmse", "excluded", "seconds",
                        "n_seeds"] if c in df.columns]  # fmt: skip
    print(f"\n{title}")
    print(df[cols].to_string(formatters={k: v for k, v in fmt.items() if k in cols}, na_rep="—"), flush=True)


def result_line(honest: pd.DataFrame | None, hv: dict[str, dict], ceil: pd.DataFrame, seeds: list[int]) -> str:
    parts = []
    if honest is not None:
        h = honest.drop(index="training-mean predictor")
        h = h[~h.index.str.startswith("CONTROL")]
        best = h["mean_pcc"].idxmax()
        ctl = honest.loc["CONTROL random Gaussian, shape of densenet121"]
        parts += [
            f"densenet121_pcc={h.loc['densenet121', 'mean_pcc']:.3f}",
            f"default_pcc={h.loc['efficientnet_lite0 (default)', 'mean_pcc']:.3f}",
            f"random_like_densenet121={ctl['mean_pcc']:.3f}±{ctl['sd']:.3f}",
            f"best_pcc={h.loc[best, 'mean_pcc']:.3f} best={best.replace(' ', '')}",
        ]
    parts += [
        f"ceiling={ceil.loc['NOISE CEILING √ρ (same genes)', 'mean_pcc']:.3f}",
        f"reliability={ceil.loc['noise reliability ρ (same genes)', 'mean_pcc']:.3f}",
        "ceiling_per_section=" + ",".join(f"{ceil.loc['NOISE CEILING √ρ (same genes)', s]:.3f}" for s in SECTIONS),
    ]
    for tag, r in hv.items():
        parts += [
            f"{tag}_ridge={r['ridge']:.3f}",
            f"{tag}_head={r['head']:.3f}±{r['head_sd']:.3f}",
            f"{tag}_head_mean{len(seeds)}={r['head_ens']:.3f}",
            f"{tag}_gain={r['gain']:+.3f}±{r['gain_sd']:.3f}",
            f"{tag}_random_ridge={r['random_ridge']:.3f}",
            f"{tag}_random_head={r['random_head']:.3f}",
            f"{tag}_head_5folds_s={r['head_s']:.0f}",
            f"{tag}_head_below_ridge_on={r['worse_on']}",
        ]
    return "RESULT " + " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MORPHST_DATA_DIR", "../shared/data"))
    ap.add_argument("--weights-dir", default=os.environ.get("MORPHST_WEIGHTS_DIR", "../shared/weights"))
    ap.add_argument("--cache", default=None, help="folder to cache embeddings in (default: no cache)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the head and of the random-feature controls")
    ap.add_argument("--skip-variants", action="store_true", help="skip the labelled variants (seurat HVGs, LEAKY)")
    ap.add_argument("--head-only", action="store_true", help="only the noise ceiling and the head-vs-ridge tables")
    ap.add_argument("--smoke", action="store_true", help="synthetic data, tiny head: seconds, figures meaningless")
    args = ap.parse_args()
    logging.getLogger("morphst").setLevel(logging.WARNING)
    mst.settings.progress_bar = False
    t0 = time.perf_counter()
    adata, head, seeds = load(args)
    adata.obsm["X_densenet121+efficientnet_lite0"] = np.hstack(
        [adata.obsm["X_densenet121"], adata.obsm["X_efficientnet_lite0"]]
    )
    mst.pp.normalize(adata)
    t = time.perf_counter()
    noise_ceiling(adata, library_key="section", random_state=0)
    print(f"noise ceiling of {adata.n_vars} genes in {time.perf_counter() - t:.1f} s")

    pd.set_option("display.width", 240)
    pd.set_option("display.max_colwidth", 70)
    hv = {}
    for tag, (name, rep) in list(zip(("dn", "lite0"), ENCODERS.items(), strict=True))[: 1 if args.smoke else None]:
        df, hv[tag] = head_vs_ridge(adata, rep, seeds, head)
        ceil = ceiling_rows(adata, hv[tag]["genes"])  # the genes do not depend on the encoder
        show(f"{name}: head vs ridge on IDENTICAL inputs (own patch + 224/448 µm context + 8 neighbours + section "
             "mean), genes and folds; seconds = the five folds:", pd.concat([df, ceil]))  # fmt: skip
    honest = None if args.head_only else honest_table(adata, seeds, smoke=args.smoke)
    if honest is not None:
        show("PCC per held-out section — 50 HVGs selected on the TRAINING sections of each fold (honest), with the "
             "noise ceiling of the same genes:", pd.concat([honest, ceil]))  # fmt: skip
        print("  training-mean predictor: a constant, so Pearson r is undefined for every gene (excluded and counted);")
        print("  compare its MSE with the models'. CONTROL rows: mean over seeds, sd of the mean PCC in `sd`.")
    if not (args.skip_variants or args.smoke or args.head_only):
        show("Variants (labelled):", variants_table(adata))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f} at the end")
    print(result_line(honest, hv, ceil, seeds))


if __name__ == "__main__":
    main()
