"""Embedding on a dask.distributed cluster: one task per block, workers read the image store and load the model once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    pass
from ._compute import _encode, _prepare

#: Per worker process: models by spec key, so each worker builds a model once.
_WORKER_MODELS: dict = {}


def _resolve_client(client):
    if client is None:
        return None
    try:
        import distributed
    except ImportError as e:  # pragma: no cover - distributed is a dependency
        msg = "`client=` needs dask.distributed: `pip install distributed`."
        raise ImportError(msg) from e
    if isinstance(client, str):
        if client != "auto":
            msg = f"`client` must be None, 'auto' (the active dask.distributed client) or a Client, got {client!r}."
            raise ValueError(msg)
        try:
            return distributed.get_client()
        except ValueError as e:
            msg = (
                "`client='auto'` needs an active dask.distributed Client: create one first, e.g. "
                "`from distributed import Client; client = Client(cluster)`."
            )
            raise ValueError(msg) from e
    if not isinstance(client, distributed.Client):
        msg = f"`client` must be None, 'auto' or a dask.distributed Client, got {type(client).__name__}."
        raise TypeError(msg)
    return client


def _level_on_disk(sdata, image_key: str, level: int, shape) -> str:
    """Path of pyramid ``level`` of image ``image_key`` in the zarr store behind ``sdata``; refuses other images."""
    from pathlib import Path

    import zarr

    hint = (
        "Workers read the image from the SpatialData's zarr store: write it first and use the object read back, "
        "e.g. `sdata.write('section.zarr'); sdata = spatialdata.read_zarr('section.zarr')`."
    )
    if sdata.path is None:
        msg = f"`client=` needs a SpatialData backed by a zarr store on disk (sdata.path is None). {hint}"
        raise ValueError(msg)
    root = Path(sdata.path).absolute() / "images" / image_key  # workers may run elsewhere: no relative path
    try:
        g = zarr.open_group(str(root), mode="r")
        attrs = dict(g.attrs)
        ms = attrs.get("ome", attrs).get("multiscales")
        path = ms[0]["datasets"][level]["path"] if ms else None
        arr = g[path] if path is not None else None
    except Exception:  # not there or not an OME-NGFF image: same advice
        arr = None
    if arr is None or tuple(arr.shape) != tuple(shape):
        msg = (
            f"Image {image_key!r} (level {level}, shape {tuple(shape)}) is not in the zarr store {str(sdata.path)!r} "
            f"as it is in memory. {hint}"
        )
        raise ValueError(msg)
    return str(root / path)


def _worker_model(spec: dict):
    key = spec["key"]
    hit = _WORKER_MODELS.get(key)
    if hit is None:
        import torch

        from ..models import get_model

        try:
            from distributed import get_worker

            torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
        except (ImportError, ValueError):  # pragma: no cover - not on a worker
            pass
        enc = get_model(
            spec["model"], weights=spec["weights"], random_state=spec["random_state"], n_jobs=spec["n_jobs"]
        )
        hit = (enc, *_prepare(enc, spec["device"], spec["dtype"]))
        _WORKER_MODELS.clear()  # one model per worker process
        _WORKER_MODELS[key] = hit
    return hit


def _worker_block(task: dict) -> tuple[np.ndarray, dict]:
    """Read and encode the batches of one block on a worker: ``(features in plan order, info)``."""
    import dask.array as da
    import torch
    import zarr

    from ...pp._patches import PatchReader

    enc, dev, ac, use_cl, autocast = _worker_model(task["model"])
    out = []
    with torch.inference_mode():
        for piece in task["pieces"]:
            level = da.from_zarr(zarr.open_array(piece["level_path"], mode="r"))
            reader = PatchReader.from_level(
                level,
                piece["xy0"],
                piece["window_px"],
                target_px=task["target_px"],
                channels=piece["channels"],
                channel_mode=piece["mode"],
                intensity_range=piece["intensity_range"],
                fill_value=piece["fill"],
                n_workers=task["model"]["n_jobs"],
            )
            for k, (_, patches) in enumerate(
                reader.iter_batches(np.arange(len(piece["xy0"])), batch_size=task["batch_size"])
            ):
                f = _encode(enc, patches, dev, use_cl, autocast)
                if len(f) != piece["sizes"][k]:  # pragma: no cover - the plan is the same on both sides
                    msg = "Internal error: a worker's batch differs from the plan."
                    raise RuntimeError(msg)
                out.append(f)
    info = {"device": str(dev), "autocast": ac is not None, "weights_sha256": enc.weights_sha256}
    return np.concatenate(out), info


def _block_tasks(reader, batches, blocks, needed, level_paths, spec, batch_size) -> dict[int, dict]:
    """Per unfinished block, the task a worker runs: the block's windows grouped by image (one piece per image)."""
    where = {}  # table row -> (group name, position in group)
    for name, g in reader.groups.items():
        where[name] = pd.Series(np.arange(len(g.rows)), index=g.rows)
    tasks = {}
    for b in needed:
        pieces = []
        for k in blocks[b]:
            rows = batches[k]
            name = reader.row_group[rows[0]]
            g = reader.groups[name]
            if not pieces or pieces[-1]["name"] != name:
                rd = g.reader
                pieces.append(
                    {
                        "name": name,
                        "level_path": level_paths[name],
                        "xy0": [],
                        "sizes": [],
                        "window_px": g.w,
                        "channels": rd.channels,
                        "mode": rd.mode,
                        "intensity_range": rd.irange,
                        "fill": rd.fill,
                    }
                )
            pieces[-1]["xy0"].append(g.xy0[where[name].loc[rows].to_numpy()])
            pieces[-1]["sizes"].append(len(rows))
        for p in pieces:
            p["xy0"] = np.concatenate(p["xy0"])
        tasks[b] = {"pieces": pieces, "model": spec, "target_px": reader.target_px, "batch_size": batch_size}
    return tasks
