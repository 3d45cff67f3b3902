"""`embed_patches`: stream spot-centred patches through an encoder into ``obsm``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

from ... import _logging as logg
from ..._constants import Key
from ..._settings import settings
from ..._utils import get_adata, records_params, run_first, save_results
from ..._utils._checks import check_sdata
from ..._utils._memory import release_freed_memory

if TYPE_CHECKING:
    from distributed import Client
    from spatialdata import SpatialData
from ..._docs import doc_table_key, inject_docs
from ._blank import BlankPatches
from ._checkpoint import CheckpointSink, MemorySink, _Checkpoint, call_record
from ._compute import EmbedJob, EmbedPlan, LocalRunner
from ._distributed import DistributedRunner, resolve_client


@inject_docs(table_key=doc_table_key)
def embed_patches(
    sdata: SpatialData,
    model: str | Callable = Key.DEFAULT_MODEL,
    *,
    table_key: str = Key.TABLE,
    weights: str | os.PathLike | Literal["random"] | None = None,
    context_index: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    key_added: str | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    client: Client | Literal["auto"] | None = None,
) -> None:
    """Embed the spot/cell-centred patches with an encoder, one feature vector per observation.

    Patches (geometry from :func:`morphst.pp.extract_patches`, run here with its defaults when the table has
    none: 112 µm, 224 px, i.e. 0.5 µm/px as HEST-Benchmark) are read chunk by chunk from the chosen pyramid level
    by ``n_jobs`` worker threads, several batches ahead of the model, and the pooled features are written to
    ``obsm`` once, after the last batch. This is the morphology-feature step of the translation–integration
    framework (Chelebian, Avenel & Wählby, *Nat. Commun.* 2025); with ``model="densenet121"`` it is the ST-Net
    backbone (He et al., *Nat. Biomed. Eng.* 2020).

    Precision: with ``dtype="auto"``, CPUs with bf16 support (AVX512-BF16/AMX) and CUDA GPUs with bf16 run the
    model under bf16 autocast with channels_last memory; elsewhere fp32. bf16 (and TF32 convolutions, which torch
    enables by default on CUDA) changes the features slightly; use ``dtype="float32"`` for full precision.

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
    {table_key}
    weights
        ``None``: a file under ``mst.settings.weights_dir`` / ``$MORPHST_WEIGHTS_DIR`` named after the model, else
        the bundled package (``efficientnet_lite0``), else the hub when online. A path: that file (strict key
        matching). ``"random"``: a random initialisation of the same architecture, seeded by ``random_state``.
    context_index
        ``None``: the main patch; an integer ``k``: the ``k``-th (0-based) context field of view of
        ``extract_patches(context_sizes_um=...)``.
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
        Threads reading patches (each cuts, pads and resamples whole batches) and computing handcrafted features.
        Default: ``mst.settings.n_jobs`` (``None``: all cores).
    checkpoint
        Path of a zarr store that makes the run resumable. The patches are read in a fixed plan (image by image,
        chunk by chunk, ``batch_size`` at a time) cut into blocks of ``mst.settings.checkpoint_block_size``
        patches; each finished block is
        written to the store (``features`` rows in plan order, ``rows`` their table rows, ``done`` a flag per
        block). Calling again with the same arguments after a crash or a kill skips the finished blocks, so the
        result equals an uninterrupted run. The store records the call (model, weights sha256, precision, batch
        size, patch geometry, number of observations, plan) and stays after the run (delete it when done).
    client
        Run the blocks on a ``dask.distributed`` cluster: a :class:`distributed.Client`, or ``"auto"`` for the
        active one (:func:`distributed.get_client`). Default ``None``: in this process. Each worker opens the
        pyramid level from the SpatialData's zarr store (``sdata.write(path)`` then ``spatialdata.read_zarr(path)``),
        builds the model once (``weights`` must be readable there) and encodes whole blocks with the same batches
        as a single process; results equal the single-process run on the same kind of device and precision
        (clusters and the memory of a large ``obsm``: ``docs/scale.md``).

    Returns
    -------
    Nothing; sets in ``sdata.tables[table_key]``:

    - ``.obsm['X_<model>' | key_added]``: ndarray, float32, shape ``(n_obs, n_features)``; NaN rows for
      observations without a patch.
    - ``.uns['X_<model>' | key_added]['params']``: model, weight source and sha256, patch size (µm), px, µm/px,
      pyramid level and image per region, device, dtype, batch size, checkpoint path, blocks resumed from it,
      number of blocks, scheduler address of the client.
    - ``.uns['X_<model>' | key_added]['feature_names']`` for ``model="handcrafted"``.
    - the ``extract_patches`` slots, if they were missing.

    Raises
    ------
    TypeError
        ``sdata`` is not a SpatialData (e.g. an AnnData table), or ``client`` is not a ``distributed.Client``.
    ValueError
        Unknown model (neither registered nor a timm architecture; close names are suggested), bad ``dtype`` or
        ``batch_size``, ``context_index`` that is neither ``None`` nor an index of the recorded context sizes, an invalid
        patch setup (see :func:`morphst.pp.extract_patches`; checked before the model is built and before anything
        is written), or an encoder that returns NaN/infinite features or the wrong shape (nothing is written);
        ``checkpoint`` written by another call or not a checkpoint; ``client`` with a SpatialData that is not
        backed by a zarr store (or whose image differs from the store), ``client="auto"`` without an active
        client, or a worker that loaded other weights.
    FileNotFoundError
        No weights for the model (the message lists the ways to provide them). Offline (``$HF_HUB_OFFLINE`` set,
        or huggingface.co not reachable within 3 s) this comes at once, without hub download retries.
    """
    from tqdm.auto import tqdm

    from ...pp._patches import PatchReader, size_index_of
    from ..models import get_model

    check_sdata(sdata, "embed_patches", patches=True)
    adata = get_adata(sdata, table_key)
    _check_arguments(dtype, batch_size)
    size_index = size_index_of(context_index)
    cl = resolve_client(client)
    start = logg.info(f"embedding patches with {getattr(model, '__name__', model)!s}")
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    needs_patches = _check_patches(sdata, adata, table_key, size_index, n_jobs)  # before the model: seconds
    enc = get_model(model, weights=weights, random_state=random_state, n_jobs=n_jobs)
    if needs_patches:
        _extract_default_patches(sdata, table_key)
    reader = PatchReader(sdata, table_key=table_key, size_index=size_index, n_workers=n_jobs)
    key_added = key_added or _default_key(enc.name, weights, size_index, reader.patch_size_um)

    bs = int(batch_size)
    plan = EmbedPlan.build(reader, bs, settings.checkpoint_block_size)
    regions = adata.uns[Key.PATCHES]["regions"]
    call = call_record(enc, model, weights, random_state, reader, size_index, dtype, bs, adata.n_obs, regions)
    if checkpoint is None:
        sink = MemorySink(plan.plan_rows, plan.block_rows, adata.n_obs)
    else:
        sink = CheckpointSink(_Checkpoint(checkpoint, call, plan.plan_rows, plan.block_rows), adata.n_obs)
        if sink.resumed:
            logg.info(f"    resuming {str(checkpoint)!r}: {sink.resumed} of {len(plan.blocks)} blocks already embedded")
    job = EmbedJob(enc, reader, plan, [b for b in range(len(plan.blocks)) if not sink.done[b]], bs)
    blank = BlankPatches(adata.obs_names)  # counted on the local path (workers do not report their pixels)
    if cl is None:
        runner = LocalRunner(device, dtype, on_batch=blank.update)
    else:
        from dask.base import tokenize

        spec = DistributedRunner.model_spec(model, weights, random_state, n_jobs, device, dtype)
        token = tokenize(spec["key"], call, str(checkpoint))
        runner = DistributedRunner(cl, sdata, regions, size_index, spec, token)
    n_todo = len(plan.rows_of(job.needed))
    bar = tqdm(total=n_todo, desc=f"embed {enc.name}", unit="patch", disable=not settings.progress_bar)
    try:
        run_info = runner.run(job, sink, bar.update)
    except BaseException:
        sink.close(wait=False)
        raise
    finally:
        bar.close()
    sink.close()
    blank.warn()
    feats = sink.result()
    if feats is None:  # pragma: no cover - extract_patches guarantees at least one patch
        msg = "No patches to embed."
        raise ValueError(msg)
    run_info = run_info or {"device": "none (all blocks resumed from the checkpoint)", "autocast": None}

    record = _uns_record(
        enc, model, weights, reader, regions, size_index, context_index, run_info, feats, batch_size, random_state,
        checkpoint, sink.resumed, len(plan.blocks), cl,
    )  # fmt: skip
    summary = f"{plan.n_patches} patches -> {feats.shape[1]} features"
    save_results(adata, [("obsm", key_added, feats), ("uns", key_added, record)], start=start, summary=summary)


def _check_arguments(dtype, batch_size) -> None:
    if dtype not in ("auto", "float32", "bfloat16"):
        msg = f"`dtype` must be 'auto', 'float32' or 'bfloat16', got {dtype!r}."
        raise ValueError(msg)
    if int(batch_size) < 1:
        msg = f"`batch_size` must be a positive integer, got {batch_size}."
        raise ValueError(msg)


def _check_patches(sdata, adata, table_key: str, size_index: int, n_jobs) -> bool:
    """Validate the patch geometry (or that the defaults can be extracted); ``True`` when it must be extracted."""
    from ...pp._patches import PatchReader, check_default_geometry

    needs_patches = Key.PATCHES not in adata.uns or Key.PATCH_X not in adata.obs
    if needs_patches and size_index > 0:
        msg = (
            f"`context_index={size_index - 1}` asks for a context field of view, but the table has no patch "
            f"geometry yet; {run_first('pp.extract_patches', 'sdata, context_sizes_um=(<size µm>, ...)')}."
        )
        raise ValueError(msg)
    if needs_patches:
        try:
            check_default_geometry(sdata, table_key)
        except ValueError as e:  # its fix names extract_patches options (image_key=, um_per_unit=, ...)
            msg = (
                f"The table has no patch geometry yet, and `mst.pp.extract_patches` with its defaults cannot cut "
                f"the patches: {e} Those are options of `mst.pp.extract_patches`: "
                f"{run_first('pp.extract_patches', 'sdata, ...')} with them, then `mst.tl.embed_patches`."
            )
            raise ValueError(msg) from e
    else:
        PatchReader(sdata, table_key=table_key, size_index=size_index, n_workers=n_jobs)
    return needs_patches


def _extract_default_patches(sdata, table_key: str) -> None:
    """Said, not silent: the defaults of extract_patches, recorded in ``uns['patches']`` as usual."""
    from ...pp import extract_patches
    from ...pp._patches import DEFAULT_PATCH_SIZE_UM, DEFAULT_TARGET_PX

    logg.info(
        "    no patch geometry in the table yet: running `mst.pp.extract_patches` with its defaults "
        f"({DEFAULT_PATCH_SIZE_UM:g} µm at {DEFAULT_TARGET_PX} px); call it first to choose other sizes"
    )
    extract_patches(sdata, table_key=table_key)


def _default_key(name: str, weights, size_index: int, patch_size_um: float) -> str:
    key = f"X_{name}"
    if isinstance(weights, str) and weights == "random":
        key += "_random"
    if size_index > 0:
        key += f"_{patch_size_um:g}um"
    return key


def _uns_record(
    enc, model, weights, reader, regions, size_index, context_index, run_info, feats, batch_size, random_state,
    checkpoint, resumed, n_blocks, cl,
) -> dict:  # fmt: skip
    """``uns[key_added]``: the parameters of the run (and the feature names of handcrafted features)."""
    uns = {
        "params": records_params(
            model=enc.name,
            model_is_callable=not isinstance(model, str),
            weights=enc.weights_source,
            weights_random=isinstance(weights, str) and weights == "random",
            weights_path=getattr(enc, "weights_path", None),
            weights_sha256=enc.weights_sha256,
            patch_size_um=reader.patch_size_um,
            target_px=reader.target_px,
            um_per_px=reader.patch_size_um / reader.target_px,
            context_index=context_index,
            images={r: v["image"] for r, v in regions.items()},
            pyramid_level={r: int(np.atleast_1d(v["level"])[size_index]) for r, v in regions.items()},
            level_um_per_px={r: float(np.atleast_1d(v["level_um_per_px"])[size_index]) for r, v in regions.items()},
            um_per_unit={r: float(v["um_per_unit"]) for r, v in regions.items() if "um_per_unit" in v},
            device=run_info["device"],
            dtype={True: "bfloat16 autocast", False: "float32", None: "as stored"}[run_info["autocast"]],
            batch_size=int(batch_size),
            random_state=random_state,
            embedding_dim=int(feats.shape[1]),
            checkpoint=None if checkpoint is None else str(checkpoint),
            checkpoint_blocks_resumed=resumed,
            n_blocks=n_blocks,
            client=None if cl is None else str(cl.scheduler.address),
        )
    }
    if hasattr(enc, "feature_names"):
        uns["feature_names"] = list(enc.feature_names)
    return uns
