"""Decode a JPEG once into a chunked zarr array in the cache, then open it lazily with dask."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from .._settings import settings

#: Bump when the on-disk layout of the cached images changes.
_CACHE_VERSION = "1"
CHUNK_PX = 1024


def _file_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CACHE_VERSION}".encode())
    return h.hexdigest()[:20]


def lazy_rgb_image(path: Path):
    """Return the image at ``path`` as a lazy dask array of shape ``(3, height_px, width_px)``, uint8.

    The JPEG is decoded once (Pillow) and stored as a chunked zarr array in ``mst.settings.cache_dir``; later calls
    read only the chunks they touch. Decoding is lossless with respect to the JPEG (no resampling).
    """
    import dask.array as da

    cache = settings.cache_dir / "images" / f"{path.stem}-{_file_key(path)}.zarr"
    if not cache.exists():
        from PIL import Image

        limit = Image.MAX_IMAGE_PIXELS  # whole-slide JPEGs exceed Pillow's bomb guard: lift it for this file only
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        da.from_array(arr, chunks=(3, CHUNK_PX, CHUNK_PX)).to_zarr(str(tmp))
        try:
            tmp.rename(cache)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return da.from_zarr(str(cache))
