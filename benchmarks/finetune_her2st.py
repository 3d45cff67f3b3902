"""Fine-tuning the encoder's last block inside each fold vs the frozen encoder, HER2ST patient C (../shared/PROTOCOL.md).

Leave-one-section-out over C2–C6; 50 HVGs selected on the training sections of each fold; target log1p(counts per
10k); patches 112 µm -> 224 px; DenseNet-121 (ImageNet weights of ../shared/weights). Inputs of both rows,
IDENTICAL: the spot's own patch (through DenseNet-121's last block) + the frozen 224/448 µm context embeddings.

- frozen, ensembled head: ``regressor="head"`` (one head per training section held out for early stopping,
  predictions averaged) on the pooled output of the FROZEN last block, computed from the same cached activations;
- frozen, one head: the same head without the ensemble;
- fine-tuned, one: :class:`morphst.tl.LastBlockFinetune` with ``ensemble=False`` (``denseblock4`` + ``norm5`` copied
  and trained with a head on the training sections of each fold, from a linear probe, early-stopped on one held-out
  training section); its match is the frozen one head;
- fine-tuned, ensembled: ``LastBlockFinetune()`` (one adapted block + head per held-out training section, averaged);
  its match is the frozen ensembled head.

Activations (transition-3 output, 512 × 7 × 7, float16) come from ``mst.tl.cache_activations`` with a zarr store in
``--cache`` (default ``/work/notes/cache``, never the repository), the 224/448 µm context embeddings from the
``.npy`` cache of benchmarks/translation_her2st.py in the same folder. Seeds: the heads' and the fine-tuning's
``random_state``; a gain counts only where it exceeds the spread over seeds. Seconds are wall time of the five folds.

Run 2026-12-05 before the ensembled row existed, 2-core CPU with nothing else running (load 0.9–1.8), torch 2
threads, seeds 0–2 (rows frozen_ens, frozen_one and the fine-tuned single member, then named ``finetune``)::

    RESULT frozen_ens=0.517±0.000 frozen_one=0.501±0.001 finetune=0.499±0.003 gain=-0.019±0.003 verdict=behind
    finetune_5folds_s=79 finetune_5folds_cpu_s=155 frozen_ens_5folds_s=58 seeds=3 threads=2 load_end=1.8

``--seeds 3 --threads 2 --configs frozen_ens finetune_ens`` later the same day, the same 2 idle cores (load 1.5–2.1)::

    RESULT frozen_ens=0.517±0.000 finetune_ens=0.516±0.001 gain_ens=-0.001±0.001 verdict_ens=behind ...
    finetune_ens_5folds_s=163 finetune_ens_5folds_cpu_s=319 frozen_ens_5folds_s=43 seeds=3 threads=2 load_end=1.9

No gain: the single fine-tuned member is behind the frozen ensembled head by more than the spread and level with the
frozen single head; the ensembled one is level with the frozen ensembled head (0.001 below it, just past the
spread over seeds, hence the word).

Usage: ``python benchmarks/finetune_her2st.py [--data-dir DIR] [--weights-dir DIR] [--cache DIR] [--seeds N]
[--threads T] [--configs frozen_ens frozen_one finetune_one finetune_ens] [--smoke]``. ``--smoke``: a synthetic five-section table and a tiny random DenseNet (seconds; its
figures mean nothing; one seed). Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import morphst as mst

SECTIONS = ("C2", "C3", "C4", "C5", "C6")
ACT = "X_densenet121_lastblock"
FROZEN = "X_densenet121_frozen_block"
CTX = ["X_densenet121_ctx0", "X_densenet121_ctx1"]
TAGS = {
    "frozen, ensembled head": "frozen_ens",
    "frozen, one head": "frozen_one",
    "fine-tuned, one": "finetune_one",
    "fine-tuned, ensembled": "finetune_ens",
}


def tiny_densenet(seed: int = 0):
    """A DenseNet of random weights with a two-layer last block (smoke runs and tests)."""
    import torch
    from timm.models.densenet import DenseNet

    torch.manual_seed(seed)
    return DenseNet(growth_rate=8, block_config=(1, 1, 1, 2), stem_type="", num_classes=0).eval()


def frozen_features(adata, model) -> None:
    """``obsm[FROZEN]``: the cached activations through the FROZEN last block, pooled (the frozen encoder)."""
    import torch

    from morphst.tl._nn._lastblock import split_last_block

    _, block = split_last_block(model)
    c, h, w = adata.uns[ACT]["params"]["activation_shape"]
    a = torch.from_numpy(np.asarray(adata.obsm[ACT], dtype=np.float32)).view(-1, c, h, w)
    with torch.no_grad():
        adata.obsm[FROZEN] = torch.cat([block.eval()(a[i : i + 128]) for i in range(0, len(a), 128)]).numpy()


def load(args):
    """The table (counts, target layer, activations, frozen features, context embeddings) and the encoder."""
    if args.smoke:
        import torch

        sys.path.insert(0, str(Path(__file__).parent))
        from _smoke import her2st_like

        adata = her2st_like({"X_latent": 4, CTX[0]: 6, CTX[1]: 6}, side=4, n_genes=60)
        net = tiny_densenet()
        imgs = np.random.default_rng(0).standard_normal((adata.n_obs, 3, 32, 32)).astype(np.float32)
        imgs += adata.obsm["X_latent"][:, :3, None, None]
        from morphst.tl._nn._lastblock import split_last_block

        trunk, _ = split_last_block(net)
        with torch.no_grad():
            a = trunk(torch.from_numpy(imgs))
        adata.obsm[ACT] = a.flatten(1).numpy().astype(np.float16)
        adata.uns[ACT] = {"params": {"activation_shape": list(a.shape[1:]), "weights_sha256": None}}
        return adata, net, None
    from translation_her2st import embeddings

    weights = Path(args.weights_dir) / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    cache = Path(args.cache)
    sdata = mst.datasets.her2st(library_id=SECTIONS, data_dir=args.data_dir)
    adata = sdata.tables["table"]
    print(f"HER2ST patient C, {adata.n_obs} spots; context embeddings (cache {cache}):")
    embeddings(sdata, Path(args.weights_dir), cache, random_encoder=False)  # also extracts the 112/224/448 µm patches
    t = time.perf_counter()
    mst.tl.cache_activations(sdata, "densenet121", weights=weights, path=cache / "her2st_C_densenet121_lastblock.zarr")
    p = adata.uns[ACT]["params"]
    print(f"activations {p['activation_shape']} float16 ({'read from' if p['from_cache'] else 'written to'} "
          f"{p['path']}, {time.perf_counter() - t:.0f} s); sha256 {p['sha256'][:12]}")  # fmt: skip
    enc = mst.tl.models.get_model("densenet121", weights=weights)
    if enc.weights_sha256 != p["weights_sha256"]:
        raise RuntimeError("the activations were cached with other weights")
    return adata, enc.module, weights


def run(adata, use_rep: str, regressor, seed: int) -> dict:
    """One five-fold ``predict_expression``: per-section PCC, mean, seconds and the model description."""
    t, c = time.perf_counter(), time.process_time()
    mst.tl.predict_expression(
        adata, use_rep, context_rep=CTX, regressor=regressor, library_key="section", random_state=seed, key_added="b"
    )
    pf = adata.uns["b"]["per_fold"].set_index(adata.uns["b"]["per_fold"]["fold"].astype(str))
    row = {s: float(pf.loc[s, "pcc"]) for s in SECTIONS}
    row["mean_pcc"] = float(pf["pcc"].mean())
    row["seconds"] = time.perf_counter() - t
    row["cpu_s"] = time.process_time() - c  # CPU seconds of this process (all its threads): less sensitive to load
    row["genes"] = adata.uns["b"]["fold_metrics"].groupby("fold", observed=True)["gene"].apply(tuple).to_dict()
    row["description"] = adata.uns["b"]["params"]["model_description"]
    return row


def regressors(net, weights, seed: int, smoke: bool) -> dict:
    from morphst.tl import FeatureHead, LastBlockFinetune

    small = {"n_hidden": 8, "max_epochs": 3, "patience": 2} if smoke else {}
    ft = {"max_epochs": 2, "n_hidden": 8, "probe_epochs": 3} if smoke else {}
    model = net if smoke else "densenet121"
    return {
        "frozen, ensembled head": (FROZEN, FeatureHead(random_state=seed, **small)),
        "frozen, one head": (FROZEN, FeatureHead(random_state=seed, ensemble=False, **small)),
        "fine-tuned, one": (ACT, LastBlockFinetune(model=model, weights=weights, random_state=seed, ensemble=False, **ft)),
        "fine-tuned, ensembled": (ACT, LastBlockFinetune(model=model, weights=weights, random_state=seed, **ft)),
    }  # fmt: skip


def verdict(df: pd.DataFrame, tuned: str, frozen: str) -> tuple[float, float, str]:
    """Mean gain of ``tuned`` over ``frozen`` (same seeds), its sd, and the verdict against the spread over seeds."""
    a, b = df[df.config == tuned]["mean_pcc"].to_numpy(), df[df.config == frozen]["mean_pcc"].to_numpy()
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), "not_run"
    gain = a - b
    spread = max(a.std(ddof=1), b.std(ddof=1)) if len(a) > 1 else 0.0
    if len(a) < 2:
        return float(gain.mean()), 0.0, "one_seed_no_spread"  # no claim without a spread over seeds
    word = (
        "ahead"
        if gain.mean() > spread and gain.mean() > 0
        else ("behind" if -gain.mean() > spread else "within_spread")
    )
    return float(gain.mean()), float(gain.std(ddof=1)), word


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MORPHST_DATA_DIR", "../shared/data"))
    ap.add_argument("--weights-dir", default=os.environ.get("MORPHST_WEIGHTS_DIR", "../shared/weights"))
    ap.add_argument("--cache", default="/work/notes/cache", help="folder of the activation store and embeddings")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, ..., first-seed + seeds - 1")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument(
        "--configs", nargs="+", choices=list(TAGS.values()), default=list(TAGS.values()), help="rows to run"
    )
    ap.add_argument("--smoke", action="store_true", help="synthetic data, tiny random DenseNet: seconds")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("morphst").setLevel(logging.WARNING)
    mst.settings.progress_bar = False
    sys.path.insert(0, str(Path(__file__).parent))
    t0 = time.perf_counter()
    adata, net, weights = load(args)
    mst.pp.normalize(adata)
    frozen_features(adata, net)
    seeds = list(range(args.first_seed, args.first_seed + (1 if args.smoke else args.seeds)))
    rows, genes = [], None
    for seed in seeds:
        for name, (rep, reg) in regressors(net, weights, seed, args.smoke).items():
            if TAGS[name] not in args.configs:
                continue
            load_before = os.getloadavg()[0]
            r = run(adata, rep, reg, seed)
            if genes is None:
                genes = r["genes"]
            elif r["genes"] != genes:
                raise RuntimeError("the folds chose other genes: inputs are not identical")
            rows.append({"config": name, "seed": seed, **{k: v for k, v in r.items() if k != "genes"},
                         "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"})  # fmt: skip
            print(f"  seed {seed} {name}: mean PCC {r['mean_pcc']:.3f}, {r['seconds']:.0f} s, {r['cpu_s']:.0f} CPU s (load {rows[-1]['load']})"
                  f"\n    {r['description']}", flush=True)  # fmt: skip
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 240)
    print("\nPCC per held-out section (same folds, genes and inputs; seconds = the five folds):")
    print(
        df[["config", "seed", *SECTIONS, "mean_pcc", "seconds", "cpu_s", "load"]].to_string(
            index=False, float_format="{:.3f}".format
        )
    )
    agg = df.groupby("config", sort=False)["mean_pcc"].agg(["mean", "std"]).fillna(0.0)
    secs = df.groupby("config", sort=False)["seconds"].mean().reindex(list(TAGS))
    cpu = df.groupby("config", sort=False)["cpu_s"].mean().reindex(list(TAGS))
    g_ens, sd_ens, v_ens = verdict(df, "fine-tuned, ensembled", "frozen, ensembled head")
    g_one, sd_one, v_one = verdict(df, "fine-tuned, one", "frozen, one head")
    print(
        f"\ntotal {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f} at the end; torch threads {args.threads}"
    )
    print(
        "RESULT "
        + " ".join(f"{TAGS[k]}={v['mean']:.3f}±{v['std']:.3f}" for k, v in agg.iterrows())
        + f" gain_ens={g_ens:+.3f}±{sd_ens:.3f} verdict_ens={v_ens} gain_one={g_one:+.3f}±{sd_one:.3f}"
        f" verdict_one={v_one}"
        f" finetune_one_5folds_s={secs['fine-tuned, one']:.0f} finetune_one_5folds_cpu_s={cpu['fine-tuned, one']:.0f}"
        f" finetune_ens_5folds_s={secs['fine-tuned, ensembled']:.0f}"
        f" finetune_ens_5folds_cpu_s={cpu['fine-tuned, ensembled']:.0f}"
        f" frozen_ens_5folds_s={secs['frozen, ensembled head']:.0f}"
        f" seeds={len(seeds)} threads={args.threads} load_end={os.getloadavg()[0]:.1f}"
    )  # fmt: skip


if __name__ == "__main__":
    main()
