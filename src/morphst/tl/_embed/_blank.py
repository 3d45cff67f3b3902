"""Blank or constant patches (an all-black placeholder image, spots off the tissue): counted while embedding."""

from __future__ import annotations

import numpy as np

from ... import _logging as logg

#: A patch counts as constant when every pixel of every channel lies within this many 8-bit levels of the others.
MAX_RANGE = 2
#: Warn when more than this share of the embedded patches are constant.
MAX_SHARE = 0.05


class BlankPatches:
    """Counts constant patches batch by batch (``update``), then warns once (``warn``) naming a few of them."""

    def __init__(self, obs_names) -> None:
        self.obs_names = obs_names
        self.n_seen = 0
        self.rows: list[np.ndarray] = []
        self.levels: list[np.ndarray] = []

    def update(self, rows: np.ndarray, patches) -> None:
        """``patches``: uint8 ``(B, 3, T, T)`` (torch tensor or ndarray) of the table rows ``rows``."""
        flat = patches.reshape(len(rows), -1)
        hi, lo = flat.max(1), flat.min(1)
        hi = hi.values if hasattr(hi, "values") else hi  # torch returns (values, indices)
        lo = lo.values if hasattr(lo, "values") else lo
        hi, lo = np.asarray(hi).astype(np.int64), np.asarray(lo).astype(np.int64)
        const = (hi - lo) <= MAX_RANGE
        self.n_seen += len(rows)
        if const.any():
            self.rows.append(np.asarray(rows)[const])
            self.levels.append(lo[const])

    @property
    def n_constant(self) -> int:
        return int(sum(len(r) for r in self.rows))

    def warn(self) -> None:
        """A ``UserWarning`` when more than ``MAX_SHARE`` of the patches were constant (blank image, wrong level)."""
        n = self.n_constant
        if not self.n_seen or n <= MAX_SHARE * self.n_seen:
            return
        rows = np.concatenate(self.rows)
        levels = np.concatenate(self.levels)
        vals = np.unique(levels)
        what = (
            "all black" if vals.max() <= MAX_RANGE else "all white" if vals.min() >= 255 - MAX_RANGE else "one colour"
        )
        names = [str(self.obs_names[i]) for i in rows[:5]]
        logg.warning(
            f"{n} of {self.n_seen} patches are constant ({what}; e.g. {names}): their embeddings carry no "
            "morphology. Check the image they were cut from (a blank placeholder such as an all-black hires image? "
            "pass `image_key=` to `mst.pp.extract_patches`) and that the spots lie on the tissue."
        )
