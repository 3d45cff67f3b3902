"""mst.datasets: HER2ST patient C and the Visium crop, checked against the raw files."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

import morphst as mst

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
# spots under tissue with a count row, from the source's SOURCE.md table (checked independently below too)
N_SPOTS = {"C2": 187, "C3": 180, "C4": 184, "C5": 181, "C6": 178}


def _raw_section(data_dir, s):
    root = data_dir / "her2st_patientC"
    with gzip.open(root / f"data/ST-cnts/{s}.tsv.gz", "rt") as fh:
        cnt = pd.read_csv(fh, sep="\t", index_col=0)
    sel = pd.read_csv(root / f"data/ST-spotfiles/{s}_selection.tsv", sep="\t")
    ids = (sel["x"].astype(str) + "x" + sel["y"].astype(str)).tolist()
    ids = [i for i in ids if i in cnt.index]
    return cnt.loc[ids], sel


def test_every_section_loads_with_raw_counts(her2st_sdata, data_dir):
    adata = her2st_sdata.tables["table"]
    assert adata.var_names.is_unique
    assert list(adata.obs["section"].cat.categories) == SECTIONS
    headers = {}
    for s in SECTIONS:
        raw, _ = _raw_section(data_dir, s)
        headers[s] = list(raw.columns)
        sub = adata[adata.obs["section"] == s]
        assert sub.n_obs == len(raw) == N_SPOTS[s]
        # lossless: per-spot UMI totals equal the row sums of the whole source file (every gene it lists)
        np.testing.assert_array_equal(np.asarray(sub.X.sum(axis=1)).ravel(), raw.sum(axis=1).to_numpy())
        # every count of the file is where it belongs; genes the file does not list are zero in this section
        np.testing.assert_array_equal(sub[:, raw.columns].X.toarray(), raw.to_numpy(np.float32))
        absent = ~adata.var_names.isin(raw.columns)
        assert absent.any()
        assert sub[:, absent].X.nnz == 0
        # and the values are integers
        assert np.all(np.mod(sub.X.data, 1) == 0)
        assert her2st_sdata.shapes[f"{s}_spots"].shape[0] == N_SPOTS[s]
    # genes: the union of the five raw headers (17,418; 14,382 of them listed in every file)
    union = set().union(*map(set, headers.values()))
    common = set.intersection(*map(set, headers.values()))
    assert set(adata.var_names) == union
    assert adata.n_vars == len(union) == 17418
    listed = adata.var["n_sections_listed"]
    assert (listed == 5).sum() == len(common) == 14382
    assert set(adata.var_names[listed == 5]) == common
    assert list(adata.var_names[: len(headers["C2"])]) == headers["C2"]  # first-appearance order


def test_clusters_and_meaning(her2st_sdata):
    adata = her2st_sdata.tables["table"]
    assert isinstance(adata.obs["cluster"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["cluster"].cat.categories) == [str(i) for i in range(7)]
    assert adata.obs["cluster"].isna().sum() == (187 - 185) + (180 - 179) + 0 + (181 - 179) + (178 - 176)
    meaning = adata.uns["cluster_meaning"]
    assert meaning["2"] == "cancer 1"
    assert meaning["6"] == "unknown"
    assert meaning["5"].startswith("immune : APC")


def test_table_annotates_spots(her2st_sdata):
    from spatialdata import get_values

    adata = her2st_sdata.tables["table"]
    attrs = adata.uns["spatialdata_attrs"]
    assert sorted(attrs["region"]) == [f"{s}_spots" for s in SECTIONS]
    # the count of one gene, read through spatialdata's own join on the shapes element
    vals = get_values("ERBB2", element_name="C3_spots", sdata=her2st_sdata, table_name="table")
    sub = adata[adata.obs["region"] == "C3_spots"]
    np.testing.assert_array_equal(vals["ERBB2"].to_numpy(), sub[:, "ERBB2"].X.toarray().ravel())


def test_image_is_lazy_chunked_pyramid(her2st_sdata):
    import dask.array as da

    from morphst._utils import image_levels

    levels = image_levels(her2st_sdata.images["C2_he"])
    assert len(levels) == 5
    assert levels[0].shape == (3, 9911, 9274)  # SOURCE.md: 9274 x 9911 (W x H)
    for lv in levels:
        assert lv.dtype == np.uint8
        assert isinstance(lv.data, da.Array)
    assert max(levels[0].data.chunksize) <= 1024


@pytest.mark.parametrize("section", ["C2", "C5"])
def test_spots_overlay_tissue(her2st_sdata, section):
    """Mean intensity inside spot circles is clearly darker than in the image corners (white background)."""
    from morphst._utils import image_levels

    lv = image_levels(her2st_sdata.images[f"{section}_he"])[2]  # 4x downsampled
    img = lv.data.compute().astype(float).mean(axis=0)
    gdf = her2st_sdata.shapes[f"{section}_spots"]
    f = 4.0
    inside = []
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    for (x, y), r in zip(np.column_stack([gdf.geometry.x, gdf.geometry.y]), gdf["radius"], strict=True):
        m = (xx - x / f) ** 2 + (yy - y / f) ** 2 <= (r / f) ** 2
        inside.append(img[m].mean())
    c = 60
    corners = np.concatenate([img[:c, :c].ravel(), img[:c, -c:].ravel(), img[-c:, :c].ravel(), img[-c:, -c:].ravel()])
    assert np.mean(inside) < corners.mean() - 30, (np.mean(inside), corners.mean())


def test_derived_scale_from_spot_grid(her2st_sdata):
    from spatialdata.transformations import get_transformation

    adata = her2st_sdata.tables["table"]
    mpp = adata.uns["morphst_dataset"]["um_per_px"]
    for s in SECTIONS:
        assert 0.66 < mpp[s] < 0.72
        gdf = her2st_sdata.shapes[f"{s}_spots"]
        tf = get_transformation(gdf, to_coordinate_system=s)
        xy = np.column_stack([gdf.geometry.x, gdf.geometry.y])
        um = (tf.to_affine_matrix(("x", "y"), ("x", "y")) @ np.c_[xy, np.ones(len(xy))].T).T[:, :2]
        # spacing between spots that are neighbours on the array grid (raw nearest-neighbour distances are
        # biased low by the jitter of the detected spot centres)
        sub = adata.obs[adata.obs["section"] == s]
        ax, ay = sub["array_x"].to_numpy(), sub["array_y"].to_numpy()
        i, j = np.nonzero((np.abs(ax[:, None] - ax[None]) + np.abs(ay[:, None] - ay[None])) == 1)
        spacing = np.median(np.linalg.norm(um[i] - um[j], axis=1))
        assert abs(spacing - 200.0) / 200.0 < 0.02, spacing
        # the transformation really is that scale
        np.testing.assert_allclose(tf.to_affine_matrix(("x", "y"), ("x", "y"))[[0, 1], [0, 1]], [mpp[s]] * 2)
        # spot radius is 50 um
        np.testing.assert_allclose(gdf["radius"].to_numpy() * mpp[s], 50.0)


def test_zarr_roundtrip(tmp_path, data_dir):
    from spatialdata import read_zarr
    from spatialdata.transformations import get_transformation

    sd = mst.datasets.her2st(library_id=("C4",), data_dir=data_dir)
    path = tmp_path / "her2st_c4.zarr"
    sd.write(path)
    back = read_zarr(path)
    a, b = sd.tables["table"], back.tables["table"]
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obs_names, b.obs_names)
    g1, g2 = sd.shapes["C4_spots"], back.shapes["C4_spots"]
    np.testing.assert_allclose(np.c_[g1.geometry.x, g1.geometry.y], np.c_[g2.geometry.x, g2.geometry.y])
    for el in ("C4_spots", "C4_he"):
        t1 = get_transformation(sd[el], get_all=True)
        t2 = get_transformation(back[el], get_all=True)
        assert t1.keys() == t2.keys()
        for k in t1:
            np.testing.assert_allclose(
                t1[k].to_affine_matrix(("x", "y"), ("x", "y")), t2[k].to_affine_matrix(("x", "y"), ("x", "y"))
            )
    assert b.uns["morphst_dataset"]["um_per_px"]["C4"] == pytest.approx(a.uns["morphst_dataset"]["um_per_px"]["C4"])


def test_c1_has_pathologist_labels_and_no_image(data_dir):
    sd = mst.datasets.her2st(library_id=("C1",), data_dir=data_dir)
    assert len(sd.images) == 0
    adata = sd.tables["table"]
    assert adata.n_obs == 176
    counts = adata.obs["pathologist_label"].value_counts()
    # the label file has 177 rows (128 invasive cancer); one labelled spot has no count row, and it is a cancer one
    assert counts.to_dict() == {"invasive cancer": 127, "connective tissue": 37, "undetermined": 9, "adipose tissue": 3}


def test_missing_data_dir_names_all_options(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        mst.datasets.her2st(data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert "data_dir" in msg
    assert "MORPHST_DATA_DIR" in msg
    assert "download" in msg


def test_unknown_section():
    with pytest.raises(ValueError, match="C7"):
        mst.datasets.her2st(library_id=("C7",))


def test_visium_crop(data_dir):
    sd = mst.datasets.visium_mouse_brain_crop(data_dir=data_dir)
    adata = sd.tables["table"]
    assert adata.shape == (49, 1999)
    mpp = adata.uns["morphst_dataset"]["um_per_px"]["global"]
    assert mpp == pytest.approx(55 / 89.4, rel=0.01)
    assert sd.images["he"]["scale0"]["image"].shape == (3, 1717, 950)
