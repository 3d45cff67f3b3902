"""Embedding on a dask.distributed cluster: one task per block, workers read the image store and load the model once."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ._compute import DeviceEncoder

#: Per worker process: models by spec key, so each worker builds a model once.
_WORKER_MODELS: dict = {}


def resolve_client(client):
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


def _worker_model(spec: dict) -> DeviceEncoder:
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
        hit = DeviceEncoder(enc, spec["device"], spec["dtype"])
        _WORKER_MODELS.clear()  # one model per worker process
        _WORKER_MODELS[key] = hit
    return hit


def _worker_block(task: dict) -> tuple[np.ndarray, dict]:
    """Read and encode the batches of one block on a worker: ``(features in plan order, info)``.

    The same pipeline as in one process: the reader's threads read ahead while the encoder works.
    """
    import dask.array as da
    import zarr

    from ...pp._patches import PatchReader

    encoder = _worker_model(task["model"])
    out = []
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
        batches = reader.iter_batches(
            np.arange(len(piece["xy0"])),
            batch_size=task["batch_size"],
            pin_memory=encoder.pin_memory,
            reuse_buffers=encoder.reuse_buffers,
        )
        for k, (_, f) in enumerate(encoder.encode_stream(batches)):
            if len(f) != piece["sizes"][k]:  # pragma: no cover - the plan is the same on both sides
                msg = "Internal error: a worker's batch differs from the plan."
                raise RuntimeError(msg)
            out.append(f)
    info = {**encoder.info, "weights_sha256": encoder.enc.weights_sha256}
    return np.concatenate(out), info


def _block_tasks(reader, plan, needed, level_paths, spec, batch_size) -> dict[int, dict]:
    """Per unfinished block, the task a worker runs: the block's windows grouped by image (one piece per image)."""
    where = {}  # table row -> (group name, position in group)
    for name, g in reader.groups.items():
        where[name] = pd.Series(np.arange(len(g.rows)), index=g.rows)
    tasks = {}
    for b in needed:
        pieces = []
        for k in plan.blocks[b]:
            rows = plan.batches[k]
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


class DistributedRunner:
    """Runs each block as a task on a ``dask.distributed`` cluster; the client gathers the features as they come.

    A worker runs the same pipeline as :class:`~._compute.LocalRunner` within its block; with two or more threads
    per worker, dask also reads a second block while the first is encoded.
    """

    def __init__(self, client, sdata, regions: dict, size_index: int, spec: dict, token: str):
        self.client = client
        self.sdata = sdata
        self.regions = regions
        self.size_index = size_index
        self.spec = spec
        self.token = token

    @staticmethod
    def model_spec(model, weights, random_state, n_jobs, device, dtype) -> dict:
        """What a worker needs to build the model (and a key under which it caches it)."""
        from dask.base import tokenize

        w = str(weights) if isinstance(weights, os.PathLike) else weights
        spec = {"model": model, "weights": w, "random_state": random_state, "n_jobs": n_jobs}
        spec.update(device=device, dtype=dtype)
        spec["key"] = tokenize(model if isinstance(model, str) else repr(model), w, random_state, device, dtype, n_jobs)
        return spec

    def run(self, job, sink, progress) -> dict | None:
        from distributed import as_completed

        level_paths = {
            name: _level_on_disk(
                self.sdata,
                self.regions[name]["image"],
                int(np.atleast_1d(self.regions[name]["level"])[self.size_index]),
                g.reader.data.shape,
            )
            for name, g in job.reader.groups.items()
        }
        tasks = _block_tasks(job.reader, job.plan, job.needed, level_paths, self.spec, job.batch_size)
        futures = [
            self.client.submit(_worker_block, tasks[b], key=f"morphst-embed-{self.token}-{b}", pure=False)
            for b in job.needed
        ]
        block_of = {f.key: b for f, b in zip(futures, job.needed, strict=True)}
        run_info = None
        try:
            for fut, (f, info) in as_completed(futures, with_results=True):
                if info["weights_sha256"] != job.enc.weights_sha256:
                    msg = (
                        f"A worker loaded other weights for {job.enc.name!r} (sha256 {info['weights_sha256']}, here "
                        f"{job.enc.weights_sha256}): give `weights=` a path that every worker can read."
                    )
                    raise ValueError(msg)
                run_info = run_info or {"device": info["device"], "autocast": info["autocast"]}
                sink.put(block_of[fut.key], f)
                progress(len(f))
                fut.release()
        finally:
            for fut in futures:
                fut.cancel()
        return run_info
