"""Patch embeddings: stream spot-centred patches through an encoder into ``obsm``."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Literal

import numpy as np

from .. import _logging as logg
from .._constants import Key
from .._settings import settings
from .._utils import get_adata, records_params

if TYPE_CHECKING:
    from spatialdata import SpatialData


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


def embed_patches(
    sdata: SpatialData,
    model: str | Callable = "efficientnet_lite0",
    *,
    table_key: str = Key.TABLE,
    weights: str | os.PathLike | Literal["random"] | None = None,
    context: bool | int = False,
    batch_size: int = 64,
    device: str | None = None,
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    key_added: str | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> None:
    """Embed the spot/cell-centred patches with an encoder, one feature vector per observation.

    Patches (geometry from :func:`morphst.pp.extract_patches`, run here with its defaults when the table has
    none: 112 µm, 224 px, i.e. 0.5 µm/px as HEST-Benchmark) are read chunk by chunk from the chosen pyramid level
    in a background thread while the model runs on the previous batch, then pooled features are written to
    ``obsm``. This is the morphology-feature step of the translation–integration framework (Chelebian, Avenel &
    Wählby, *Nat. Commun.* 2025); with ``model="densenet121"`` it is the ST-Net backbone (He et al., *Nat. Biomed.
    Eng.* 2020).

    Precision: with ``dtype="auto"``, CPUs with bf16 support (AVX512-BF16/AMX) and CUDA GPUs with bf16 run the
    model under bf16 autocast with channels_last memory; elsewhere fp32. This changes the features: on the 910
    HER2ST C2–C6 patches the relative difference per spot ``||f_bf16,i − f_fp32,i|| / ||f_fp32,i||`` was at most
    0.12 (median 0.054) for EfficientNet-Lite0 and at most 0.039 (median 0.013) for DenseNet-121 (bounds checked in
    the tests: 0.15 and 0.05); TF32 convolutions, which torch enables by default on CUDA, changed them by up to
    0.7 %. Speed and GPU figures are in ``benchmarks/embed.py`` and ``benchmarks/embed_gpu_check.py``. Use
    ``dtype="float32"`` for full-precision features.

    Parameters
    ----------
    sdata
        SpatialData with the image(s), shapes and table; not an AnnData (the patches are cut from the image around
        the shapes, which the table alone does not hold).
    model
        A registry name (:func:`morphst.tl.models.list_models`: ``"efficientnet_lite0"``, ``"densenet121"``,
        ``"resnet18"``, ``"resnet50"``, pathology foundation models such as ``"uni"``, ``"handcrafted"``), any timm
        architecture name, or a callable mapping float RGB tensors ``(B, 3, target_px, target_px)`` in [0, 1]
        (no normalisation) to ``(B, D)``.
    table_key
        Table of the spots.
    weights
        ``None``: a file under ``mst.settings.weights_dir`` / ``$MORPHST_WEIGHTS_DIR`` named after the model, else
        the bundled package (``efficientnet_lite0``), else the hub when online. A path: that file (strict key
        matching). ``"random"``: a random initialisation of the same architecture, seeded by ``random_state``.
    context
        ``False``: the main patch; an integer ``k``: the ``k``-th context field of view of ``extract_patches``.
    batch_size
        Patches per forward pass.
    device
        ``None``: ``mst.settings.device`` (``"auto"``: cuda, mps, cpu), or a torch device string.
    dtype
        ``"auto"`` (bf16 autocast where supported), ``"float32"`` or ``"bfloat16"``.
    key_added
        ``obsm`` / ``uns`` key. Default ``"X_<model>"``, ``"X_<model>_random"`` with ``weights="random"``,
        ``"X_<model>_<size>um"`` for a context patch.
    random_state
        Seed of a random initialisation.
    n_jobs
        Threads reading patches (and computing handcrafted features). Default: ``mst.settings.n_jobs``.

    Returns
    -------
    Nothing; sets in ``sdata.tables[table_key]``:

    - ``.obsm['X_<model>' | key_added]``: ndarray, float32, shape ``(n_obs, n_features)``; NaN rows for
      observations without a patch.
    - ``.uns['X_<model>' | key_added]['params']``: model, weight source and sha256, patch size (µm), px, µm/px,
      pyramid level and image per region, device, dtype, batch size.
    - ``.uns['X_<model>' | key_added]['feature_names']`` for ``model="handcrafted"``.
    - the ``extract_patches`` slots, if they were missing.

    Raises
    ------
    TypeError
        ``sdata`` is not a SpatialData (e.g. an AnnData table).
    ValueError
        Unknown model (neither registered nor a timm architecture; close names are suggested), bad ``dtype`` or
        ``batch_size``, ``context`` that is neither ``False`` nor an index of the recorded context sizes, an invalid
        patch setup (see :func:`morphst.pp.extract_patches`; checked before the model is built and before anything
        is written), or an encoder that returns NaN/infinite features or the wrong shape (nothing is written).
    FileNotFoundError
        No weights for the model (the message lists the ways to provide them). Offline (``$HF_HUB_OFFLINE`` set,
        or huggingface.co not reachable within 3 s) this comes at once, without hub download retries.
    """
    import torch
    from tqdm.auto import tqdm

    from ..pp._patches import (
        OBS_X,
        PatchReader,
        check_default_geometry,
        context_index,
        extract_patches,
        require_sdata,
    )
    from .models import get_model

    require_sdata(sdata, "embed_patches")
    adata = get_adata(sdata, table_key)
    if dtype not in ("auto", "float32", "bfloat16"):
        msg = f"`dtype` must be 'auto', 'float32' or 'bfloat16', got {dtype!r}."
        raise ValueError(msg)
    if int(batch_size) < 1:
        msg = f"`batch_size` must be a positive integer, got {batch_size}."
        raise ValueError(msg)
    size_index = context_index(context)
    start = logg.info(f"embedding patches with {getattr(model, '__name__', model)!s}")
    # validate the patch geometry before building the model (seconds), writing nothing yet
    needs_patches = Key.PATCHES not in adata.uns or OBS_X not in adata.obs
    if needs_patches and size_index > 0:
        msg = (
            f"`context={context}` asks for a context field of view, but the table has no patch geometry yet; run "
            "`mst.pp.extract_patches(sdata, context=(<size µm>, ...))` first."
        )
        raise ValueError(msg)
    if needs_patches:
        check_default_geometry(sdata, table_key)
    else:
        PatchReader(sdata, table_key=table_key, size_index=size_index, n_workers=n_jobs)
    enc = get_model(model, weights=weights, random_state=random_state, n_jobs=n_jobs)
    if needs_patches:
        extract_patches(sdata, table_key=table_key)
    reader = PatchReader(sdata, table_key=table_key, size_index=size_index, n_workers=n_jobs)

    if key_added is None:
        key_added = f"X_{enc.name}"
        if isinstance(weights, str) and weights == "random":
            key_added += "_random"
        if size_index > 0:
            key_added += f"_{reader.size_um:g}um"

    dev = settings.resolve_device(device) if enc.uses_torch else torch.device("cpu")
    ac = _autocast_dtype(dev, dtype, enc.uses_torch)
    enc.to(dev)
    use_cl = enc.uses_torch and dev.type in ("cpu", "cuda")
    if use_cl:
        enc.channels_last()
    autocast = torch.autocast(device_type=dev.type, dtype=ac) if ac is not None else nullcontext()

    rows_all = reader.rows
    feats: np.ndarray | None = None
    with (
        torch.inference_mode(),
        tqdm(total=len(rows_all), desc=f"embed {enc.name}", unit="patch", disable=not settings.progress_bar) as bar,
    ):
        for rows, patches in reader.iter_batches(batch_size=int(batch_size)):
            x = patches.to(dev, non_blocking=True) if enc.uses_torch else patches
            x = enc.transform(x)
            if use_cl and hasattr(x, "contiguous") and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                f = enc.encode(x)
            f = f.float().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.float32)
            if f.ndim != 2 or f.shape[0] != len(rows):
                msg = (
                    f"The encoder {enc.name!r} returned shape {f.shape} for a batch of {len(rows)} patches; it must "
                    "return (batch, n_features)."
                )
                raise ValueError(msg)
            if not np.isfinite(f).all():
                bad = int((~np.isfinite(f)).any(axis=1).sum())
                msg = (
                    f"The encoder {enc.name!r} returned NaN or infinite features for {bad} of {len(rows)} patches "
                    f"(table rows {list(rows[~np.isfinite(f).all(axis=1)][:5])}); nothing was written. Check the "
                    "encoder (e.g. a division by a zero-variance patch) or its weights."
                )
                raise ValueError(msg)
            if feats is None:
                feats = np.full((adata.n_obs, f.shape[1]), np.nan, dtype=np.float32)
            feats[rows] = f
            bar.update(len(rows))
    if feats is None:  # pragma: no cover - extract_patches guarantees at least one patch
        msg = "No patches to embed."
        raise ValueError(msg)

    info = adata.uns[Key.PATCHES]
    regions = info["regions"]
    adata.obsm[key_added] = feats
    uns = {
        "params": records_params(
            model=enc.name if isinstance(model, str) else f"callable {enc.name}",
            weights=enc.weights_source,
            weights_sha256=enc.weights_sha256,
            patch_size_um=reader.size_um,
            target_px=reader.target_px,
            um_per_px=reader.size_um / reader.target_px,
            context=context,
            images={r: v["image"] for r, v in regions.items()},
            pyramid_level={r: int(np.atleast_1d(v["level"])[size_index]) for r, v in regions.items()},
            level_um_per_px={r: float(np.atleast_1d(v["level_um_per_px"])[size_index]) for r, v in regions.items()},
            um_per_unit={r: float(v["um_per_unit"]) for r, v in regions.items() if "um_per_unit" in v},
            device=str(dev),
            dtype="bfloat16 autocast" if ac is not None else "float32",
            batch_size=int(batch_size),
            random_state=random_state,
            embedding_dim=int(feats.shape[1]),
        )
    }
    if hasattr(enc, "feature_names"):
        uns["feature_names"] = list(enc.feature_names)
    adata.uns[key_added] = uns
    logg.info(
        f"    finished: {len(rows_all)} patches -> {feats.shape[1]} features; added .obsm[{key_added!r}], "
        f".uns[{key_added!r}]['params']",
        time=start,
    )
