"""One pyramid level read window by window from its decoded chunks (a bounded LRU cache); used by the patch reader."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

#: Chunks larger than this are not cached whole: windows are sliced from them directly.
_MAX_CHUNK_BYTES = 64 * 2**20
#: Default bytes of decoded chunks kept per reader (bounded memory, independent of the image size).
_CACHE_BYTES = 128 * 2**20


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------
def _zarr_source(data):
    """The zarr array behind a dask array made by ``dask.array.from_zarr`` with nothing on top, else ``None``."""
    try:
        layers = data.dask.layers
    except AttributeError:  # pragma: no cover
        return None
    if len(layers) != 2:
        return None
    for name, layer in layers.items():
        if name.startswith("original-from-zarr") and hasattr(layer, "values"):
            vals = list(layer.values())
            if len(vals) == 1:
                z = vals[0]
                if (
                    type(z).__module__.startswith("zarr")
                    and tuple(z.shape) == tuple(data.shape)
                    and z.dtype == data.dtype
                ):
                    return z
    return None


class _LevelReader:
    """Windows of one pyramid level, assembled from decoded chunks kept in a bounded LRU cache."""

    def __init__(self, arr, channels: list[int], mode: str, irange, fill: int, cache_bytes: int = _CACHE_BYTES):
        data = arr.data if hasattr(arr, "dims") else arr
        self.data = data
        self.channels = channels
        self.mode = mode
        self.irange = irange
        self.fill = fill
        self.h, self.w = data.shape[-2:]
        self.is_dask = hasattr(data, "dask")
        # a level that is a plain `from_zarr` dask array is read from the zarr array itself (half the overhead)
        self.zarr = _zarr_source(data) if self.is_dask else None
        if self.is_dask:
            ch = data.chunks
            self.yb = np.cumsum((0, *ch[-2]))
            self.xb = np.cumsum((0, *ch[-1]))
            chunk_bytes = max(ch[-2]) * max(ch[-1]) * 3
            self.direct = chunk_bytes > _MAX_CHUNK_BYTES
        else:
            self.direct = True
        self.cache: OrderedDict = OrderedDict()  # decoded chunks, least recently used first
        self.loading: dict = {}  # chunk key -> Event set when the thread decoding it is done
        self.cache_bytes = cache_bytes
        self.nbytes = 0
        self.lock = threading.Lock()

    def _convert(self, block: np.ndarray) -> np.ndarray:
        """(C, h, w) of the selected channels -> (h, w, 3) uint8.

        Intensities map per channel through ``irange``; NaN pixels become ``fill``; RGBA is composited over white.
        """
        block = np.asarray(block)
        alpha = None
        if self.mode == "rgba":
            a = block[3].astype(np.float32)
            if block.dtype.kind in "iu":
                a /= float(np.iinfo(block.dtype).max)
            alpha = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
            block = block[:3]
        nan = np.isnan(block).any(axis=0) if block.dtype.kind == "f" else None
        if self.irange is not None or alpha is not None or nan is not None:
            v = block.astype(np.float32)
            if self.irange is not None:
                lo = self.irange[:, 0, None, None].astype(np.float32)
                v = (v - lo) * (255.0 / (self.irange[:, 1, None, None] - self.irange[:, 0, None, None])).astype(
                    np.float32
                )
            v = np.clip(v, 0, 255)
            if alpha is not None:
                v = v * alpha + 255.0 * (1.0 - alpha)
            if nan is not None and nan.any():
                v[:, nan] = self.fill
            block = (v + 0.5).astype(np.uint8)
        elif block.dtype != np.uint8:
            block = block.astype(np.uint8)
        # (C, h, w) -> (h, w, 3) one channel at a time: ~3x faster than a moveaxis copy of the whole block
        out = np.empty((*block.shape[-2:], 3), np.uint8)
        for c in range(3):
            out[:, :, c] = block[0 if self.mode == "grey" else c]
        return out

    def _read(self, y0, y1, x0, x1) -> np.ndarray:
        if self.zarr is not None:
            if len(self.channels) == self.data.shape[0]:
                return self._convert(self.zarr[:, y0:y1, x0:x1])
            return self._convert(self.zarr.get_orthogonal_selection((self.channels, slice(y0, y1), slice(x0, x1))))
        sub = (
            self.data[self.channels, y0:y1, x0:x1]
            if len(self.channels) != self.data.shape[0]
            else self.data[:, y0:y1, x0:x1]
        )
        if self.is_dask:
            sub = sub.compute(scheduler="synchronous")
        return self._convert(sub)

    def acquire(self, keys) -> dict:
        """The decoded chunks ``keys`` (a dict of references): from the cache, else decoded here once.

        Thread-safe: a chunk that another thread is decoding is waited for, not decoded twice. This thread decodes
        the chunks it claimed before waiting for the others, so two threads never wait on each other. The returned
        references keep the blocks alive while a batch is assembled, whatever the cache evicts meanwhile.
        """
        out: dict = {}
        mine, theirs = [], []
        with self.lock:
            for key in keys:
                block = self.cache.get(key)
                if block is not None:
                    self.cache.move_to_end(key)
                    out[key] = block
                elif key in self.loading:
                    theirs.append((key, self.loading[key]))
                else:
                    self.loading[key] = threading.Event()
                    mine.append(key)
        try:
            for key in mine:
                block = self._decode(key)
                with self.lock:
                    self.cache[key] = block
                    self.nbytes += block.nbytes
                    self.loading.pop(key).set()
                out[key] = block
        finally:  # on an error, release the claims left, so no other thread waits for them
            with self.lock:
                for key in mine:
                    event = self.loading.pop(key, None)
                    if event is not None:
                        event.set()
        for key, event in theirs:
            event.wait()
            with self.lock:
                block = self.cache.get(key)
            out[key] = block if block is not None else self._decode(key)  # failed there, or evicted already
        return out

    def evict(self, keep: set) -> None:
        """Drop least recently used chunks until the cache holds at most ``cache_bytes`` (``keep`` stays)."""
        with self.lock:
            for key in [k for k in self.cache if k not in keep]:
                if self.nbytes <= self.cache_bytes:
                    break
                self.nbytes -= self.cache.pop(key).nbytes

    def _decode(self, key: tuple[int, int]) -> np.ndarray:
        i, j = key
        return self._read(int(self.yb[i]), int(self.yb[i + 1]), int(self.xb[j]), int(self.xb[j + 1]))

    def window(self, x0: int, y0: int, wx: int, wy: int, out: np.ndarray) -> None:
        """Fill ``out`` (wy, wx, 3) with the window at (x0, y0) read directly (no chunk cache), padding outside."""
        xa, xb_ = max(x0, 0), min(x0 + wx, self.w)
        ya, yb_ = max(y0, 0), min(y0 + wy, self.h)
        if xa >= xb_ or ya >= yb_:
            out[:] = self.fill
            return
        if xa > x0 or ya > y0 or xb_ < x0 + wx or yb_ < y0 + wy:
            out[:] = self.fill
        out[ya - y0 : yb_ - y0, xa - x0 : xb_ - x0] = self._read(ya, yb_, xa, xb_)

    def plan(self, xy0: np.ndarray, w: tuple[int, int]) -> np.ndarray:
        """Per window (rows of ``xy0``), vectorised: ``[x0, y0, xa, xb, ya, yb, i0, i1, j0, j1]``.

        ``xa:xb, ya:yb`` is the part inside the image (empty when ``xa >= xb`` or ``ya >= yb``) and
        ``i0..i1, j0..j1`` (inclusive) the chunk rows and columns it touches.
        """
        x0, y0 = xy0[:, 0].astype(np.int64), xy0[:, 1].astype(np.int64)
        xa, xb_ = np.maximum(x0, 0), np.minimum(x0 + w[0], self.w)
        ya, yb_ = np.maximum(y0, 0), np.minimum(y0 + w[1], self.h)
        i0 = np.searchsorted(self.yb, ya, side="right") - 1
        i1 = np.searchsorted(self.yb, yb_ - 1, side="right") - 1
        j0 = np.searchsorted(self.xb, xa, side="right") - 1
        j1 = np.searchsorted(self.xb, xb_ - 1, side="right") - 1
        return np.column_stack([x0, y0, xa, xb_, ya, yb_, i0, i1, j0, j1])

    @staticmethod
    def plan_keys(plan: np.ndarray) -> list[tuple[int, int]]:
        """Sorted chunk keys ``(i, j)`` touched by the windows of ``plan``."""
        keys = set()
        for _x0, _y0, xa, xb_, ya, yb_, i0, i1, j0, j1 in plan.tolist():
            if xa < xb_ and ya < yb_:
                keys.update((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
        return sorted(keys)

    def fill_windows(self, plan: np.ndarray, w: tuple[int, int], buf: np.ndarray, blocks: dict) -> None:
        """Fill ``buf[k]`` (wy, wx, 3) with window ``k`` of ``plan`` from the decoded chunks ``blocks``.

        ``blocks`` comes from :meth:`acquire`; pixels outside the image are padded with the fill value.
        """
        wx, wy = w
        yb, xb = self.yb.tolist(), self.xb.tolist()
        cache = blocks
        for k, (x0, y0, xa, xb_, ya, yb_, i0, i1, j0, j1) in enumerate(plan.tolist()):
            out = buf[k]
            if xa >= xb_ or ya >= yb_:
                out[:] = self.fill
                continue
            if xa > x0 or ya > y0 or xb_ < x0 + wx or yb_ < y0 + wy:
                out[:] = self.fill
            for i in range(i0, i1 + 1):
                cy0, cy1 = yb[i], yb[i + 1]
                sy0, sy1 = max(ya, cy0), min(yb_, cy1)
                for j in range(j0, j1 + 1):
                    cx0, cx1 = xb[j], xb[j + 1]
                    sx0, sx1 = max(xa, cx0), min(xb_, cx1)
                    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = cache[(i, j)][
                        sy0 - cy0 : sy1 - cy0, sx0 - cx0 : sx1 - cx0
                    ]
