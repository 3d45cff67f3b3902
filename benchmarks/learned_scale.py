"""learn_features at 100,000 cells on this 2-core machine (issue 19's time goal: under 10 minutes).

Synthetic 64-d features, 50 genes that depend on them (tanh of a random projection plus noise), 4 sections of
25,000 cells at random positions; translation (own patch + 8-neighbour mean + section mean, FeatureHead of width 128)
and integration (``mst.tl.learn_integration_features``, self-supervised, ``method="maf"`` (the default; with
``--hsic`` also ``"hsic"``, 8 components); expression representation = 20 of the genes). The positions are random,
so the features carry no spatial structure: ``maf`` should find no significant component (a control). Prints the
seconds of each and the load. ``--skip-translation``: integration only.

Last runs (2026-12-04): load 1.0: translation 110 s (chosen epoch 12), integration hsic 85 s (chosen epoch 66);
load 5–6 (``--skip-translation``): moran 20 s, hsic 365 s (chosen epoch 66). 2026-12-05, ``--skip-translation``,
load 8.9 (2 cores shared with four other sessions): ``learn_integration_features`` (maf, 99 permutations) 38 s, 0
significant components (the control: random positions); 57 s before the permutations ran in float32 and the
dimension cap used a scatter eigendecomposition instead of an SVD of the rows.
Real CNN embeddings are wider (1,024–1,280 per block): the first layer's cost grows with the width.

Run: ``python benchmarks/learned_scale.py`` (``--smoke``: 2,000 cells, both parts, at most 5 epochs; seconds, figures
meaningless).
"""

import logging
import os
import sys
import time

import anndata as ad
import numpy as np

import morphst as mst

logging.getLogger("morphst").setLevel(logging.INFO)
mst.settings.progress_bar = False
SMOKE = "--smoke" in sys.argv[1:]
OPTIONS = {"options": mst.tl.TrainOptions(max_epochs=5)} if SMOKE else {}  # --smoke: a few epochs, seconds
rng = np.random.default_rng(0)
n, d, g = (2_000 if SMOKE else 100_000), 64, 50
x = rng.normal(size=(n, d)).astype(np.float32)
y = np.tanh(x @ rng.normal(size=(d, g)) / 4) + 0.5 * rng.normal(size=(n, g))
a = ad.AnnData(np.zeros((n, g), np.float32))
a.layers["y"] = y.astype(np.float32)
a.var_names = [f"g{i}" for i in range(g)]
a.obs["section"] = np.repeat(["s0", "s1", "s2", "s3"], n // 4)
a.obsm["spatial"] = rng.random((n, 2)) * 5000
a.obsm["X_m"] = x
print("load", os.getloadavg()[0], flush=True)
if "--skip-translation" not in sys.argv:
    t = time.perf_counter()
    mst.tl.learn_features(
        a, "X_m", objective="translation", genes=list(a.var_names), target="y", spatial_context=8, **OPTIONS
    )
    print(
        f"translation: {time.perf_counter() - t:.0f} s, chosen epoch {a.uns['X_learned_translation']['chosen_epoch']}",
        flush=True,
    )
a.obsm["X_pca"] = y[:, :20].astype(np.float32)
res = {}
for method in ("maf", "hsic") if "--hsic" in sys.argv else ("maf",):  # maf: the default without annotation_key
    t = time.perf_counter()
    mst.tl.learn_integration_features(a, "X_m", expression_rep="X_pca", method=method, **OPTIONS)
    res[f"{method}_s"] = time.perf_counter() - t
    print(f"integration ({method}): {res[f'{method}_s']:.1f} s", "load", os.getloadavg()[0], flush=True)
    if method == "maf":
        comp = a.uns["X_learned_integration"]["components"]
        res["maf_n_significant"] = len(comp)
print(f"RESULT n_cells={n} " + " ".join(f"{k}={v:.1f}" for k, v in res.items()) + f" load={os.getloadavg()[0]:.1f}")
