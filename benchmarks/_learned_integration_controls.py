"""Control rows for learned integration features (``learned_integration.py --parts controls``; a module of that script, not run on its own).

(a) Noise: 3 grid sections of 196 spots, expression = 10 Gaussian PCs with a two-group structure; morphology = 400-d
    Gaussian noise (and, second row, noise plus a per-section offset). Rows: domains (GMM, 2) from expression alone
    vs fused (``"stitch"``) with the default integration features; ARI between the two; R² of each learned feature
    with the section dummies (max over features). Seeds 0–2 (data, features, clustering), mean ± sd.
(b) ``mst.datasets.morphology_domains`` (default: smooth stain field on), ``random_state`` 0 and 1, handcrafted
    features of 100 µm patches (48 px), expression PCA 10 of log1p cp10k. Rows fused with ``"stitch"`` + GMM (5
    domains), ARI within D3 ∪ D4 (the image-only domains) and overall: none (expression only), raw, the default
    integration features (``"maf"``), ``"multispati"``, random Gaussian features of the raw shape, coordinates only,
    features learned (``"maf"``) from Gaussian noise of the raw shape. Clustering seeds 0–2 (random rows: the
    random draw too), mean ± sd. A morphology row counts as a gain only outside the random row's spread. Per
    representation, how much of each feature expression predicts (``shared_information``: 5-fold R², ridge and
    boosted trees; median and max over features) and its largest |r| with ``g²`` (the non-linear shared channel).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_rand_score

import morphst as mst


def _grid(seed: int, offset: float):
    import anndata as ad

    rng = np.random.default_rng(seed)
    side, n_sec = 14, 3
    n = side * side
    coords = np.column_stack([np.tile(np.arange(side), side), np.repeat(np.arange(side), side)]) * 100.0
    a = ad.AnnData(np.zeros((n * n_sec, 1), np.float32))
    a.obs["section"] = pd.Categorical(np.repeat([f"s{i}" for i in range(n_sec)], n))
    a.obsm["spatial"] = np.vstack([coords] * n_sec)
    group = np.tile((np.arange(n) % side) >= side // 2, n_sec)  # expression domains: left / right
    e = rng.normal(size=(n * n_sec, 10))
    e[:, 0] += 3.0 * group
    a.obsm["X_pca"] = e.astype(np.float32)
    x = rng.normal(size=(n * n_sec, 400)) + offset * np.repeat(rng.normal(size=(n_sec, 400)), n, axis=0)
    a.obsm["X_m"] = x.astype(np.float32)
    return a


def _domains(a, reps, n, seed):
    if len(reps) == 1:
        a.obsm["_f"] = a.obsm[reps[0]]
    else:
        mst.tl.fuse(a, reps, method="stitch", key_added="_f")
    mst.tl.domains(a, "_f", method="gmm", n_domains=n, random_state=seed, key_added="_d")
    return a.obs["_d"].astype(str).to_numpy()


def noise_part() -> dict:
    out = {}
    for offset, name in ((0.0, "noise"), (3.0, "offset")):
        aris, r2s, widths = [], [], []
        for seed in range(3):
            a = _grid(seed, offset)
            mst.tl.learn_integration_features(a, "X_m", random_state=seed)
            mst.tl.learn_integration_features(a, "X_m", n_components=4, random_state=seed, key_added="X_k4")
            widths.append(a.obsm["X_learned_integration"].shape[1])
            aris.append(adjusted_rand_score(_domains(a, ["X_pca"], 2, seed), _domains(a, ["X_pca", "X_learned_integration"], 2, seed)))
            d = pd.get_dummies(a.obs["section"]).to_numpy(float)
            z = a.obsm["X_k4"]
            r2s.append(max(LinearRegression().fit(d, z[:, j]).score(d, z[:, j]) for j in range(z.shape[1])))
        print(
            f"  (a) {name}: n_significant {widths}; fused vs expression-only ARI {np.mean(aris):.3f} ± {np.std(aris):.3f};"
            f" max R² with section dummies (4 forced components) {np.mean(r2s):.4f} ± {np.std(r2s):.4f}",
            flush=True,
        )
        out[f"{name}_ari"] = float(np.mean(aris))
        out[f"{name}_r2"] = float(np.mean(r2s))
    return out


def synthetic_table(state: int, n_comps: int = 10, side: int = 40):
    """``morphology_domains(side, side, random_state=state)``'s table with handcrafted features of 100 µm patches
    (48 px) and ``n_comps`` PCs of log1p counts per 10,000 (also the input of ``learned_integration.py --parts
    synthetic``)."""
    import scanpy as sc

    sdata = mst.datasets.morphology_domains(side, side, random_state=state)
    a = sdata.tables["table"]
    mst.pp.extract_patches(sdata, patch_size=100.0, target_px=48)
    mst.tl.embed_patches(sdata, model="handcrafted")
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=n_comps, random_state=0)
    return a


def synthetic_part(state: int) -> dict:
    a = synthetic_table(state)
    truth = a.obs["truth"].astype(str).to_numpy()
    d34 = np.isin(truth, ["D3", "D4"])
    raw = a.obsm["X_handcrafted"]
    mst.tl.learn_integration_features(a, "X_handcrafted", library_key=None, key_added="X_maf")
    mst.tl.learn_integration_features(a, "X_handcrafted", library_key=None, method="multispati", key_added="X_ms")
    a.obsm["X_coords"] = np.asarray(a.obsm["spatial"], dtype=np.float32)
    rows = {"none": None, "raw": "X_handcrafted", "maf": "X_maf", "multispati": "X_ms", "coords": "X_coords",
            "random": "X_rand", "learned_from_noise": "X_noise"}  # fmt: skip
    res = {k: [] for k in rows}
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        a.obsm["X_rand"] = rng.normal(size=raw.shape).astype(np.float32)
        a.obsm["X_noisein"] = rng.normal(size=raw.shape).astype(np.float32)
        mst.tl.learn_integration_features(a, "X_noisein", library_key=None, random_state=seed, key_added="X_noise")
        for name, key in rows.items():
            if key is not None and a.obsm[key].shape[1] == 0:
                lab = _domains(a, ["X_pca"], 5, seed)
            else:
                lab = _domains(a, ["X_pca"] if key is None else ["X_pca", key], 5, seed)
            res[name].append((adjusted_rand_score(truth[d34], lab[d34]), adjusted_rand_score(truth, lab)))
    out = _shared_rows(a, {"raw": "X_handcrafted", "maf": "X_maf", "multispati": "X_ms"}, state)
    print(f"  (b) morphology_domains random_state {state}: maf width {a.obsm['X_maf'].shape[1]}, multispati width "
          f"{a.obsm['X_ms'].shape[1]}, learned-from-noise width {a.obsm['X_noise'].shape[1]}", flush=True)  # fmt: skip
    for name, v in res.items():
        v = np.asarray(v)
        print(f"      {name:20s} ARI D3∪D4 {v[:, 0].mean():.3f} ± {v[:, 0].std():.3f}   overall {v[:, 1].mean():.3f} ± "
              f"{v[:, 1].std():.3f}", flush=True)  # fmt: skip
        out[f"s{state}_{name}"] = float(v[:, 0].mean())
        out[f"s{state}_{name}_sd"] = float(v[:, 0].std())
    return out


def _shared_rows(a, reps: dict, state: int) -> dict:
    """Per representation: median and max over features of the cross-validated R² from expression (linear, trees)."""
    from morphst.tl._learn._shared import shared_information

    out = {}
    g2 = (a.obs["gradient"].to_numpy() ** 2)[:, None]
    for name, key in reps.items():
        if a.obsm[key].shape[1] == 0:
            continue
        t = shared_information(a.obsm[key], a.obsm["X_pca"], random_state=0)
        r_g2 = np.abs(np.corrcoef(np.hstack([a.obsm[key], g2]).T)[-1, :-1]).max()
        print(
            f"      shared with expression, {name:10s}: R² linear median {t['r2_linear'].median():.3f} max "
            f"{t['r2_linear'].max():.3f}; trees median {t['r2_nonlinear'].median():.3f} max {t['r2_nonlinear'].max():.3f}"
            f"; max |r| with g² (the non-linear shared channel) {r_g2:.2f}",
            flush=True,
        )
        out[f"s{state}_{name}_r2lin_max"] = float(t["r2_linear"].max())
        out[f"s{state}_{name}_r2trees_max"] = float(t["r2_nonlinear"].max())
    return out
