"""Learned integration features (Box 1, eq. 13–14): do morphology features that share little with expression help?

Features come from ``mst.tl.learn_integration_features`` (``method="maf"``, the default without labels:
maximum-autocorrelation factors of the cross-fitted residual after per-section centring and a dimension cap, only
the components significant against positions permuted within sections; ``method="hsic"``: a projection trained to
keep spatially coherent (self-supervised) or annotation-relevant information while its RBF-kernel HSIC with the
expression PCA is penalised; ``method="residual"``: the cross-fitted ridge residual of the features on the
expression PCA). Parts, one RESULT line:

0. **controls** (``_learned_integration_controls.py``): features learned from 400-d noise and from a section offset
   plus noise; ``morphology_domains`` (default, smooth stain field on) random_state 0 and 1 with random,
   coordinates-only and learned-from-noise rows (3 seeds, mean ± sd) and how much of each feature expression
   predicts (ridge and boosted trees).
1. **synthetic** (``mst.datasets.morphology_domains``, random_state 0, 40 × 40 spots, 5 domains of which D3/D4 share their
   expression and differ only in the image): expression = PCA (20) of log1p counts per 10,000; morphology =
   ``embed_patches(model="handcrafted")`` on 100 µm patches (48 px). Rows: expression alone, fused with raw
   handcrafted features, with learned (hsic and moran, self-supervised: no labels) and with residual features. Fusion:
   ``mst.tl.fuse`` with ``"stitch"`` (concatenation: the only fusion here in which morphology can add a direction that
   expression lacks; ``"smooth"`` and ``"graph"`` only re-weight the smoothing of the expression block, so D3/D4,
   identical in expression, stay merged whatever the features) and ``"smooth"`` (the default), then
   ``mst.tl.domains(method="gmm", n_domains=5)``. ARI against ``obs['truth']`` (scikit-learn, as
   ``mst.tl.evaluate_domains`` computes it), mean over seeds (the seed of the clustering and of the learned features).
2. **dlpfc** 151673/151674 (``benchmarks/integration_dlpfc.py``'s recipe: PCA 30 of log1p counts, handcrafted
   features of 110 µm low-res patches, 7 domains, ARI vs ``layer_guess_reordered`` without NA spots). The learned
   features are self-supervised on the section itself (spatial neighbours), so they never see the reference layers.
   Rows: none (expression only), raw, learned, residual; fusions ``"smooth"`` (the default of integration_dlpfc) and
   ``"stitch"``.
3. **her2st** (only with ``--cache DIR``) C2–C6, DenseNet-121 embeddings precomputed in ``DIR`` (rows in the order of
   ``her2st_obs_names.npy``; not recomputed here): ``mst.tl.quadrants`` (annotation = the authors' clusters, 50 genes
   of ``mst.pp.select_genes`` on all sections, log1p cp10k; 50 permutations; descriptive) of the raw features and of
   learned integration features (hsic, expression = PCA 30 of log1p cp10k of all genes): self-supervised on the five
   sections (never sees the clusters), and, descriptive only, trained with the clusters as labels (the quadrants'
   relevance is then measured against the labels it was trained on). Reported: share of features in quadrant II
   (relevant, not shared) and the median and max over features of max |r| with the genes (the shared axis).

Timing: wall seconds of the integration part (feature learning + fusion + clustering), with ``uptime``'s load
average next to them (the 2-core machine is shared).

Rows ``learned`` are ``method="hsic"`` (trained with torch, self-supervised; ``--no-hsic`` skips them), ``maf``
the default (significant components only), ``residual`` the baseline; controls ``random`` (Gaussian features of the
raw shape), ``coords`` (coordinates only), ``learned_from_noise`` (maf learned from Gaussian noise of the raw
shape), all re-drawn per seed. A morphology row is a gain only outside the random row's spread.

Measured 2026-12-05 (2 cores shared with four other sessions, load 8–22), ``--parts controls``:

- (a) 400-d Gaussian noise on 3 sections of 196 spots, seeds 0–2: 0 significant components each time; domains of
  expression fused (stitch) with the default features vs expression alone: ARI 1.000 ± 0.000. Noise plus a
  per-section offset (3 sd): 0 significant; with 4 components forced, max R² with the section dummies 0.0000.
- (b) ``morphology_domains`` (smooth stain field on), stitch + GMM (5), ARI within D3 ∪ D4, clustering seeds 0–2:
  random_state 0: none 0.000, raw 0.817 ± 0.004, **maf 0.990 ± 0.000**, multispati 0.000, coordinates 0.000,
  random 0.008 ± 0.008, learned from noise 0.000 (0 components); random_state 1: none 0.006, raw 0.008 ± 0.010,
  **maf 0.807 ± 0.076**, multispati 0.010, coordinates 0.012, random 0.004 ± 0.001, learned from noise 0.006.
  (An earlier run of the same code before the float32 null and scatter eigendecomposition: 0.862 ± 0.075 on
  random_state 1.) Expression predicts the maf features no better than their mean: 5-fold R², max over features,
  ridge −0.004 / −0.002, boosted trees −0.035 / −0.076 (raw: ridge 0.391 / 0.288, trees 0.301 / 0.229). The
  non-linear shared channel (g²) is still in them: max |r| of a maf feature with g² 0.48 / 0.38 (raw 0.38 / 0.27).
  Choices: MAF vs MULTISPATI was decided on a 24 × 24 section of random_state 0 (stitch ARI D3 ∪ D4: MULTISPATI
  0.0, MAF 0.85 with the stain field, 1.0 without) and then confirmed on both states above; the cap (a tenth of
  the smallest section's spots) was set once and not tuned.

``--parts dlpfc --no-hsic`` (151673/151674, 3 seeds, load 16–20; ARI mean over the two samples, mean ± sd over
seeds): smooth: none 0.489, raw 0.553 ± 0.000, **maf 0.546 ± 0.000** (21 significant components on each seed),
residual 0.551 ± 0.003, random 0.477 ± 0.002, coordinates 0.477, learned from noise 0.489 (0 components, so the
expression-only row). Raw, maf and residual lie outside the random row's spread (a gain of 0.06–0.08 over random
features, all of it on 151674: on 151673 expression alone, 0.562, is the best row), and maf adds nothing over the
raw features. Stitch: none 0.385 ± 0.024, raw 0.301, maf 0.242 ± 0.014, residual 0.212, random 0.417 ± 0.026,
coordinates 0.288, learned from noise 0.396: every morphology row is below the random one (stitching a block of
morphology features hurts on DLPFC). 896 s for both sections (load 16).

Earlier measurements (2026-12-04, load 7–9; ``method="moran"``, since replaced: Moran's I of the whitened residual
without section centring, dimension cap or null, 8 components; the generator without the smooth stain field):

- synthetic random_state 0 (stitch): expression 0.832, + raw 0.987, + hsic 0.943 (0.868–0.986 over seeds),
  + moran **0.999** (0.998–0.999), + residual 0.999. Smooth: 0.759–0.765 for every row (the smoothing cannot split
  D3/D4). Median over features of max |r| with the expression PCs: raw 0.311, hsic 0.079, moran 0.019, residual
  0.043. Fitting: hsic ~30 s per seed, moran ~0.8 s (load 9).
- synthetic random_state 1 (a second section, not used for any choice; stitch): expression 0.590, + raw 0.755,
  + hsic 0.750 (0.690–0.816), + moran **0.875** (0.645–0.991), + residual 0.643.
- DLPFC mean over 151673/151674 (smooth): none 0.489, raw 0.553, hsic 0.549, moran 0.548, residual 0.551 (151673
  alone: none 0.562 is the best row; 151674: none 0.416, every morphology row 0.549–0.557). Stitch is lower
  everywhere (none 0.385, raw 0.301, hsic 0.263, moran 0.203, residual 0.212). 286 s for both sections, all rows.
  An earlier run (load ~9–11): hsic trained with the other section's layers 0.465; hsic with 16 components 0.495.
- HER2ST C2–C6, DenseNet-121 (1,024 raw features), learned and judged on all five sections: quadrant II share raw
  0.004, hsic 0.000, moran 0.125 (1 of 8 features), hsic trained with the clusters 0.250 (sees its labels);
  relevance median 0.038 nats raw, 0.044 hsic, 0.154 moran; max |r| with the 50 genes, median (max) over
  features: raw 0.227 (0.543), hsic 0.182 (0.335), moran 0.176 (0.258), hsic with the clusters 0.119 (0.156).

Run: ``MORPHST_DATA_DIR=../shared/data python benchmarks/learned_integration.py [--parts controls synthetic dlpfc
her2st] [--seeds 3] [--n-components 8] [--penalty-weight 5] [--synthetic-state 0] [--control-states 0 1]
[--no-hsic] [--smoke]`` (``--smoke``: the synthetic part on 20 × 20 spots, one seed, 3 epochs; seconds, figures
meaningless).

Last line: ``RESULT synthetic_none=... synthetic_raw=... synthetic_learned=... synthetic_moran=...
synthetic_residual=... dlpfc_none=... dlpfc_raw=... dlpfc_learned=... dlpfc_moran=... dlpfc_residual=...
her2st_q2_raw=... her2st_q2_learned=... her2st_q2_moran=... her2st_maxr_*=... integration_s=... load=...`` (synthetic and dlpfc with fusion
``"stitch"`` for synthetic, ``"smooth"`` for dlpfc, the defaults each part reports first).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

import morphst as mst
from morphst.tl import TrainOptions

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MORPHST_DATA_DIR", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load() -> str:
    return "load " + os.getloadavg().__repr__().replace(" ", "")


def cluster(a, reps, method: str, n_domains: int, seed: int) -> np.ndarray:
    """``fuse`` (``reps`` = expression first) + ``domains(gmm)``; expression alone with stitch = the PCA itself."""
    if len(reps) == 1 and method == "stitch":
        a.obsm["_f"] = a.obsm[reps[0]]
    else:
        mst.tl.fuse(a, reps, method=method, key_added="_f")
    mst.tl.domains(a, "_f", method="gmm", n_domains=n_domains, random_state=seed, key_added="_d")
    return a.obs["_d"].to_numpy()


def learn(a, method: str, seed: int, args, key: str, annotation_key=None, train=None, rep=None) -> None:
    rep = rep or ("X_handcrafted" if "X_handcrafted" in a.obsm else "X_morph")
    mst.tl.learn_integration_features(
        a,
        rep,
        expression_rep="X_pca",
        annotation_key=annotation_key,
        method=method,
        n_components=None if method in ("maf", "multispati") else args.n_components,
        penalty_weight=args.penalty_weight,
        options=TrainOptions(max_epochs=args.max_epochs),
        library_key="section" if "section" in a.obs else None,
        train=train,
        random_state=seed,
        key_added=key,
        device="cpu",
    )


#: Rows of :func:`compare`: (name, obsm key of the morphology block or None for expression alone).
ROWS = (
    ("none", None), ("raw", "X_handcrafted"), ("learned", "X_learned"), ("maf", "X_maf"), ("residual", "X_residual"),
    ("random", "X_random"), ("coords", "X_coords"), ("learned_from_noise", "X_noise"),
)  # fmt: skip


def compare(a, ref: np.ndarray, n_domains: int, seeds, methods, args) -> pd.DataFrame:
    """ARI of every row of :data:`ROWS` per fusion method and seed; learned features and controls re-drawn per seed.

    ``learned``: hsic (skipped with ``--no-hsic``); ``maf``: ``learn_integration_features`` defaults (the
    significant components); controls: ``random`` (Gaussian features of the raw shape), ``coords`` (coordinates
    only), ``learned_from_noise`` (``maf`` learned from Gaussian noise of the raw shape).
    """
    ok = ~pd.isna(ref)
    rows = []
    morph = "X_handcrafted"
    a.obsm["X_coords"] = np.asarray(a.obsm["spatial"], dtype=np.float32)
    for seed in seeds:
        took = {}
        for name, method, key in (("learned", "hsic", "X_learned"), ("maf", "maf", "X_maf")):
            if name == "learned" and args.no_hsic:
                continue
            t = time.perf_counter()
            learn(a, method, seed, args, key)
            took[name] = time.perf_counter() - t
        rng = np.random.default_rng(100 + seed)
        a.obsm["X_random"] = rng.normal(size=a.obsm[morph].shape).astype(np.float32)
        a.obsm["X_noisein"] = rng.normal(size=a.obsm[morph].shape).astype(np.float32)
        learn(a, "maf", seed, args, "X_noise", rep="X_noisein")
        if seed == seeds[0]:
            t = time.perf_counter()
            learn(a, "residual", seed, args, "X_residual")
            took["residual"] = time.perf_counter() - t
            print(f"    maf: {a.uns['X_maf']['params']['model_description']}", flush=True)
        print(f"    seed {seed}: maf width {a.obsm['X_maf'].shape[1]}, learned from noise {a.obsm['X_noise'].shape[1]}")
        for method in methods:
            for name, key in ROWS:
                if name == "learned" and args.no_hsic:
                    continue
                t = time.perf_counter()
                lab = cluster(a, ("X_pca",) if key is None else ("X_pca", key), method, n_domains, seed)
                ari = adjusted_rand_score(ref[ok].astype(str), lab[ok].astype(str))
                s = time.perf_counter() - t + took.get(name, 0.0)
                rows.append({"fuse": method, "name": name, "seed": seed, "ari": ari, "s": s})
        print(f"    seed {seed}: done ({load()})", flush=True)
    return pd.DataFrame(rows)


def maxr(z: np.ndarray, e: np.ndarray) -> np.ndarray:
    zs = (z - z.mean(0)) / (z.std(0) + 1e-12)
    es = (e - e.mean(0)) / (e.std(0) + 1e-12)
    return np.abs(zs.T @ es / len(z)).max(axis=1)


# ----------------------------------------------------------------------------------------------- parts


def part_synthetic(args, seeds) -> dict:
    t0 = time.perf_counter()
    import _learned_integration_controls as ctl

    a = ctl.synthetic_table(getattr(args, "synthetic_state", 0), n_comps=20, side=getattr(args, "synthetic_side", 40))
    print(f"[synthetic] {a.n_obs} spots, prepared in {time.perf_counter() - t0:.0f}s ({load()})", flush=True)
    t = time.perf_counter()
    df = compare(a, a.obs["truth"].astype(str).to_numpy(), 5, seeds, ("stitch", "smooth"), args)
    took = time.perf_counter() - t
    print(f"[synthetic] integration part {took:.0f}s ({load()})")
    e = a.obsm["X_pca"]
    print(
        "    max |r| with the expression PCs, median over features: raw "
        f"{np.median(maxr(a.obsm['X_handcrafted'], e)):.3f}, "
        f"maf {np.median(maxr(a.obsm['X_maf'], e)) if a.obsm['X_maf'].shape[1] else float('nan'):.3f}, "
        f"residual {np.median(maxr(a.obsm['X_residual'], e)):.3f}"
    )
    tab = df.groupby(["fuse", "name"], sort=False)["ari"].agg(["mean", "min", "max"])
    tab["s"] = df.groupby(["fuse", "name"], sort=False)["s"].mean()
    print("== synthetic: ARI vs obs['truth'] over seeds " + str(list(seeds)))
    print(tab.round(3).to_string())
    m = df[df["fuse"] == "stitch"].groupby("name")["ari"].mean()
    return {f"synthetic_{k}": v for k, v in m.items()} | {"synthetic_s": took}


def part_dlpfc(args, seeds) -> dict:
    from integration_dlpfc import prepare

    out, frames, took = {}, [], 0.0
    for sample in args.samples:
        t0 = time.perf_counter()
        _, a = prepare(sample, DATA / "dlpfc")
        a.obs["section"] = sample
        print(f"[dlpfc {sample}] {a.n_obs} spots, prepared in {time.perf_counter() - t0:.0f}s ({load()})", flush=True)
        t = time.perf_counter()
        df = compare(a, a.obs["layer"].to_numpy(), 7, seeds, ("smooth", "stitch"), args)
        took += time.perf_counter() - t
        print(f"[dlpfc {sample}] integration part {time.perf_counter() - t:.0f}s ({load()})", flush=True)
        df["sample"] = sample
        frames.append(df)
    df = pd.concat(frames)
    tab = df.groupby(["sample", "fuse", "name"], sort=False)["ari"].agg(["mean", "min", "max"])
    print("== dlpfc: ARI vs layers (NA excluded) over seeds " + str(list(seeds)))
    print(tab.round(3).to_string())
    per_seed = df.groupby(["fuse", "name", "seed"], sort=False)["ari"].mean()  # mean over samples, per seed
    summ = per_seed.groupby(["fuse", "name"], sort=False).agg(["mean", "std"])
    summ["std"] = per_seed.groupby(["fuse", "name"], sort=False).std(ddof=0)
    print("== dlpfc: ARI mean over samples; mean ± sd over seeds (a gain only outside the random row's spread)")
    print(summ.round(3).to_string())
    for (fuse, name), row in summ.iterrows():
        tag = "dlpfc" if fuse == "smooth" else "dlpfc_stitch"
        out[f"{tag}_{name}"] = row["mean"]
        out[f"{tag}_{name}_sd"] = row["std"]
    out["dlpfc_s"] = took
    return out


def part_dlpfc_other(args, seeds) -> dict:
    """DLPFC, learned features trained with the layers of the OTHER section (never the evaluated section's)."""
    import anndata as ad
    from integration_dlpfc import prepare

    t0 = time.perf_counter()
    ads = {}
    for sample in args.samples:
        _, a = prepare(sample, DATA / "dlpfc")
        a.obs["section"] = sample
        ads[sample] = a
    # one expression space for the penalty: PCA (30) of log1p cp10k of both sections together
    j = ad.concat(list(ads.values()), join="inner", keys=list(ads), index_unique="-")
    j.obs["section"] = j.obs["section"].astype("category")
    sc.pp.pca(j, n_comps=30, random_state=0)
    sec = j.obs["section"].astype(str).to_numpy()
    print(f"[dlpfc other-section labels] prepared in {time.perf_counter() - t0:.0f}s ({load()})", flush=True)
    t = time.perf_counter()
    rows = []
    for seed in seeds:
        for target in args.samples:
            mst.tl.learn_features(
                j,
                "X_handcrafted",
                objective="integration",
                expression_rep="X_pca",
                annotation_key="layer",
                method="hsic",
                n_components=args.n_components,
                penalty_weight=args.penalty_weight,
                options=TrainOptions(max_epochs=args.max_epochs),
                library_key="section",
                train=sec != target,
                random_state=seed,
                key_added="_z",
                device="cpu",
            )
            a = ads[target]
            a.obsm["X_learned_other"] = j.obsm["_z"][sec == target]
            ref = a.obs["layer"].to_numpy()
            ok = ~pd.isna(ref)
            for method in ("smooth", "stitch"):
                for name, reps in (
                    ("none", ("X_pca",)),
                    ("raw", ("X_pca", "X_handcrafted")),
                    ("learned_other", ("X_pca", "X_learned_other")),
                ):
                    lab = cluster(a, reps, method, 7, seed)
                    ari = adjusted_rand_score(ref[ok].astype(str), lab[ok].astype(str))
                    rows.append({"sample": target, "fuse": method, "name": name, "seed": seed, "ari": ari})
        print(f"    seed {seed}: done ({load()})", flush=True)
    took = time.perf_counter() - t
    df = pd.DataFrame(rows)
    print(f"[dlpfc other-section labels] integration part {took:.0f}s ({load()})")
    print("== dlpfc, learned with the other section's layers: ARI vs layers (NA excluded) over seeds " + str(seeds))
    print(df.groupby(["sample", "fuse", "name"], sort=False)["ari"].agg(["mean", "min", "max"]).round(3).to_string())
    mean = df.groupby(["fuse", "name"], sort=False)["ari"].mean()
    print(mean.round(3).to_string())
    return {"dlpfc_learned_other": mean[("smooth", "learned_other")]} | {
        "dlpfc_stitch_learned_other": mean[("stitch", "learned_other")],
        "dlpfc_other_s": took,
    }


def part_her2st(args, seeds) -> dict:
    from morphst.tl._quadrants import QUADRANTS

    t0 = time.perf_counter()
    sdata = mst.datasets.her2st(data_dir=DATA)
    a = sdata.tables["table"].copy()
    names = np.load(Path(args.cache) / "her2st_obs_names.npy", allow_pickle=True).astype(str)
    x = np.load(Path(args.cache) / "her2st_X_densenet121.npy")
    if len(names) != a.n_obs or not np.array_equal(names, a.obs_names.astype(str)):
        a = a[names].copy()
    a.obsm["X_morph"] = x
    mst.pp.normalize(a)
    mst.pp.select_genes(a, 50)
    genes = a.var_names[a.var["morph_target"]].tolist()
    b = a.copy()
    b.X = b.layers["log1p_cp10k"]
    sc.pp.pca(b, n_comps=30, random_state=0)
    a.obsm["X_pca"] = b.obsm["X_pca"]
    print(f"[her2st] {a.n_obs} spots, {x.shape[1]} DenseNet-121 features, prepared in "
          f"{time.perf_counter() - t0:.0f}s ({load()})", flush=True)  # fmt: skip
    t = time.perf_counter()
    # self-supervised on all five sections (spatial neighbours within each section; early stopping on a held-out
    # section): never sees the clusters that the quadrants' relevance axis is measured against
    learn(a, "hsic", seeds[0], args, "X_learned")
    # descriptive only: trained with the clusters as labels (the quadrants then see their own training labels)
    learn(a, "hsic", seeds[0], args, "X_learned_labels", annotation_key="cluster")
    learn(a, "maf", seeds[0], args, "X_moran")  # self-supervised, as "learned" (maf: the significant components)
    t_learn = time.perf_counter() - t
    print(f"    learned features (3 fits, all sections): {t_learn:.0f}s ({load()})", flush=True)
    out = {}
    for name, key in (
        ("raw", "X_morph"),
        ("learned", "X_learned"),
        ("moran", "X_moran"),
        ("learned_labels", "X_learned_labels"),
    ):
        mst.tl.quadrants(a, key, "cluster", genes=genes, layer="log1p_cp10k", n_perms=50, key_added=f"q_{name}")
        res = a.uns[f"q_{name}"]
        f = res["features"]
        shares = {q: round(float(res["shares"][q]), 3) for q in QUADRANTS}
        print(
            f"    {name:14s} {key}: shares {shares}; relevance median {f['relevance'].median():.3f} nats; max |r| "
            f"with the genes median {f['shared'].median():.3f}, max {f['shared'].max():.3f}",
            flush=True,
        )
        out[f"her2st_q2_{name}"] = shares["integration"]  # quadrant II
        out[f"her2st_maxr_{name}"] = float(f["shared"].median())
    out["her2st_s"] = time.perf_counter() - t
    return out


def part_controls(args, seeds) -> dict:
    """Control rows (``_learned_integration_controls.py``): noise / section offset (a), harder synthetic truth (b)."""
    import _learned_integration_controls as ctl

    t = time.perf_counter()
    out = {f"a_{k}": v for k, v in ctl.noise_part().items()}
    for state in args.control_states:
        out |= ctl.synthetic_part(state)
    out["controls_s"] = time.perf_counter() - t
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["synthetic", "dlpfc"])
    p.add_argument("--samples", nargs="+", default=["151673", "151674"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--synthetic-state", type=int, default=0, help="random_state of morphology_domains")
    p.add_argument("--control-states", type=int, nargs="*", default=[0, 1], help="morphology_domains states (controls)")
    p.add_argument("--n-components", type=int, default=8)
    p.add_argument("--penalty-weight", type=float, default=5.0)
    p.add_argument("--no-hsic", action="store_true", help="skip the trained hsic rows (slow)")
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument(
        "--cache", default=None, help="folder with her2st_obs_names.npy and her2st_X_densenet121.npy (her2st part)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="synthetic part on 20 x 20 spots, one seed, 3 epochs (seconds)"
    )
    args = p.parse_args()
    args.synthetic_side = 40
    if args.smoke:  # the figures only show that the script runs
        args.parts, args.seeds, args.max_epochs, args.synthetic_side = ["synthetic"], 1, 3, 20
    import torch
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore")
    mst.settings.progress_bar = False
    mst._logging.logger.setLevel(logging.WARNING)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    print(f"start ({load()}); n_components={args.n_components} penalty_weight={args.penalty_weight}", flush=True)
    res = {}
    with threadpool_limits(1):
        for part in args.parts:
            if part == "her2st" and args.cache is None:
                print(
                    "her2st part skipped: pass --cache (benchmarks/learned_features.py measures it from its own embeddings)"
                )
                continue
            res |= {
                "synthetic": part_synthetic,
                "dlpfc": part_dlpfc,
                "dlpfc_other": part_dlpfc_other,
                "her2st": part_her2st,
                "controls": part_controls,
            }[part](args, seeds)
    took = sum(v for k, v in res.items() if k.endswith("_s"))
    res = {k: v for k, v in res.items() if not k.endswith("_s")}
    print(
        "RESULT "
        + " ".join(f"{k}={v:.3f}" for k, v in res.items())
        + f" integration_s={took:.0f} load={os.getloadavg()[0]:.1f} seeds={args.seeds}"
    )


if __name__ == "__main__":
    main()


def run(*, seeds: int = 3, n_components: int = 8, penalty_weight: float = 5.0) -> dict:
    """The synthetic and DLPFC parts with the given settings, as ``{field: value}`` (for learned_features.py)."""
    args = argparse.Namespace(
        samples=["151673", "151674"], n_components=n_components, penalty_weight=penalty_weight, max_epochs=200,
        no_hsic=False,
    )
    out: dict = {}
    for part in (part_synthetic, part_dlpfc):
        out |= part(args, list(range(seeds)))
    return out
