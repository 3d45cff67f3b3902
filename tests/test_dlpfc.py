"""mst.datasets.dlpfc: the DLPFC Visium sections of ../shared/data, read through spatialdata_io.visium."""

from __future__ import annotations

import numpy as np
import pytest

import morphst as mst
from morphst.datasets._dlpfc import LAYERS, read_rda_counts


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dlpfc_cache")


@pytest.fixture(scope="module")
def sdata_151673(data_dir, cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("MORPHST_CACHE_DIR", str(cache))
    try:
        yield mst.datasets.dlpfc("151673")  # found through MORPHST_DATA_DIR (set by conftest)
    finally:
        mp.undo()


@pytest.mark.slow  # reads the .rda twice and writes the 10x h5 (~15 s on a busy 2-core machine)
def test_dlpfc_151673_real_values(sdata_151673, data_dir):
    sd = sdata_151673
    t = sd.tables["table"]
    assert t.shape == (3639, 5000)
    assert t.var_names[0].startswith("ENSG")
    counts, genes, barcodes = read_rda_counts(data_dir / "dlpfc/151673/dlpfc151673.rda", "151673")
    # the table holds the .rda's counts: per-spot totals equal the .rda column sums, barcode by barcode
    col_sums = dict(zip(barcodes, counts.sum(axis=0), strict=True))
    np.testing.assert_array_equal(np.asarray(t.X.sum(axis=1)).ravel(), [col_sums[b] for b in t.obs_names])
    np.testing.assert_array_equal(t.var_names, genes)
    assert t.X.dtype == np.float32
    # manual layers: Layer1..Layer6, WM; NA kept as missing
    assert list(t.obs["layer"].cat.categories) == list(LAYERS)
    vc = t.obs["layer"].value_counts(dropna=False)
    assert vc["Layer3"] == 989
    assert vc["WM"] == 513
    assert t.obs["layer"].isna().sum() == 28
    assert list(t.obs["section"].unique()) == ["151673"]
    # as spatialdata_io.visium writes it: full-res pixel coordinate system, low-res image
    assert set(sd.images) == {"151673_lowres_image"}
    assert sd.images["151673_lowres_image"].shape == (3, 600, 600)
    assert set(sd.coordinate_systems) == {"151673", "151673_downscaled_hires", "151673_downscaled_lowres"}
    assert sd.shapes["151673"].shape[0] == 3639
    # positions row "AAACAAGTATCTCCCA-1,1,50,102,8468,9791" = pxl_row, pxl_col; obsm["spatial"] is (x=col, y=row)
    np.testing.assert_array_equal(t[["AAACAAGTATCTCCCA-1"]].obsm["spatial"][0], [9791, 8468])
    sf = t.uns["spatial"]["151673"]["scalefactors"]
    assert sf["tissue_lowres_scalef"] == pytest.approx(0.045004502)
    mpp = t.uns["morphst_dataset"]["um_per_px"]
    assert mpp["151673"] == pytest.approx(55 / 96.40082438014726)
    assert mpp["151673_downscaled_lowres"] == pytest.approx(12.677, abs=1e-3)


def test_dlpfc_any_sample_laid_out_the_same(data_dir, tmp_path, monkeypatch):
    """A sample folder under another name (files symlinked, .rda renamed to match) loads from `data_dir`."""
    src = data_dir / "dlpfc" / "151674"
    dst = tmp_path / "data" / "999999"
    (dst / "spatial").mkdir(parents=True)
    (dst / "metadata.tsv").symlink_to(src / "metadata.tsv")
    (dst / "dlpfc999999.rda").symlink_to(src / "dlpfc151674.rda")  # the R list inside is still `dlpfc151674`
    for f in (src / "spatial").iterdir():
        (dst / "spatial" / f.name).symlink_to(f)
    monkeypatch.setenv("MORPHST_CACHE_DIR", str(tmp_path / "cache"))
    sd = mst.datasets.dlpfc("999999", data_dir=tmp_path / "data")
    t = sd.tables["table"]
    assert t.shape == (3673, 5000)
    assert set(sd.coordinate_systems) == {"999999", "999999_downscaled_hires", "999999_downscaled_lowres"}
    assert t.obs["layer"].notna().sum() > 3600
    assert list(t.obs["layer"].cat.categories) == list(LAYERS)


def test_dlpfc_missing_sample_names_the_options(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_dir=.*MORPHST_DATA_DIR"):
        mst.datasets.dlpfc("123456", data_dir=tmp_path)
