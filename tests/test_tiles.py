"""H&E-only slides: tiles over the detected tissue (mst.pp.tile_tissue)."""

from __future__ import annotations

import numpy as np
import pytest

import morphst as mst


@pytest.fixture(scope="module")
def c3_tiles(data_dir):
    """HER2ST C3 loaded without its table (an H&E-only slide), tiled at 112 µm."""
    sdata = mst.datasets.her2st(["C3"], data_dir=data_dir)
    spots = sdata.tables["table"].obsm["spatial"].copy()  # image px of the spots, for checks only
    del sdata.tables["table"]
    mst.pp.tile_tissue(sdata, "C3_he")
    return sdata, spots


def test_tiles_cover_the_tissue_where_the_spots_are(c3_tiles):
    from sklearn.neighbors import NearestNeighbors

    sdata, spots_px = c3_tiles
    t = sdata.tables["C3_he_tiles_table"]
    info = t.uns["tiles"]
    mpp = 0.68737638  # C3's µm/px, derived by the loader from the 200 µm spot grid
    assert info["tile_px"] == round(112 / mpp)  # 163 px
    xy = t.obsm["spatial"]  # µm (C3's coordinate system)
    # a square grid of 112 µm (to the pixel: 163 px × 0.687 µm)
    d, _ = NearestNeighbors(n_neighbors=2).fit(xy).kneighbors(xy)
    assert np.median(d[:, 1]) == pytest.approx(163 * mpp, rel=1e-6)
    # the tiled area matches the tissue the spots sample: legacy ST, one spot per 200 µm × 200 µm
    n_spots = len(spots_px)
    tile_area, spot_area = len(xy) * 0.112**2, n_spots * 0.2**2
    assert 0.7 < tile_area / spot_area < 1.4
    # nearly every spot lies on a kept tile (within half a tile diagonal of a tile centre)
    dist, _ = NearestNeighbors(n_neighbors=1).fit(xy).kneighbors(spots_px * mpp)
    assert (dist[:, 0] <= 112 / np.sqrt(2)).mean() > 0.9
    # and the tiles feed the patch pipeline as spots do
    mst.pp.extract_patches(sdata, table_key="C3_he_tiles_table")
    r = t.uns["patches"]["regions"]["C3_he_tiles"]
    assert list(r["window_px"][0]) == [163, 163]
    p = mst.pp.get_patches(sdata, np.arange(5), table_key="C3_he_tiles_table")
    assert p.mean() < 220  # tissue, not white glass


