"""Shared fixtures: the real shared data (../shared/data) and small synthetic SpatialData objects."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MORPHST_DATA_DIR", REPO.parent / "shared" / "data"))
WEIGHTS_DIR = Path(os.environ.get("MORPHST_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))


def pytest_configure(config):
    os.environ.setdefault("MORPHST_DATA_DIR", str(DATA_DIR))
    os.environ.setdefault("MORPHST_WEIGHTS_DIR", str(WEIGHTS_DIR))
    import matplotlib

    matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _no_progress_bar(monkeypatch):
    """No tqdm bars in test output (a test that checks the bar sets ``progress_bar`` itself)."""
    import morphst as mst

    monkeypatch.setattr(mst.settings, "progress_bar", False)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "her2st_patientC").is_dir():
        pytest.fail(f"shared data not found at {DATA_DIR}; set MORPHST_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return WEIGHTS_DIR


@pytest.fixture(scope="session")
def her2st_sdata(data_dir):
    """HER2ST C2–C6 as loaded by morphst (session-wide; do not modify: use ``her2st_copy``)."""
    import morphst as mst

    return mst.datasets.her2st(data_dir=data_dir)


@pytest.fixture
def her2st_copy(data_dir):
    """A fresh HER2ST C2–C6 SpatialData that a test may modify (images stay lazy, so this is cheap)."""
    import morphst as mst

    return mst.datasets.her2st(data_dir=data_dir)


@pytest.fixture(scope="session")
def her2st_adata(her2st_sdata):
    """A copy of the HER2ST C2–C6 table (910 spots x 17,418 genes, raw counts)."""
    return her2st_sdata.tables["table"].copy()


def make_synthetic_sdata(
    *,
    size_px: int = 512,
    n_side: int = 4,
    um_per_px: float = 0.5,
    shapes_scale: float = 2.0,
    shapes_offset: tuple[float, float] = (10.0, -20.0),
    seed: int = 0,
    declare_um: bool = True,
):
    """A small SpatialData: an RGB image with dark marks at known spot centres, circles in another frame.

    The image (``"image"``, 3 x size_px x size_px uint8, white background, a 3-level pyramid) maps to the
    coordinate system ``"global"`` (µm) by ``Scale(um_per_px)``. The circles (``"spots"``) are given in their own
    frame that maps to ``"global"`` by ``Scale(shapes_scale)`` then ``Translation(shapes_offset)`` (µm), so the image
    and the shapes do not share pixel space. The table (``"table"``) annotates the spots, with two genes that follow
    the x position; with ``declare_um`` it declares ``"global"`` as µm in ``uns["morphst_dataset"]``. Returns
    ``(sdata, centres_px)`` with the spot centres in image pixels (x, y).
    """
    import anndata as ad
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale, Sequence, Translation

    rng = np.random.default_rng(seed)
    img = np.full((3, size_px, size_px), 255, np.uint8)
    step = size_px / (n_side + 1)
    centres_px = np.array([(step * (i + 1), step * (j + 1)) for j in range(n_side) for i in range(n_side)])
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    for cx, cy in centres_px:
        img[:, (np.abs(xx + 0.5 - cx) <= 3) & (np.abs(yy + 0.5 - cy) <= 3)] = 0
    # centres in um, then in the shapes' own frame
    centres_um = centres_px * um_per_px
    own = (centres_um - np.asarray(shapes_offset)) / shapes_scale
    to_global = Sequence(
        [Scale([shapes_scale, shapes_scale], axes=("x", "y")), Translation(list(shapes_offset), axes=("x", "y"))]
    )
    n = len(centres_px)
    shapes = ShapesModel.parse(
        own, geometry=0, radius=np.full(n, 5.0), index=np.arange(n), transformations={"global": to_global}
    )
    image = Image2DModel.parse(
        img,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=[2, 2],
        chunks=(3, 128, 128),
        transformations={"global": Scale([um_per_px, um_per_px], axes=("x", "y"))},
    )
    x = np.column_stack([centres_px[:, 0], centres_px[:, 0] * 2 + rng.normal(size=n)]).astype(np.float32)
    obs = pd.DataFrame(
        {"region": pd.Categorical(["spots"] * n), "instance_id": np.arange(n)}, index=[f"s{i}" for i in range(n)]
    )
    adata = ad.AnnData(x, obs=obs)
    adata.var_names = ["gene_a", "gene_b"]
    if declare_um:  # "global" is in µm: say so, as morphst's datasets do (units are never assumed)
        adata.uns["morphst_dataset"] = {"coordinate_systems": {"global": "micrometres"}}
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="instance_id")
    return SpatialData(images={"image": image}, shapes={"spots": shapes}, tables={"table": table}), centres_px


@pytest.fixture
def synthetic_sdata():
    """See :func:`make_synthetic_sdata`: returns ``(sdata, centres_px)``."""
    return make_synthetic_sdata()


@pytest.fixture(scope="session")
def her2st_embedded(data_dir, weights_dir):
    """A copy of the HER2ST C2–C6 table with patch embeddings, computed once per session.

    Default patches (112 µm -> 224 px, ``mst.pp.extract_patches``), ``obsm["X_densenet121"]`` (ImageNet DenseNet-121
    from ../shared/weights, 1024-d) and ``obsm["X_efficientnet_lite0"]`` (ImageNet, 1280-d), float32, dtype "auto".
    """
    import morphst as mst

    weights = weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    if not weights.is_file():
        pytest.fail(f"shared DenseNet-121 weights not found at {weights}; set MORPHST_WEIGHTS_DIR")
    sdata = mst.datasets.her2st(data_dir=data_dir)
    progress = mst.settings.progress_bar
    mst.settings.progress_bar = False
    try:
        mst.tl.embed_patches(sdata, "densenet121", weights=weights)
        mst.tl.embed_patches(sdata, "efficientnet_lite0")
    finally:
        mst.settings.progress_bar = progress
    return sdata.tables["table"].copy()


@pytest.fixture
def synthetic_factory():
    """The :func:`make_synthetic_sdata` factory itself, for tests that need other parameters."""
    return make_synthetic_sdata


@pytest.fixture
def morphst_log(caplog):
    """caplog at INFO for the ``morphst`` logger (it propagates; warnings are ``warnings.warn``, see pytest.warns)."""
    import logging

    caplog.set_level(logging.INFO, logger="morphst")
    return caplog
