"""Checks shared by the functions that read expression values (``X`` or a layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from ._noun import obs_noun
from ._sdata import did_you_mean

if TYPE_CHECKING:
    from anndata import AnnData


def check_expression(adata: AnnData, fn: str) -> None:
    """Refuse what an expression function cannot use: a backed AnnData, no spots, or no genes.

    Raises
    ------
    ValueError
        If ``adata`` is opened in backed mode (its ``X`` is an HDF5 dataset, which NumPy ufuncs cannot read), or it
        has no observations or no genes. The message says how to fix it.
    """
    if getattr(adata, "isbacked", False):
        msg = (
            f"`{fn}` needs the expression values in memory, but the AnnData is opened in backed mode "
            f"({adata.filename}); load it first: `adata = adata.to_memory()` (or read it without `backed=`)."
        )
        raise ValueError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = (
            f"`{fn}` got an AnnData with {adata.n_obs} {obs_noun(adata)} and {adata.n_vars} genes; it needs at least "
            "one of each. Was it subset to nothing (check the mask or gene list used to subset it)?"
        )
        raise ValueError(msg)


def check_sdata(data, fn: str, *, patches: bool = False) -> None:
    """Raise a TypeError that says what to pass when ``fn`` (a function that reads images) gets no SpatialData.

    ``patches=True``: ``fn`` cuts patches (it needs the table that annotates the shapes too); else ``fn`` is a
    translator method, and an AnnData is pointed to ``Translator.predict_adata``.
    """
    import sys

    sd = sys.modules.get("spatialdata")
    if sd is not None and isinstance(data, sd.SpatialData):
        return
    from anndata import AnnData

    if patches:
        needs = "the SpatialData (images + shapes + the table that annotates them)"
        hint = (
            " Patches are cut from the image around the spot/cell shapes, which an AnnData table does not hold. "
            "Pass the SpatialData, e.g. `sdata = mst.datasets.her2st()` rather than `sdata.tables['table']`."
        )
    else:
        needs = "a SpatialData (an image and shapes)"
        hint = (
            " An AnnData holds no image: for spots that already have embeddings use "
            "`Translator.predict_adata(adata)`; to cut patches from the image, pass the SpatialData that holds the "
            "image and the spot shapes."
        )
    msg = f"`{fn}` needs {needs}, got {type(data).__name__}.{hint if isinstance(data, AnnData) else ''}"
    raise TypeError(msg)


def check_counts(x, where: str, *, logged: bool = False, fix: str = "") -> None:
    """Raise a ValueError unless ``x`` looks like raw counts: finite, non-negative integers.

    ``where`` names the source in the message (e.g. ``"`adata.X`"``); ``fix`` says what to pass instead (e.g.
    ``"Pass `layer=` naming a layer of raw counts."``). ``logged=True`` (pass ``"log1p" in adata.uns`` when ``x``
    is ``adata.X``: :func:`scanpy.pp.log1p` writes that entry) refuses ``x`` as log-transformed.
    """
    fix = f" {fix}" if fix else ""
    if logged:
        msg = (
            f"{where} is already log-transformed (`adata.uns['log1p']` is set by `sc.pp.log1p`); normalising it again "
            f"would log-transform twice.{fix}"
        )
        raise ValueError(msg)
    data = x.data if sparse.issparse(x) else np.asarray(x)
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        msg = f"{where} contains NaN or infinite values; normalisation expects raw counts.{fix}"
        raise ValueError(msg)
    if data.min() < 0:
        msg = f"{where} has negative values, so it does not hold raw counts (is it already log-normalised?).{fix}"
        raise ValueError(msg)
    frac = data != np.rint(data)
    if frac.any():
        v = float(data[frac].flat[0])
        msg = (
            f"{where} has non-integer values ({int(frac.sum())} entries, e.g. {v:.4g}), so it does not hold raw "
            f"counts (is it already normalised or log-transformed?).{fix} If these really are counts with fractional "
            "corrections (e.g. ambient-RNA removal), round them first (e.g. `adata.layers['counts'] = "
            "np.rint(adata.X)`)."
        )
        raise ValueError(msg)


def raw_counts(adata, layer: str | None, *, empty: str, fix: str):
    """``adata.X`` or ``adata.layers[layer]``, checked with :func:`check_counts`; ``(values, where)``.

    ``empty`` ends the message when the source is ``None``; ``fix`` says what to pass instead.
    """
    if layer is not None and layer not in adata.layers:
        msg = (
            f"Layer {layer!r} not found. Available layers: {sorted(adata.layers.keys())}; `layer=None` uses X."
            f"{did_you_mean(layer, adata.layers.keys())}"
        )
        raise KeyError(msg)
    src = adata.X if layer is None else adata.layers[layer]
    where = "`adata.X`" if layer is None else f"`adata.layers[{layer!r}]`"
    if src is None:
        msg = f"{where} is empty; {empty}"
        raise ValueError(msg)
    check_counts(src, where, logged=layer is None and "log1p" in adata.uns, fix=fix)
    return src, where
