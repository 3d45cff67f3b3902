"""Tiny real 10x Visium mouse-brain crop from squidpy's test fixtures (smoke tests only)."""

from __future__ import annotations

import os

import numpy as np

from .._constants import VISIUM_SPOT_DIAMETER_UM, Key
from ._fetch import fetch_files
from ._image import lazy_rgb_image

FOLDER = "squidpy_visium_fixtures"
SHA256 = {
    "test_data.h5ad": None,
    "test_img.jpg": None,
}


def visium_mouse_brain_crop(*, data_dir: str | os.PathLike | None = None):
    """A tiny real 10x Visium crop of the adult mouse brain (49 spots), for smoke tests.

    From squidpy's test fixtures (``squidpy-1.8.2`` sdist, ``tests/_data``; BSD-3-Clause; tissue from 10x Genomics'
    ``V1_Adult_Mouse_Brain``). **Its ``X`` holds normalised, log-transformed values of 1,999 HVGs, not raw counts**:
    use it for plumbing (patches, embeddings), not for count-based statistics.

    Parameters
    ----------
    data_dir
        Folder holding ``squidpy_visium_fixtures`` (or its files). Default: ``$MORPHST_DATA_DIR``. There is no
        download for this fixture.

    Returns
    -------
    SpatialData with ``images["he"]`` (``(3, 1717, 950)`` uint8, 3-level pyramid, lazy), ``shapes["spots"]``
    (circles in px of that image, radius = half of ``spot_diameter_fullres``), and ``tables["table"]`` (49 × 1,999,
    ``obs["leiden"]``) annotating the spots. Coordinate system ``"global"`` is in micrometres, derived from the
    55 µm Visium spot diameter and ``spot_diameter_fullres`` (about 0.62 µm/px), recorded in
    ``uns["morphst_dataset"]["um_per_px"]``.

    Raises
    ------
    FileNotFoundError
        If the files are not in ``data_dir`` / ``$MORPHST_DATA_DIR``.
    """
    import anndata as ad
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale

    root = fetch_files(FOLDER, SHA256, data_dir=data_dir, base_url=None, required=list(SHA256))
    adata = ad.read_h5ad(root / "test_data.h5ad")
    lib = next(iter(adata.uns["spatial"]))
    diameter_px = float(adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"])
    mpp = VISIUM_SPOT_DIAMETER_UM / diameter_px
    tf = {"global": Scale([mpp, mpp], axes=("x", "y"))}
    xy = np.asarray(adata.obsm[Key.SPATIAL], dtype=float)
    adata.obs["region"] = "spots"
    adata.obs["instance_id"] = np.arange(adata.n_obs)
    adata.obs[Key.LIBRARY] = "V1_Adult_Mouse_Brain"
    adata.obs["region"] = adata.obs["region"].astype("category")
    adata.obs[Key.LIBRARY] = adata.obs[Key.LIBRARY].astype("category")
    del adata.uns["spatial"]
    adata.uns[Key.DATASET] = {
        "name": "visium_mouse_brain_crop",
        "source": "squidpy-1.8.2 sdist tests/_data (10x Genomics V1_Adult_Mouse_Brain)",
        "um_per_px": {"global": float(mpp)},
        "um_per_px_derivation": "55 um Visium spot diameter / spot_diameter_fullres (px)",
        "coordinate_systems": {"global": "micrometres"},
        "X": "normalised log values of 1,999 HVGs, not raw counts",
    }
    shapes = ShapesModel.parse(
        xy, geometry=0, radius=np.full(adata.n_obs, diameter_px / 2), index=np.arange(adata.n_obs), transformations=tf
    )
    image = Image2DModel.parse(
        lazy_rgb_image(root / "test_img.jpg"),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=[2, 2],
        chunks=(3, 512, 512),
        transformations=tf,
    )
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="instance_id")
    return SpatialData(images={"he": image}, shapes={"spots": shapes}, tables={Key.TABLE: table})
