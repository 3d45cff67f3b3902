"""Shared fixtures: the real shared data (../shared/data), small synthetic SpatialData objects and AnnData tables."""

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


def with_image(sdata, arr, c_coords, um_per_px: float = 0.5):
    """A SpatialData with ``sdata``'s shapes and table and ``arr`` (c, y, x) as its image ``"image"``.

    Two pyramid levels, chunks of 128 px, mapped to ``"global"`` by ``Scale(um_per_px)``; ``c_coords`` names the
    channels.
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    img = Image2DModel.parse(
        arr,
        dims=("c", "y", "x"),
        c_coords=c_coords,
        scale_factors=[2],
        chunks=(len(c_coords), 128, 128),
        transformations={"global": Scale([um_per_px, um_per_px], axes=("x", "y"))},
    )
    return SpatialData(images={"image": img}, shapes=dict(sdata.shapes), tables={"table": sdata.tables["table"]})


@pytest.fixture(name="with_image", scope="session")
def _with_image_fixture():
    """The :func:`with_image` helper: ``with_image(sdata, arr, c_coords, um_per_px=0.5)``."""
    return with_image


@pytest.fixture
def synthetic_sdata():
    """See :func:`make_synthetic_sdata`: returns ``(sdata, centres_px)``."""
    return make_synthetic_sdata()


def make_spatial_table(
    *,
    n_sections: int = 4,
    side: int = 8,
    spacing: float = 200.0,
    fastest: str = "x",
    n_features: int = 12,
    n_genes: int = 40,
    n_signal: int = 10,
    plant: str = "features",
    strength: float = 2.0,
    weight_scale: float = 0.6,
    noise: float = 0.3,
    depth: float = 20.0,
    seed: int = 0,
    section_prefix: str = "S",
    feature_key: str = "X_feat",
):
    """Sections of spots on a grid, morphology features in ``obsm``, expression that carries a planted signal.

    Layout: ``n_sections`` sections (``obs["section"]``, categorical ``f"{section_prefix}{k}"``), each a
    ``side x side`` grid at ``spacing`` (µm) in ``obsm["spatial"]``, the same coordinates in every section; along
    the rows of a section ``fastest`` (``"x"`` or ``"y"``) varies fastest. Spots are named ``spot{i}``, genes ``g{j}``.

    ``plant`` says what links features and expression (``F``: standard normal features, ``n_obs x n_features``,
    float32, in ``obsm[feature_key]``; ``W``: normal weights with sd ``weight_scale``, ``n_features x n_signal``):

    - ``"features"``: Poisson counts in ``X`` (CSR, float32) at rate ``depth * exp(eta)``. The first ``n_signal``
      genes follow each spot's own features, ``eta = 1.5 + strength * F @ W / sqrt(n_features)``; the others,
      ``eta = 4 + N(0, noise^2)``, hold most counts (normalising by the total barely couples them to ``F``).
    - ``"neighbours"``: ``layers["y"] = tanh(C @ W) + noise * N(0, 1)`` (float32) for the first ``n_signal``
      genes (noise only for the others), ``C`` the mean features of each spot's 4 nearest spots in its section;
      ``X`` is zeros. A spot's own features carry nothing, the neighbour mean everything.
    - ``"shared"`` (``n_genes`` >= 3, ``n_features`` >= 10): expression ``E`` first, standard normal in
      ``obsm["X_pca"]`` (float32) plus ``2 sin``/``cos`` waves of the grid in its first 3 columns (spatially
      smooth, so a spatial objective alone would keep them); features: 6 columns shared with ``E``
      (``3 * (E[:, :3] @ N(0, 1) + 0.3 N(0, 1))``), 4 private ones that mark the left/right half
      (``obs["domain"]``, ``"left"``/``"right"``), the rest noise. ``X`` is zeros.

    The draws from ``np.random.default_rng(seed)`` come in the order above, so a given set of arguments always
    gives the same arrays.
    """
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    n_per = side * side
    n = n_sections * n_per
    fast, slow = np.tile(np.arange(side), side), np.repeat(np.arange(side), side)
    ix, iy = (fast, slow) if fastest == "x" else (slow, fast)  # grid column and row of each spot
    grid = np.column_stack([ix, iy]).astype(float)
    coords = np.tile(grid * spacing, (n_sections, 1))
    sections = np.repeat([f"{section_prefix}{k}" for k in range(n_sections)], n_per)
    obs = pd.DataFrame({"section": pd.Categorical(sections)}, index=[f"spot{i}" for i in range(n)])
    x = np.zeros((n, n_genes), np.float32)
    layers, obsm = {}, {}
    if plant == "features":
        feats = rng.normal(size=(n, n_features)).astype(np.float32)
        w = rng.normal(scale=weight_scale, size=(n_features, n_signal))
        log_rate = np.full((n, n_genes), 1.5)
        log_rate[:, :n_signal] += feats @ w / np.sqrt(n_features) * strength
        log_rate[:, n_signal:] += 2.5 + rng.normal(scale=noise, size=(n, n_genes - n_signal))
        x = sparse.csr_matrix(rng.poisson(np.exp(log_rate) * depth).astype(np.float32))
    elif plant == "neighbours":
        from morphst.tl._translation._features import neighbour_mean

        feats = rng.normal(size=(n, n_features)).astype(np.float32)
        ctx, _ = neighbour_mean(feats, coords, 4, sections)
        w = rng.normal(scale=weight_scale, size=(n_features, n_signal))
        y = np.zeros((n, n_genes))
        y[:, :n_signal] = np.tanh(ctx @ w)
        layers["y"] = (y + noise * rng.normal(size=(n, n_genes))).astype(np.float32)
    elif plant == "shared":
        col, row = np.tile(ix, n_sections), np.tile(iy, n_sections)
        domain = (col >= side // 2).astype(np.int64)
        expr = rng.normal(size=(n, n_genes))
        expr[:, :3] += 2 * np.column_stack([np.sin(row / 2.5), np.cos(col / 3.0), np.sin((row + col) / 4.0)])
        shared = expr[:, :3] @ rng.normal(size=(3, 6)) + 0.3 * rng.normal(size=(n, 6))
        private = np.outer(2 * domain - 1, rng.normal(size=4)) + 0.5 * rng.normal(size=(n, 4))
        feats = np.hstack([3 * shared, private, rng.normal(size=(n, n_features - 10))]).astype(np.float32)
        obsm["X_pca"] = expr.astype(np.float32)
        obs["domain"] = pd.Categorical(np.where(domain == 1, "right", "left"))
    else:
        msg = f"unknown plant {plant!r}"
        raise ValueError(msg)
    a = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]), layers=layers)
    a.obsm[feature_key] = feats
    a.obsm["spatial"] = coords
    for key, value in obsm.items():
        a.obsm[key] = value
    return a


@pytest.fixture(scope="session")
def spatial_table():
    """The :func:`make_spatial_table` builder (call it with the variant a test needs; each call builds afresh)."""
    return make_spatial_table


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
