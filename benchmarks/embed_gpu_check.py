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
"""

# ruff: noqa: E402, B023  (package stubs must precede the morphst imports; run() is used inside its own loop turn)
import json
import os
import sys
import time
import types
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

dev = settings.resolve_device(None)
print(
    "device auto ->",
    dev,
    torch.cuda.get_device_name(0),
    "torch",
    torch.__version__,
    "cudnn.allow_tf32",
    torch.backends.cudnn.allow_tf32,
)
p = np.load(os.environ.get("MORPHST_GPU_CHECK_DIR", ".devcheck") + "/patches.npz")["patches"]
cpu = np.load(os.environ.get("MORPHST_GPU_CHECK_DIR", ".devcheck") + "/cpu_fp32.npz")
x0 = torch.from_numpy(p).permute(0, 3, 1, 2).contiguous()
res = {}


def rel(a, b):
    r = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    return float(r.max()), float(np.median(r))


for name, w in [
    ("densenet121", os.environ.get("MORPHST_GPU_CHECK_DIR", ".devcheck") + "/densenet121.timm.safetensors"),
    (
        "efficientnet_lite0",
        os.environ.get("MORPHST_GPU_CHECK_DIR", ".devcheck") + "/tf_efficientnet_lite0.timm.safetensors",
    ),
]:
    enc = get_model(name, weights=w).to(dev)
    out = {}
    for mode in ["fp32_tf32", "fp32_strict", "bf16_cl"]:
        torch.backends.cudnn.allow_tf32 = mode != "fp32_strict"
        torch.backends.cuda.matmul.allow_tf32 = mode != "fp32_strict"
        if mode == "bf16_cl":
            enc.channels_last()
        ctx = (
            torch.autocast("cuda", dtype=torch.bfloat16) if mode == "bf16_cl" else torch.autocast("cuda", enabled=False)
        )

        def run(xb):
            xx = enc.transform(xb.to(dev, non_blocking=True))
            if mode == "bf16_cl":
                xx = xx.contiguous(memory_format=torch.channels_last)
            with ctx:
                return enc.encode(xx).float()

        with torch.inference_mode():
            f = run(x0).cpu().numpy()
            xb = x0.repeat(3, 1, 1, 1)[:256].contiguous()  # batch 256
            for _ in range(3):
                run(xb)
            torch.cuda.synchronize()
            t = time.perf_counter()
            n = 0
            while time.perf_counter() - t < 4.0:
                run(xb)
                n += xb.shape[0]
            torch.cuda.synchronize()
            rate = n / (time.perf_counter() - t)
        out[mode] = f
        res[f"{name}/{mode}/per_s"] = round(rate)
    res[f"{name}/bf16_vs_gpu_fp32_strict max,median"] = rel(out["bf16_cl"], out["fp32_strict"])
    res[f"{name}/gpu_tf32_vs_gpu_fp32_strict max,median"] = rel(out["fp32_tf32"], out["fp32_strict"])
    res[f"{name}/gpu_fp32_strict_vs_cpu_fp32 max,median"] = rel(out["fp32_strict"], cpu[name])
for k, v in res.items():
    print(k, v)
print("RESULT " + json.dumps(res))
