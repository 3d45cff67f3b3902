"""Translator applicability domain: held-out sections read in-domain, shifted inputs out of domain (real data)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import morphst as mst

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
REP = "X_densenet121"


@pytest.fixture(scope="module")
def loso_translators(her2st_embedded):
    """One DenseNet-121 translator per leave-one-section-out fold of HER2ST C2–C6 (as predict_expression folds)."""
    adata = her2st_embedded
    mst.pp.normalize(adata)
    mst.pp.select_genes(adata, n_top_genes=50)
    return {
        s: mst.tl.fit_translator(adata, REP, train=[t for t in SECTIONS if t != s], library_key="section")
        for s in SECTIONS
    }


@pytest.fixture(scope="module")
def densenet(weights_dir):
    from morphst.tl.models import get_model

    enc = get_model(
        "densenet121", weights=weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    )
    return enc


def _embed(enc, patches: np.ndarray) -> np.ndarray:
    """(n, T, T, 3) uint8 -> DenseNet-121 features (fp32; the fixture's bf16 differs by < 4 %)."""
    import torch

    with torch.inference_mode():
        x = enc.transform(torch.from_numpy(patches).permute(0, 3, 1, 2).contiguous())
        return np.concatenate([enc.encode(x[i : i + 32]).float().numpy() for i in range(0, len(x), 32)])


def _as_adata(feats: np.ndarray, section: str):
    import anndata as ad

    a = ad.AnnData(np.zeros((len(feats), 1), np.float32), obs=pd.DataFrame({"section": [section] * len(feats)}))
    a.obs_names = [f"o{i}" for i in range(len(feats))]
    a.obsm[REP] = feats
    return a


def test_held_out_sections_are_in_domain(her2st_embedded, loso_translators):
    adata = her2st_embedded
    for s, tr in loso_translators.items():
        sub = adata[adata.obs["section"] == s]
        scores, verdict = tr.applicability_scores(sub)
        assert verdict.loc[s, "in_domain"], verdict
        assert verdict.loc[s, "median_score"] < 0.8  # measured 0.59-0.62
        assert verdict.loc[s, "frac_beyond"] < 0.06  # measured 1-3 % (5 % pooled, by construction)
        assert scores.shape == (sub.n_obs,)
        # the training sections themselves are closer still
        train = adata[adata.obs["section"] != s]
        _, v_train = tr.applicability_scores(train)
        assert (v_train["median_score"] < verdict.loc[s, "median_score"]).all()


def test_blur_stain_and_other_tissue_are_out_of_domain(her2st_copy, loso_translators, densenet, data_dir):
    import torch
    from skimage.color import hed2rgb, rgb2hed
    from torchvision.transforms.functional import gaussian_blur

    tr = loso_translators["C3"]
    sdata = her2st_copy
    mst.pp.extract_patches(sdata)
    t = sdata.tables["table"]
    rows = np.flatnonzero(t.obs["section"].to_numpy() == "C3")
    patches = mst.pp.get_patches(sdata, rows)
    clean = _embed(densenet, patches)
    _, v = tr.applicability_scores(_as_adata(clean, "C3"))
    assert v.loc["C3", "in_domain"]  # re-embedded in fp32: still in domain
    blurred = gaussian_blur(torch.from_numpy(patches).permute(0, 3, 1, 2), kernel_size=41, sigma=10.0)
    blurred = blurred.permute(0, 2, 3, 1).contiguous().numpy()
    swapped = patches[..., ::-1].copy()  # red and blue swapped: a gross stain / channel-order shift
    hed = rgb2hed(patches.astype(float) / 255)
    hed[..., 0] *= 0.3  # a heavy stain change: little haematoxylin, much eosin
    hed[..., 1] *= 3.0
    restained = (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    for name, p, beyond in (("blur", blurred, 0.5), ("swap", swapped, 0.15), ("hed", restained, 0.12)):
        _, v = tr.applicability_scores(_as_adata(_embed(densenet, p), name))
        assert not v.loc[name, "in_domain"], (name, v)
        assert v.loc[name, "frac_beyond"] > beyond, (name, v)
    # another tissue and technology: human brain (DLPFC), 10x Visium read by spatialdata-io (pixel coordinates)
    brain = mst.datasets.dlpfc("151673", data_dir=data_dir)
    bt = brain.tables["table"]
    mst.pp.extract_patches(brain, image_key=next(k for k in brain.images if "lowres" in k))
    pick = np.random.default_rng(0).choice(np.flatnonzero(np.isfinite(bt.obs["patch_x_px"])), 150, replace=False)
    feats = _embed(densenet, mst.pp.get_patches(brain, np.sort(pick)))
    _, v = tr.applicability_scores(_as_adata(feats, "DLPFC"))
    assert not v.loc["DLPFC", "in_domain"], v
    # predictions on it warn, and say where to look
    with pytest.warns(UserWarning, match=r"Out of the translator's training domain: DLPFC.*applicability_score"):
        tr.predict(_as_adata(feats, "DLPFC"), library_key="section")


def test_scores_survive_save_load_and_are_written(her2st_embedded, loso_translators, tmp_path):
    tr = loso_translators["C3"]
    sub = her2st_embedded[her2st_embedded.obs["section"] == "C3"].copy()
    tr.save(tmp_path / "c3.morphst")
    back = mst.tl.Translator.load(tmp_path / "c3.morphst")
    a, va = tr.applicability_scores(sub)
    b, vb = back.applicability_scores(sub)
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(va, vb)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # in-domain: no warning
        out = back.predict_adata(sub, library_key="section")
    np.testing.assert_allclose(out.obs["applicability_score"].to_numpy(), a, rtol=1e-6)
    v = out.uns["morphst_translation"]["applicability"]["verdict"]["C3"]
    assert v["in_domain"] is True
    assert v["n_spots"] == sub.n_obs


# ---- mst.pl.applicability -------------------------------------------------------------------------------------------
def test_pl_applicability_draws_the_scores_with_the_verdicts(spatial_table):
    import matplotlib

    matplotlib.use("Agg")
    a = spatial_table(n_features=8, n_genes=6, n_signal=2)
    tr = mst.tl.fit_translator(a, "X_feat", genes=["g0", "g1"], train=["S0", "S1", "S2"])
    new = a[a.obs["section"].isin(["S3"]).to_numpy()].copy()
    far = new.copy()
    far.obs["section"] = pd.Categorical(["far"] * far.n_obs)
    far.obs_names = [f"far{i}" for i in range(far.n_obs)]
    far.obsm["X_feat"] = far.obsm["X_feat"] + 6.0  # far from every training spot
    import anndata as ad

    both = ad.concat([new, far], merge="same")
    both.obs["section"] = pd.Categorical(both.obs["section"].astype(str))
    with pytest.warns(UserWarning, match="training domain: far"):
        out = tr.predict_adata(both)
    scores, verdict = tr.applicability_scores(both)
    np.testing.assert_allclose(out.obs["applicability_score"].to_numpy(), scores, rtol=1e-6)
    fig = mst.pl.applicability(out, return_fig=True)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["S3", "far"]
    for ax, s in zip(panels, ["S3", "far"], strict=True):
        rows = (out.obs["section"] == s).to_numpy()
        # the colours are the scores of that section's spots, in order, on a scale centred on 1
        drawn = np.asarray(ax.collections[0].get_array(), dtype=float)
        np.testing.assert_allclose(drawn, out.obs["applicability_score"].to_numpy()[rows], rtol=1e-6)
        norm = ax.collections[0].norm
        assert (norm.vmin, norm.vcenter, norm.vmax) == (0.0, 1.0, 2.0)
        frac = verdict.loc[s, "frac_beyond"]
        want = "in training domain" if verdict.loc[s, "in_domain"] else "OUT of training domain"
        assert ax.get_title() == f"{s}: {want}\n({100 * frac:.0f}% of spots > 1)"
    assert verdict.loc["S3", "in_domain"]
    assert not verdict.loc["far", "in_domain"]
    # one section, on given axes
    import matplotlib.pyplot as plt

    _, axs = plt.subplots(1, 1)
    assert mst.pl.applicability(out, library_id="far", ax=axs, show=False) is None
    assert axs.get_title().startswith("far: OUT of training domain")
    plt.close("all")


def test_pl_applicability_errors(spatial_table):
    a = spatial_table(n_features=8, n_genes=6, n_signal=2)
    with pytest.raises(KeyError, match=r"No applicability score `obs\['applicability_score'\]`.*predict_sdata"):
        mst.pl.applicability(a)
    a.obs["applicability_score"] = 0.5
    with pytest.raises(ValueError, match="`vmax` must be above 1"):
        mst.pl.applicability(a, vmax=1.0)
    sdata = mst.datasets.xenium_like(50, random_state=0)  # a SpatialData with no translator table
    with pytest.raises(KeyError, match=r"No table 'morph_predicted' of translator predictions: .*predict_sdata"):
        mst.pl.applicability(sdata)
    with pytest.raises(KeyError, match="`library_key`='nope'"):
        mst.pl.applicability(a, library_key="nope")


def test_pl_applicability_reads_a_table_written_under_the_former_column_name(spatial_table):
    """Tables written before the rename hold ``obs['translator_distance']``: drawn, with a FutureWarning."""
    import matplotlib

    matplotlib.use("Agg")
    a = spatial_table(n_features=8, n_genes=6, n_signal=2)
    old = np.linspace(0.0, 2.0, a.n_obs)
    a.obs["translator_distance"] = old
    with pytest.warns(FutureWarning, match=r"`obs\['translator_distance'\]`.* is now `obs\['applicability_score'\]`"):
        fig = mst.pl.applicability(a, library_id="S1", return_fig=True)
    drawn = np.asarray(fig.axes[0].collections[0].get_array(), dtype=float)
    np.testing.assert_allclose(drawn, old[(a.obs["section"] == "S1").to_numpy()])
    with pytest.raises(KeyError, match=r"No applicability score `obs\[.nope.\]`"):  # only the default falls back
        mst.pl.applicability(a, score_key="nope")
    import matplotlib.pyplot as plt

    plt.close("all")
