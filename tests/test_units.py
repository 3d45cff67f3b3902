"""Units, pixels and identifiers on users' SpatialData: resolved right, or refused clearly (issue: users' data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import morphst as mst

VISIUM = "squidpy_visium_fixtures"


def _visium_sdata(data_dir):
    spatialdata_io = pytest.importorskip("spatialdata_io")
    return spatialdata_io.visium(data_dir / VISIUM, dataset_id="mb", counts_file="filtered_feature_bc_matrix.h5")


def test_spatialdata_io_visium_patch_is_a_hand_cut_crop_of_the_true_size(data_dir):
    """Visium read by spatialdata-io is in full-resolution px: a 'µm' patch must cover that many µm."""
    from PIL import Image

    sdata = _visium_sdata(data_dir)
    sf = json.loads((data_dir / VISIUM / "spatial" / "scalefactors_json.json").read_text())
    um_per_fullres_px = 55.0 / sf["spot_diameter_fullres"]
    um_per_lowres_px = um_per_fullres_px / sf["tissue_lowres_scalef"]  # ≈ 13.67 µm/px
    size_um = 20 * um_per_lowres_px  # 20 low-res px: no resampling at target_px=20
    mst.pp.extract_patches(sdata, image_key="mb_lowres_image", patch_size=size_um, target_px=20)
    r = sdata.tables["table"].uns["patches"]["regions"]["mb"]
    assert r["coordinate_system"] == "mb"  # the shapes' own system (full-resolution px)
    assert r["um_per_unit"] == pytest.approx(um_per_fullres_px, rel=1e-9)
    assert r["level_um_per_px"][0] == pytest.approx(um_per_lowres_px, rel=1e-6)
    assert "spatialdata_io.visium" in r["units_source"]
    assert list(r["window_px"][0]) == [20, 20]
    # by hand: spot centre (full-res px) -> low-res px, a 20 px crop of the PNG, white padding
    img = np.asarray(Image.open(data_dir / VISIUM / "spatial" / "tissue_lowres_image.png").convert("RGB"))
    pts = sdata.shapes["mb"].geometry
    cx, cy = pts.x.to_numpy() * sf["tissue_lowres_scalef"], pts.y.to_numpy() * sf["tissue_lowres_scalef"]
    padded = np.pad(img, ((40, 40), (40, 40), (0, 0)), constant_values=255)
    got = mst.pp.get_patches(sdata)
    ids = sdata.tables["table"].obs["spot_id"].to_numpy()
    for k in range(len(got)):
        i = int(np.flatnonzero(sdata.shapes["mb"].index == ids[k])[0])
        x0, y0 = round(cx[i] - 10), round(cy[i] - 10)
        np.testing.assert_array_equal(got[k], padded[y0 + 40 : y0 + 60, x0 + 40 : x0 + 60])
    # the default 112 µm patch spans 8 low-res px (it spanned 112 px, i.e. ~1.5 mm, when units were taken as µm)
    mst.pp.extract_patches(sdata, image_key="mb_lowres_image")
    assert list(sdata.tables["table"].uns["patches"]["regions"]["mb"]["window_px"][0]) == [8, 8]


def test_unknown_units_are_refused_with_the_options(synthetic_factory):
    sdata, _ = synthetic_factory(declare_um=False)
    t = sdata.tables["table"]
    with pytest.raises(ValueError, match=r"Cannot tell how many µm.*um_per_unit=.*um_per_px=.*spot_diameter_um="):
        mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    assert "patches" not in t.uns  # nothing written
    assert "patch_x_px" not in t.obs
    # explicit scale, a declaration, or the spot diameter: all give the same geometry
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, um_per_unit=1.0)
    ref = t.uns["patches"]["regions"]["spots"]
    assert ref["units_source"] == "given: um_per_unit=1"
    assert list(ref["window_px"][0]) == [40, 40]  # 20 µm at 0.5 µm/px
    # circles of radius 5 in a frame scaled ×2 into "global" (µm): a 20 µm spot diameter
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, spot_diameter_um=20.0)
    r = t.uns["patches"]["regions"]["spots"]
    assert r["um_per_unit"] == pytest.approx(1.0)
    assert "spot_diameter_um=20" in r["units_source"]
    mst.pp.set_um_per_unit(sdata, "global", 1.0)
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    assert "sdata.attrs['morphst']" in t.uns["patches"]["regions"]["spots"]["units_source"]
    # the explicit override wins over the declaration
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, um_per_unit=0.5)
    r = t.uns["patches"]["regions"]["spots"]
    assert list(r["um_per_px"]) == [0.25, 0.25]  # level 0: 0.5 units/px × 0.5 µm/unit
    assert (list(r["level"]), list(r["window_px"][0])) == ([1], [40, 40])  # 0.5 µm/px is level 1
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, um_per_px=0.25)
    r = t.uns["patches"]["regions"]["spots"]
    assert list(r["um_per_px"]) == [0.25, 0.25]
    assert r["um_per_unit"] == pytest.approx(0.5)  # 0.25 µm/px over 0.5 units per px


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"um_per_px": 0}, "`um_per_px` must be a positive"),
        ({"um_per_px": -1.0}, "`um_per_px` must be a positive"),
        ({"um_per_unit": float("nan")}, "`um_per_unit` must be a positive"),
        ({"spot_diameter_um": 0.0}, "`spot_diameter_um` must be a positive"),
        ({"fill_value": 256}, "`fill_value`.*0–255"),
        ({"fill_value": -1}, "`fill_value`.*0–255"),
        ({"intensity_range": (5, 5)}, "low < high"),
    ],
)
def test_extract_patches_parameters_out_of_range(synthetic_sdata, kwargs, match):
    sdata, _ = synthetic_sdata
    if "intensity_range" in kwargs:  # only used for non-uint8 images
        from spatialdata.models import Image2DModel

        img = sdata.images["image"]["scale0"]["image"]
        sdata.images["image"] = Image2DModel.parse(
            np.asarray(img.data, dtype=np.uint16), dims=("c", "y", "x"), c_coords=["r", "g", "b"]
        )
        from spatialdata.transformations import Scale, set_transformation

        set_transformation(sdata.images["image"], Scale([0.5, 0.5], axes=("x", "y")), "global")
    with pytest.raises(ValueError, match=match):
        mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, **kwargs)
    assert "patches" not in sdata.tables["table"].uns


def test_set_um_per_unit_errors(synthetic_sdata):
    sdata, _ = synthetic_sdata
    with pytest.raises(KeyError, match=r"Available:.*'global'"):
        mst.pp.set_um_per_unit(sdata, "nope", 1.0)
    with pytest.raises(ValueError, match="positive"):
        mst.pp.set_um_per_unit(sdata, "global", 0)
    assert "morphst" not in sdata.attrs


def _marked_image(size=400, centres=(), value=255, dtype=np.uint8, channels=3, bg=0):
    img = np.full((channels, size, size), bg, dtype)
    yy, xx = np.mgrid[0:size, 0:size]
    for cx, cy in centres:
        img[:, (np.abs(xx + 0.5 - cx) <= 3) & (np.abs(yy + 0.5 - cy) <= 3)] = value
    return img


def test_xenium_like_cells_in_um_mapped_to_pixel_global(synthetic_factory):
    """spatialdata_io.xenium: cell shapes in µm, Scale(1/pixel_size) into "global" = morphology-image pixels."""
    import anndata as ad
    import geopandas as gpd
    from shapely.geometry import Polygon
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    px = 0.2125
    centres_px = np.array([[100.0, 120.0], [250.0, 300.0], [330.0, 80.0]])
    centres_um = centres_px * px
    polys = [Polygon([(x - 2, y - 2), (x + 2, y - 2), (x + 2, y + 2), (x - 2, y + 2)]) for x, y in centres_um]
    shapes = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=polys, index=pd.Index(["aaa-1", "bbb-1", "ccc-1"], name="cell_id")),
        transformations={"global": Scale([1 / px, 1 / px], axes=("x", "y"))},
    )
    dapi = _marked_image(400, centres_px, value=4000, dtype=np.uint16, channels=1)
    image = Image2DModel.parse(dapi, dims=("c", "y", "x"), c_coords=["DAPI"], transformations={"global": Identity()})
    obs = pd.DataFrame({"region": pd.Categorical(["cell_boundaries"] * 3), "cell_id": ["aaa-1", "bbb-1", "ccc-1"]})
    obs.index = obs["cell_id"].to_numpy()
    table = TableModel.parse(
        ad.AnnData(np.ones((3, 2), np.float32), obs=obs),
        region="cell_boundaries",
        region_key="region",
        instance_key="cell_id",
    )
    sdata = SpatialData(images={"morphology_focus": image}, shapes={"cell_boundaries": shapes}, tables={"table": table})
    with pytest.raises(ValueError, match="Cannot tell"):
        mst.pp.extract_patches(sdata, patch_size=8.5, target_px=40)
    sdata.attrs["spatialdata_io_reader"] = "xenium"
    mst.pp.extract_patches(sdata, patch_size=8.5, target_px=40)  # 8.5 µm = 40 px of 0.2125 µm
    r = table.uns["patches"]["regions"]["cell_boundaries"]
    assert r["um_per_unit"] == pytest.approx(px)
    assert r["level_um_per_px"][0] == pytest.approx(px)
    assert list(r["window_px"][0]) == [40, 40]
    np.testing.assert_allclose(table.obs[["patch_x_px", "patch_y_px"]].to_numpy(), centres_px, atol=1e-9)
    p = mst.pp.get_patches(sdata)
    # per-channel range of the DAPI: the marks map to white, the background to black, in the centre of each patch
    assert (p[:, 18:22, 18:22] == 255).all()
    assert (p[:, :5, :5] == 0).all()


def test_visium_hd_bins_and_scanpy_scalefactors(synthetic_factory):
    import geopandas as gpd
    from shapely.geometry import box
    from spatialdata.models import ShapesModel

    # Visium HD 8 µm bins as squares in full-res px of 0.25 µm: side 32 px
    sdata, _ = synthetic_factory(declare_um=False)
    t = sdata.tables["table"]
    from spatialdata.transformations import get_transformation

    tf = get_transformation(sdata.shapes["spots"], get_all=True)
    pts = sdata.shapes["spots"].geometry
    squares = [box(x - 16, y - 16, x + 16, y + 16) for x, y in zip(pts.x, pts.y, strict=True)]
    sdata.shapes["hd_square_008um"] = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=squares, index=sdata.shapes["spots"].index), transformations=tf
    )
    del sdata.shapes["spots"]
    t.obs["region"] = pd.Categorical(["hd_square_008um"] * t.n_obs)
    t.uns["spatialdata_attrs"]["region"] = "hd_square_008um"
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    r = t.uns["patches"]["regions"]["hd_square_008um"]
    # 8 µm / 32 units of the shapes' frame, carried into "global" by the shapes' ×2 scale: 0.125 µm per unit
    assert r["um_per_unit"] == pytest.approx(8 / 32 / 2)
    assert "Visium HD" in r["units_source"]

    # scanpy/squidpy-style scale factors in uns["spatial"]: 55 µm over spot_diameter_fullres (= 2 r = 10 px here)
    sdata, _ = synthetic_factory(declare_um=False)
    t = sdata.tables["table"]
    t.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": 10.0}}}
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    r = t.uns["patches"]["regions"]["spots"]
    assert r["um_per_unit"] == pytest.approx(55 / 10 / 2)
    # scale factors that contradict the shapes' radius are refused, not trusted
    t.uns["spatial"]["lib"]["scalefactors"]["spot_diameter_fullres"] = 30.0
    with pytest.raises(ValueError, match="not in full-resolution pixels"):
        mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)


def test_float_image_with_nan_margins(synthetic_factory, with_image):
    sdata, _ = synthetic_factory()
    mst.pp.extract_patches(sdata, patch_size=40.0, target_px=80)
    ref = mst.pp.get_patches(sdata)
    rgb = np.asarray(sdata.images["image"]["scale0"]["image"].data.compute()).astype(np.float32) / 255.0
    rgb[:, :, :60] = np.nan  # a registration margin over the left column of spots' patches
    s2 = with_image(synthetic_factory()[0], rgb, ["r", "g", "b"])
    mst.pp.extract_patches(s2, patch_size=40.0, target_px=80)
    r = s2.tables["table"].uns["patches"]["regions"]["spots"]["intensity_range"]
    assert np.isfinite(r).all()  # NaN ignored by the range (it was NaN, and every patch came out black)
    s3 = with_image(synthetic_factory()[0], rgb, ["r", "g", "b"])
    mst.pp.extract_patches(s3, patch_size=40.0, target_px=80, intensity_range=(0.0, 1.0))
    got = mst.pp.get_patches(s3)
    # NaN is padding: white for RGB, like the white background; every patch equals the uint8 original
    np.testing.assert_array_equal(got, ref)


def test_multichannel_uint16_gets_per_channel_ranges(synthetic_factory, with_image):
    sdata, centres = synthetic_factory()
    highs = np.array([500, 60000, 4000], np.uint16)
    marks = _marked_image(512, centres, value=1, dtype=np.uint16, channels=1)[0]
    arr = np.stack([marks * h for h in highs]).astype(np.uint16)
    s2 = with_image(sdata, arr, ["DAPI", "CD3", "PanCK"])
    mst.pp.extract_patches(s2, patch_size=20.0, target_px=40)
    r = np.asarray(s2.tables["table"].uns["patches"]["regions"]["spots"]["intensity_range"])
    assert r.shape == (3, 2)
    np.testing.assert_allclose(r[:, 1], highs, rtol=0.05)  # 99.9th percentile of each channel's pixels
    p = mst.pp.get_patches(s2)
    centre = p[:, 18:22, 18:22]
    for c in range(3):  # every marker uses the full 8-bit range (one global range left DAPI at 2 grey levels)
        assert centre[..., c].min() >= 250
        assert p[:, :3, :3, c].max() == 0


def test_instance_ids_str_vs_int_and_missing(synthetic_factory):
    sdata, centres = synthetic_factory()
    t = sdata.tables["table"]
    t.obs["instance_id"] = t.obs["instance_id"].astype(str)  # "0".."15" vs an int shapes index
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    np.testing.assert_allclose(t.obs[["patch_x_px", "patch_y_px"]].to_numpy(), centres, atol=1e-9)
    t.obs["instance_id"] = [f"cell{i}" for i in range(t.n_obs)]
    del t.uns["patches"]
    with pytest.raises(ValueError, match=r"dtype object.*dtype int64"):
        mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)


def test_duplicated_obs_names_and_default_rows_after_shapes_key(synthetic_factory):
    import anndata as ad
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    sdata, _ = synthetic_factory()
    t = sdata.tables["table"]
    # a second shapes element annotated by the same table: extract only the first, then read "all" patches
    sdata.shapes["other"] = sdata.shapes["spots"]
    t2 = t.copy()
    t2.obs["region"] = "other"
    both = ad.concat([t, t2])
    both.obs["region"] = pd.Categorical(both.obs["region"])
    both.uns["morphst_dataset"] = t.uns["morphst_dataset"]
    table = TableModel.parse(both, region=["spots", "other"], region_key="region", instance_key="instance_id")
    s2 = SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": table})
    mst.pp.extract_patches(s2, shapes_key="spots", patch_size=20.0, target_px=40)
    p = mst.pp.get_patches(s2)  # the rows that have patches (it raised before)
    assert p.shape[0] == 16
    np.testing.assert_array_equal(p, mst.pp.get_patches(s2, np.arange(16)))
    # Visium-like repeated barcodes across sections: selecting by name says what to do
    with pytest.raises(ValueError, match="obs_names_make_unique"):
        mst.pp.get_patches(s2, ["s0"])


def test_get_patches_needs_geometry_and_writes_nothing(synthetic_sdata):
    sdata, _ = synthetic_sdata
    with pytest.raises(KeyError, match="extract_patches"):
        mst.pp.get_patches(sdata)
    assert "patches" not in sdata.tables["table"].uns
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    with pytest.raises(ValueError, match="batch_size"):
        mst.pp.get_patches(sdata, batch_size=0)
    with pytest.raises(ValueError, match="context_index"):
        mst.pp.get_patches(sdata, context_index=True)


def test_embed_patches_validates_context_before_writing(synthetic_sdata):
    sdata, _ = synthetic_sdata
    t = sdata.tables["table"]

    def mean_rgb(x):
        return x.mean(dim=(2, 3))

    for ctx in (0, True, False, -1):
        with pytest.raises(ValueError, match="context_index"):
            mst.tl.embed_patches(sdata, mean_rgb, context_index=ctx)
        assert "patch_x_px" not in t.obs
        assert "patches" not in t.uns


def test_embed_patches_refuses_nan_features(synthetic_sdata):
    import torch

    sdata, _ = synthetic_sdata
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=32)

    def bad(x):
        f = x.mean(dim=(2, 3))
        f[0, 0] = torch.nan
        return f

    with pytest.raises(ValueError, match="NaN or infinite features for 1 of"):
        mst.tl.embed_patches(sdata, bad, dtype="float32")
    assert "X_bad" not in sdata.tables["table"].obsm


def test_float_rgb_range_from_full_resolution_pixels_and_joint_over_colours(synthetic_factory, with_image):
    """A fine-grained float RGB image: the range comes from the pixels themselves (a downsampled level, whose 2x2
    means narrow it, clipped about a fifth of the pixels), one range over the unnamed colour channels."""
    sdata, _ = synthetic_factory()
    rng = np.random.default_rng(0)
    grain = rng.uniform(0.0, 1.0, (512, 512)).astype(np.float32)  # pixel-scale texture
    rgb = np.stack([grain, 0.5 * grain, 0.25 * grain])  # one stain: channels in fixed proportion
    s2 = with_image(sdata, rgb, [0, 1, 2])  # spatialdata's default channel names
    mst.pp.extract_patches(s2, patch_size=20.0, target_px=40)
    r = np.asarray(s2.tables["table"].uns["patches"]["regions"]["spots"]["intensity_range"])
    lo, hi = np.nanpercentile(rgb.astype(float), [0.1, 99.9])  # the pixels' own percentiles, over the three channels
    np.testing.assert_allclose(r, [[lo, hi]] * 3, rtol=1e-9)
    coarse = rgb.reshape(3, 256, 2, 256, 2).mean((2, 4))  # what the old rule saw (level 1, 2x2 means)
    old_lo, old_hi = np.percentile(coarse, [0.1, 99.9])
    old_clipped = float(((rgb[0] < old_lo) | (rgb[0] > old_hi)).mean())
    new_clipped = float(((rgb[0] < lo) | (rgb[0] > hi)).mean())
    assert old_clipped > 0.05
    assert new_clipped < 0.005  # 0.0035: the top 0.1 % of the pooled pixels all lie in the red channel
    # joint range: the colour balance survives (green at half of red, not stretched to the same 0-255)
    p = mst.pp.get_patches(s2).astype(float)
    ratio = p[..., 1].mean() / p[..., 0].mean()
    assert ratio == pytest.approx(0.5, abs=0.03)
    # named fluorescence channels keep one range each
    s3 = with_image(synthetic_factory()[0], rgb, ["DAPI", "CD3", "PanCK"])
    mst.pp.extract_patches(s3, patch_size=20.0, target_px=40)
    r3 = np.asarray(s3.tables["table"].uns["patches"]["regions"]["spots"]["intensity_range"])
    np.testing.assert_allclose(r3[:, 1], [np.percentile(c.astype(float), 99.9) for c in rgb], rtol=1e-6)
