"""Checks shared by the functions that read expression values (``X`` or a layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
            f"`{fn}` got an AnnData with {adata.n_obs} spots and {adata.n_vars} genes; it needs at least one of "
            "each. Was it subset to nothing (check the mask or gene list used to subset it)?"
        )
        raise ValueError(msg)


def check_sdata(data, fn: str) -> None:
    """Raise a TypeError that says what to pass when ``fn`` (a SpatialData method) gets something else."""
    import sys

    sd = sys.modules.get("spatialdata")
    if sd is not None and isinstance(data, sd.SpatialData):
        return
    from anndata import AnnData

    hint = (
        " An AnnData holds no image: for spots that already have embeddings use `Translator.predict_adata(adata)`; "
        "to cut patches from the image, pass the SpatialData that holds the image and the spot shapes."
        if isinstance(data, AnnData)
        else ""
    )
    msg = f"`{fn}` needs a SpatialData (an image and shapes), got {type(data).__name__}.{hint}"
    raise TypeError(msg)
