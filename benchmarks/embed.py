"""End-to-end ``embed_patches`` throughput vs the same model's forward pass on tensors already in memory.

Real data: HER2ST patient C (default section C2, 187 spots; 112 µm patches at 224 px). Measured:

- forward: the model on pre-read, pre-normalised tensors (channels_last), batch 64, fp32 and bf16 autocast;
  each measurement is repeated (``--repeats``, alternating) and the best rate kept, as the CPU may be shared;
- end-to-end: ``mst.tl.embed_patches`` (reading from the zarr-backed pyramid, resampling, normalising, model,
  writing ``obsm``) with ``dtype="auto"`` and ``dtype="float32"``;
- ``max_rel_diff``: the largest per-spot ``||f_auto - f_fp32|| / ||f_fp32||`` of the end-to-end features.

Usage: ``MORPHST_DATA_DIR=../shared/data python benchmarks/embed.py [--model efficientnet_lite0] [--sections C2]``
(``--smoke``: 16 cells of a synthetic H&E section instead, seconds).
Last line: ``RESULT model=<m> e2e_per_s=<x> forward_per_s=<y> ratio=<x/y> bf16_vs_fp32_speedup=<z> max_rel_diff=<d>``.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import numpy as np


def forward_rate(enc, x, batch_size: int, bf16: bool) -> float:
    import torch

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.inference_mode(), ctx:
        enc.encode(x[:batch_size])  # warm-up (oneDNN primitives)
        t0 = time.perf_counter()
        for i in range(0, len(x), batch_size):
            enc.encode(x[i : i + batch_size])
        dt = time.perf_counter() - t0
    return len(x) / dt


def main() -> None:
    import torch

    import morphst as mst
    from morphst.tl.models import get_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--sections", nargs="+", default=["C2"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="16 cells of a synthetic H&E section, batch 8 (seconds)")
    args = ap.parse_args()
    mst.settings.progress_bar = False

    if args.smoke:  # synthetic: the figures only show that the script runs
        sdata = mst.datasets.xenium_like(16, he=True, n_genes=5, chunk_px=512, n_levels=2)
        mst.pp.extract_patches(sdata, image_key="he_image")
        args.sections, args.batch_size, args.repeats = ["xenium_like(16, he=True)"], 8, 1
    else:
        sdata = mst.datasets.her2st(library_id=args.sections)
        mst.pp.extract_patches(sdata)
    n = sdata.tables["table"].n_obs
    patches = torch.from_numpy(mst.pp.get_patches(sdata)).permute(0, 3, 1, 2)
    enc = get_model(args.model)
    enc.channels_last()
    with torch.inference_mode():
        x = enc.transform(patches).contiguous(memory_format=torch.channels_last)
    auto = mst.settings.resolve_autocast("cpu")
    # the machine may be shared: alternate the measurements and keep the best of `--repeats` for each
    best = {"fwd32": 0.0, "fwd16": 0.0, "auto": 0.0, "float32": 0.0}
    for _ in range(args.repeats):
        best["fwd32"] = max(best["fwd32"], forward_rate(enc, x, args.batch_size, bf16=False))
        best["fwd16"] = max(best["fwd16"], forward_rate(enc, x, args.batch_size, bf16=True))
        for dtype in ["auto", "float32"]:
            t0 = time.perf_counter()
            mst.tl.embed_patches(sdata, args.model, dtype=dtype, key_added=dtype, batch_size=args.batch_size)
            best[dtype] = max(best[dtype], n / (time.perf_counter() - t0))
    fwd32, fwd16 = best["fwd32"], best["fwd16"]
    fwd_auto = fwd16 if auto is not None else fwd32
    rates = {"auto": best["auto"], "float32": best["float32"]}
    del x
    t = sdata.tables["table"]
    a, b = t.obsm["auto"], t.obsm["float32"]
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)

    print(
        f"{'' if args.smoke else 'HER2ST '}{'+'.join(args.sections)}: {n} patches (112 µm -> 224 px), "
        f"model {args.model}, "
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, auto dtype = "
        f"{'bf16' if auto is not None else 'fp32'}"
    )
    print(f"{'':<32}{'patches/s':>10}")
    print(f"{'forward fp32 (in memory)':<32}{fwd32:>10.1f}")
    print(f"{'forward bf16 (in memory)':<32}{fwd16:>10.1f}")
    print(f"{'embed_patches dtype=auto':<32}{rates['auto']:>10.1f}")
    print(f"{'embed_patches dtype=float32':<32}{rates['float32']:>10.1f}")
    print(f"per-spot relative L2 difference auto vs fp32: max {rel.max():.4f}, median {np.median(rel):.4f}")
    print(
        f"RESULT model={args.model} e2e_per_s={rates['auto']:.1f} forward_per_s={fwd_auto:.1f} "
        f"ratio={rates['auto'] / fwd_auto:.2f} bf16_vs_fp32_speedup={fwd16 / fwd32:.2f} max_rel_diff={rel.max():.4f}"
    )


if __name__ == "__main__":
    main()
