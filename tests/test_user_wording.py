"""What a new user reads: spots vs cells in titles and logs, errors that name the call to make, the grid's scale."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import morphst as mst
from morphst._utils import check_obs_column, check_obsm, obs_noun


def _table(n: int = 12, *, region: str | None = None, cell_id: bool = False) -> ad.AnnData:
    a = ad.AnnData(np.ones((n, 2), np.float32), obs=pd.DataFrame(index=[f"o{i}" for i in range(n)]))
    if region is not None:
        a.uns["spatialdata_attrs"] = {"region": region, "region_key": "region", "instance_key": "iid"}
    if cell_id:
        a.obs["cell_id"] = a.obs_names.to_numpy()
    a.obsm["spatial"] = np.column_stack([np.arange(n) % 4, np.arange(n) // 4]).astype(float) * 100.0
    return a


# --- what the rows are called ----------------------------------------------------------------------------------------
def test_obs_noun_reads_the_table():
    assert obs_noun(_table()) == "spots"  # a plain AnnData
    assert obs_noun(_table(region="C2_spots")) == "spots"
    assert obs_noun(_table(region="mb")) == "spots"  # spatialdata_io.visium: the dataset id
    assert obs_noun(_table(region="cell_circles")) == "cells"  # spatialdata_io.xenium
    assert obs_noun(_table(region="cell_boundaries"), 1) == "cell"
    assert obs_noun(_table(region="fov1", cell_id=True)) == "cells"  # an obs column cell_id
    assert obs_noun(_table(region="Visium_HD_square_008um")) == "bins"
    assert obs_noun(_table(region=["he_tiles", "he2_tiles"])) == "tiles"  # pp.tile_tissue
    assert obs_noun(_table(region="cell_boundaries_grid"), 1) == "grid point"  # Translator.predict_grid
    assert obs_noun(_table(region=["C2_spots", "he_tiles"])) == "spots"  # tiles only when all are tiles


def test_pl_domains_title_counts_cells_on_a_cell_table():
    a = _table(12, region="cell_boundaries")
    a.obs["domain"] = pd.Categorical(["0", "1"] * 6)
    a.obs["truth"] = pd.Categorical(["a", "b"] * 6)
    a.uns["domain_evaluation"] = {
        "ari": 1.0, "nmi": 1.0, "n_evaluated": 12, "n_excluded": 0, "params": {"annotation_key": "truth"},
    }  # fmt: skip
    fig = mst.pl.domains(a, annotation_key="truth", show=False, return_fig=True)
    assert "(12 cells; 0 with no truth or domain label excluded" in fig._suptitle.get_text()


def test_pl_applicability_title_counts_cells():
    a = _table(10, region="cell_boundaries")
    a.obs["applicability_score"] = np.array([0.2, 0.5, 3.0, 0.1, 0.4, 0.3, 0.2, 0.1, 0.6, 0.7])  # 1 of 10 above 1
    fig = mst.pl.applicability(a, show=False, return_fig=True)
    assert fig.axes[0].get_title() == "(10% of cells > 1)"


def test_select_genes_and_normalize_log_cells_and_every_slot(spatial_table, morphst_log):
    a = spatial_table(n_sections=1, side=6, n_genes=20)
    a.obs["cell_id"] = a.obs_names.to_numpy()
    mst.pp.normalize(a)
    assert morphst_log.messages[-1].startswith(
        "    finished: added `.layers['log1p_cp10k']` (36, 20), `.uns['log1p_cp10k']`"
    )
    mst.pp.select_genes(a, n_top_genes=5)
    assert "selecting 5 genes (highly_variable, pearson_residuals) on 36 cells" in morphst_log.messages
    assert morphst_log.messages[-1].startswith(
        "    finished: selected 5 genes; added `.var['morph_target']`, `.var['morph_target_score']`, "
        "`.uns['morph_target']`"
    )
    assert a.var["morph_target"].sum() == 5  # what is written is unchanged
    assert a.uns["morph_target"]["params"]["n_spots"] == 36


def test_learn_integration_features_logs_through_the_writer(spatial_table, morphst_log):
    a = spatial_table(n_sections=2, side=6, n_features=12, n_genes=6, plant="shared")
    mst.tl.learn_integration_features(a, "X_feat", method="residual", key_added="X_int")
    assert morphst_log.messages[-2] == "learning integration features (residual) from `obsm['X_feat']` on 72 spots"
    assert a.obsm["X_int"].shape == (72, 12)  # residual: one column per feature
    assert morphst_log.messages[-1].startswith("    finished: added `.obsm['X_int']` (72, 12), `.uns['X_int']`")


# --- errors that name the call to make -------------------------------------------------------------------------------
def test_did_you_mean_on_obsm_and_obs_keys():
    a = _table()
    a.obsm["X_handcrafted"] = np.zeros((a.n_obs, 3))
    a.obs["cluster"] = "x"
    with pytest.raises(KeyError, match=r"Did you mean 'X_handcrafted'\?"):
        check_obsm(a, "X_handcraft")
    with pytest.raises(KeyError, match=r"Did you mean 'cluster'\?"):
        check_obs_column(a, "clusters")
    with pytest.raises(KeyError) as e:  # nothing close: no guess
        check_obs_column(a, "section_label")
    assert "Did you mean" not in str(e.value)


def test_missing_expression_rep_points_to_pca_not_to_an_encoder(spatial_table):
    a = spatial_table(n_sections=2, side=6, plant="shared")
    with pytest.raises(KeyError, match=r"'X_pc' not found.*Did you mean 'X_pca'\?.*`sc.pp.pca\(") as e:
        mst.tl.learn_integration_features(a, "X_feat", method="residual", expression_rep="X_pc")
    assert "embed_patches" not in str(e.value)
    assert "X_learned_integration" not in a.obsm


def _log_values(spatial_table) -> ad.AnnData:
    """Counts normalised and log-transformed in X by scanpy (``uns['log1p']`` set), as many scanpy users hold them."""
    import scanpy as sc

    a = spatial_table(n_sections=2, side=6, n_genes=30)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    return a


def test_default_genes_on_log_values_name_select_genes_not_its_options(spatial_table):
    a = _log_values(spatial_table)
    before = (set(a.layers), set(a.var.columns), set(a.uns), set(a.obs.columns))
    with pytest.raises(ValueError, match=r"not selected yet.*mst.pp.select_genes\(adata, hvg_flavor='seurat'") as e:
        mst.tl.predict_expression(a, use_rep="X_feat", target="X")
    assert "choose `hvg_flavor='seurat'`" not in str(e.value)  # select_genes' own wording: not options of this call
    assert (set(a.layers), set(a.var.columns), set(a.uns), set(a.obs.columns)) == before
    # following the two hints works
    with pytest.raises(ValueError, match=r"`adata.layers\['log1p'\] = adata.X.copy\(\)`, then `layer='log1p'`"):
        mst.pp.select_genes(a, n_top_genes=5, hvg_flavor="seurat")
    a.layers["log1p"] = a.X.copy()
    mst.pp.select_genes(a, n_top_genes=5, hvg_flavor="seurat", layer="log1p")
    mst.tl.predict_expression(a, use_rep="X_feat", target="X", library_key="section")
    assert a.var["predicted_mask"].sum() >= 5


# --- real Visium objects read by spatialdata-io ----------------------------------------------------------------------
@pytest.fixture
def visium_two_images(data_dir):
    """The squidpy Visium fixture as ``spatialdata_io.visium`` reads it: 100 spots, an RGBA hires and a lowres image."""
    spatialdata_io = pytest.importorskip("spatialdata_io")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata_io.visium(
            data_dir / "squidpy_visium_fixtures", dataset_id="mb", counts_file="filtered_feature_bc_matrix.h5"
        )


def test_embed_before_extract_with_two_images_names_extract_patches(visium_two_images):
    s = visium_two_images
    with pytest.raises(ValueError, match=r"Several images.*options of `mst.pp.extract_patches`: run `mst.pp"):
        mst.tl.embed_patches(s, model="handcrafted")
    assert "patches" not in s.tables["table"].uns
    assert "X_handcrafted" not in s.tables["table"].obsm


def _lowres_translator(s):
    """The table of ``s`` with 110 µm handcrafted patches of the lowres image, and a translator of 3 genes fit on it."""
    a = s.tables["table"]
    mst.pp.extract_patches(s, image_key="mb_lowres_image", patch_size=110.0, target_px=8)
    mst.tl.embed_patches(s, model="handcrafted")
    return a, mst.tl.fit_translator(a, use_rep="X_handcrafted", genes=list(a.var_names[:3]))


def test_predict_grid_cuts_patches_at_the_grid_scale_and_undoes_a_failed_call(visium_two_images):
    s = visium_two_images
    a, tr = _lowres_translator(s)
    spot_scale = a.uns["patches"]["regions"]["mb"]["um_per_unit"]  # 55 µm over the spots' diameter in px
    # two images share the coordinate system: the call fails, and leaves no grid behind
    with pytest.raises(ValueError, match="Several images share a coordinate system"):
        tr.predict_grid(s, 200.0)
    assert list(s.shapes) == ["mb"]
    assert list(s.tables) == ["table"]
    tr.predict_grid(s, 200.0, image_key="mb_lowres_image")  # so the retry needs no overwrite=True
    grid = s.tables["morph_predicted_grid"].uns["patches"]["regions"]["mb_grid"]
    # the grid circles (100 µm radius) are not Visium spots: their patches use the spots' scale
    assert grid["um_per_unit"] == pytest.approx(spot_scale, rel=1e-9)
    assert grid["level_um_per_px"][0] == pytest.approx(a.uns["patches"]["regions"]["mb"]["level_um_per_px"][0])


def test_tiles_of_a_visium_image_are_cut_at_the_tiles_scale(visium_two_images):
    s = visium_two_images
    a, tr = _lowres_translator(s)
    mst.pp.tile_tissue(s, "mb_lowres_image", tile_size=110.0)  # 8 lowres px: not a 55 µm Visium spot
    attrs = dict(s.attrs)
    tr.predict_sdata(s, shapes_key="mb_lowres_image_tiles", image_key="mb_lowres_image")
    rec = s.tables["mb_lowres_image_tiles_table"].uns["tiles"]
    got = s.tables["morph_predicted"].uns["patches"]["regions"]["mb_lowres_image_tiles"]
    assert got["coordinate_system"] == rec["coordinate_system"]
    assert got["um_per_unit"] == pytest.approx(rec["um_per_unit"], rel=1e-9)
    assert got["level_um_per_px"][0] == pytest.approx(a.uns["patches"]["regions"]["mb"]["level_um_per_px"][0])
    assert dict(s.attrs) == attrs  # the scale is declared for the prediction only
    assert "% of tiles > 1" in mst.pl.applicability(s, show=False, return_fig=True).axes[0].get_title()


def test_library_key_typo_on_a_cell_table():
    from morphst._utils import resolve_library_key

    a = _table(6, region="cell_circles")
    a.obs["section"] = "A"
    with pytest.raises(KeyError, match=r"Did you mean 'section'\? Pass `library_key=None` to treat all cells as one"):
        resolve_library_key(a, "sections")
    a.obs["section"] = pd.Categorical(["A", None, "A", "A", "A", "A"])
    with pytest.raises(ValueError, match=r"missing \(NaN\) for 1 of 6 cells; they would belong to no section"):
        mst.tl.predict_expression(a, use_rep="spatial", library_key="section", genes=list(a.var_names))


def test_one_section_without_coordinates_says_how_to_add_them(spatial_table):
    a = spatial_table(n_sections=1, side=6, n_genes=20)
    centres = a.obsm.pop("spatial")
    a.obs["patch_x_px"], a.obs["patch_y_px"] = centres[:, 0] / 0.5, centres[:, 1] / 0.5  # as extract_patches writes
    with pytest.raises(KeyError, match=r"adata.obsm\['spatial'\] = adata.obs\[\['patch_x_px', 'patch_y_px'\]\]"):
        mst.tl.predict_expression(a, use_rep="X_feat", genes=list(a.var_names[:5]))
    assert set(a.layers) == set()
    assert "predicted" not in a.uns
    a.obsm["spatial"] = a.obs[["patch_x_px", "patch_y_px"]].to_numpy()  # the hint, followed
    mst.tl.predict_expression(a, use_rep="X_feat", genes=list(a.var_names[:5]))
    assert a.uns["predicted"]["params"]["cv"] == "spatial_block"


def test_grids_of_different_scales_are_one_error():
    from morphst.tl._translation._apply import _one_scale

    assert _one_scale({"A_grid": 0.5, "B_grid": 0.5}) == 0.5
    with pytest.raises(ValueError, match=r"different scales \(µm per unit: A_grid: 0.5, B_grid: 1\).*grid per scale"):
        _one_scale({"A_grid": 0.5, "B_grid": 1.0})


def test_pl_patches_names_cells_on_a_cell_table():
    s = mst.datasets.xenium_like(40, n_genes=10, he=True, chunk_px=256, random_state=0)
    mst.pp.extract_patches(s, image_key="he_image", patch_size=32.0, target_px=16)
    with pytest.raises(KeyError, match=r"Cells not in `obs_names`: \['nope'\]"):
        mst.pl.patches(s, spots=["nope"], show=False)


@pytest.mark.parametrize(
    ("section", "noun"),
    [("cell_boundaries", "cells"), ("he_tiles", "tiles"), ("mb_grid", "grid points"), ("C3", "spots")],
)
def test_out_of_domain_warning_names_what_was_predicted(section, noun):
    from morphst.tl._translation._applicability import ApplicabilityDomain

    empty = np.zeros((0, 0))
    dom = ApplicabilityDomain(empty, empty, empty, empty, threshold=1.0, k=1, quantile=0.95, calibration="x")
    verdict = pd.DataFrame({"in_domain": [False], "median_score": [1.6], "frac_beyond": [0.83]}, index=[section])
    with pytest.warns(
        UserWarning, match=rf"{section} \(median 1.60, 83% of {noun} beyond\)\. Many of their {noun} lie"
    ):
        dom.warn_out_of_domain(verdict)


def test_constant_features_are_named_in_a_warning(spatial_table):
    """Constant features gave a NaN mean PCC with only scikit-learn's warnings; now one warning says why."""
    a = spatial_table()
    a.obsm["X_const"] = np.ones((a.n_obs, 4), dtype=np.float32)
    with pytest.warns(UserWarning, match=r"`adata.obsm\['X_const'\]` is the same for every observation"):
        mst.tl.predict_expression(a, "X_const", genes=list(a.var_names[:3]), target="X")
    a.obsm["X_const"][0, 0] = 2.0  # one varying column: no warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*same for every observation")
        mst.tl.predict_expression(a, "X_const", genes=list(a.var_names[:3]), target="X")
