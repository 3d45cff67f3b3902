"""mst.pl: figures on real HER2ST results, helpful errors when a tl result is missing, the spot overlay geometry."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure

import morphst as mst
from morphst.pl import _spatial

GENES = ["ERBB2", "MGP"]


def panels(fig: Figure) -> list:
    """The plot panels of ``fig`` (colour bars excluded)."""
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def png_gray(fig: Figure, dpi: int = 40) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = plt.imread(buf)[..., :3]
    return img.mean(axis=-1) * 255


def blank_variance(fig: Figure, dpi: int = 40) -> float:
    """Pixel variance of a figure of the same size and layout holding the same number of empty axes."""
    n = len(panels(fig))
    ref, axs = plt.subplots(1, n, figsize=fig.get_size_inches(), squeeze=False)
    for a in axs.ravel():
        a.set_xticks([])
        a.set_yticks([])
    v = float(png_gray(ref, dpi).var())
    plt.close(ref)
    return v


def assert_non_trivial(fig: Figure) -> None:
    v = float(png_gray(fig).var())
    # a rendered plot must vary far more than empty frames of the same size, and more than a bound on 0-255
    assert v > 300.0
    assert v > 3 * blank_variance(fig)


def collections(ax) -> list[PatchCollection]:
    return [c for c in ax.collections if isinstance(c, PatchCollection)]


# ---- real results, computed once for the module (cheap: handcrafted features or expression PCA) -------------------


@pytest.fixture(scope="module")
def sdata(data_dir):
    """HER2ST C2–C6 with patches, handcrafted features, a leave-one-section-out translation, domains, evaluation."""
    import scanpy as sc

    sd = mst.datasets.her2st(data_dir=data_dir)
    ad = sd.tables["table"]
    mst.pp.extract_patches(sd, context_sizes_um=(336.0,))
    mst.tl.embed_patches(sd, model="handcrafted")  # model-free colour/texture features: cheap
    mst.tl.predict_expression(ad, use_rep="X_handcrafted", genes=[*GENES, "CD74", "GRB7"], select_on_train=False)
    # domains from expression (PCA of log1p HVGs), evaluated against the authors' clusters
    tmp = ad.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=1000)
    sc.pp.pca(tmp, n_comps=20, mask_var="highly_variable")
    ad.obsm["X_pca"] = tmp.obsm["X_pca"]
    mst.tl.domains(ad, use_rep="X_pca", method="kmeans", n_domains=7)
    mst.tl.evaluate_domains(ad, domain_key="domain", annotation_key="cluster")
    return sd


# ---- the overlay: spots land where they are on the image, through the transformations ------------------------------


def test_overlay_follows_transformations(synthetic_sdata):
    """Synthetic image with dark marks at known centres; circles given in another frame (scaled, translated)."""
    sd, centres = synthetic_sdata
    (panel,) = _spatial.build_panels(sd, [None], table_key="table", library_key="section", image_key=None, image_px=512)
    assert panel.image.shape[:2] == (512, 512)  # the full-resolution level: no rescaling
    np.testing.assert_allclose(panel.xy, centres, atol=1e-6)
    # every spot centre falls on its dark mark in the drawn image
    px = panel.image[np.floor(panel.xy[:, 1]).astype(int), np.floor(panel.xy[:, 0]).astype(int)]
    assert (px == 0).all()
    # radius 5 in the shapes' frame -> x2 to µm -> /0.5 µm/px = 20 px
    np.testing.assert_allclose(panel.radius, 20.0)
    # a coarser thumbnail: same spots, scaled by the level factor
    (coarse,) = _spatial.build_panels(
        sd, [None], table_key="table", library_key="section", image_key=None, image_px=128
    )
    f = 512 / coarse.image.shape[1]
    np.testing.assert_allclose(coarse.xy, centres / f, atol=1e-6)
    np.testing.assert_allclose(coarse.radius, 20.0 / f)


def test_thumbnail_fast_path_matches_block_mean(her2st_sdata):
    """The strided, block-averaged read of a lazily computed level approximates the exact 16 x 16 block mean."""
    from skimage.transform import downscale_local_mean

    from morphst._utils import image_levels

    levels = image_levels(her2st_sdata.images["C4_he"])
    fast, sx, sy = _spatial._read_level(levels[0], levels[-1])
    assert sx == sy == 16.0
    assert abs(fast.shape[0] - levels[-1].sizes["y"]) <= 1
    assert abs(fast.shape[1] - levels[-1].sizes["x"]) <= 1
    crop = np.moveaxis(np.asarray(levels[0][:, 2048:6144, 2048:6144].values), 0, -1).astype(float)
    exact = downscale_local_mean(crop, (16, 16, 1))  # thumbnail pixels 128..383
    pyramid = np.moveaxis(np.asarray(levels[-1][:, 128:384, 128:384].values), 0, -1).astype(float)
    err_fast = np.abs(fast[128:384, 128:384] - exact).mean()
    err_pyramid = np.abs(pyramid - exact).mean()
    # as close to the true block mean as the pyramid level itself (which rounds at every level), and small
    assert err_fast <= err_pyramid
    assert err_fast < 5.0  # of 255


# ---- predicted_vs_observed ----------------------------------------------------------------------------------------


def test_predicted_vs_observed(sdata):
    ad = sdata.tables["table"]
    fig = mst.pl.predicted_vs_observed(sdata, GENES, library_id="C3", return_fig=True)
    assert isinstance(fig, Figure)
    axs = panels(fig)
    assert len(axs) == 2 * len(GENES)
    c3 = (ad.obs["section"] == "C3").to_numpy()
    fm = ad.uns["predicted"]["fold_metrics"]
    for i, g in enumerate(GENES):
        obs_ax, pred_ax = axs[2 * i], axs[2 * i + 1]
        (obs_c,) = collections(obs_ax)
        (pred_c,) = collections(pred_ax)
        assert len(obs_c.get_paths()) == c3.sum()  # one circle per spot of the section
        j = ad.var_names.get_loc(g)
        np.testing.assert_allclose(obs_c.get_array(), ad.layers["log1p_cp10k"][c3, j].toarray().ravel(), rtol=1e-6)
        np.testing.assert_allclose(pred_c.get_array(), ad.layers["predicted"][c3, j], rtol=1e-6)
        # the title holds the held-out PCC of the fold that left C3 out, and it is the r of what is drawn
        fold = ad.obs.loc[c3, "predicted_fold"].astype(str).unique()
        assert len(fold) == 1
        want = fm[(fm["fold"].astype(str) == fold[0]) & (fm["gene"] == g)]["pcc"].item()
        assert f"held-out PCC {want:.2f}" in pred_ax.get_title()
        r = np.corrcoef(np.asarray(obs_c.get_array()), np.asarray(pred_c.get_array()))[0, 1]
        assert r == pytest.approx(want, abs=1e-5)
        # by default each panel spans its own values
        assert obs_c.get_clim() == pytest.approx((obs_c.get_array().min(), obs_c.get_array().max()))
        assert pred_c.get_clim() == pytest.approx((pred_c.get_array().min(), pred_c.get_array().max()))
    # colour bars name the scale of the values: the translation target, for the predictions too
    target = ad.uns["predicted"]["params"]["target"]
    assert target == "log1p_cp10k"
    bars = [a.get_ylabel() for a in fig.axes if a.get_label() == "<colorbar>"]
    assert bars == [f"observed {target}", f"predicted {target}"] * len(GENES)
    assert "own colour scale per panel; same_scale=True to share" in fig.get_suptitle()
    assert_non_trivial(fig)
    plt.close(fig)


def test_predicted_vs_observed_on_given_axes_and_shared_scale(sdata):
    fig, axs = plt.subplots(1, 2)
    out = mst.pl.predicted_vs_observed(sdata, "ERBB2", library_id="C2", ax=list(axs), same_scale=True, show=False)
    assert out is None
    (a,), (b,) = collections(axs[0]), collections(axs[1])
    assert a.get_clim() == b.get_clim()
    both = np.concatenate([a.get_array(), b.get_array()])
    assert a.get_clim() == pytest.approx((both.min(), both.max()))
    # on given axes the figure's suptitle is left alone: the note goes into the first predicted panel's title
    assert fig.get_suptitle() == ""
    assert axs[1].get_title().endswith("(observed and predicted share one colour scale per gene)")
    plt.close(fig)


def test_predicted_vs_observed_errors(her2st_copy, sdata):
    with pytest.raises(KeyError, match=r"mst\.tl\.predict_expression"):
        mst.pl.predicted_vs_observed(her2st_copy, "ERBB2")
    with pytest.raises(ValueError, match="not predicted"):
        mst.pl.predicted_vs_observed(sdata, "ACTB")
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        mst.pl.predicted_vs_observed(sdata, "NOT_A_GENE")
    with pytest.raises(ValueError, match="C9"):
        mst.pl.predicted_vs_observed(sdata, "ERBB2", library_id="C9")


# ---- gene_metrics -------------------------------------------------------------------------------------------------


def test_gene_metrics(sdata):
    ad = sdata.tables["table"]
    fig = mst.pl.gene_metrics(sdata, return_fig=True)
    (ax,) = panels(fig)
    want = ad.var["predicted_pcc"].dropna().sort_values(ascending=False)
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, want.to_numpy(), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(want.index)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"mean over genes of per-gene fold means {want.mean():.3f}" in legend
    fm = ad.uns["predicted"]["fold_metrics"]
    n_dots = sum(len(c.get_offsets()) for c in ax.collections if c.get_offsets().shape[0] > 1)
    assert n_dots == int(np.isfinite(fm["pcc"].to_numpy(float)).sum())
    assert_non_trivial(fig)
    plt.close(fig)
    # errors: lower is better, so the order flips
    fig = mst.pl.gene_metrics(ad, metric="rmse", n_genes=2, return_fig=True)
    (ax,) = panels(fig)
    best2 = ad.var["predicted_rmse"].dropna().sort_values().iloc[:2]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], best2.to_numpy(), rtol=1e-6)
    plt.close(fig)


def test_gene_metrics_ranks_genes_of_all_folds_first():
    import anndata as ad
    import pandas as pd

    # gene A: predicted in 1 of 5 folds (r 0.54 there); B and C in all 5 (means 0.30 and 0.40)
    rows = [("f0", "A", 0.54)] + [(f"f{k}", g, v) for k in range(5) for g, v in (("B", 0.3), ("C", 0.4))]
    fm = pd.DataFrame(rows, columns=["fold", "gene", "pcc"])
    fm["fold"] = pd.Categorical(fm["fold"], categories=[f"f{k}" for k in range(5)])
    a = ad.AnnData(np.zeros((3, 4), np.float32), var=pd.DataFrame(index=["A", "B", "C", "D"]))
    a.var["predicted_pcc"] = [0.54, 0.3, 0.4, np.nan]
    a.var["predicted_mask"] = [True, True, True, False]
    a.var["predicted_n_folds"] = [1, 5, 5, 0]
    a.uns["predicted"] = {"fold_metrics": fm, "per_fold": pd.DataFrame({"fold": [f"f{k}" for k in range(5)]})}
    fig = mst.pl.gene_metrics(a, return_fig=True)
    (axis,) = panels(fig)
    assert [t.get_text() for t in axis.get_xticklabels()] == ["C", "B", "A (1/5)"]
    heights = sorted((p.get_x() + p.get_width() / 2, p.get_height()) for p in axis.patches)
    np.testing.assert_allclose([h for _, h in heights], [0.4, 0.3, 0.54])
    assert any("fewer than all 5 folds" in t.get_text() for t in axis.get_legend().get_texts())
    plt.close(fig)
    # labelled by a var column (gene symbols when var_names are Ensembl IDs)
    a.var["symbol"] = ["SYM_A", "SYM_B", "SYM_C", "SYM_D"]
    fig = mst.pl.gene_metrics(a, gene_symbols="symbol", return_fig=True)
    assert [t.get_text() for t in panels(fig)[0].get_xticklabels()] == ["SYM_C", "SYM_B", "SYM_A (1/5)"]
    plt.close(fig)
    # n_genes keeps the fair order: the 1-fold gene is not among the best two
    fig = mst.pl.gene_metrics(a, n_genes=2, return_fig=True)
    assert [t.get_text() for t in panels(fig)[0].get_xticklabels()] == ["C", "B"]
    plt.close(fig)


def test_gene_metrics_errors(her2st_adata, sdata):
    with pytest.raises(KeyError, match=r"mst\.tl\.predict_expression"):
        mst.pl.gene_metrics(her2st_adata)
    with pytest.raises(ValueError, match="metric"):
        mst.pl.gene_metrics(sdata, metric="r2")


# ---- domains ------------------------------------------------------------------------------------------------------


def test_domains(sdata):
    ad = sdata.tables["table"]
    fig = mst.pl.domains(sdata, annotation_key="cluster", match_colors=False, return_fig=True)
    axs = panels(fig)
    sections = list(ad.obs["section"].cat.categories)
    assert len(axs) == 2 * len(sections)
    # colours: each spot drawn in the colour of its domain (scanpy palette order, without colours that fade into H&E)
    from scanpy.pl import palettes

    from morphst.pl._spatial import visible_on_he

    cats = list(ad.obs["domain"].cat.categories)
    pal = visible_on_he(palettes.default_20)
    for j, s in enumerate(sections):
        (coll,) = collections(axs[j])
        labels = ad.obs.loc[(ad.obs["section"] == s).to_numpy(), "domain"].astype(str)
        want = matplotlib.colors.to_rgba_array([pal[cats.index(v)] for v in labels])
        np.testing.assert_allclose(coll.get_facecolors()[:, :3], want[:, :3])
        assert axs[j].get_title() == f"{s}: domain"
    # the reference row: its own palette (Dark2 without its slate purple, then Set2, for the 7 clusters), no colour
    # shared with the domain row
    ref_cats = list(ad.obs["cluster"].cat.categories)
    assert len(ref_cats) <= 8
    qualitative = [matplotlib.colors.to_hex(c) for n in ("Dark2", "Set2") for c in matplotlib.colormaps[n].colors]
    dark2 = [matplotlib.colors.to_rgb(c) for c in visible_on_he(qualitative)]
    dom_rgb, ref_rgb = set(), set()
    for j, s in enumerate(sections):
        dom_rgb |= {tuple(np.round(c[:3], 4)) for c in collections(axs[j])[0].get_facecolors()}
        (coll,) = collections(axs[len(sections) + j])
        labels = ad.obs.loc[(ad.obs["section"] == s).to_numpy(), "cluster"]
        want = [
            dark2[ref_cats.index(v)] if isinstance(v, str) else matplotlib.colors.to_rgb("lightgrey") for v in labels
        ]
        np.testing.assert_allclose(coll.get_facecolors()[:, :3], np.asarray(want))
        ref_rgb |= {tuple(np.round(c[:3], 4)) for c in coll.get_facecolors()}
    ref_rgb.discard(tuple(np.round(matplotlib.colors.to_rgb("lightgrey"), 4)))
    assert len(ref_rgb) == len(ref_cats)
    assert not (dom_rgb & ref_rgb)
    ev = ad.uns["domain_evaluation"]
    title = fig.get_suptitle()
    assert f"ARI {ev['ari']:.2f}" in title
    # the 7 HER2ST spots without an authors' cluster were left out of ARI/NMI, and the title says so
    assert ev["n_excluded"] == int(ad.obs["cluster"].isna().sum()) == 7
    assert ev["n_evaluated"] == ad.n_obs - 7
    assert f"({ad.n_obs - 7} spots; 7 with no cluster or domain label excluded" in title
    assert "all spots" not in title
    assert_non_trivial(fig)
    plt.close(fig)
    fig = mst.pl.domains(ad, library_id=["C2", "C5"], return_fig=True)  # AnnData: obsm["spatial"], no image
    assert len(panels(fig)) == 2
    plt.close(fig)


def test_domains_errors(her2st_copy, sdata):
    with pytest.raises(KeyError, match=r"mst\.tl\.domains"):
        mst.pl.domains(her2st_copy)
    with pytest.raises(KeyError, match="not_a_column"):
        mst.pl.domains(sdata, annotation_key="not_a_column")


# ---- patches ------------------------------------------------------------------------------------------------------


def test_patches(sdata):
    ad = sdata.tables["table"]
    fig = mst.pl.patches(sdata, n=6, color_by="section", return_fig=True)
    axs = panels(fig)
    assert len(axs) == 6 * 2  # main patch + one 336 µm context field each
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(np.arange(ad.n_obs), size=6, replace=False))
    want = mst.pp.get_patches(sdata, rows)
    ctx = mst.pp.get_patches(sdata, rows, context_index=0)
    for i in range(6):
        np.testing.assert_array_equal(axs[2 * i].get_images()[0].get_array(), want[i])
        np.testing.assert_array_equal(axs[2 * i + 1].get_images()[0].get_array(), ctx[i])
        assert axs[2 * i].get_title().startswith(str(ad.obs_names[rows[i]]))
    assert_non_trivial(fig)
    plt.close(fig)
    fig = mst.pl.patches(sdata, spots=list(ad.obs_names[:3]), show_context=False, return_fig=True)
    assert len(panels(fig)) == 3
    plt.close(fig)


def test_patches_errors(her2st_copy, sdata):
    with pytest.raises(KeyError, match=r"mst\.pp\.extract_patches"):
        mst.pl.patches(her2st_copy)
    assert "patches" not in her2st_copy.tables["table"].uns  # the plot does not compute anything
    with pytest.raises(KeyError, match="nope"):
        mst.pl.patches(sdata, spots=["nope"])
    with pytest.raises(TypeError, match="SpatialData"):
        mst.pl.patches(sdata.tables["table"])


def test_show_and_return_convention(sdata):
    assert mst.pl.gene_metrics(sdata, show=False) is None
    plt.close("all")
    assert isinstance(mst.pl.domains(sdata, library_id="C6", return_fig=True), Figure)
    plt.close("all")


def test_predicted_vs_observed_gene_not_predicted_in_section(sdata):
    """With in-fold gene selection a fold may not predict a gene: the panel says so (AnnData: obsm["spatial"])."""
    ad = sdata.tables["table"].copy()
    c3 = (ad.obs["section"] == "C3").to_numpy()
    ad.layers["predicted"][c3, ad.var_names.get_loc("ERBB2")] = np.nan
    fig = mst.pl.predicted_vs_observed(ad, ["ERBB2", "MGP"], library_id="C3", return_fig=True)
    axs = panels(fig)
    assert len(axs) == 4
    assert "not predicted here" in axs[1].get_title()
    assert "held-out PCC" in axs[3].get_title()
    assert len(axs[0].collections[0].get_offsets()) == c3.sum()  # no image: one marker per spot at obsm["spatial"]
    plt.close(fig)


# ---- shared docstring text ----------------------------------------------------------------------------------------


def test_inject_docs():
    from morphst._docs import doc_show_return, inject_docs

    @inject_docs(shared="a\n    b\n\nc", word="X")
    def f():
        """Sum {word} of uns[f"{key}_colors"].

        Parameters
        ----------
            {shared}
        """

    lines = f.__doc__.split("\n")
    assert lines[0] == 'Sum X of uns[f"{key}_colors"].'  # other braces are left alone
    assert lines[4:8] == ["            a", "                b", "", "            c"]  # indented like the placeholder
    with pytest.raises(ValueError, match="nope"):
        inject_docs(nope="x")(f)
    for name in mst.pl.__all__:
        doc = getattr(mst.pl, name).__doc__
        assert "{plot_params}" not in doc
        assert "{returns_fig}" not in doc
        assert "\n    show\n        Show the figure" in doc  # the shared text, at the parameters' indentation
        assert doc_show_return.split("\n")[1].strip() in doc


def test_background_is_the_image_the_patches_came_from(synthetic_factory):
    """spatialdata-io Visium: an all-black "..._hires_image" sorts before "..._lowres_image"; patches came from lowres."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata, _ = synthetic_factory(size_px=256)
    img = sdata.images["image"]
    tf = get_transformation(img, get_all=True)
    sdata.images["a_hires_image"] = Image2DModel.parse(
        np.zeros((3, 256, 256), np.uint8), dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations=tf
    )
    sdata.images["b_lowres_image"] = img
    del sdata.images["image"]
    adata = sdata.tables["table"]
    (before,) = _spatial.build_panels(
        sdata, [None], table_key="table", library_key="section", image_key=None, image_px=64
    )
    assert before.meta["image_key"] == "a_hires_image"  # without a record: alphabetical, the black placeholder
    mst.pp.extract_patches(sdata, image_key="b_lowres_image", patch_size=20.0, target_px=16)
    assert adata.uns["patches"]["regions"]["spots"]["image"] == "b_lowres_image"
    (panel,) = _spatial.build_panels(
        sdata, [None], table_key="table", library_key="section", image_key=None, image_px=64
    )
    assert panel.meta["image_key"] == "b_lowres_image"
    assert panel.image.mean() > 200  # the white synthetic slide, not the black placeholder
    # an explicit image_key still wins
    (forced,) = _spatial.build_panels(
        sdata, [None], table_key="table", library_key="section", image_key="a_hires_image", image_px=64
    )
    assert forced.meta["image_key"] == "a_hires_image"


