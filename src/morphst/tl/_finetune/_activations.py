"""`cache_activations`: the activations entering an encoder's last block, once per patch, for fine-tuning in folds."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_table_key, inject_docs
from ..._utils import get_adata, records_params

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Array name of the activations in the zarr store.
_ARRAY = "activations"


@inject_docs(table_key=doc_table_key)
def cache_activations(
    sdata: SpatialData,
    model: str = "densenet121",
    *,
    path: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    table_key: str = Key.TABLE,
    context_index: int | None = None,
    n_blocks: int = 1,
    batch_size: int = 32,
    device: str | None = None,
    key_added: str | None = None,
    n_jobs: int | None = None,
) -> None:
    """Cache the activations that enter the encoder's last block, for fine-tuning that block inside each fold.

    The frozen trunk (every layer before the last block: for DenseNet-121 at 224 px the transition-3 output,
    ``512 × 7 × 7``) runs once over the spot-centred patches of :func:`morphst.pp.extract_patches` (read as
    :func:`morphst.tl.embed_patches` reads them, in float32); the activations are stored as float16. Pass the key to
    :func:`morphst.tl.predict_expression` as ``use_rep`` with ``regressor="finetune"`` (or a
    :class:`~morphst.tl.LastBlockFinetune`), which trains a copy of the last block and a head on the training
    sections of each fold only.

    With ``path``, the activations are also written to a zarr store with a record of what produced them (model,
    weights sha256, patch sizes, px, context index, a sha1 of the observation names and patch centres) and the
    sha256 of the stored bytes; a later call with the same record reads them back instead of running the trunk.

    Parameters
    ----------
    sdata
        SpatialData with the image(s), shapes and table, after :func:`morphst.pp.extract_patches`.
    model
        A registry or timm name of a DenseNet, ResNet or VisionTransformer (``"densenet121"``, ``"resnet50"``,
        ``"uni"``, ...).
    path
        A zarr store to cache the activations in across sessions, or ``None`` (in memory only).
    weights
        As :func:`morphst.tl.embed_patches` (``None``: ``mst.settings.weights_dir``, then the hub). Fine-tune with
        the same ``weights``.
    {table_key}
    context_index
        ``None``: the main patch; ``k``: the ``k``-th context field of view of ``extract_patches``.
    n_blocks
        VisionTransformers: the tokens entering the last ``n_blocks`` transformer blocks are cached (those blocks
        are then adapted by :class:`~morphst.tl.LastBlockFinetune` with the same ``n_blocks``). CNNs: 1.
    batch_size, device, n_jobs
        As :func:`morphst.tl.embed_patches`.
    key_added
        ``obsm`` / ``uns`` key. Default ``"X_<model>_lastblock"`` (``"..._ctx<k>"`` for a context patch).

    Returns
    -------
    Nothing; sets in ``sdata.tables[table_key]``:

    - ``.obsm['X_<model>_lastblock' | key_added]``: ndarray, float16, shape ``(n_obs, C * H * W)`` (channels first,
      flattened; a VisionTransformer: ``(n_obs, n_tokens * width)``); NaN rows for observations without a patch.
    - ``.uns['X_<model>_lastblock' | key_added]['params']``: the record (model, weights source and sha256, patch
      sizes in µm, px, context index, ``activation_shape`` ``[C, H, W]``, fingerprint of the patches), ``path``
      and ``sha256`` of the activations, ``from_cache`` (read back from ``path``).

    Raises
    ------
    ValueError
        No patch geometry (run ``extract_patches`` first), an architecture without a supported last block, or a
        store at ``path`` written for another record or whose bytes do not match its sha256 (nothing is written).
    FileNotFoundError
        No weights for the model (see :func:`morphst.tl.embed_patches`).
    """
    from .._nn import split_last_block
    from ..models import get_model

    adata = get_adata(sdata, table_key)
    if Key.PATCHES not in adata.uns:
        msg = "No patch geometry in the table: run `mst.pp.extract_patches(sdata, ...)` first."
        raise ValueError(msg)
    enc = get_model(model, weights=weights)
    trunk, _ = split_last_block(enc.module, n_blocks=n_blocks, pooling=enc.pooling)
    record = {**_record(adata, enc, context_index), "n_blocks": int(n_blocks)}
    key_added = key_added or f"X_{enc.name}_lastblock" + ("" if context_index is None else f"_ctx{context_index}")
    start = logg.info(f"caching the activations entering the last block of {enc.name}")
    acts = _read_store(path, record) if path is not None else None
    from_cache = acts is not None
    if acts is None:
        acts = _run_trunk(sdata, enc, trunk, table_key, context_index, batch_size, device, n_jobs)
    record["activation_shape"] = [int(v) for v in acts.shape[1:]]
    sha = hashlib.sha256(np.ascontiguousarray(acts).tobytes()).hexdigest()
    if path is not None and not from_cache:
        _write_store(path, acts, record, sha)
    adata.obsm[key_added] = acts.reshape(len(acts), -1)
    adata.uns[key_added] = {
        "params": records_params(**record, path=None if path is None else str(path), sha256=sha, from_cache=from_cache)
    }
    logg.info(
        f"    finished: {len(acts)} patches -> {record['activation_shape']} float16"
        f"{' (read from ' + repr(str(path)) + ')' if from_cache else ''}; added .obsm[{key_added!r}], "
        f".uns[{key_added!r}]['params']",
        time=start,
    )


def _record(adata, enc, context_index) -> dict:
    """What produced the activations: model, weights, patch geometry and a fingerprint of the patches."""
    p = adata.uns[Key.PATCHES]
    centres = np.column_stack([adata.obs[Key.PATCH_X].to_numpy(np.float64), adata.obs[Key.PATCH_Y].to_numpy(np.float64)])
    finger = hashlib.sha1(json.dumps(list(map(str, adata.obs_names))).encode() + centres.tobytes()).hexdigest()
    return {
        "model": enc.name,
        "weights": enc.weights_source,
        "weights_sha256": enc.weights_sha256,
        "patch_sizes_um": [float(s) for s in np.atleast_1d(p["sizes_um"])],
        "target_px": int(p["target_px"]),
        "context_index": context_index,
        "dtype": "float16",
        "n_obs": int(adata.n_obs),
        "patches_sha1": finger,
    }


def _run_trunk(sdata, enc, trunk, table_key, context_index, batch_size, device, n_jobs) -> np.ndarray:
    """The trunk over the patches through :func:`embed_patches` (float32): ``(n_obs, C, H, W)`` float16."""
    import torch

    from .._embed import embed_patches

    class Trunk(torch.nn.Module):
        """Float RGB in [0, 1] -> the model's preprocessing -> the trunk -> flattened activations."""

        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk

        def forward(self, x):
            if enc.mean.device != x.device:  # the normalisation constants follow the patches
                enc.to(x.device)
            a = self.trunk(enc.transform(x * 255.0))
            self.shape = tuple(a.shape[1:])
            return a.flatten(1)

    fn = Trunk().eval()
    tmp = "_morphst_activations_tmp"
    adata = get_adata(sdata, table_key)
    level = logg.logger.level
    logg.logger.setLevel(max(level, logging.WARNING))  # its "finished" line would name the temporary key
    try:
        embed_patches(
            sdata, fn, table_key=table_key, context_index=context_index, batch_size=batch_size,
            device=device, dtype="float32", key_added=tmp, n_jobs=n_jobs,
        )  # fmt: skip
        flat = adata.obsm[tmp]
    finally:
        logg.logger.setLevel(level)
        adata.obsm.pop(tmp, None)
        adata.uns.pop(tmp, None)
    return flat.reshape(len(flat), *fn.shape).astype(np.float16)


