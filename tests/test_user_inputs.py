"""What new users hit: colours over H&E, plots called too early, border tissue, stain checks, weights files,
zero-count spots, mixed section labels, wrong-length inputs. Each case asserts the value or the error, and that a
failed call wrote nothing."""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

import morphst as mst

matplotlib.use("Agg")
import matplotlib.pyplot as plt


# ---- pl.domains colours over H&E ---------------------------------------------------------------------------------
def test_he_reference_colours_are_beer_lambert_of_the_stain_vectors():
    from morphst.pl._spatial import he_colors

    c = he_colors()
    assert c.shape == (11, 3)
    # haematoxylin alone, one unit: exp(-(0.5626, 0.7201, 0.4062)), by hand
    np.testing.assert_allclose(c[5], [0.56973, 0.48669, 0.66618], atol=1e-4)  # (h, e) = (1, 0)


def test_dark2_slate_purple_fades_into_haematoxylin_and_is_left_out():
    from skimage.color import deltaE_cie76, rgb2lab

    from morphst.pl._spatial import HE_MIN_CONTRAST, he_colors, he_contrast, reference_colors, visible_on_he

    # Dark2's third colour against haematoxylin (one unit): CIE76 ΔE from skimage's own function
    slate = np.array([[[0x75, 0x70, 0xB3]]]) / 255
    d = float(deltaE_cie76(rgb2lab(slate), rgb2lab(he_colors()[5][None, None]))[0, 0])
    assert d < 15
    assert he_contrast(["#7570b3"])[0] <= d + 1e-9
    assert visible_on_he(["#1b9e77", "#7570b3", "#d95f02"]) == ["#1b9e77", "#d95f02"]
    # every colour pl.domains picks for up to 20 categories is at least HE_MIN_CONTRAST from every H&E colour
    cols = list(reference_colors([str(i) for i in range(20)]).values())
    assert "#7570b3" not in cols
    assert len(set(cols)) == 20
    assert he_contrast(cols).min() >= HE_MIN_CONTRAST


def test_domain_colours_stay_visible_over_he():
    from morphst.pl._domains import _matched_colors
    from morphst.pl._spatial import HE_MIN_CONTRAST, category_colors, he_contrast, reference_colors

    a = ad.AnnData(np.zeros((3, 1), np.float32))
    cats = [str(i) for i in range(28)]
    dom = list(category_colors(a, "domain", cats).values())
    assert len(set(dom)) == 28
    assert he_contrast(dom).min() >= HE_MIN_CONTRAST
    ref = reference_colors(["a", "b"])
    matched = _matched_colors(["0", "1", "2", "3"], {"0": "a"}, ref)
    assert matched["0"] == ref["a"]
    assert he_contrast(list(matched.values())).min() >= HE_MIN_CONTRAST
    # colours the user stored (scanpy's uns[f"{key}_colors"]) are kept as they are
    a.uns["domain_colors"] = ["#7570b3", "#000000"]
    assert list(category_colors(a, "domain", ["x", "y"]).values()) == ["#7570b3", "#000000"]


# ---- pl.predicted_expression before a translator; maps of genes not predicted in every fold -----------------------
def test_predicted_expression_before_any_translator_says_what_to_run(synthetic_sdata):
    sdata, _ = synthetic_sdata
    tables = list(sdata.tables)
    with pytest.raises(KeyError, match=r"apply a fitted translator first \(`tr.predict_sdata\(sdata\)`") as e:
        mst.pl.predicted_expression(sdata, "gene_a")
    assert "No table 'morph_predicted'" in str(e.value)
    assert "Available tables: ['table']" in str(e.value)
    assert list(sdata.tables) == tables


