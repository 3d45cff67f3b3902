"""Where a runner puts each block's features: in memory, or a resumable zarr store (done flags after the data)."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Version of the checkpoint layout (``attrs['morphst_embed_patches']['format']``).
_CHECKPOINT_FORMAT = 1
_CHECKPOINT_ATTR = "morphst_embed_patches"


class _Checkpoint:
    """Features of finished blocks in a zarr store: ``rows`` (plan), ``features`` (one chunk per block), ``done``.

    A block's features are written (one chunk; zarr's local store writes by rename) before its ``done`` flag, so
    a killed process leaves only whole blocks marked done. The store appears, by rename, when the first block is
    finished, complete with the plan and the call it belongs to.
    """

    def __init__(self, path, call: dict, plan_rows: np.ndarray, block_rows: int):
        from pathlib import Path

        self.path = Path(path)
        self.call = call
        self.plan_rows = plan_rows  # (n_blocks * block_rows,) int64, -1 padding; stored as "rows"
        self.block_rows = block_rows
        self.n_blocks = len(plan_rows) // block_rows
        self.group = None
        self.done = np.zeros(self.n_blocks, bool)
        if self.path.exists():
            self._open()

    def _open(self) -> None:
        import zarr

        try:
            g = zarr.open_group(str(self.path), mode="r+")
            meta = dict(g.attrs).get(_CHECKPOINT_ATTR)
        except Exception as e:  # any unreadable store gets the same message
            meta, err = None, e
        else:
            err = None
        if not isinstance(meta, dict):
            msg = (
                f"`checkpoint={str(self.path)!r}` exists but is not an embed_patches checkpoint"
                f"{f' ({type(err).__name__}: {err})' if err else ''}; pass another path or delete it."
            )
            raise ValueError(msg)
        if meta.get("format") != _CHECKPOINT_FORMAT:
            msg = (
                f"Checkpoint {str(self.path)!r} has format {meta.get('format')!r}, this morphst writes "
                f"{_CHECKPOINT_FORMAT}; delete it to start again."
            )
            raise ValueError(msg)
        stored = meta.get("call", {})
        diff = sorted(k for k in set(stored) | set(self.call) if stored.get(k) != self.call.get(k))
        if diff:
            detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {self.call.get(k)!r}" for k in diff[:4])
            msg = (
                f"Checkpoint {str(self.path)!r} was written by a different call ({detail}); resuming it would mix "
                "features of different runs. Pass the same arguments, another `checkpoint=` path, or delete it."
            )
            raise ValueError(msg)
        if g["rows"].shape != self.plan_rows.shape or not np.array_equal(g["rows"][:], self.plan_rows):
            msg = (
                f"Checkpoint {str(self.path)!r} was written for other patches (the rows or their order differ: the "
                "table or its patch geometry changed). Pass another `checkpoint=` path or delete it."
            )
            raise ValueError(msg)
        self.group = g
        self.done = g["done"][:].astype(bool)

    def _create(self, dim: int) -> None:
        import shutil

        import zarr

        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        g = zarr.open_group(str(tmp), mode="w")
        g.create_array("rows", shape=self.plan_rows.shape, chunks=(self.block_rows,), dtype=np.int64, fill_value=-1)
        g["rows"][:] = self.plan_rows
        g.create_array(
            "features",
            shape=(len(self.plan_rows), dim),
            chunks=(self.block_rows, dim),
            dtype=np.float32,
            fill_value=np.float32("nan"),
        )
        g.create_array("done", shape=(self.n_blocks,), chunks=(1,), dtype=np.uint8, fill_value=0, compressors=None)
        g.attrs[_CHECKPOINT_ATTR] = {
            "format": _CHECKPOINT_FORMAT,
            "call": self.call,
            "n_blocks": self.n_blocks,
            "block_rows": self.block_rows,
            "embedding_dim": int(dim),
            "layout": "features[k] are the features of table row rows[k] (rows -1: padding); block b is done "
            "when done[b] == 1",
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self.path)
        self.group = zarr.open_group(str(self.path), mode="r+")

    def write(self, b: int, feats: np.ndarray) -> None:
        if self.group is None:
            self._create(feats.shape[1])
        if self.group["features"].shape[1] != feats.shape[1]:
            msg = (
                f"The encoder returned {feats.shape[1]} features, the checkpoint holds "
                f"{self.group['features'].shape[1]}."
            )
            raise ValueError(msg)
        block = np.full((self.block_rows, feats.shape[1]), np.nan, np.float32)
        block[: len(feats)] = feats
        self.group["features"][b * self.block_rows : (b + 1) * self.block_rows] = block
        self.group["done"][b] = 1  # last: the block counts only once its features are on disk
        self.done[b] = True

    def read(self, n_obs: int) -> np.ndarray:
        g = self.group
        out = np.full((n_obs, g["features"].shape[1]), np.nan, np.float32)
        for b in range(self.n_blocks):
            sl = slice(b * self.block_rows, (b + 1) * self.block_rows)
            rows = self.plan_rows[sl]
            keep = rows >= 0
            out[rows[keep]] = g["features"][sl][keep]
        return out


def call_record(enc, model, weights, random_state, reader, size_index, dtype, batch_size, n_obs, regions) -> dict:
    """What a checkpoint must match to be resumed (JSON-serialisable)."""
    return {
        "model": enc.name if isinstance(model, str) else f"callable {enc.name}",
        "weights_sha256": enc.weights_sha256,
        "weights": "random" if isinstance(weights, str) and weights == "random" else "pretrained",
        "random_state": int(random_state) if isinstance(weights, str) and weights == "random" else None,
        "dtype": dtype,
        "batch_size": int(batch_size),
        "n_obs": int(n_obs),
        "patch_size_um": float(reader.patch_size_um),
        "target_px": int(reader.target_px),
        "context_index": int(size_index),
        "regions": {
            r: {
                "image": str(v["image"]),
                "level": int(np.atleast_1d(v["level"])[size_index]),
                "window_px": [int(x) for x in np.asarray(v["window_px"])[size_index]],
                "channels": [int(c) for c in np.atleast_1d(v["channels"])],
                "intensity_range": None
                if v.get("intensity_range") is None
                else np.asarray(v["intensity_range"], float).round(6).tolist(),
            }
            for r, v in sorted(regions.items())
        },
    }


# --------------------------------------------------------------------------------------------------------------
# sinks: one interface (`put(block, features)`, `close()`, `result(n_obs)`) for memory and checkpoint
# --------------------------------------------------------------------------------------------------------------
class MemorySink:
    """Features of every block in an ``(n_obs, D)`` float32 array (NaN rows for observations without a patch)."""

    def __init__(self, plan_rows: np.ndarray, block_rows: int, n_obs: int):
        self.plan_rows = plan_rows
        self.block_rows = block_rows
        self.n_obs = n_obs
        self.feats: np.ndarray | None = None
        self.resumed = 0
        self.done = np.zeros(len(plan_rows) // block_rows, bool)

    def put(self, b: int, feats: np.ndarray) -> None:
        if self.feats is None:
            self.feats = np.full((self.n_obs, feats.shape[1]), np.nan, dtype=np.float32)
        self.feats[self.plan_rows[b * self.block_rows : b * self.block_rows + len(feats)]] = feats

    def close(self, *, wait: bool = True) -> None:
        return None

    def result(self) -> np.ndarray | None:
        return self.feats


class CheckpointSink:
    """Blocks written to a :class:`_Checkpoint` store by a background thread, so the encoder does not wait for zarr.

    At most ``max_pending`` writes are queued (each holds one block's features); a failed write is raised at the
    next ``put`` or at ``close``.
    """

    def __init__(self, ckpt: _Checkpoint, n_obs: int, max_pending: int = 2):
        self.ckpt = ckpt
        self.n_obs = n_obs
        self.resumed = int(ckpt.done.sum())
        self.done = ckpt.done
        self.max_pending = max_pending
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="morphst-checkpoint-writer")
        self.pending: deque = deque()

    def put(self, b: int, feats: np.ndarray) -> None:
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self.ckpt.write, b, feats))

    def close(self, *, wait: bool = True) -> None:
        """Finish the queued writes (``wait=False``: after an error, finish them but raise none of theirs)."""
        try:
            while self.pending:
                f = self.pending.popleft()
                if wait:
                    f.result()
                else:
                    f.exception()
        finally:
            self.pool.shutdown(wait=True)

    def result(self) -> np.ndarray | None:
        return None if self.ckpt.group is None else self.ckpt.read(self.n_obs)
