"""The shared rules of ``morphst._utils``: section column, z-scores, image <-> shapes matching, hints, the writer."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from morphst._utils import rep_hint, resolve_library_key, run_first, section_groups
from morphst._utils._stats import column_scale, zscore


def _adata(**cols) -> ad.AnnData:
    n = len(next(iter(cols.values())))
    return ad.AnnData(np.zeros((n, 1)), obs=pd.DataFrame(cols, index=[f"s{i}" for i in range(n)]))


# --- section column -----------------------------------------------------------------------------------------------
def test_library_key_rule():
    a = _adata(section=["A", "A", "B"], region=["r1", "r1", "r2"])
    assert resolve_library_key(a, None) is None
    assert resolve_library_key(a, "section") == "section"
    assert resolve_library_key(a, "region") == "region"
    b = _adata(region=["r1", "r2"])
    # the default name, absent: the first fallback that is a column, else one section
    assert resolve_library_key(b, "section") is None
    assert resolve_library_key(b, "section", fallbacks=(None, "nope", "region")) == "region"
    # any other name must be a column
    with pytest.raises(KeyError, match=r"`library_key`='sections' is not an obs column.*'region'.*library_key=None"):
        resolve_library_key(b, "sections")
    with pytest.raises(KeyError, match=r"`patient_key`='p'"):
        resolve_library_key(b, "p", name="patient_key")
    mixed = _adata(section=["A", "A", "B"])
    mixed.obs["section"] = pd.Series([1, "1", 2], index=mixed.obs_names, dtype=object)
    with pytest.raises(ValueError, match="mixes label types"):
        resolve_library_key(mixed, "section")


def test_section_groups_values_and_missing():
    a = _adata(section=pd.Categorical(["B", "A", "B"]))
    g = section_groups(a, "section")
    assert g.dtype == object
    assert list(g) == ["B", "A", "B"]
    assert section_groups(a, None) is None
    a.obs["section"] = pd.Categorical(["B", None, "B"])
    with pytest.raises(ValueError, match=r"missing \(NaN\) for 1 of 3 spots.*add_categories"):
        section_groups(a, "section")


# --- z-scores -----------------------------------------------------------------------------------------------------
def test_zscore_rule_hand_computed():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    z, ok = zscore(x)
    s = np.sqrt(8 / 3)  # population sd of 1, 3, 5
    np.testing.assert_allclose(z[:, 0], [-2 / s, 0.0, 2 / s])
    assert (z[:, 1] == 0).all()  # constant: exactly 0
    assert ok.tolist() == [True, False]
    mean, scale, const = column_scale(x)
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(scale, [s, 1.0])  # constant column: scale 1, as StandardScaler
    assert const.tolist() == [False, True]


def test_zscore_on_rows_and_tolerance():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 7.0]])
    z, ok = zscore(x, rows=[0, 1])  # statistics of rows 0-1: mean (2, 5), sd (1, 0)
    np.testing.assert_allclose(z[:, 0], [-1.0, 1.0, 3.0])
    np.testing.assert_allclose(z[:, 1], [0.0, 0.0, 2.0])  # constant on the rows: 0 there, x - mean elsewhere
    assert ok.tolist() == [True, False]
    # float noise around a large value counts as constant: sd 5e-8 <= 1e-12 * 1e6
    y = np.array([[1e6], [1e6 + 1e-7]])
    assert (zscore(y)[0] == 0).all()
    # agrees with scikit-learn's StandardScaler on non-constant columns
    from sklearn.preprocessing import StandardScaler

    r = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(zscore(r)[0], StandardScaler().fit_transform(r), rtol=1e-12, atol=1e-12)
    r32 = r.astype(np.float32)
    out, _ = zscore(r32, dtype=np.float32, copy=False)
    assert out is r32


# --- hints --------------------------------------------------------------------------------------------------------
def test_hints():
    assert run_first("tl.quadrants", key="q") == "run `mst.tl.quadrants(adata, ..., key_added='q')` first"
    assert run_first("pp.extract_patches", None) == "run `mst.pp.extract_patches` first"
    assert run_first("tl.predict_expression", "adata, use_rep=...") == (
        "run `mst.tl.predict_expression(adata, use_rep=...)` first"
    )
    assert rep_hint("X_pca") == "Run `sc.pp.pca` (on log-normalised expression) first."
    assert "`mst.tl.fuse`" in rep_hint("X_fused")
    assert "embed_patches(sdata, model='uni')" in rep_hint("X_uni")
    assert "model=..." in rep_hint("feats")
    assert "'feats'" in rep_hint("feats")


# --- image <-> shapes ---------------------------------------------------------------------------------------------
def _sdata(images: dict[str, dict], shapes_tf: dict):
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel

    img = np.zeros((3, 8, 8), dtype=np.uint8)
    return SpatialData(
        images={k: Image2DModel.parse(img, dims=("c", "y", "x"), transformations=tf) for k, tf in images.items()},
        shapes={
            "C2_spots": ShapesModel.parse(
                np.array([[1.0, 1.0]]), geometry=0, radius=np.ones(1), transformations=shapes_tf
            )
        },
    )


def test_match_image_rule():
    from spatialdata.transformations import Identity, Scale

    from morphst._utils._match import match_image

    sc = Scale([2.0, 2.0], axes=("x", "y"))
    sd = _sdata({"b_img": {"global": Identity()}, "C2_he": {"global": Identity()}}, {"global": Identity()})
    shapes = sd.shapes["C2_spots"]
    with pytest.raises(ValueError, match="Several images share a coordinate system"):
        match_image(sd, shapes, "C2_spots")
    assert match_image(sd, shapes, "C2_spots", several="first") == ("C2_he", "global")  # named after the region
    assert match_image(sd, shapes, "C2_spots", recorded="b_img") == ("b_img", "global")  # the recorded one wins
    assert match_image(sd, shapes, "C2_spots", "b_img") == ("b_img", "global")
    with pytest.raises(KeyError, match="Available images"):
        match_image(sd, shapes, "C2_spots", "nope")
    # the shapes' untransformed system, among the shared ones, whatever the order
    sd2 = _sdata({"img": {"scaled": sc, "own": sc}}, {"scaled": sc, "own": Identity()})
    assert match_image(sd2, sd2.shapes["C2_spots"], "C2_spots") == ("img", "own")
    sd3 = _sdata({"img": {"other": Identity()}}, {"global": Identity()})
    with pytest.raises(ValueError, match="No image shares"):
        match_image(sd3, sd3.shapes["C2_spots"], "C2_spots")
    assert match_image(sd3, sd3.shapes["C2_spots"], "C2_spots", several="first") == (None, None)
    with pytest.raises(ValueError, match="share no coordinate system"):
        match_image(sd3, sd3.shapes["C2_spots"], "C2_spots", "img")


# --- renamed keywords ---------------------------------------------------------------------------------------------
def test_xenium_like_pixel_size_is_um_per_px_with_a_future_warning():
    import morphst as mst

    new = mst.datasets.xenium_like(40, n_genes=5, um_per_px=0.5, n_levels=1)
    with pytest.warns(FutureWarning, match=r"pass `um_per_px=`"):
        old = mst.datasets.xenium_like(40, n_genes=5, pixel_size=0.5, n_levels=1)
    assert new.tables["table"].uns["morphst_dataset"]["um_per_px"] == 0.5
    from morphst._utils import image_levels

    assert (
        image_levels(new.images["morphology_focus"])[0].shape == image_levels(old.images["morphology_focus"])[0].shape
    )
    np.testing.assert_array_equal(new.tables["table"].X.toarray(), old.tables["table"].X.toarray())
    with pytest.raises(ValueError, match="`um_per_px` must be positive"):
        mst.datasets.xenium_like(40, n_genes=5, um_per_px=0.0)


def test_train_errors_name_train():
    from morphst.tl._translation import resolve_train

    a = _adata(section=["A", "A", "B", "B"])
    a.obs["w"] = [0.5, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"`adata.obs\['w'\]` must be boolean \(True = use the spot, as `train`\)"):
        resolve_train(a, "w", None, None)
    with pytest.raises(KeyError, match=r"`train` column 'nope' not found"):
        resolve_train(a, "nope", None, None)
    with pytest.raises(ValueError, match=r"`train` must be boolean or integer positions"):
        resolve_train(a, np.array([0.5, 1.0]), None, None)
    assert resolve_train(a, ["B"], a.obs["section"].to_numpy(object), "section").tolist() == [False, False, True, True]


# --- the writer ---------------------------------------------------------------------------------------------------
def test_save_results_writes_and_logs_every_slot(morphst_log):
    from morphst._utils import save_results

    a = _adata(section=["A", "B"])
    z = np.arange(6.0).reshape(2, 3)
    out = save_results(a, [("obsm", "X_z", z), ("uns", "X_z", {"params": {}})], summary="found 3 things")
    assert out is None
    np.testing.assert_array_equal(a.obsm["X_z"], z)
    assert morphst_log.messages[-1] == "    finished: found 3 things; added `.obsm['X_z']` (2, 3), `.uns['X_z']`"
    b = _adata(section=["A", "B"])
    c = save_results(b, [("obs", "d", ["x", "y"])], copy=True, written=[("uns", "patches")])
    assert "d" not in b.obs.columns  # copy: the original is left as it was
    assert c.obs["d"].tolist() == ["x", "y"]
    assert morphst_log.messages[-1] == "    finished: added `.obs['d']`, `.uns['patches']`"
