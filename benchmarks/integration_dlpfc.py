"""Spatial domains on the human DLPFC (10x Visium, spatialLIBD), side by side with peer methods, in one run.

Data: ``mst.datasets.dlpfc`` (5,000-gene raw counts, low-res H&E, manual layers; Maynard et al. 2021). Per section:
expression = PCA (30 components) of log1p counts normalised to 10,000 per spot (all 5,000 genes, already the most
variable); morphology = ``mst.tl.embed_patches(model="handcrafted")`` on 110 µm patches of the low-res image
(≈ 12.7 µm/px: colour, stain density and texture; the image is too coarse for deep features). 7 domains. ARI and
NMI against ``layer_guess_reordered`` (NA spots excluded), mean over 3 seeds (the seed of the clustering, and of the
peers' own training). Wall time per run (both sections share 2 CPU cores with whatever else runs).

Rows:
- ``expression``: PCA + GMM (tied covariance) / + Leiden (scanpy, resolution searched to 7 domains).
- ``morphst:<method>``: ``mst.tl.fuse`` with its defaults, then ``mst.tl.domains(method="gmm")`` (default
  ``covariance_type="tied"``); ``morph=on`` uses the handcrafted features, ``morph=off`` the same method with
  morphology removed (``use_rep=("X_pca",)``; for stitch/weighted, off = expression alone).
- ``graph_encoder:<method>``: ``mst.tl.graph_encoder`` (trained on the section's 6-neighbour spatial graph, node
  features ``X_pca``, its defaults, seeded by the run's seed) then the same GMM on its output. ``morph=on``: edges
  weighted by the handcrafted features (``morphology_rep``); ``off``: all edges weigh 1; ``random``: Gaussian
  features of the same shape (seeded) in place of morphology. The time includes training.
- controls of ``fuse``: ``morphst:smooth`` with ``morph=random`` (Gaussian features of the same shape) and
  ``morph=coords`` (the spot coordinates as the morphology features).
- peers, from their own packages (each skipped with the reason when it does not import):
  SpaGCN (Hu et al. 2021; histology on/off, its own GCN clustering with k-means init, refined);
  stLearn SME normalisation (Pham et al. 2023; ``weights_matrix_all`` on / ``weights_matrix_pd_gd`` off; the
  morphology features given to it are morphst's handcrafted ones, since stLearn's own extractor needs TensorFlow)
  then PCA + the same GMM;
  BANKSY (Singhal et al. 2024; ``lambda=0.8``, 18 neighbours, the authors' DLPFC settings) then PCA (20) + the same
  GMM (BANKSY's DLPFC runs use R mclust, which needs rpy2/R);
  GraphST (Long et al. 2023; its own preprocessing of the raw counts, 3,000 HVGs; its embedding, PCA (20) + the
  same tied GMM, the Python form of the R mclust ``EEE`` model its tutorial clusters with, without and with its
  50-neighbour label refinement; and its documented Leiden alternative, resolution searched to 7). GraphST trains
  600 epochs (``--graphst-epochs``) with dense n × n matrices: about 3–4 CPU-s per epoch on one thread for 3,600
  spots, so leave it out with ``--peers SpaGCN stLearn BANKSY`` on a busy CPU.
- ``+refine<k>`` rows (``--refine``, default 50): the same labels after ``mst.tl.domains``' spatial majority vote
  over the ``k`` nearest spots (``refine_neighs=k``), for the expression, ``morphst:smooth`` and encoder rows.

Run: ``python benchmarks/integration_dlpfc.py [--samples 151673 151674] [--data-dir DIR] [--no-peers]
[--peers SpaGCN stLearn BANKSY GraphST] [--seeds 3] [--encoder contrastive autoencoder | --encoder none]
[--encoder-morph on off random] [--no-fuse] [--refine 50] [--graphst-epochs 600] [--smoke]`` (``--smoke``: 151673
cut to its 800 spots nearest the centre, one seed, contrastive encoder (10 steps) with morphology off, no peers;
seconds, figures meaningless). Install the peers with ``pip install -e ".[benchmarks]"``.

Last line: ``RESULT samples=... morphst_ari_mean=... encoder_ari_mean=... encoder_refined_ari_mean=...
refine_neighs=... best_peer=<name> best_peer_ari_mean=... method=<morphst method>`` (means over samples and seeds;
morphst = the default ``fuse`` + ``domains(method="gmm")`` with morphology; encoder =
``graph_encoder(method="contrastive")`` with morphology off, refined = the same with the first ``--refine`` vote; NaN
when not run).
"""

