"""Encoding: the encoder on its device with batches in flight, the batch/block plan, and the local runner."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..._settings import settings

#: Batches launched on a CUDA device before the features of the oldest are fetched: the device always has the
#: next batch queued while the host copies features back and hands in the batch after.
_DEVICE_DEPTH = 2


# --------------------------------------------------------------------------------------------------------------
# the plan: fixed by the rows and the batch size, shared by a fresh run, a resumed run and the workers
# --------------------------------------------------------------------------------------------------------------
@dataclass
class EmbedPlan:
    """Table rows of every batch in reading order, batches grouped into blocks (the unit of checkpoints/tasks).

    ``plan_rows`` lays the blocks out ``block_rows`` apart (``-1``: padding of a short last block), as the
    checkpoint store holds them.
    """

    batches: list[np.ndarray]
    blocks: list[list[int]]
    block_rows: int
    plan_rows: np.ndarray

    @classmethod
    def build(cls, reader, batch_size: int, block_patches: int) -> EmbedPlan:
        """Image by image, chunk by chunk, ``batch_size`` at a time; ``block_patches // batch_size`` batches a block.

        The same split as :meth:`PatchReader.iter_batches` with ``rows=None``; a run that skips finished blocks
        reads the others with exactly these compositions (within an image every batch but the last is full).
        """
        batches = [g.rows[p] for g, p in reader.batch_list(None, batch_size)]
        per_block = max(1, block_patches // batch_size)
        blocks = [list(range(k, min(k + per_block, len(batches)))) for k in range(0, len(batches), per_block)]
        block_rows = per_block * batch_size
        plan_rows = np.full(len(blocks) * block_rows, -1, np.int64)
        for b, ks in enumerate(blocks):
            r = np.concatenate([batches[k] for k in ks])
            plan_rows[b * block_rows : b * block_rows + len(r)] = r
        return cls(batches, blocks, block_rows, plan_rows)

    def rows_of(self, blocks: Iterable[int]) -> np.ndarray:
        """Table rows of ``blocks``, batch after batch."""
        rows = [self.batches[k] for b in blocks for k in self.blocks[b]]
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)

    @property
    def n_patches(self) -> int:
        return int((self.plan_rows >= 0).sum())


# --------------------------------------------------------------------------------------------------------------
# the encoder on its device
# --------------------------------------------------------------------------------------------------------------
class DeviceEncoder:
    """An encoder moved to its device, with its precision; encodes a stream of batches, several in flight.

    On CUDA, batch ``k + 1`` is copied (from pinned memory, without blocking) and launched before the features of
    batch ``k`` are fetched, and those come back through a pinned buffer and an event, so the device never waits for
    the host between batches. On the CPU (or for encoders that are not torch models) batches run one after another,
    while the patch reader's threads prepare the next ones.
    """

    def __init__(self, enc, device: str | None, dtype: str):
        import torch

        self.enc = enc
        self.dev = settings.resolve_device(device) if enc.uses_torch else torch.device("cpu")
        self.autocast_dtype = settings.resolve_autocast(self.dev, dtype) if enc.uses_torch else None
        enc.to(self.dev)
        self.channels_last = enc.uses_torch and self.dev.type in ("cpu", "cuda")
        if self.channels_last:
            enc.channels_last()
        self.cuda = enc.uses_torch and self.dev.type == "cuda"
        self.pin_memory = self.cuda
        # on the CPU a batch is encoded before the next is asked for: the reader may reuse its memory
        self.reuse_buffers = self.dev.type == "cpu"
        self.depth = _DEVICE_DEPTH if self.cuda else 1  # batches launched before the oldest one's features are taken

    @property
    def info(self) -> dict:
        return {"device": str(self.dev), "autocast": self.autocast_dtype is not None}

    def _autocast(self):
        import torch

        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.dev.type, dtype=self.autocast_dtype)

    def _launch(self, patches):
        """Start one batch: ``(features or pending copy, event or None, n)``."""
        import torch

        x = patches.to(self.dev, non_blocking=True) if self.enc.uses_torch else patches
        x = self.enc.transform(x)
        if self.channels_last and hasattr(x, "contiguous") and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            f = self.enc.encode(x)
        if self.cuda and isinstance(f, torch.Tensor) and f.is_cuda:
            f = f.float()
            host = torch.empty(f.shape, dtype=f.dtype, pin_memory=True)
            host.copy_(f, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return host, event, len(patches)
        return f, None, len(patches)

    def _finish(self, launched) -> np.ndarray:
        """Wait for a launched batch: ``(B, D)`` float32; refuses a wrong shape or non-finite features."""
        import torch

        f, event, n = launched
        if event is not None:
            event.synchronize()
        f = f.float().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.float32)
        return _checked(f, n, self.enc.name)

    def encode_stream(self, batches: Iterable) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(rows, patches)`` batches -> ``(rows, features)``, in order."""
        import torch

        pending: deque = deque()
        for rows, patches in batches:
            with torch.inference_mode():  # entered per batch: a generator must not leave it on in its caller
                pending.append((rows, self._launch(patches)))
            if len(pending) >= self.depth:
                rows0, launched = pending.popleft()
                yield rows0, self._finish(launched)
        while pending:
            rows0, launched = pending.popleft()
            yield rows0, self._finish(launched)


