"""End-to-end ``embed_patches`` against the forward rate, per model, on a GPU (issue 20); also runs on a CPU.

A synthetic Xenium-like section with an aligned H&E (``mst.datasets.xenium_like(he=True)``, ``N_CELLS`` cells) is
written to a zarr store and read back, as users read their data; 112 µm patches at 224 px (0.5 µm/px) are centred on
the cells. For each model (random weights: throughput does not depend on them), in one process:

- ``e2e_per_s``: cells/s of ``mst.tl.embed_patches(sdata, model, weights="random", batch_size=BS)`` on the first
  ``n`` cells (reading from the zarr store, resampling, normalising, the model, writing ``obsm``), without the
  model's construction (``build_s``: the same ``get_model`` call timed when the forward rate is measured, timm
  imported beforehand; ``call_s`` is the whole call);
- ``forward_per_s``: the same encoder, batch and precision on one batch already in device memory (transform +
  encode, as ``gpu_check.py`` measured it), for ``FWD_S`` seconds;
- ``ratio`` = e2e / forward. The goal (issue 20): >= 0.9 wherever the forward rate is below the reader's rate.

Before the models: the reader alone (``PatchReader.iter_batches``, the embed loop's reader, and ``get_patches``) on
the first ``READER_N`` cells with ``n_jobs`` = ``N_JOBS`` (default: all cores) and 1.

How to run it on the GPU machine: ``../shared/device/README.md`` (wheels into ``.site``, then
``PYTHONPATH=$PWD/.site:$PWD/src python benchmarks/embed_gpu.py``). Settings from the environment: ``N_CELLS``
(100000), ``MODELS`` (``name:n,...``), ``BS`` (512), ``N_JOBS``, ``FWD_S`` (5), ``READER_N`` (20000), ``OUT``
(a folder for ``embed_gpu.json``). On a CPU, try it with tiny sizes first, e.g.
``N_CELLS=600 MODELS=efficientnet_lite0:300 BS=32 FWD_S=1 READER_N=600 python benchmarks/embed_gpu.py``.

``--smoke`` (the test suite's run): 48 cells, EfficientNet-Lite0 on 32, batch 16, on the device at hand (the CPU
without a GPU); it only shows that the script runs.

Prints one line per model: ``RESULT model=<m> e2e_per_s=<x> forward_per_s=<y> ratio=<x/y>``, and
``RESULT reader n_jobs=<k> iter_batches_per_s=<x> get_patches_per_s=<y> n_jobs1_iter_batches_per_s=<z>``.

Measured: the GPU figures are still to be measured (no GPU in the session that wrote this script).
"""

# ruff: noqa: E402  (the torch/device report comes before the slower morphst imports)
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
# --smoke: the smallest run, on whatever device there is (the CPU here): seconds, figures meaningless
SMOKE = {"N_CELLS": "48", "BS": "16", "FWD_S": "0.2", "N_JOBS": "1", "READER_N": "48"}
SMOKE["MODELS"] = "efficientnet_lite0:32"
if "--smoke" in sys.argv[1:]:
    os.environ.update(SMOKE)
    torch.set_num_threads(1)
N = int(os.environ.get("N_CELLS", "100000"))
BS = int(os.environ.get("BS", "512"))
FWD_S = float(os.environ.get("FWD_S", "5"))
N_JOBS = int(os.environ.get("N_JOBS", str(os.cpu_count() or 4)))
READER_N = int(os.environ.get("READER_N", "20000"))
MODELS = os.environ.get(
    "MODELS", "densenet121:100000,efficientnet_lite0:100000,resnet50:100000,uni:30000,h_optimus_0:10000"
)
gpu = torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"
print(f"torch {torch.__version__}, device {gpu}, {os.cpu_count()} CPUs, n_jobs {N_JOBS}", flush=True)

import anndata
import spatialdata as sd
import timm  # noqa: F401  (imported before any timing: the model builds below are then comparable)

import morphst as mst
from morphst.pp._patches import PatchReader
from morphst.tl.models import get_model

try:
    anndata.settings.allow_write_nullable_strings = True  # pandas 3 string columns (the GPU machine)
except AttributeError:
    pass
mst.settings.progress_bar = False
mst.settings.n_jobs = N_JOBS


def section(path: str):
    """The H&E section of ``N`` cells, written to ``path`` and read back; patches 112 µm at 224 px."""
    t0 = time.perf_counter()
    s = mst.datasets.xenium_like(N, he=True, n_genes=20, random_state=0)
    s = sd.SpatialData(
        images={"he_image": s.images["he_image"]},
        shapes={"cell_boundaries": s.shapes["cell_boundaries"]},
        tables={"table": s.tables["table"]},
        attrs=dict(s.attrs),  # the µm declaration of the coordinate system
    )
    s.write(path)
    s = sd.read_zarr(path)
    mst.pp.extract_patches(s, image_key="he_image", patch_size=112.0, target_px=224)
    print(f"section: {N} cells generated, written, read back in {time.perf_counter() - t0:.0f} s", flush=True)
    return s


