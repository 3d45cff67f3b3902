"""Patch embeddings: stream spot-centred patches through an encoder into ``obsm``.

Modules: ``_api`` (:func:`embed_patches`), ``_compute`` (batch plan, autocast, encoding), ``_checkpoint`` (the
resumable zarr store), ``_distributed`` (dask.distributed tasks).
"""

from ._api import embed_patches
from ._checkpoint import _BLOCK_PATCHES
from ._compute import _autocast_dtype
from ._distributed import _WORKER_MODELS

# private, for tests and benchmarks: the block size (read at call time) and the per-worker model cache
__all__ = ["_BLOCK_PATCHES", "_WORKER_MODELS", "_autocast_dtype", "embed_patches"]