def test_predicted_vs_observed_takes_gene_symbols(sdata):
    """As scanpy's ``gene_symbols=``: genes named in a var column (e.g. symbols when var_names are Ensembl IDs)."""
    ad = sdata.tables["table"]
    ad.var["alias"] = [f"ID_{g}" for g in ad.var_names]
    try:
        fig = mst.pl.predicted_vs_observed(sdata, ["ID_ERBB2"], gene_symbols="alias", library_id="C3", return_fig=True)
        obs_ax, pred_ax = panels(fig)
        c3 = (ad.obs["section"] == "C3").to_numpy()
        j = ad.var_names.get_loc("ERBB2")
        np.testing.assert_allclose(collections(pred_ax)[0].get_array(), ad.layers["predicted"][c3, j], rtol=1e-6)
        assert obs_ax.get_title().startswith("ID_ERBB2 observed")
        plt.close(fig)
        with pytest.raises(KeyError, match=r"'ERBB2' not found in `var\['alias'\]`"):
            mst.pl.predicted_vs_observed(sdata, ["ERBB2"], gene_symbols="alias")
        with pytest.raises(KeyError, match="is not a var column"):
            mst.pl.predicted_vs_observed(sdata, ["ERBB2"], gene_symbols="symbols")
    finally:
        del ad.var["alias"]