def subset(s, n: int):
    if n >= N:
        return s
    return sd.SpatialData(
        images={"he_image": s.images["he_image"]},
        shapes={"cell_boundaries": s.shapes["cell_boundaries"]},
        tables={"table": s.tables["table"][:n].copy()},
        attrs=dict(s.attrs),
    )


def reader_rates(s) -> dict:
    s2 = subset(s, READER_N)
    out = {}
    for nj in (N_JOBS, 1):
        mst.settings.n_jobs = nj
        t0 = time.perf_counter()
        k = sum(len(p) for _, p in PatchReader(s2).iter_batches(batch_size=BS))
        it = k / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        k = len(mst.pp.get_patches(s2, batch_size=BS))
        gp = k / (time.perf_counter() - t0)
        out[nj] = {"iter_batches_per_s": round(it), "get_patches_per_s": round(gp)}
        print(f"reader n_jobs={nj}: iter_batches {it:.0f}/s, get_patches {gp:.0f}/s", flush=True)
    mst.settings.n_jobs = N_JOBS
    return out


def _forward(enc, xb, ctx):
    y = enc.transform(xb).contiguous(memory_format=torch.channels_last)
    with ctx:
        return enc.encode(y)


def forward_rate(model: str, s) -> tuple[float, float]:
    """``(forward cells/s, seconds to build the model)``: the build as ``embed_patches`` does it, imports warm."""
    t0 = time.perf_counter()
    enc = get_model(model, weights="random")
    build = time.perf_counter() - t0
    enc.to(DEV)
    enc.channels_last()
    p = mst.pp.get_patches(s, np.arange(min(BS, s.tables["table"].n_obs)), batch_size=BS)
    xb = torch.from_numpy(p).permute(0, 3, 1, 2).to(DEV)
    ac = mst.settings.resolve_autocast(DEV)
    ctx = torch.autocast(DEV, dtype=ac) if ac is not None else torch.autocast(DEV, enabled=False)
    with torch.inference_mode():
        for _ in range(3):
            _forward(enc, xb, ctx)
        sync()
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < FWD_S:
            _forward(enc, xb, ctx)
            k += xb.shape[0]
        sync()
        rate = k / (time.perf_counter() - t0)
    del enc, xb
    if DEV == "cuda":
        torch.cuda.empty_cache()
    return rate, build


def model_rates(model: str, n: int, s) -> dict:
    n = min(n, N)
    s2 = subset(s, n)
    sync()
    t0 = time.perf_counter()
    mst.tl.embed_patches(s2, model, weights="random", batch_size=BS, key_added="X_e")
    sync()
    call = time.perf_counter() - t0
    feats = s2.tables["table"].obsm["X_e"]
    params = s2.tables["table"].uns["X_e"]["params"]
    fwd, build = forward_rate(model, s2)  # the build, timed there, is what embed_patches spent on it too
    e2e = n / max(call - build, 1e-9)
    return {
        "n": n,
        "e2e_per_s": round(e2e),
        "forward_per_s": round(fwd),
        "ratio": round(e2e / fwd, 3),
        "call_s": round(call, 1),
        "build_s": round(build, 1),
        "dim": int(feats.shape[1]),
        "finite": bool(np.isfinite(feats).all()),
        "dtype": str(params.get("dtype")),
        "device": str(params.get("device")),
    }


def main() -> None:
    res = {"n_cells": N, "gpu": gpu, "cpus": os.cpu_count(), "batch_size": BS, "n_jobs": N_JOBS}
    with tempfile.TemporaryDirectory(prefix="mst_gpu_") as work:
        s = section(f"{work}/x.zarr")
        res["reader"] = reader_rates(s)
        r = res["reader"]
        print(
            f"RESULT reader n_jobs={N_JOBS} iter_batches_per_s={r[N_JOBS]['iter_batches_per_s']} "
            f"get_patches_per_s={r[N_JOBS]['get_patches_per_s']} "
            f"n_jobs1_iter_batches_per_s={r[1]['iter_batches_per_s']}",
            flush=True,
        )
        for item in MODELS.split(","):
            model, n = item.split(":")
            try:
                m = model_rates(model, int(n), s)
            except Exception as e:  # one failing model must not lose the others' figures
                import traceback

                traceback.print_exc()
                res[model] = f"FAILED {type(e).__name__}: {str(e)[:300]}"
                print(model, res[model], flush=True)
                continue
            res[model] = m
            print(model, m, flush=True)
            print(
                f"RESULT model={model} e2e_per_s={m['e2e_per_s']} forward_per_s={m['forward_per_s']} "
                f"ratio={m['ratio']}",
                flush=True,
            )
    out = os.environ.get("OUT")
    if out:
        with open(f"{out}/embed_gpu.json", "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