def _checked(f: np.ndarray, n: int, name: str) -> np.ndarray:
    if f.ndim != 2 or f.shape[0] != n:
        msg = (
            f"The encoder {name!r} returned shape {f.shape} for a batch of {n} patches; it must return "
            "(batch, n_features)."
        )
        raise ValueError(msg)
    if not np.isfinite(f).all():
        bad = ~np.isfinite(f).all(axis=1)
        msg = (
            f"The encoder {name!r} returned NaN or infinite features for {int(bad.sum())} of {n} patches; "
            "nothing was written. Check the encoder (e.g. a division by a zero-variance patch) or its weights."
        )
        raise ValueError(msg)
    return f.astype(np.float32, copy=False)


@dataclass
class EmbedJob:
    """What a runner needs: the encoder (built here), the reader, the plan, the blocks still to do."""

    enc: object
    reader: object
    plan: EmbedPlan
    needed: list[int]
    batch_size: int


# --------------------------------------------------------------------------------------------------------------
# the local runner
# --------------------------------------------------------------------------------------------------------------
def _observed(batches, on_batch):
    """Pass ``(rows, patches)`` batches through, showing each to ``on_batch`` first (before its buffer is reused)."""
    try:
        for rows, patches in batches:
            on_batch(rows, patches)
            yield rows, patches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class LocalRunner:
    """Runs the blocks in this process: the reader's threads read ahead while the encoder works."""

    def __init__(self, device: str | None, dtype: str, on_batch=None):
        self.device = device
        self.dtype = dtype
        self.on_batch = on_batch  # called with (rows, uint8 patches) of every batch read, e.g. to count blank ones

    def run(self, job, sink, progress) -> dict:
        """Encode the blocks ``job.needed`` of ``job.plan`` and hand each block's features to ``sink.put``."""
        encoder = DeviceEncoder(job.enc, self.device, self.dtype)
        plan = job.plan
        if not job.needed:
            return encoder.info
        it = job.reader.iter_batches(
            plan.rows_of(job.needed),
            batch_size=job.batch_size,
            pin_memory=encoder.pin_memory,
            reuse_buffers=encoder.reuse_buffers,
        )
        if self.on_batch is not None:
            it = _observed(it, self.on_batch)
        stream = encoder.encode_stream(it)
        try:
            for b in job.needed:
                feats = []
                for k in plan.blocks[b]:
                    rows, f = next(stream)
                    if not np.array_equal(rows, plan.batches[k]):  # pragma: no cover - reader contract
                        msg = "Internal error: the patch reader's batches differ from the plan."
                        raise RuntimeError(msg)
                    feats.append(f)
                    progress(len(rows))
                sink.put(b, np.concatenate(feats))
        finally:
            stream.close()
            it.close()
        return encoder.info