def test_predicted_expression_maps_a_translators_table(synthetic_factory):
    """An H&E-only section: the table of Translator.predict_sdata (X = predictions) drawn over the image."""
    sdata, centres = synthetic_factory()
    t = sdata.tables["table"]
    with pytest.raises(KeyError, match=r"apply a fitted translator first"):
        mst.pl.predicted_expression(sdata, "gene_a", table_key="table")
    t.uns["morphst_translation"] = {"params": {"target": "log1p_cp10k"}}
    fig = mst.pl.predicted_expression(sdata, ["gene_b", "gene_a"], table_key="table", return_fig=True)
    axs = panels(fig)
    assert len(axs) == 2  # two genes, one section (region "spots")
    for a, g in zip(axs, ["gene_b", "gene_a"], strict=True):
        (c,) = collections(a)
        np.testing.assert_allclose(c.get_array(), t[:, g].X.ravel(), rtol=1e-6)
        assert a.get_title() == f"{g} predicted (spots)"
        # the circles sit on the spot marks of the image: centres in thumbnail px, scaled from full-res px
        img_h = a.images[0].get_array().shape[0]
        xy = np.array([p.get_extents().get_points().mean(0) for p in c.get_paths()]) * (512 / img_h)  # image px
        np.testing.assert_allclose(xy, centres, atol=512 / img_h)
    bars = [a.get_ylabel() for a in fig.axes if a.get_label() == "<colorbar>"]
    assert bars == ["predicted log1p_cp10k"] * 2
    assert_non_trivial(fig)
    plt.close(fig)
    with pytest.raises(KeyError, match="were not predicted"):
        mst.pl.predicted_expression(sdata, "ERBB2", table_key="table")