from __future__ import annotations

import argparse
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import morphst as mst
from morphst import _logging as logg
from morphst.tl._integration._domains import refine_labels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MORPHST_DATA_DIR", REPO.parent / "shared" / "data")) / "dlpfc"
N_DOMAINS = 7
PEERS = ("SpaGCN", "stLearn", "BANKSY", "GraphST")
GRAPHST_EPOCHS = [600]  # its default; --graphst-epochs sets it (a shortened run is named so in its rows)


def scores(adata, labels) -> dict:
    ref = adata.obs["layer"].to_numpy()
    ok = ~pd.isna(ref)
    r, d = ref[ok].astype(str), np.asarray(labels)[ok].astype(str)
    return {"ari": adjusted_rand_score(r, d), "nmi": normalized_mutual_info_score(r, d)}


def gmm(rep: np.ndarray, seed: int) -> np.ndarray:
    import anndata as ad

    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(rep))]))
    tmp.obsm["Z"] = np.asarray(rep, dtype=np.float64)
    mst.tl.domains(tmp, "Z", method="gmm", n_domains=N_DOMAINS, random_state=seed)
    return tmp.obs["domain"].to_numpy()


def prepare(sample: str, data_dir: Path):
    sdata = mst.datasets.dlpfc(library_id=sample, data_dir=data_dir)
    a = sdata.tables["table"]
    sf = a.uns["spatial"][sample]["scalefactors"]
    um_per_px_lowres = 55.0 / sf["spot_diameter_fullres"] / sf["tissue_lowres_scalef"]
    mst.pp.extract_patches(
        sdata, image_key=f"{sample}_lowres_image", patch_size=110.0, target_px=16, um_per_px=um_per_px_lowres
    )
    mst.tl.embed_patches(sdata, model="handcrafted")
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=30, random_state=0)
    return sdata, a


# ----------------------------------------------------------------------------------------------- morphst rows


def random_like(x: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).normal(size=np.shape(x)).astype(np.float32)


def refined_rows(a, row: dict, lab, refine: list[int]) -> list[dict]:
    """The same labels after ``mst.tl.domains``' spatial majority vote over ``k`` neighbours, one row per ``k``
    (``refine_labels`` is what ``domains(..., refine_neighs=k)`` applies to the same GMM labels)."""
    out = []
    for k in refine:
        t = time.perf_counter()
        ref = refine_labels(np.asarray(lab), np.asarray(a.obsm["spatial"], dtype=float), None, k)
        s = row["s"] + time.perf_counter() - t
        out.append({**row, "method": f"{row['method']} +refine{k}", **scores(a, ref), "s": s})
        print(f"    {out[-1]['method']} morph={row['morph']} seed={row['seed']}: ARI {out[-1]['ari']:.3f}", flush=True)
    return out


def morphst_rows(a, seeds, refine=()) -> list[dict]:
    rows = []

    def add(name, morph, fn):
        for seed in seeds:
            t = time.perf_counter()
            lab = fn(seed)
            rows.append({"method": name, "morph": morph, "seed": seed, **scores(a, lab), "s": time.perf_counter() - t})
            print(f"    {name} morph={morph} seed={seed}: ARI {rows[-1]['ari']:.3f}, {rows[-1]['s']:.0f}s", flush=True)
            if name in ("expression + gmm", "morphst:smooth") and morph in ("-", "on", "off"):
                rows.extend(refined_rows(a, rows[-1], lab, refine))

    add("expression + gmm", "-", lambda s: gmm(a.obsm["X_pca"], s))

    def leiden(seed):
        mst.tl.domains(a, "X_pca", method="leiden", n_domains=N_DOMAINS, random_state=seed, key_added="_l")
        return a.obs["_l"].to_numpy()

    add("expression + leiden", "-", leiden)
    for method in ("smooth", "graph", "stitch", "weighted"):
        kw = {"weights": (0.7, 0.3)} if method == "weighted" else {}
        for morph in ("on", "off"):
            if morph == "off" and method in ("stitch", "weighted"):
                continue  # without morphology these are expression alone (row above)
            reps = ("X_pca", "X_handcrafted") if morph == "on" else ("X_pca",)

            def run(seed, reps=reps, method=method, kw=kw):
                mst.tl.fuse(a, reps, method=method, key_added="X_f", **kw)
                return gmm(a.obsm["X_f"], seed)

            add(f"morphst:{method}", morph, run)

    def smooth_control(seed, kind):
        a.obsm["X_ctrl"] = random_like(a.obsm["X_handcrafted"], seed) if kind == "random" else a.obsm["spatial"]
        mst.tl.fuse(a, ("X_pca", "X_ctrl"), method="smooth", key_added="X_f")
        return gmm(a.obsm["X_f"], seed)

    for kind in ("random", "coords"):
        add("morphst:smooth", kind, lambda s, kind=kind: smooth_control(s, kind))
    return rows