def test_tile_tissue_needs_a_scale_and_valid_parameters():
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel

    img = np.full((3, 300, 300), 255, np.uint8)
    img[:, 100:200, 100:200] = 90
    sdata = SpatialData(images={"he": Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"])})
    with pytest.raises(ValueError, match=r"Cannot tell the pixel size.*um_per_unit=.*um_per_px="):
        mst.pp.tile_tissue(sdata, "he")
    with pytest.raises(KeyError, match=r"Available images: \['he'\]"):
        mst.pp.tile_tissue(sdata, "HE")
    with pytest.raises(ValueError, match="min_tissue_fraction"):
        mst.pp.tile_tissue(sdata, "he", um_per_px=1.0, min_tissue_fraction=1.5)
    with pytest.raises(ValueError, match="tile_size"):
        mst.pp.tile_tissue(sdata, "he", um_per_px=1.0, tile_size=0)
    assert list(sdata.shapes) == []
    assert list(sdata.tables) == []
    mst.pp.tile_tissue(sdata, "he", um_per_px=2.0, tile_size=40.0, min_tissue_fraction=1.0)
    t = sdata.tables["he_tiles_table"]
    assert t.uns["tiles"]["tile_px"] == 20
    # the dark 100 px square holds 5 × 5 whole 20 px tiles of the grid that starts at the corner
    assert t.n_obs == 25
    # the scale given is declared, so patches of these tiles need no second override
    assert sdata.attrs["morphst"]["coordinate_systems"]["global"] == 2.0
    mst.pp.extract_patches(sdata, table_key="he_tiles_table", patch_size=40.0, target_px=20)
    assert (mst.pp.get_patches(sdata, table_key="he_tiles_table") == 90).all()


def test_he_only_slide_gets_predictions_over_its_tissue(c3_tiles, data_dir):
    """The H&E-only path: tiles of C3 (no table), a translator fit on C2 and C4, predictions per tile."""
    sdata, _ = c3_tiles
    train = mst.datasets.her2st(["C2", "C4"], data_dir=data_dir)
    mst.tl.embed_patches(train, "handcrafted")
    adata = train.tables["table"]
    mst.pp.normalize(adata)
    mst.pp.select_genes(adata, n_top_genes=10)
    tr = mst.tl.fit_translator(adata, "X_handcrafted", library_key="section")
    tr.predict_sdata(sdata, shapes_key="C3_he_tiles", table_key="C3_predicted")
    out = sdata.tables["C3_predicted"]
    n_tiles = sdata.tables["C3_he_tiles_table"].n_obs
    assert out.shape == (n_tiles, 10)
    assert np.isfinite(out.X).all()
    assert out.X.std(axis=0).min() > 0  # a map, not a constant
    assert np.isfinite(out.obs["applicability_score"]).all()
    assert out.uns["patches"]["regions"]["C3_he_tiles"]["window_px"][0][0] == 163  # 112 µm at 0.687 µm/px


def _corner_tissue_sdata(size: int = 512, frac: float = 0.22, seed: int = 0):
    """White glass (RGB ~238) with pink-purple tissue (~190, 110, 170) in the top-left corner, 22 % of the area."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel

    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (238, 236, 240)
    side = int(size * np.sqrt(frac))  # 240 px
    img[:side, :side] = (190, 110, 170)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    image = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"], scale_factors=[2])
    return SpatialData(images={"he": image}), side


def test_tissue_touching_the_corner_is_tiled_on_tissue(recwarn):
    import warnings

    sdata, side = _corner_tissue_sdata()
    mst.pp.tile_tissue(sdata, "he", tile_size=16.0, um_per_px=0.5)  # 32 px tiles on a 512 px grid
    t = sdata.tables["he_tiles_table"]
    xy = t.obsm["spatial"]  # px (the image's coordinate system)
    # every kept tile lies on the tissue square; its 7 x 7 whole tiles (7 x 32 = 224 <= 240 px) are all kept
    assert ((xy[:, 0] < side) & (xy[:, 1] < side)).all()
    assert t.n_obs == 49
    assert t.uns["tiles"]["params"]["background"] == "bright"
    # no third-party warning reaches the caller (docrep at squidpy import, scikit-image inside detect_tissue)
    assert [str(w.message) for w in recwarn if not issubclass(w.category, DeprecationWarning)] == []
    # squidpy's own rule (corners are background) takes the glass for tissue here: said in a warning
    sdata, _ = _corner_tissue_sdata()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        mst.pp.tile_tissue(sdata, "he", tile_size=16.0, um_per_px=0.5, background="corners")
    msgs = [str(w.message) for w in rec if "lie mostly on background" in str(w.message)]
    assert len(msgs) == 1
    assert "pass `background='bright'`" in msgs[0]
    xy = sdata.tables["he_tiles_table"].obsm["spatial"]
    assert ((xy[:, 0] < side) & (xy[:, 1] < side)).mean() < 0.1


def test_tile_tissue_background_is_checked_before_anything_is_written():
    sdata, _ = _corner_tissue_sdata(size=128)
    with pytest.raises(ValueError, match="`background` must be 'bright'"):
        mst.pp.tile_tissue(sdata, "he", um_per_px=0.5, background="dark")
    with pytest.raises(ValueError, match="background='corners'"):
        mst.pp.tile_tissue(sdata, "he", um_per_px=0.5, method="weka", background="bright")
    assert list(sdata.labels) == []
    assert list(sdata.shapes) == []
    assert list(sdata.tables) == []
