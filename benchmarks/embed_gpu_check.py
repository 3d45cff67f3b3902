"""GPU check of the encoders (run once on an NVIDIA H200, 2026-11-29): device path, bf16/TF32 vs fp32 features, throughput.

How it was run: `.devcheck/prep.py`-style preparation here (96 real HER2ST C2–C6 patches, 112 µm -> 224 px, via
`mst.pp.get_patches`, and their CPU fp32 features), the two shared weight files copied next to them, then this script
on the GPU machine, whose Python has torch/timm but not spatialdata (hence the package stubs below).

Measured (batch 256, forward only, patches already in memory):

| model | fp32 (TF32 on) | fp32 strict | bf16 autocast + channels_last | bf16 vs fp32 rel. diff max / median | TF32 vs fp32 max |
|---|---|---|---|---|---|
| densenet121 | 4,937 /s | 3,087 /s | 7,653 /s | 0.034 / 0.013 | 0.0026 |
| efficientnet_lite0 | 8,692 /s | 7,454 /s | 14,553 /s | 0.121 / 0.054 | 0.0069 |

GPU fp32 (strict) vs CPU fp32 features: max relative difference 2.2e-6 (densenet121), 2.7e-6 (efficientnet_lite0).
`device=None` resolved to cuda. Relative difference per patch: ||f_a - f_b|| / ||f_b||.

`--smoke` (the test suite's run; seconds, figures meaningless): 4 random patches, random weights, the CPU fp32
reference computed in this process, batch 4, one warm-up, 0.05 s per rate, on the device at hand (the CPU without
a GPU).
Run from the repository root (the stubs below import `src/morphst`).
"""

# ruff: noqa: E402  (package stubs must precede the morphst imports)
import json
import os
import sys
import time
import types
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

src = Path("src/morphst")
for name, path in [("morphst", src), ("morphst.tl", src / "tl")]:  # skip the package __init__s: no spatialdata here
    m = types.ModuleType(name)
    m.__path__ = [str(path)]
    sys.modules[name] = m
from morphst._settings import settings
from morphst.tl.models import get_model

CHECK_DIR = os.environ.get("MORPHST_GPU_CHECK_DIR", ".devcheck")
MODELS = {"densenet121": "densenet121.timm.safetensors", "efficientnet_lite0": "tf_efficientnet_lite0.timm.safetensors"}


def rel(a, b):
    r = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    return float(r.max()), float(np.median(r))


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def set_tf32(on: bool) -> None:
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def check_model(enc, dev, x0: torch.Tensor, ref: np.ndarray, *, batch: int, seconds: float, warm: int = 3) -> dict:
    """Features and forward rate of ``enc`` in fp32 (TF32 on), fp32 strict and bf16 + channels_last on ``dev``."""
    res, out = {}, {}
    for mode in ["fp32_tf32", "fp32_strict", "bf16_cl"]:
        set_tf32(mode != "fp32_strict")
        if mode == "bf16_cl":
            enc.channels_last()
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if mode == "bf16_cl" else nullcontext()

        def run(xb, mode=mode, ctx=ctx):
            xx = enc.transform(xb.to(dev, non_blocking=True))
            if mode == "bf16_cl":
                xx = xx.contiguous(memory_format=torch.channels_last)
            with ctx:
                return enc.encode(xx).float()

        with torch.inference_mode():
            out[mode] = run(x0).cpu().numpy()
            xb = x0.repeat(-(-batch // len(x0)), 1, 1, 1)[:batch].contiguous()
            for _ in range(warm):
                run(xb)
            sync(dev)
            t, n = time.perf_counter(), 0
            while time.perf_counter() - t < seconds:
                run(xb)
                n += xb.shape[0]
            sync(dev)
            res[f"{mode}/per_s"] = round(n / (time.perf_counter() - t))
    res["bf16_vs_gpu_fp32_strict max,median"] = rel(out["bf16_cl"], out["fp32_strict"])
    res["gpu_tf32_vs_gpu_fp32_strict max,median"] = rel(out["fp32_tf32"], out["fp32_strict"])
    res["gpu_fp32_strict_vs_cpu_fp32 max,median"] = rel(out["fp32_strict"], ref)
    return res


def main() -> None:
    smoke = "--smoke" in sys.argv[1:]
    dev = settings.resolve_device(None)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "no GPU: the CPU"
    print("device auto ->", dev, name, "torch", torch.__version__, "cudnn.allow_tf32", torch.backends.cudnn.allow_tf32)
    if smoke:
        torch.set_num_threads(1)
        p = np.random.default_rng(0).integers(0, 256, size=(4, 224, 224, 3), dtype=np.uint8)
        models, cpu, batch, seconds = dict.fromkeys(MODELS, "random"), {}, 4, 0.05
    else:
        p = np.load(CHECK_DIR + "/patches.npz")["patches"]
        cpu = np.load(CHECK_DIR + "/cpu_fp32.npz")
        models, batch, seconds = {k: f"{CHECK_DIR}/{v}" for k, v in MODELS.items()}, 256, 4.0
    x0 = torch.from_numpy(p).permute(0, 3, 1, 2).contiguous()
    res = {}
    for model, w in models.items():
        enc = get_model(model, weights=w)
        if smoke:  # the CPU fp32 reference of these random weights, computed here
            with torch.inference_mode():
                ref = enc.encode(enc.transform(x0)).float().numpy()
        else:
            ref = cpu[model]
        r = check_model(enc.to(dev), dev, x0, ref, batch=batch, seconds=seconds, warm=1 if smoke else 3)
        res.update({f"{model}/{k}": v for k, v in r.items()})
    for k, v in res.items():
        print(k, v)
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
