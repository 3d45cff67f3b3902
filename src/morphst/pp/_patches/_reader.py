"""Patch reader: batches of patches recorded by `extract_patches`, read chunk by chunk by a pool of worker threads."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..._constants import Key
from ..._settings import settings
from ..._utils import get_adata, image_levels, run_first

if TYPE_CHECKING:
    from spatialdata import SpatialData
from ._geometry import window_corners
from ._level import _CACHE_BYTES, _LevelReader
from ._table import table_regions

#: Windows cut and resampled at a time inside a batch: bounds each worker's reused window buffer.
_SUB_BATCH = 32
#: Bytes of patches in flight (being read, or read and not yet taken): caps the number of batches ahead.
_INFLIGHT_BYTES = 2**30

_local = threading.local()


def _window_buffer(n: int, wy: int, wx: int) -> np.ndarray:
    """The calling thread's reused ``(n, wy, wx, 3)`` uint8 buffer (a fresh one per batch page-faults each time)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < n or buf.shape[1:] != (wy, wx, 3):
        buf = np.empty((max(n, _SUB_BATCH), wy, wx, 3), np.uint8)
        _local.buf = buf
    return buf[:n]


def empty_patches(n: int, target_px: int) -> np.ndarray:
    """An uninitialised ``(n, T, T, 3)`` uint8 array; above 64 MiB in memory that asks for transparent huge pages.

    Writing fresh memory costs a page fault per 4 KiB page; with 2 MiB pages (``madvise(MADV_HUGEPAGE)``, Linux)
    the patches of ``get_patches`` are written about twice as fast on a busy machine. Elsewhere: ``np.empty``.
    """
    import mmap

    shape = (n, target_px, target_px, 3)
    nbytes = int(np.prod(shape))
    if nbytes < 64 * 2**20 or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, np.uint8)
    buf = mmap.mmap(-1, nbytes)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # pragma: no cover - kernels without THP
        pass
    return np.frombuffer(buf, dtype=np.uint8).reshape(shape)


