"""Patch embeddings: stream spot-centred patches through an encoder into ``obsm``.

Modules: ``_api`` (:func:`embed_patches`: validation, the runner, one write), ``_compute`` (the plan, the encoder on
its device with batches in flight, the local runner), ``_checkpoint`` (where blocks go: memory or the resumable
zarr store), ``_distributed`` (the dask.distributed runner and its worker tasks).
"""

from ._api import embed_patches

__all__ = ["embed_patches"]
