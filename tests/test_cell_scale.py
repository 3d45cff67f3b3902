"""Cell-level input: the synthetic Xenium-like section (mst.datasets.xenium_like) as spatialdata-io lays it out."""

from __future__ import annotations

import numpy as np
import pytest

import morphst as mst


def test_xenium_like_layout_follows_spatialdata_io():
    from spatialdata.transformations import Identity, Scale, get_transformation

    sdata = mst.datasets.xenium_like(600, he=True, n_genes=40, random_state=3)
    assert sdata.attrs["spatialdata_io_reader"] == "xenium"
    assert set(sdata.shapes) == {"cell_boundaries", "nucleus_boundaries"}
    img = sdata.images["morphology_focus"]
    lv0 = img["scale0"]["image"]
    assert lv0.dtype == np.uint16
    assert lv0.shape[0] == 1
    assert list(lv0.coords["c"].to_numpy()) == ["DAPI"]
    assert len(img.children) == 5
    assert isinstance(get_transformation(lv0, "global"), Identity)
    t = get_transformation(sdata.shapes["cell_boundaries"], "global")
    assert isinstance(t, Scale)
    np.testing.assert_allclose(t.scale, [1 / 0.2125, 1 / 0.2125])
    assert (sdata.shapes["cell_boundaries"].geom_type == "Polygon").all()
    table = sdata.tables["table"]
    assert table.n_obs == 600
    assert table.n_vars == 40
    assert table.uns["spatialdata_attrs"]["region"] == "cell_boundaries"
    assert table.uns["spatialdata_attrs"]["instance_key"] == "cell_id"
    assert table.obs["cell_id"].iloc[0] == "aaaaaaab-1"  # Xenium's cell id encoding
    assert table.X.format == "csr"
    assert table.X.dtype == np.float32
    assert table.uns["morphst_dataset"]["synthetic"] is True
    # the cell polygons' centroids are the table's µm centres
    c = sdata.shapes["cell_boundaries"].geometry.centroid
    np.testing.assert_allclose(np.column_stack([c.x, c.y]), table.obsm["spatial"], atol=1e-6)
    assert sdata.images["he_image"]["scale0"]["image"].dtype == np.uint8
    # circles as the reader's cells_as_circles, annotated by the table
    s2 = mst.datasets.xenium_like(50, cells_as_circles=True, n_genes=10)
    assert s2.tables["table"].uns["spatialdata_attrs"]["region"] == "cell_circles"
    assert "radius" in s2.shapes["cell_circles"].columns


def test_xenium_like_pixels_are_deterministic_and_independent_of_chunking():
    a = mst.datasets.xenium_like(400, n_genes=10, chunk_px=256)
    b = mst.datasets.xenium_like(400, n_genes=10, chunk_px=1000)
    c = mst.datasets.xenium_like(400, n_genes=10, chunk_px=256, random_state=1)
    for lvl in ("scale0", "scale2"):
        x = a.images["morphology_focus"][lvl]["image"].data[:, 100:700, 50:650].compute()
        y = b.images["morphology_focus"][lvl]["image"].data[:, 100:700, 50:650].compute()
        np.testing.assert_array_equal(x, y)
    x = a.images["morphology_focus"]["scale0"]["image"].data[:, 100:700, 50:650].compute()
    z = c.images["morphology_focus"]["scale0"]["image"].data[:, 100:700, 50:650].compute()
    assert not np.array_equal(x, z)  # another seed, another section
    np.testing.assert_array_equal(a.tables["table"].X.toarray(), b.tables["table"].X.toarray())


def test_xenium_like_dapi_patches_centre_on_nuclei_and_expression_has_structure():
    sdata = mst.datasets.xenium_like(900, n_genes=60, he=True)
    mst.pp.extract_patches(sdata, image_key="morphology_focus", patch_size=10.0, target_px=20)
    t = sdata.tables["table"]
    r = t.uns["patches"]["regions"]["cell_boundaries"]
    assert r["um_per_unit"] == pytest.approx(0.2125)  # global = morphology-image px
    assert "spatialdata_io.xenium" in r["units_source"]
    assert r["channel_mode"] == "grey"
    assert np.asarray(r["intensity_range"]).shape == (1, 2)  # per-channel range of the uint16 DAPI
    p = mst.pp.get_patches(sdata, np.arange(0, 900, 7)).astype(float)
    centre, corner = p[:, 8:12, 8:12].mean(), p[:, :2, :2].mean()
    assert centre > corner + 60  # a bright nucleus in the middle of every patch
    # H&E through its affine: haematoxylin (darker, bluer) at the centre
    mst.pp.extract_patches(sdata, image_key="he_image", patch_size=10.0, target_px=20)
    q = mst.pp.get_patches(sdata, np.arange(0, 900, 7)).astype(float)
    assert q[:, 8:12, 8:12, 1].mean() < q[:, :2, :2, 1].mean() - 30
    # domains: marker genes differ between synthetic domains
    x = np.log1p(t.X.toarray())
    dom = t.obs["synthetic_domain"].to_numpy()
    means = np.stack([x[dom == d].mean(0) for d in np.unique(dom)])
    assert (means.max(0) - means.min(0)).max() > 0.5