def _partial_fold_table():
    """16 spots on a 4 x 4 grid, two spatial folds; gene B predicted in fold 0 only (NaN in fold 1)."""
    n = 16
    xy = np.array([(i % 4, i // 4) for i in range(n)], dtype=float) * 10
    fold = np.where(xy[:, 0] < 20, "0", "1")
    rng = np.random.default_rng(0)
    obs_v = rng.normal(size=(n, 2)).astype(np.float32)
    pred = obs_v.copy()
    pred[fold == "1", 1] = np.nan
    a = ad.AnnData(obs_v, obs=pd.DataFrame({"predicted_fold": fold}, index=[f"s{i}" for i in range(n)]))
    a.var_names = ["A", "B"]
    a.obsm["spatial"] = xy
    a.layers["log1p_cp10k"] = obs_v
    a.layers["predicted"] = pred
    a.var["predicted_mask"] = True
    a.uns["predicted"] = {"params": {"target": "log1p_cp10k"}}
    return a


def test_map_of_a_gene_not_predicted_in_every_fold_has_a_legend_entry():
    a = _partial_fold_table()
    fig = mst.pl.predicted_vs_observed(a, ["A", "B"], return_fig=True)
    axes = [x for x in fig.axes if x.get_label() != "<colorbar>"]
    # rows: A (predicted in both folds), B (fold 0 only); columns: observed, predicted
    legends = [x.get_legend() for x in axes]
    assert legends[1] is None  # A predicted everywhere: no entry
    assert legends[0] is None
    assert legends[2] is None
    assert [t.get_text() for t in legends[3].get_texts()] == ["not predicted in this fold"]
    # and the 8 spots of fold 1 are drawn light grey
    fig.canvas.draw()
    fc = axes[3].collections[0].get_facecolors()
    grey = matplotlib.colors.to_rgba("lightgrey")[:3]
    assert int(np.isclose(fc[:, :3], grey, atol=1e-3).all(axis=1).sum()) == 8
    plt.close(fig)


# ---- third-party warnings that morphst's own calls trigger ---------------------------------------------------------
def test_quiet_third_party_silences_only_the_known_messages_inside_the_block():
    from morphst._utils._quiet import quiet_third_party

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with quiet_third_party():
            warnings.warn("'n_jobs' is not a valid key!", SyntaxWarning, stacklevel=1)
            warnings.warn("Parameter `area_threshold` is deprecated since version 0.26.0", FutureWarning, stacklevel=1)
            warnings.warn("Converting `region_key: region` to categorical dtype.", UserWarning, stacklevel=1)
            warnings.warn("something the user must see", UserWarning, stacklevel=1)
        warnings.warn("'x' is not a valid key!", SyntaxWarning, stacklevel=1)  # outside: untouched
    assert [str(w.message) for w in rec] == ["something the user must see", "'x' is not a valid key!"]


def test_importing_squidpy_through_morphst_prints_no_docrep_warning():
    import subprocess
    import sys

    code = "from morphst._utils._quiet import import_squidpy; import_squidpy()"
    r = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True)
    assert "SyntaxWarning" not in r.stderr
    # the same import without morphst's guard does print it (so the test can fail)
    r = subprocess.run([sys.executable, "-W", "default", "-c", "import squidpy"], capture_output=True, text=True)
    assert "is not a valid key" in r.stderr


def test_dlpfc_loads_without_the_readers_region_key_warning(data_dir):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        sdata = mst.datasets.dlpfc(data_dir=data_dir)
    assert "151673" in sdata.shapes
    assert not [w for w in rec if "region_key" in str(w.message)]


# ---- stain normalisation inside a translator ----------------------------------------------------------------------
def _stain_reference():
    sqe = pytest.importorskip("squidpy.experimental.im")
    return sqe.StainReference(
        method="macenko",
        stain_matrix=np.array([[0.65, 0.07, 0.27], [0.70, 0.99, 0.57], [0.29, 0.11, 0.78]]),
        white_point=np.array([255.0, 255.0, 255.0]),
    )


def _add_image(sdata, name, arr, like="image"):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    tr = get_transformation(sdata.images[like], get_all=True)
    sdata.images[name] = Image2DModel.parse(arr, dims=("c", "y", "x"), transformations=tr)


def test_translator_with_stain_reference_checks_the_image_choice_first(synthetic_sdata):
    sdata, _ = synthetic_sdata
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    mst.tl.embed_patches(sdata, model="handcrafted")
    sdata.tables["table"].X = np.rint(sdata.tables["table"].X)  # counts
    tr = mst.tl.fit_translator(
        sdata.tables["table"], "X_handcrafted", genes=["gene_a", "gene_b"], stain_reference=_stain_reference()
    )
    # a 1-channel DAPI next to the H&E, in the same coordinate system
    _add_image(sdata, "dapi", np.random.default_rng(0).integers(0, 4000, (1, 512, 512)).astype(np.uint16))
    before = (list(sdata.images), list(sdata.tables), list(sdata.labels))
    with pytest.raises(ValueError, match=r"Several images share a coordinate system with shapes 'spots'.*image_key="):
        tr.predict_sdata(sdata, shapes_key="spots", model="handcrafted")
    with pytest.raises(ValueError, match=r"image 'dapi' has 1 channel\(s\), not RGB\. Pass `image_key=` naming"):
        tr.predict_sdata(sdata, shapes_key="spots", image_key="dapi", model="handcrafted")
    assert (list(sdata.images), list(sdata.tables), list(sdata.labels)) == before


def test_stain_normalisation_of_a_blank_image_names_it_and_the_fix(synthetic_sdata):
    from morphst.pp._patches._stain import normalize_stains_checked

    sdata, _ = synthetic_sdata
    # glass with one faint 10 px smudge: squidpy finds no tissue to fit stain vectors on
    blank = np.clip(np.random.default_rng(0).normal(245, 3, (3, 256, 256)), 0, 255).astype(np.uint8)
    blank[:, 100:110, 100:110] = np.array([200, 180, 200], np.uint8)[:, None, None]
    _add_image(sdata, "blank_he", blank)
    with pytest.raises(ValueError, match=r"Stain normalisation of image 'blank_he' to the translator's macenko") as e:
        normalize_stains_checked(sdata, "blank_he", _stain_reference())
    assert "too little tissue" in str(e.value)
    assert "pass `image_key=`" in str(e.value)


# ---- weights files --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet18_state():
    import timm
    import torch

    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()


def test_truncated_safetensors_in_the_weights_dir_names_the_file(tmp_path, monkeypatch, resnet18_state):
    from safetensors.torch import save_file

    f = tmp_path / "resnet18.safetensors"
    save_file(resnet18_state, str(f))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # an interrupted download
    monkeypatch.setattr(mst.settings, "weights_dir", tmp_path)
    with pytest.raises(ValueError, match=r"Weights file '.*resnet18\.safetensors' \([\d,]+ bytes\) cannot be") as e:
        mst.tl.models.get_model("resnet18")
    assert f"({len(data) // 2:,} bytes)" in str(e.value)
    assert "truncated or corrupt" in str(e.value)
    assert "download it again" in str(e.value)


def test_state_dict_of_another_architecture_names_file_model_and_keys(tmp_path, resnet18_state):
    import torch

    f = tmp_path / "weights.pth"
    torch.save(resnet18_state, f)
    with pytest.raises(ValueError, match=r"does not fit model 'densenet121' \(densenet121") as e:
        mst.tl.models.get_model("densenet121", weights=f)
    msg = str(e.value)
    assert str(f) in msg
    assert f"the file has {len(resnet18_state)})" in msg
    assert "missing (e.g. features.conv0.weight" in msg
    assert "unexpected (e.g. conv1.weight" in msg
    assert "another architecture" in msg


def test_pickled_whole_model_is_refused_with_what_to_do(tmp_path):
    import torch

    f = tmp_path / "resnet18_model.pth"
    torch.save(torch.nn.Linear(3, 2), f)  # the whole module, pickled
    with pytest.raises(ValueError, match=r"holds pickled Python objects.*torch\.save\(model\.state_dict\(\), path\)"):
        mst.tl.models.get_model("resnet18", weights=f)


# ---- one all-zero spot ----------------------------------------------------------------------------------------------
def _counts_with_an_empty_spot(n: int = 300, g: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.5, 2, (1, g)) * rng.uniform(0.5, 2, (n, 1))
    x = rng.poisson(lam).astype(np.float32)
    x[17] = 0  # one spot without counts (e.g. a spot off the tissue kept by mistake)
    a = ad.AnnData(x)
    a.var_names = [f"g{i}" for i in range(g)]
    a.obs["section"] = pd.Categorical(np.repeat(["A", "B", "C"], n // 3))
    a.obsm["X_feat"] = rng.normal(size=(n, 8)).astype(np.float32)
    return a


@pytest.mark.parametrize("min_fraction", [0.1, 0.0])
def test_one_zero_count_spot_does_not_break_the_default_gene_selection(min_fraction):
    a = _counts_with_an_empty_spot()
    assert ((a.X > 0).mean(0) >= 0.1).sum() > 10  # plenty of genes are detected in >= 10% of the spots
    mst.pp.select_genes(a, 10, min_fraction=min_fraction)
    got = set(a.var_names[a.var["morph_target"].to_numpy(bool)])
    # the same genes as on the 299 spots with counts (the empty spot adds no information)
    b = a[np.arange(a.n_obs) != 17].copy()
    mst.pp.select_genes(b, 10, min_fraction=min_fraction * a.n_obs / b.n_obs)
    assert len(got) == 10
    assert got == set(b.var_names[b.var["morph_target"].to_numpy(bool)])


def test_one_zero_count_spot_does_not_break_predict_expression():
    a = _counts_with_an_empty_spot()
    mst.tl.predict_expression(a, "X_feat", cv="leave_one_group_out")
    # every fold selects, on its training spots (two of three hold the empty spot), all the genes detected in >= 10%
    # of them: 49 of the 50 asked for
    for s in "ABC":
        train = (a.obs["section"] != s).to_numpy()
        assert int(((a.X[train] > 0).mean(0) >= 0.1).sum()) == 49
    assert a.uns["predicted"]["per_fold"]["n_genes"].tolist() == [49, 49, 49]
    assert np.isfinite(a.layers["predicted"]).sum() == 3 * 100 * 49


def test_a_table_without_any_count_names_the_cause_and_writes_nothing():
    a = _counts_with_an_empty_spot()
    a.X[:] = 0
    cols = list(a.var.columns)
    with pytest.raises(ValueError, match="Every one of the 300 spots has zero total expression"):
        mst.pp.select_genes(a, 10)
    assert list(a.var.columns) == cols


# ---- section labels of mixed types ---------------------------------------------------------------------------------
def _mixed_sections(n_per: int = 40, seed: int = 0):
    """Three sections labelled 1, "1" and 2 (an object column, as a concatenation of differently read tables gives)."""
    rng = np.random.default_rng(seed)
    n = 3 * n_per
    a = ad.AnnData(rng.poisson(3, (n, 30)).astype(np.float32))
    a.var_names = [f"g{i}" for i in range(30)]
    a.obs["section"] = pd.Series([1] * n_per + ["1"] * n_per + [2] * n_per, index=a.obs_names, dtype=object)
    grid = np.array([(i % 8, i // 8) for i in range(n_per)], dtype=float) * 100
    a.obsm["spatial"] = np.vstack([grid] * 3)
    a.obsm["X_pca"] = rng.normal(size=(n, 5)).astype(np.float32)
    a.obsm["X_feat"] = rng.normal(size=(n, 5)).astype(np.float32)
    a.obs["domain"] = pd.Categorical(rng.integers(0, 3, n).astype(str))
    return a


def _state(a):
    return sorted(a.obs.columns), sorted(a.obsm), sorted(a.uns), sorted(a.layers), sorted(a.var.columns)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: mst.tl.fuse(a, ("X_pca", "X_feat"), method="graph"),
        lambda a: mst.tl.fuse(a, ("X_pca", "X_feat")),
        lambda a: mst.tl.evaluate_domains(a, "domain"),
        lambda a: mst.tl.predict_expression(a, "X_feat"),
    ],
    ids=["fuse_graph", "fuse_smooth", "evaluate_domains", "predict_expression"],
)
def test_mixed_type_section_labels_are_refused_before_anything_is_written(call):
    a = _mixed_sections()
    before = _state(a)
    with pytest.raises(ValueError, match=r"`adata.obs\['section'\]` mixes label types: 1 \(number\), '1' \(str\)") as e:
        call(a)
    assert ".astype(str).astype('category')" in str(e.value)
    assert _state(a) == before
    # once the column has one type, "1" and 1 are one section: 80 spots
    a.obs["section"] = a.obs["section"].astype(str).astype("category")
    assert a.obs["section"].value_counts().to_dict() == {"1": 80, "2": 40}


def test_section_labels_of_one_type_pass():
    from morphst._utils._labels import check_section_labels

    a = _mixed_sections()
    for labels in ([1, 2, 3], ["C1", "C2", "C3"], [1.0, 2.0, 2.0]):
        a.obs["section"] = np.repeat(labels, 40)
        check_section_labels(a, "section")
    a.obs["section"] = pd.Categorical(np.repeat([1, 2, 3], 40))
    check_section_labels(a, "section")
    check_section_labels(a, None)


# ---- wrong-length genes, n_neighs beyond the sections --------------------------------------------------------------
def test_gene_table_with_genes_of_the_wrong_length():
    from morphst.tl import metrics

    y = np.arange(12, dtype=float).reshape(4, 3)
    with pytest.raises(ValueError, match=r"`genes` has 2 name\(s\) but `y_true` has 3 gene column\(s\) \(shape"):
        metrics.gene_table(y, y + 1, genes=["a", "b"])
    t = metrics.gene_table(y, y + 1, genes=["a", "b", "c"])
    assert list(t.index) == ["a", "b", "c"]
    np.testing.assert_allclose(t["mae"], 1.0)
    # one gene, one name (a string is a name, not a sequence of letters)
    assert list(metrics.gene_table(y[:, 0], y[:, 0] * 2, genes="ESR1").index) == ["ESR1"]


def _two_small_sections(n_a: int = 40, n_b: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    a = ad.AnnData(rng.poisson(3, (n, 6)).astype(np.float32))
    a.var_names = [f"g{i}" for i in range(6)]
    a.obs["section"] = pd.Categorical(["A"] * n_a + ["B"] * n_b)
    a.obsm["spatial"] = rng.uniform(0, 1000, (n, 2))
    a.obs["domain"] = pd.Categorical(np.tile(["0", "1"], n // 2))
    return a


def test_evaluate_domains_refuses_n_neighs_beyond_every_section():
    a = _two_small_sections()
    before = _state(a)
    with pytest.raises(ValueError, match=r"`n_neighs`=10000 .* the largest section has 40 observations \(so at most"):
        mst.tl.evaluate_domains(a, "domain", genes=["g0", "g1"], n_neighs=10000)
    assert _state(a) == before


def test_evaluate_domains_warns_when_a_section_caps_n_neighs():
    a = _two_small_sections()
    with pytest.warns(UserWarning, match=r"`n_neighs`=20 is more than some sections allow: section 'B': capped at 11"):
        mst.tl.evaluate_domains(a, "domain", genes=["g0", "g1"], n_neighs=20)
    assert "section 'B': n_neighs capped at 11 (12 observations)" in a.uns["domain_evaluation"]["params"]["notes"]