def encoder_rows(a, seeds, methods, morphs, refine=()) -> list[dict]:
    """``mst.tl.graph_encoder`` + the same GMM: morphology on / off / random features of the same shape."""
    rows = []
    for method in methods:
        for morph in morphs:
            for seed in seeds:
                t = time.perf_counter()
                if morph == "random":
                    a.obsm["X_ctrl"] = random_like(a.obsm["X_handcrafted"], seed)
                rep = {"on": "X_handcrafted", "off": None, "random": "X_ctrl"}[morph]
                mst.tl.graph_encoder(a, "X_pca", morphology_rep=rep, method=method, random_state=seed, key_added="X_e")
                lab = gmm(a.obsm["X_e"], seed)
                s = time.perf_counter() - t
                rows.append({"method": f"graph_encoder:{method}", "morph": morph, "seed": seed, **scores(a, lab), "s": s})
                print(f"    graph_encoder:{method} morph={morph} seed={seed}: ARI {rows[-1]['ari']:.3f}, {s:.0f}s", flush=True)
                rows.extend(refined_rows(a, rows[-1], lab, refine))
    return rows


# ----------------------------------------------------------------------------------------------- peers


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the peers draw from the global generator)
    torch.manual_seed(seed)


def run_spagcn(sdata, a, sample, seeds) -> list[dict]:
    import SpaGCN as spg

    sf = a.uns["spatial"][sample]["scalefactors"]
    img = np.asarray(sdata.images[f"{sample}_lowres_image"].values).transpose(1, 2, 0).copy()
    # positions in low-res pixels (the only image here); SpaGCN's beta (49 full-res px) scaled alike
    # SpaGCN's x is the pixel row, y the column
    x_px = (a.obsm["spatial"][:, 1] * sf["tissue_lowres_scalef"]).astype(int)
    y_px = (a.obsm["spatial"][:, 0] * sf["tissue_lowres_scalef"]).astype(int)
    beta = max(1, round(49 * sf["tissue_lowres_scalef"]))
    ad_ = a.copy()
    ad_.X = ad_.X.toarray() if hasattr(ad_.X, "toarray") else ad_.X
    adj_2d = spg.calculate_adj_matrix(x=x_px, y=y_px, histology=False)
    rows = []
    for hist in (True, False):
        t0 = time.perf_counter()
        adj = spg.calculate_adj_matrix(
            x=x_px, y=y_px, x_pixel=x_px, y_pixel=y_px, image=img, beta=beta, alpha=1, histology=hist
        )
        l_val = spg.search_l(0.5, adj, start=0.01, end=1000, tol=0.01, max_run=100)
        t_adj = time.perf_counter() - t0
        for seed in seeds:
            t = time.perf_counter()
            _seed_all(seed)
            clf = spg.SpaGCN()
            clf.set_l(l_val)
            clf.train(ad_, adj, init_spa=True, init="kmeans", n_clusters=N_DOMAINS, tol=5e-3, lr=0.05, max_epochs=200)
            pred, _ = clf.predict()
            refined = spg.refine(sample_id=ad_.obs_names.tolist(), pred=pred.tolist(), dis=adj_2d, shape="hexagon")
            rows.append(
                {
                    "method": "peer:SpaGCN (refined)",
                    "morph": "on" if hist else "off",
                    "seed": seed,
                    **scores(a, refined),
                    "s": time.perf_counter() - t + t_adj / len(seeds),
                }
            )
    return rows


