"""Encoding batches: autocast choice, device preparation, the batch plan (fixed by rows and batch size)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ..._settings import settings


def _autocast_dtype(device, dtype: str, uses_torch: bool):
    """The autocast dtype (``torch.bfloat16``) or ``None`` for fp32."""
    import torch

    if not uses_torch or dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if settings.autocast == "float32":
        return None
    if device.type == "cpu":
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - old torch
            ok = False
        return torch.bfloat16 if ok else None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None


# --------------------------------------------------------------------------------------------------------------
# the batch plan: fixed by the rows and the batch size, shared by a fresh run, a resumed run and the workers
# --------------------------------------------------------------------------------------------------------------
def _batch_plan(reader, batch_size: int) -> list[np.ndarray]:
    """Table rows of every batch, in reading order: image by image, chunk by chunk, ``batch_size`` at a time.

    The same split as :meth:`PatchReader.iter_batches` with ``rows=None``; a run that skips finished batches reads
    the others with exactly these compositions (within an image every batch but the last is full).
    """
    out = []
    for g, pos in reader._plan(None, sort=True):
        out.extend(g.rows[pos[b : b + batch_size]] for b in range(0, len(pos), batch_size))
    return out


def _encode(enc, patches, dev, use_cl: bool, autocast) -> np.ndarray:
    """One batch through the encoder: ``(B, D)`` float32; refuses a wrong shape or non-finite features."""
    import torch

    x = patches.to(dev, non_blocking=True) if enc.uses_torch else patches
    x = enc.transform(x)
    if use_cl and hasattr(x, "contiguous") and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast:
        f = enc.encode(x)
    f = f.float().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.float32)
    n = len(patches)
    if f.ndim != 2 or f.shape[0] != n:
        msg = (
            f"The encoder {enc.name!r} returned shape {f.shape} for a batch of {n} patches; it must return "
            "(batch, n_features)."
        )
        raise ValueError(msg)
    if not np.isfinite(f).all():
        bad = ~np.isfinite(f).all(axis=1)
        msg = (
            f"The encoder {enc.name!r} returned NaN or infinite features for {int(bad.sum())} of {n} patches; "
            "nothing was written. Check the encoder (e.g. a division by a zero-variance patch) or its weights."
        )
        raise ValueError(msg)
    return f.astype(np.float32, copy=False)


def _prepare(enc, device: str | None, dtype: str):
    """Move the encoder to its device; return ``(device, autocast dtype or None, channels_last, autocast ctx)``."""
    import torch

    dev = settings.resolve_device(device) if enc.uses_torch else torch.device("cpu")
    ac = _autocast_dtype(dev, dtype, enc.uses_torch)
    enc.to(dev)
    use_cl = enc.uses_torch and dev.type in ("cpu", "cuda")
    if use_cl:
        enc.channels_last()
    autocast = torch.autocast(device_type=dev.type, dtype=ac) if ac is not None else nullcontext()
    return dev, ac, use_cl, autocast