def test_domains_colours_matched_to_the_reference():
    """Domains that equal the layers under other names get the layers' colours; one section: side by side."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 300
    xy = rng.uniform(0, 100, (n, 2))
    layer = np.array(["L1", "L2", "L3"])[np.digitize(xy[:, 1], [33, 66])]
    rename = {"L1": "2", "L2": "0", "L3": "1"}  # the domains find the layers, named otherwise
    dom = np.array([rename[v] for v in layer], dtype=object)
    dom[:40] = "3"  # and a fourth domain with no layer of its own
    a = ad.AnnData(np.zeros((n, 1), np.float32), obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]))
    a.obsm["spatial"] = xy
    a.obs["domain"] = pd.Categorical(dom)
    a.obs["layer"] = pd.Categorical(layer)
    from morphst.pl._domains import match_categories

    assert match_categories(a.obs["domain"], a.obs["layer"]) == {"0": "L2", "1": "L3", "2": "L1"}
    fig = mst.pl.domains(a, annotation_key="layer", return_fig=True)
    d_ax, r_ax = panels(fig)
    w, h = fig.get_size_inches()
    assert w > h  # side by side
    dom_fc = d_ax.collections[0].get_facecolors()[:, :3]
    ref_fc = r_ax.collections[0].get_facecolors()[:, :3]
    same = dom[:] != "3"
    np.testing.assert_allclose(dom_fc[same], ref_fc[same])  # matched domains: the colour of their layer
    ref_colours = {tuple(np.round(c, 4)) for c in ref_fc}
    assert not ({tuple(np.round(c, 4)) for c in dom_fc[~same]} & ref_colours)  # the extra domain: a colour of its own
    legend = [t.get_text() for t in d_ax.get_legend().get_texts()]
    assert legend == ["0 ~ L2", "1 ~ L3", "2 ~ L1", "3"]
    plt.close(fig)


def test_scale_bar_has_the_right_length(synthetic_factory):
    """The synthetic slide is 0.5 µm/px (512 px, "global" in µm): the bar's length in data px is its label / 0.5."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    sdata, _ = synthetic_factory()
    (panel,) = _spatial.build_panels(
        sdata, [None], table_key="table", library_key="section", image_key=None, image_px=128
    )
    # thumbnail of 128 px for 512 full-resolution px at 0.5 µm/px: 2 µm per thumbnail px
    assert panel.meta["um_per_px"] == pytest.approx(2.0)
    fig, axis = plt.subplots()
    _spatial.draw_panel(axis, panel, colors=["k"] * len(panel.rows))
    (bar,) = [a for a in axis.artists if isinstance(a, AnchoredSizeBar)]
    width_um = np.ptp(axis.get_xlim()) * 2.0
    label = bar.txt_label.get_text()
    length_um = float(label.split()[0]) * (1000 if label.endswith("mm") else 1)
    assert length_um in {1, 2, 5, 10, 20, 50, 100, 200, 500}
    assert 0.1 * width_um < length_um <= 0.2 * width_um
    (rect,) = bar.size_bar.get_children()
    assert rect.get_width() == pytest.approx(length_um / 2.0)  # data px = µm / (µm per px)
    plt.close(fig)
    # without a known unit (an AnnData with obsm["spatial"]) no bar is drawn
    a = sdata.tables["table"].copy()
    a.obsm["spatial"] = np.zeros((a.n_obs, 2)) + np.arange(a.n_obs)[:, None]
    (p2,) = _spatial.build_panels(a, [None], table_key="table", library_key="section", image_key=None, image_px=128)
    fig, axis = plt.subplots()
    _spatial.draw_panel(axis, p2, colors=["k"] * len(p2.rows))
    assert not [x for x in axis.artists if isinstance(x, AnchoredSizeBar)]
    plt.close(fig)


def test_demo_map_figure_draws_the_best_genes_on_the_tissue(sdata, tmp_path):
    from morphst._demo import gene_table, map_figure

    ad = sdata.tables["table"]
    genes = gene_table(ad)
    drawn = map_figure(sdata, genes, "C3", tmp_path / "map.png")
    assert drawn == list(genes.index[:2])  # select_on_train=False here: every gene is in every fold
    img = plt.imread(tmp_path / "map.png")[..., :3]
    assert img.shape[0] > 400
    assert float((img.mean(-1) * 255).var()) > 300.0  # an H&E with spots, not a blank page