def run_stlearn(sdata, a, sample, seeds) -> list[dict]:
    from stlearn.spatial.SME import SME_normalize

    rows = []
    for morph, weights in (("on", "weights_matrix_all"), ("off", "weights_matrix_pd_gd")):
        t = time.perf_counter()
        b = a.copy()
        b.X = b.X.toarray()
        b.obs["imagecol"] = a.obsm["spatial"][:, 0].astype(float)
        b.obs["imagerow"] = a.obsm["spatial"][:, 1].astype(float)
        b.obsm["X_morphology"] = np.asarray(a.obsm["X_handcrafted"], dtype=float)
        SME_normalize(b, use_data="raw", weights=weights, platform="Visium")
        x = b.obsm["raw_SME_normalized"]
        x = x - x.mean(0)
        from sklearn.decomposition import PCA

        z = PCA(30, random_state=0).fit_transform(x)
        t_rep = time.perf_counter() - t
        for seed in seeds:
            t = time.perf_counter()
            lab = gmm(z, seed)
            rows.append(
                {
                    "method": "peer:stLearn SME + gmm",
                    "morph": morph,
                    "seed": seed,
                    **scores(a, lab),
                    "s": time.perf_counter() - t + t_rep / len(seeds),
                }
            )
    return rows


def run_banksy(sdata, a, sample, seeds) -> list[dict]:
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy
    from sklearn.decomposition import PCA

    t = time.perf_counter()
    b = a.copy()
    b.obs["xcoord"] = a.obsm["spatial"][:, 0].astype(float)
    b.obs["ycoord"] = a.obsm["spatial"][:, 1].astype(float)
    b.obsm["coord_xy"] = np.column_stack([b.obs["xcoord"], b.obs["ycoord"]])
    bd = initialize_banksy(
        b,
        ("xcoord", "ycoord", "coord_xy"),
        num_neighbours=18,
        nbr_weight_decay="scaled_gaussian",
        max_m=1,
        plt_edge_hist=False,
        plt_nbr_weights=False,
        plt_agf_angles=False,
        plt_theta=False,
    )
    _, bm = generate_banksy_matrix(b, bd, [0.8], max_m=1, verbose=False)
    x = bm.X.toarray() if hasattr(bm.X, "toarray") else np.asarray(bm.X)
    z = PCA(20, random_state=0).fit_transform(x - x.mean(0))
    t_rep = time.perf_counter() - t
    rows = []
    for seed in seeds:
        t = time.perf_counter()
        lab = gmm(z, seed)
        rows.append(
            {
                "method": "peer:BANKSY + gmm",
                "morph": "off",
                "seed": seed,
                **scores(a, lab),
                "s": time.perf_counter() - t + t_rep / len(seeds),
            }
        )
    return rows


