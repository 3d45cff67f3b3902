"""Channels of a patch: which image channels to read, and how intensities that are not uint8 map onto 0..255."""

from __future__ import annotations

import numpy as np


def channel_plan(image, channels) -> tuple[list[int], str]:
    """Which channels to read and how to turn them into RGB: ``("rgb" | "grey")``."""
    c_coords = [str(c) for c in image.coords["c"].to_numpy()] if "c" in image.coords else None
    n_c = image.shape[0]
    if channels is not None:
        idx = []
        for ch in channels:
            if isinstance(ch, str):
                if c_coords is None or ch not in c_coords:
                    msg = f"Channel {ch!r} not in the image; available channels: {c_coords}."
                    raise ValueError(msg)
                idx.append(c_coords.index(ch))
            else:
                if not 0 <= int(ch) < n_c:
                    msg = f"Channel index {ch} out of range for an image with {n_c} channels."
                    raise ValueError(msg)
                idx.append(int(ch))
        if len(idx) not in (1, 3):
            msg = f"`channels` must select 1 (greyscale) or 3 (RGB) channels, got {len(idx)}."
            raise ValueError(msg)
        return idx, "grey" if len(idx) == 1 else "rgb"
    if n_c == 3:
        return [0, 1, 2], "rgb"
    if n_c == 4:  # RGBA: composited over white when read
        return [0, 1, 2, 3], "rgba"
    if n_c == 1:
        return [0], "grey"
    msg = (
        f"The image has {n_c} channels ({c_coords}); pass `channels=` with 1 (greyscale) or 3 (RGB) of them, "
        "e.g. `channels=['DAPI']`."
    )
    raise ValueError(msg)


#: Channel names of a colour (brightfield) image: one intensity range over them keeps the colour balance.
_COLOUR_NAMES = {"r", "g", "b", "red", "green", "blue"}


#: Pixels per channel read from the finest level to set a default intensity range (a strided sample beyond).
MAX_SAMPLE_PX = 4_000_000


def _pixel_sample(level, channels: list[int]) -> np.ndarray:
    """``(n_channels, h', w')`` float64 pixels of ``level`` taken every ``s``-th row and column (no averaging)."""
    h, w = level.shape[-2:]
    step = max(1, int(np.ceil(np.sqrt(h * w / MAX_SAMPLE_PX))))
    arr = level.data[channels, ::step, ::step]
    return np.asarray(arr.compute() if hasattr(arr, "compute") else arr, dtype=np.float64)


def resolve_intensity_range(levels, idx: list[int], mode: str, dtype, intensity_range) -> np.ndarray | None:
    """``None`` for uint8, else per colour channel read ``[[low, high], ...]`` mapped onto 0..255.

    Given (one pair for all channels, or one per channel), or the 0.1/99.9 percentiles of the full-resolution
    pixels (a strided sample of at most ``MAX_SAMPLE_PX`` of them, never a downsampled level, whose averaging
    narrows the range and clips the patches), ignoring NaN: per channel (e.g. named fluorescence markers), except
    for an RGB(A) image read as it is with unnamed channels (0, 1, 2) or three channels named r, g, b, where one
    range over the colour channels keeps the colour balance of brightfield stains.
    """
    if np.dtype(dtype) == np.uint8:
        return None
    colour = idx[:3] if mode == "rgba" else idx
    n = len(colour)
    if intensity_range is not None:
        r = np.asarray(intensity_range, dtype=float)
        if r.shape == (2,):
            r = np.tile(r, (n, 1))
        if r.shape != (n, 2) or not np.isfinite(r).all():
            msg = (
                f"`intensity_range` must be one finite (low, high) pair or one per channel read ({n}), got "
                f"{intensity_range!r}."
            )
            raise ValueError(msg)
        if np.any(r[:, 1] <= r[:, 0]):
            msg = f"`intensity_range` needs low < high for every channel, got {r.tolist()}."
            raise ValueError(msg)
        return r
    small = _pixel_sample(levels[0], colour)
    names = [str(c).lower() for c in levels[0].coords["c"].to_numpy()[colour]] if "c" in levels[0].coords else []
    # an RGB(A) image read as it is, with unnamed channels (spatialdata's default 0, 1, 2): brightfield colour
    unnamed_rgb = levels[0].shape[0] in (3, 4) and list(colour) == [0, 1, 2] and names[:3] in ([], ["0", "1", "2"])
    joint = mode in ("rgb", "rgba") and n == 3 and (unnamed_rgb or set(names) <= _COLOUR_NAMES)
    with np.errstate(all="ignore"):
        if joint:
            lo_hi = np.nanpercentile(small, [0.1, 99.9]) if np.isfinite(small).any() else np.array([0.0, 1.0])
            r = np.tile(lo_hi, (n, 1))
        else:
            r = np.array(
                [
                    np.nanpercentile(small[c], [0.1, 99.9]) if np.isfinite(small[c]).any() else [0.0, 1.0]
                    for c in range(n)
                ],
                dtype=float,
            )
    flat = ~(r[:, 1] > r[:, 0])
    r[flat, 1] = r[flat, 0] + 1.0
    return r