def _read_store(path, record: dict) -> np.ndarray | None:
    """The activations of the store at ``path`` when it holds ``record``; ``None`` when there is no store."""
    import zarr

    if not os.path.exists(path):
        return None
    root = zarr.open_group(str(path), mode="r")
    stored = dict(root.attrs.get("record", {}))
    stored.pop("activation_shape", None)
    if stored != json.loads(json.dumps(record)) or _ARRAY not in root:
        msg = (
            f"The activation store {str(path)!r} was written for another model, weights or patches "
            f"({stored}); delete it or choose another `path`."
        )
        raise ValueError(msg)
    acts = np.asarray(root[_ARRAY][...])
    if hashlib.sha256(np.ascontiguousarray(acts).tobytes()).hexdigest() != root.attrs.get("sha256"):
        msg = f"The activations in {str(path)!r} do not match their stored sha256 (damaged store); delete it."
        raise ValueError(msg)
    return acts


def _write_store(path, acts: np.ndarray, record: dict, sha: str) -> None:
    """Write the activations, their record and sha256 (the attributes last: a half-written store has no record)."""
    import zarr

    root = zarr.open_group(str(path), mode="w")
    arr = root.create_array(_ARRAY, shape=acts.shape, dtype=acts.dtype, chunks=(256, *acts.shape[1:]))
    arr[...] = acts
    root.attrs["sha256"] = sha
    root.attrs["record"] = json.loads(json.dumps(record))


__all__ = ["cache_activations"]