def _graphst_leiden(z: np.ndarray, seed: int) -> np.ndarray:
    """GraphST's documented alternative to R mclust: Leiden on a 50-neighbour graph of its PCA (20), resolution
    searched from 2.0 down in steps of 0.01 until 7 clusters (its ``search_res``; igraph flavour here, since its
    default ``leidenalg`` flavour is not installed)."""
    import anndata as ad

    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(z))]))
    tmp.obsm["Z"] = z
    sc.pp.neighbors(tmp, n_neighbors=50, use_rep="Z", random_state=0)
    for res in np.arange(2.0, 0.1, -0.01):
        sc.tl.leiden(tmp, resolution=float(res), random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        if tmp.obs["leiden"].nunique() == N_DOMAINS:
            break
    return tmp.obs["leiden"].to_numpy()


def _graphst_refine(xy: np.ndarray, labels: np.ndarray, radius: int = 50) -> np.ndarray:
    """GraphST's ``refine_label``: each spot takes the most common label among its ``radius`` nearest spots
    (itself excluded; ties go to the label met first, nearest first)."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=radius + 1).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    lab = np.asarray(labels).astype(str)
    out = []
    for row in lab[idx]:
        vals = list(row)
        out.append(max(vals, key=vals.count))
    return np.asarray(out)


def run_graphst(sdata, a, sample, seeds) -> list[dict]:
    """GraphST as its DLPFC tutorial runs it (its own preprocessing of the raw counts: 3,000 HVGs (seurat_v3),
    normalise, log1p, scale; 600 epochs; embedding ``emb``; PCA (20, random_state 42)), then (i) a tied-covariance
    GMM, the Python form of its R ``mclust`` ``EEE`` model, with and without its 50-neighbour label refinement
    (the tutorial refines mclust's labels), and (ii) its Leiden alternative (resolution searched to 7 clusters,
    unrefined as in the tutorial). The embedding is saved to ``$MORPHST_GRAPHST_EMB_DIR`` when set."""
    import skmisc  # noqa: F401  (GraphST's preprocessing selects genes with flavor="seurat_v3")
    import torch
    from GraphST.GraphST import GraphST
    from sklearn.decomposition import PCA

    rows = []
    xy = np.asarray(a.obsm["spatial"], dtype=float)
    for seed in seeds:
        t = time.perf_counter()
        b = a.copy()
        b.X = b.layers["counts"].copy()
        b.uns.pop("log1p", None)  # GraphST log-transforms the counts itself
        b.obsm["spatial"] = xy
        model = GraphST(b, device=torch.device("cpu"), random_seed=seed, epochs=GRAPHST_EPOCHS[0])
        b = model.train()
        t_train = time.perf_counter() - t
        emb = np.asarray(b.obsm["emb"])
        if os.environ.get("MORPHST_GRAPHST_EMB_DIR"):
            np.save(Path(os.environ["MORPHST_GRAPHST_EMB_DIR"]) / f"graphst_{sample}_seed{seed}_emb.npy", emb)
        print(f"    GraphST seed={seed}: trained in {t_train:.0f}s", flush=True)
        z = PCA(20, random_state=42).fit_transform(emb)
        for name, fn in (
            ("peer:GraphST + gmm (mclust EEE)", lambda: gmm(z, seed)),
            ("peer:GraphST + gmm (mclust EEE), refined", lambda: _graphst_refine(xy, gmm(z, seed))),
            ("peer:GraphST + leiden (to 7)", lambda: _graphst_leiden(z, seed)),
        ):
            t1 = time.perf_counter()
            lab = fn()
            s = t_train + time.perf_counter() - t1
            if GRAPHST_EPOCHS[0] != 600:
                name = f"{name} [{GRAPHST_EPOCHS[0]} of its 600 epochs]"
            rows.append({"method": name, "morph": "off", "seed": seed, **scores(a, lab), "s": s})
            print(f"    {name} seed={seed}: ARI {rows[-1]['ari']:.3f}, {s:.0f}s", flush=True)
    return rows


RUNNERS = {"SpaGCN": run_spagcn, "stLearn": run_stlearn, "BANKSY": run_banksy, "GraphST": run_graphst}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", nargs="+", default=["151673", "151674"])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with one folder per sample")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--encoder", nargs="+", default=["contrastive", "autoencoder"], help="graph_encoder methods, or none")
    p.add_argument("--encoder-morph", nargs="+", default=["off", "on", "random"], choices=["off", "on", "random"])
    p.add_argument("--no-fuse", action="store_true", help="skip the expression and fuse rows (encoder rows only)")
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (the same for every row)")
    p.add_argument("--graphst-epochs", type=int, default=600, help="GraphST's epochs (its default 600)")
    p.add_argument("--refine", nargs="*", type=int, default=[50], help="refine_neighs of the +refine rows (none: 0)")
    p.add_argument("--smoke", action="store_true", help="800 spots of 151673, one seed, no peers (seconds)")
    args = p.parse_args()
    GRAPHST_EPOCHS[0] = args.graphst_epochs
    if args.smoke:
        _smoke(args)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


def _smoke(args, n_spots: int = 800) -> None:
    """``--smoke``: one sample cut (after :func:`prepare`) to its ``n_spots`` spots nearest the centre, one seed."""
    import functools

    global prepare
    full = prepare

    def prepare(sample, data_dir):
        sdata, a = full(sample, data_dir)
        xy = np.asarray(a.obsm["spatial"], dtype=float)
        keep = np.sort(np.argsort(((xy - xy.mean(0)) ** 2).sum(1))[:n_spots])
        return sdata, a[keep].copy()

    mst.tl.graph_encoder = functools.partial(mst.tl.graph_encoder, n_epochs=10)  # 10 steps, not 300
    args.samples, args.seeds, args.no_peers = ["151673"], 1, True
    args.encoder, args.encoder_morph = ["contrastive"], ["off"]  # the RESULT line's encoder row


def run(args) -> None:
    seeds = list(range(args.seeds))
    mst.settings.progress_bar = False
    warnings.filterwarnings("ignore")
    t_all = time.perf_counter()
    rows = []
    for sample in args.samples:
        t0 = time.perf_counter()
        sdata, a = prepare(sample, args.data_dir)
        logg.logger.setLevel("WARNING")
        print(f"[{sample}] {a.n_obs} spots, {a.n_vars} genes, prepared in {time.perf_counter() - t0:.0f}s", flush=True)
        t_sec = time.perf_counter()
        refine = [k for k in args.refine if k > 0]
        for r in [] if args.no_fuse else morphst_rows(a, seeds, refine):
            rows.append({"sample": sample, **r})
        enc_methods = [m for m in args.encoder if m != "none"]
        for r in encoder_rows(a, seeds, enc_methods, args.encoder_morph, refine):
            rows.append({"sample": sample, **r})
        if args.no_peers:
            print(f"[{sample}] peers: skipped (--no-peers)", flush=True)
        else:
            for name in [n for n in PEERS if n not in args.peers]:
                print(f"[{sample}] {name}: skipped, not requested (--peers {' '.join(args.peers)})", flush=True)
            for name in args.peers:
                t = time.perf_counter()
                try:
                    out = RUNNERS[name](sdata, a, sample, seeds)
                except ImportError as e:
                    print(f"[{sample}] {name}: skipped, not installed ({type(e).__name__}: {e})", flush=True)
                    continue
                except Exception as e:  # a peer failing must not lose the other rows; say why
                    print(f"[{sample}] {name}: skipped, failed ({type(e).__name__}: {e})", flush=True)
                    continue
                print(f"[{sample}] {name}: {time.perf_counter() - t:.0f}s", flush=True)
                rows += [{"sample": sample, **r} for r in out]
        print(f"[{sample}] all rows in {time.perf_counter() - t_sec:.0f}s (uptime: {os.getloadavg()[0]:.1f})", flush=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    for sample in args.samples:
        sub = df[df["sample"] == sample]
        tab = sub.groupby(["method", "morph"], sort=False).agg(
            ari=("ari", "mean"), ari_sd=("ari", "std"), ari_min=("ari", "min"), ari_max=("ari", "max"),
            nmi=("nmi", "mean"), s=("s", "mean"),
        )  # fmt: skip
        print(f"\n== {sample}: mean over {len(seeds)} seeds; ARI/NMI vs manual layers (NA excluded); s = seconds/run")
        print(tab.round(3).to_string())
    mean = df.groupby(["method", "morph"], sort=False)["ari"].mean()
    # mean over samples per seed, then mean ± sd over seeds
    per_seed = df.groupby(["method", "morph", "seed"], sort=False)["ari"].mean().groupby(["method", "morph"], sort=False)
    print("\n== mean ARI over samples and seeds (sd: over seeds of the per-seed mean over samples); s = seconds/run")
    summary = pd.DataFrame(
        {"ari": mean, "sd": per_seed.std(), "s": df.groupby(["method", "morph"], sort=False)["s"].mean()}
    )
    print(summary.round(3).to_string())
    morphst_method = "smooth"
    morphst_ari = mean.get((f"morphst:{morphst_method}", "on"), float("nan"))
    peers = {f"{m}|{o}": v for (m, o), v in mean.items() if m.startswith("peer:")}
    if peers:
        best = max(peers, key=peers.get)
        best_name, best_ari = best.replace("peer:", "").replace("|", " morph="), peers[best]
    else:
        best_name, best_ari = "none", float("nan")
    enc_ari = mean.get(("graph_encoder:contrastive", "off"), float("nan"))
    k = next(iter(args.refine), 0)
    enc_ref = mean.get((f"graph_encoder:contrastive +refine{k}", "off"), float("nan"))
    print(f"\ntotal {time.perf_counter() - t_all:.0f}s")
    print(
        f"RESULT samples={','.join(args.samples)} morphst_ari_mean={morphst_ari:.3f} encoder_ari_mean={enc_ari:.3f} "
        f"encoder_refined_ari_mean={enc_ref:.3f} refine_neighs={k} "
        f"best_peer={best_name.replace(' ', '_')} best_peer_ari_mean={best_ari:.3f} method={morphst_method}"
    )


if __name__ == "__main__":
    main()