def _resample(batch: np.ndarray, target_px: int):
    """(B, h, w, 3) uint8 -> torch uint8 (B, 3, T, T), channels_last, bilinear with antialias."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(batch).permute(0, 3, 1, 2)
    if batch.shape[1] == target_px and batch.shape[2] == target_px:
        return t
    return F.interpolate(t, size=(target_px, target_px), mode="bilinear", antialias=True, align_corners=False)


@dataclass
class _Group:
    reader: _LevelReader
    rows: np.ndarray
    xy0: np.ndarray
    w: tuple[int, int]


def _chunk_of(g: _Group, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunk row and column (of the level's dask chunks) that hold the centres of the windows ``pos`` of ``g``."""
    cy = np.searchsorted(g.reader.yb, g.xy0[pos, 1] + g.w[1] // 2, side="right")
    cx = np.searchsorted(g.reader.xb, g.xy0[pos, 0] + g.w[0] // 2, side="right")
    return cy, cx


class PatchReader:
    """Stream patches recorded by :func:`extract_patches` in batches, reading only the chunks they touch.

    ``n_workers`` threads (default ``mst.settings.n_jobs``) each read whole batches: decode the chunks a batch
    touches (each chunk once, shared through a cache of ``cache_bytes``), cut and pad its windows and resample them
    (bilinear, antialiased; torch). Several batches are in flight ahead of the consumer, so reading overlaps
    whatever the consumer does. Memory is bounded by the cache and the batches in flight, not by the image size.
    """

    def __init__(
        self,
        sdata: SpatialData,
        *,
        table_key: str = Key.TABLE,
        size_index: int = 0,
        n_workers: int | None = None,
        cache_bytes: int = _CACHE_BYTES,
    ):
        adata = get_adata(sdata, table_key)
        info = adata.uns.get(Key.PATCHES)
        if not isinstance(info, dict) or "regions" not in info or Key.PATCH_X not in adata.obs:
            msg = f"No patch geometry in table {table_key!r}; {run_first('pp.extract_patches', None)}."
            raise KeyError(msg)
        patch_sizes_um = list(np.atleast_1d(info["sizes_um"]).astype(float))
        if not 0 <= size_index < len(patch_sizes_um):
            msg = (
                f"Context index {size_index - 1} out of range; the patches have context sizes {patch_sizes_um[1:]} µm "
                "(run `mst.pp.extract_patches(sdata, context_sizes_um=(...))` to add some)."
            )
            raise ValueError(msg)
        self.patch_size_um = patch_sizes_um[size_index]
        self.target_px = int(info["target_px"])
        self.n_obs = adata.n_obs
        self.n_workers = n_workers or settings.n_workers
        _, region_key, _ = table_regions(adata)
        region_col = adata.obs[region_key].astype(str).to_numpy()
        centres = adata.obs[[Key.PATCH_X, Key.PATCH_Y]].to_numpy(float)
        self.groups: dict[str, _Group] = {}
        self.row_group = np.full(self.n_obs, "", dtype=object)
        for region, r in info["regions"].items():
            if r["image"] not in sdata.images:
                msg = f"Image {r['image']!r} of the patch geometry is gone; run `mst.pp.extract_patches` again."
                raise KeyError(msg)
            levels = image_levels(sdata.images[r["image"]])
            lvl = int(np.atleast_1d(r["level"])[size_index])
            f = tuple(np.asarray(r["level_factor"], float)[size_index])
            w = tuple(int(v) for v in np.asarray(r["window_px"])[size_index])
            irange = r.get("intensity_range")  # absent: uint8 pixels as they are
            irange = None if irange is None else np.asarray(irange, float).reshape(-1, 2)
            reader = _LevelReader(
                levels[lvl],
                [int(c) for c in np.atleast_1d(r["channels"])],
                str(r["channel_mode"]),
                irange,
                int(r["fill_value"]),
                cache_bytes,
            )
            rows = np.flatnonzero((region_col == region) & np.isfinite(centres[:, 0]))
            xy0 = window_corners(centres[rows], f, w)
            self.groups[region] = _Group(reader, rows, xy0, w)
            self.row_group[rows] = region

    @classmethod
    def from_level(
        cls,
        level,
        xy0: np.ndarray,
        window_px: tuple[int, int],
        *,
        target_px: int,
        channels: Sequence[int],
        channel_mode: str,
        intensity_range: np.ndarray | None,
        fill_value: int,
        n_workers: int | None = None,
        cache_bytes: int = _CACHE_BYTES,
    ) -> PatchReader:
        """A reader of given windows of one pyramid level, without a SpatialData or table (rows ``0..n-1``).

        For a process that opens the level itself, e.g. a dask worker reading it from the zarr store
        (``dask.array.from_zarr``); the arguments are those of a group of a reader built from the SpatialData, so
        the patches are the same bytes.
        """
        self = cls.__new__(cls)
        xy0 = np.asarray(xy0, dtype=np.int64).reshape(-1, 2)
        self.patch_size_um = float("nan")
        self.target_px = int(target_px)
        self.n_obs = len(xy0)
        self.n_workers = n_workers or settings.n_workers
        rd = _LevelReader(
            level, [int(c) for c in channels], str(channel_mode), intensity_range, int(fill_value), cache_bytes
        )
        self.groups = {"level": _Group(rd, np.arange(len(xy0)), xy0, (int(window_px[0]), int(window_px[1])))}
        self.row_group = np.full(len(xy0), "level", dtype=object)
        return self

    @property
    def rows(self) -> np.ndarray:
        """Table rows that have a patch."""
        return np.flatnonzero(self.row_group != "")

    def chunk_order(self, rows: np.ndarray) -> np.ndarray:
        """A permutation of ``rows`` that reads them image by image, in chunk order (row-major over chunks).

        Reading in this order touches each chunk once however the rows were asked for (random order thrashed the
        chunk cache: ~550 patches/s against ~4,000/s in spot order); callers put the patches back in place.
        """
        rows = np.asarray(rows, dtype=np.int64)
        names = self.row_group[rows]
        bad = names == ""
        if bad.any():
            return np.arange(len(rows))  # _plan raises the clear error
        group_id = np.zeros(len(rows), np.int64)
        cy = np.zeros(len(rows), np.int64)
        cx = np.zeros(len(rows), np.int64)
        for k, (name, g) in enumerate(self.groups.items()):
            sel = names == name
            if not sel.any():
                continue
            group_id[sel] = k
            if g.reader.is_dask and not g.reader.direct:
                pos = pd.Series(np.arange(len(g.rows)), index=g.rows).loc[rows[sel]].to_numpy()
                cy[sel], cx[sel] = _chunk_of(g, pos)
        return np.lexsort((cx, cy, group_id))

    def _plan(self, rows: np.ndarray | None, sort: bool) -> list[tuple[_Group, np.ndarray]]:
        """Per group, positions (into group arrays) to read, in the order to read them."""
        plan = []
        if rows is None:
            for g in self.groups.values():
                pos = np.arange(len(g.rows))
                if sort and g.reader.is_dask and not g.reader.direct:
                    cy, cx = _chunk_of(g, pos)
                    pos = np.lexsort((cx, cy))
                plan.append((g, pos))
            return plan
        # keep the requested order: consecutive runs of the same group
        rows = np.asarray(rows)
        bad = rows[self.row_group[rows] == ""]
        if len(bad):
            msg = (
                f"{len(bad)} requested rows have no patch geometry (rows outside the shapes given to extract_patches)."
            )
            raise ValueError(msg)
        lookup = {name: pd.Series(np.arange(len(g.rows)), index=g.rows) for name, g in self.groups.items()}
        names = self.row_group[rows]
        start = 0
        for k in range(1, len(rows) + 1):
            if k == len(rows) or names[k] != names[start]:
                g = self.groups[names[start]]
                plan.append((g, lookup[names[start]].loc[rows[start:k]].to_numpy()))
                start = k
        return plan

    def _read_batch(self, g: _Group, p: np.ndarray, keys: list, dest: np.ndarray, idx: np.ndarray | None) -> None:
        """Cut and resample the windows ``p`` of group ``g`` into ``dest[idx]`` (``dest[:len(p)]`` for ``None``).

        Runs in a worker thread: the chunk decoding (zarr codecs), the copies and the resampling (torch's uint8
        antialiased kernel, one thread per call) release the GIL, so workers run in parallel.
        """
        rd = g.reader
        blocks = None if rd.direct else rd.acquire(keys)
        plan = None if rd.direct else rd.plan(g.xy0[p], g.w)
        wx, wy = g.w
        for s in range(0, len(p), _SUB_BATCH):
            e = min(s + _SUB_BATCH, len(p))
            buf = _window_buffer(e - s, wy, wx)
            if rd.direct:
                for i in range(s, e):
                    rd.window(int(g.xy0[p[i], 0]), int(g.xy0[p[i], 1]), wx, wy, buf[i - s])
            else:
                rd.fill_windows(plan[s:e], g.w, buf, blocks)
            res = _resample(buf, self.target_px).permute(0, 2, 3, 1).numpy()
            if idx is None:
                dest[s:e] = res
            else:
                dest[idx[s:e]] = res

    def _run(
        self, batches: list[tuple[_Group, np.ndarray]], task: Callable, prefetch: int
    ) -> Iterator[tuple[_Group, np.ndarray, Any]]:
        """Run ``task(k, g, p, keys)`` for every batch on the worker pool; yield the results in order.

        Up to ``n_workers + prefetch`` batches are in flight (at least 2, at most ``_INFLIGHT_BYTES`` of patches).
        The decoded-chunk cache keeps the chunks of the batches in flight and evicts others down to its bound.
        """
        px = self.target_px**2 * 3 * max((len(p) for _, p in batches), default=1)
        depth = max(2, min(self.n_workers + max(0, prefetch), _INFLIGHT_BYTES // px))
        keys = [[] if g.reader.direct else g.reader.plan_keys(g.reader.plan(g.xy0[p], g.w)) for g, p in batches]
        pending: deque = deque()
        todo = iter(enumerate(batches))
        pool = ThreadPoolExecutor(max_workers=self.n_workers, thread_name_prefix="morphst-patch-reader")

        def submit() -> None:
            nxt = next(todo, None)
            if nxt is not None:
                k, (g, p) = nxt
                pending.append((k, pool.submit(task, k, g, p, keys[k])))

        try:
            for _ in range(depth):
                submit()
            while pending:
                k, fut = pending.popleft()
                result = fut.result()
                submit()
                g, p = batches[k]
                g.reader.evict({key for j, _ in pending if batches[j][0] is g for key in keys[j]})
                yield g, p, result
        finally:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)

    def batch_list(self, rows, batch_size: int) -> list[tuple[_Group, np.ndarray]]:
        """The batches of :meth:`iter_batches`: ``(group, positions in the group)``, ``batch_size`` at most each."""
        plan = self._plan(None if rows is None else np.asarray(rows, dtype=np.int64), sort=rows is None)
        return [(g, pos[b : b + batch_size]) for g, pos in plan for b in range(0, len(pos), batch_size)]

    def iter_batches(
        self,
        rows: Sequence[int] | np.ndarray | None = None,
        *,
        batch_size: int = 64,
        prefetch: int = 2,
        pin_memory: bool = False,
        reuse_buffers: bool = False,
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(table_rows, patches)`` with ``patches`` a torch uint8 tensor ``(B, 3, T, T)`` (channels_last).

        With ``rows=None`` every row with a patch is read, in an order that follows the image chunks; otherwise
        the given rows, in that order. ``n_workers`` threads read whole batches in parallel, up to
        ``n_workers + prefetch`` batches ahead of the consumer. ``pin_memory``: the patches are in page-locked
        memory (CUDA), so that ``.to("cuda", non_blocking=True)`` copies without blocking the consumer.
        ``reuse_buffers``: a batch's memory is reused for a later batch once the next one is asked for (for
        consumers done with a batch by then, as the embedding loop; saves the page faults of fresh memory).
        """
        import torch

        t = self.target_px
        batches = self.batch_list(rows, batch_size)
        n_max = max((len(p) for _, p in batches), default=0)
        free: list = []  # buffers handed back by the consumer, for reuse

        def task(k, g, p, keys):
            if reuse_buffers and not pin_memory:
                try:
                    out = free.pop()
                except IndexError:
                    out = torch.empty((n_max, t, t, 3), dtype=torch.uint8)
                out = out[: len(p)]
            else:
                out = torch.empty((len(p), t, t, 3), dtype=torch.uint8, pin_memory=pin_memory)
            self._read_batch(g, p, keys, out.numpy(), None)
            return out

        for g, p, out in self._run(batches, task, prefetch):
            yield g.rows[p], out.permute(0, 3, 1, 2)
            if reuse_buffers and not pin_memory and out.shape[0] == n_max:  # the consumer asked for the next batch
                free.append(out)

    def read_into(self, rows: np.ndarray, out: np.ndarray, *, batch_size: int = 64) -> None:
        """Read the patches of table ``rows`` into ``out`` (``(len(rows), T, T, 3)`` uint8), in that order.

        The rows are read in chunk order (:meth:`chunk_order`) and each worker writes its batch straight to its
        places in ``out``.
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = self.chunk_order(rows)
        batches = self.batch_list(rows[order], batch_size)
        starts = np.cumsum([0] + [len(p) for _, p in batches])

        def task(k, g, p, keys):
            self._read_batch(g, p, keys, out, order[starts[k] : starts[k + 1]])

        for _ in self._run(batches, task, prefetch=0):
            pass


def size_index_of(context_index) -> int:
    """Size index for ``context_index``: ``None`` -> 0 (the main patch), an integer ``k >= 0`` -> ``k + 1``.

    Raises
    ------
    ValueError
        For booleans (``True`` would read as index 1, ``False`` as the first context size), negative or
        non-integer values.
    """
    if context_index is None:
        return 0
    if (
        isinstance(context_index, bool | np.bool_)
        or not isinstance(context_index, int | np.integer)
        or context_index < 0
    ):
        msg = (
            f"`context_index` must be None (the main patch) or the 0-based index of a context size recorded by "
            f"`mst.pp.extract_patches(context_sizes_um=...)`, got {context_index!r}."
        )
        raise ValueError(msg)
    return int(context_index) + 1
