"""Learned morphology features: the translation head (FeatureHead), model='head', learn_features(objective='translation')."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import morphst as mst
from morphst.tl import FeatureHead, TrainOptions
from morphst.tl._nn import inner_validation_split
from morphst.tl._translation._features import model_inputs, section_mean

FAST = {"max_epochs": 40, "patience": 8, "learning_rate": 3e-3, "batch_size": 64}


@pytest.fixture(scope="module")
def grid(spatial_table):
    """Sections of spots on a grid; genes depend on the mean features of the 4 grid neighbours only.

    Each spot's own features are independent noise, so a model that sees only them predicts nothing, while the
    neighbour mean (``spatial_context=4``) carries the signal: a known structure the head's blocks must find.
    """
    return spatial_table(
        plant="neighbours", n_sections=4, side=12, spacing=100.0, fastest="y", n_features=12, n_genes=6,
        n_signal=6, weight_scale=1.0, noise=0.1, section_prefix="s", feature_key="X_m",
    )  # fmt: skip


def test_inner_split_holds_out_one_training_section_only():
    groups = np.repeat(["a", "b", "c", "d"], 10)
    train = np.flatnonzero(groups != "d")  # "d" is the test section of the outer fold
    fit, val, how = inner_validation_split(train, groups, random_state=0)
    assert set(groups[val]) == {groups[val][0]}
    assert groups[val][0] != "d"
    assert np.array_equal(np.sort(np.concatenate([fit, val])), train)
    assert "held out" in how
    fit1, val1, how1 = inner_validation_split(np.arange(20), None, random_state=0)
    assert len(val1) == 4
    assert len(fit1) == 16
    assert "random" in how1


def test_model_inputs_blocks_hand_computed():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    coords = np.array([[0, 0], [1, 0], [10, 0], [11, 0]], dtype=float)
    groups = np.array(["a", "a", "b", "b"])
    c = np.ones((4, 2), dtype=np.float32)
    f, blocks = model_inputs(x, coords, 1, groups, context=[("context:X_c", c)], global_context=True)
    assert blocks == [("patch", 3), ("context:X_c", 2), ("neighbours", 3), ("section", 3)]
    assert np.array_equal(f[:, :3], x)
    assert np.array_equal(f[:, 3:5], c)
    assert np.array_equal(f[:, 5:8], x[[1, 0, 3, 2]])  # each spot's one neighbour in its section
    assert np.allclose(f[:, 8:], np.repeat([x[:2].mean(0), x[2:].mean(0)], 2, axis=0))
    assert np.allclose(section_mean(x, None), np.broadcast_to(x.mean(0), x.shape))


def test_head_finds_the_neighbour_block_and_is_repeatable(grid):
    feats, blocks = model_inputs(grid.obsm["X_m"], grid.obsm["spatial"], 4, grid.obs["section"].to_numpy())
    y = grid.layers["y"]
    sec = grid.obs["section"].to_numpy()
    tr, te = sec != "s3", sec == "s3"
    head = FeatureHead(blocks=blocks, random_state=0, **FAST).fit(feats[tr], y[tr], groups=sec[tr])
    p = head.predict(feats[te])
    r = [np.corrcoef(p[:, g], y[te][:, g])[0, 1] for g in range(y.shape[1])]
    assert np.mean(r) > 0.6  # the signal lives in the neighbour block
    own = FeatureHead(random_state=0, **FAST).fit(feats[tr][:, :12], y[tr], groups=sec[tr])
    p_own = own.predict(feats[te][:, :12])
    r_own = [np.corrcoef(p_own[:, g], y[te][:, g])[0, 1] for g in range(y.shape[1])]
    assert abs(np.mean(r_own)) < 0.2  # own features carry none of it
    again = FeatureHead(blocks=blocks, random_state=0, **FAST).fit(feats[tr], y[tr], groups=sec[tr])
    assert np.array_equal(again.predict(feats[te]), p)  # seeded: identical on the CPU
    assert head.chosen_epoch_ >= 1
    assert set(head.curve_) >= {"epoch", "train_loss", "val_loss", "val_pcc"}
    assert head.n_members_ == 3  # an ensemble: one head per training section held out
    assert head.transform(feats).shape == (len(feats), head.n_hidden * head.n_members_)


def test_numpy_predict_equals_the_torch_network(grid):
    import torch

    feats, blocks = model_inputs(grid.obsm["X_m"], grid.obsm["spatial"], 4, grid.obs["section"].to_numpy())
    head = FeatureHead(blocks=blocks, random_state=1, refit=False, ensemble=False, max_epochs=3, patience=3)
    head.fit(feats, grid.layers["y"], groups=grid.obs["section"].to_numpy())
    net = head._network(feats.shape[1], grid.n_vars)
    w = head.weights_
    sd = {"fuse.weight": w["fuse_W"].T, "fuse.bias": w["fuse_b"], "out.weight": w["out_W"].T, "out.bias": w["out_b"]}
    for i, (tw, tb) in enumerate(zip(w["token_W"], w["token_b"], strict=True)):
        sd[f"tokens.{i}.weight"], sd[f"tokens.{i}.bias"] = tw.T, tb
    net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in sd.items()})
    net.eval()
    xs = torch.tensor((feats - head.x_mean_) / head.x_scale_, dtype=torch.float32)
    with torch.no_grad():
        pt = net(xs).numpy() * head.y_scale_ + head.y_mean_
    assert np.allclose(head.predict(feats), pt, atol=1e-4)


def test_predict_expression_head_trains_inside_each_fold(grid):
    a = grid.copy()
    genes = list(a.var_names)
    head = FeatureHead(random_state=0, **FAST)
    mst.tl.predict_expression(a, "X_m", genes=genes, target="y", model=head, spatial_context=4, key_added="h")
    feats, blocks = model_inputs(a.obsm["X_m"], a.obsm["spatial"], 4, a.obs["section"].to_numpy())
    sec = a.obs["section"].astype(str).to_numpy()
    for s in ("s1",):  # the same head fit by hand on the training sections only gives the same predictions
        tr, te = np.flatnonzero(sec != s), np.flatnonzero(sec == s)
        ref = FeatureHead(blocks=blocks, random_state=0, **FAST).fit(feats[tr], a.layers["y"][tr], groups=sec[tr])
        assert np.allclose(a.layers["h"][te], ref.predict(feats[te]), atol=1e-5)
    assert a.uns["h"]["summary"].loc["all", "pcc"] > 0.6
    assert "FeatureHead(patch(12) + neighbours(12)" in a.uns["h"]["params"]["model_description"]
    assert a.uns["h"]["params"]["blocks"] == [["patch", 12], ["neighbours", 12]]


def test_translator_with_a_head_saves_without_pickle_and_predicts_the_same(grid, tmp_path):
    a = grid.copy()
    a.obsm["X_ctx"] = np.asarray(a.obsm["X_m"][:, :4] * 2.0)
    tr = mst.tl.fit_translator(
        a, "X_m", genes=list(a.var_names), target="y", model=FeatureHead(random_state=0, **FAST),
        spatial_context=4, context_rep="X_ctx", global_context=True,
    )  # fmt: skip
    assert tr.blocks == [("patch", 12), ("context:X_ctx", 4), ("neighbours", 12), ("section", 12)]
    f = tmp_path / "head.morphst"
    tr.save(f)
    assert b"__reduce__" not in f.read_bytes()
    assert f.read_bytes()[:1] != b"\x80"
    back = mst.tl.Translator.load(f)
    assert back.context_rep == ["X_ctx"]
    assert back.global_context
    assert np.array_equal(back.predict(a), tr.predict(a))
    del a.obsm["X_ctx"]
    with pytest.raises(KeyError, match="X_ctx"):
        back.predict(a)


def test_learn_features_translation_writes_the_head_representation(grid):
    a = grid.copy()
    opts = TrainOptions(**FAST)
    mst.tl.learn_features(
        a, "X_m", objective="translation", genes=list(a.var_names), target="y", spatial_context=4,
        global_context=False, n_components=16, options=opts, train=["s0", "s1", "s2"],
    )  # fmt: skip
    z = a.obsm["X_learned_translation"]
    assert z.shape == (a.n_obs, 16)
    assert z.dtype == np.float32
    u = a.uns["X_learned_translation"]
    assert u["params"]["n_train"] == 3 * 144
    assert u["params"]["genes"] == list(a.var_names)
    assert 1 <= u["chosen_epoch"] <= 40
    assert len(u["curve"]) >= u["chosen_epoch"]
    feats, blocks = model_inputs(a.obsm["X_m"], a.obsm["spatial"], 4, a.obs["section"].to_numpy())
    head = FeatureHead(
        blocks=blocks, n_hidden=16, ensemble=False, random_state=0, **FAST, weight_decay=opts.weight_decay
    )
    tr = np.flatnonzero(a.obs["section"].astype(str) != "s3")
    head.fit(feats[tr], a.layers["y"][tr], groups=a.obs["section"].astype(str).to_numpy()[tr])
    assert np.array_equal(head.transform(feats), z)
    # the held-out section: learned features share more with the genes than the raw (own-patch) features do
    te = a.obs["section"].astype(str).to_numpy() == "s3"
    r_raw = np.abs(np.corrcoef(a.obsm["X_m"][te].T, a.layers["y"][te].T)[:12, 12:]).max()
    r_learned = np.nanmax(np.abs(np.corrcoef(z[te].T, a.layers["y"][te].T)[:16, 16:]))
    assert r_learned > r_raw + 0.3


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"objective": "both"}, ValueError, "objective"),
        ({"objective": "translation", "n_components": 0}, ValueError, "n_components"),
        ({"objective": "translation", "context_rep": "X_nope"}, KeyError, "X_nope"),
        ({"objective": "translation", "options": TrainOptions(dropout=1.0)}, ValueError, "dropout"),
        ({"objective": "translation", "train": ["s9"]}, KeyError, "s9"),
        ({"objective": "integration", "expression_rep": "X_pca"}, KeyError, "X_pca"),
        ({"objective": "integration", "method": "pca"}, ValueError, "method"),
    ],
)
def test_learn_features_bad_input_writes_nothing(grid, kwargs, err, match):
    a = grid.copy()
    a.obsm["X_pca_"] = np.zeros((a.n_obs, 2))
    before = (set(a.obsm), set(a.uns), set(a.layers))
    with pytest.raises(err, match=match):
        mst.tl.learn_features(a, "X_m", genes=list(a.var_names), target="y", **kwargs)
    assert (set(a.obsm), set(a.uns), set(a.layers)) == before


def test_translator_with_context_patches_predicts_a_section_from_its_image(synthetic_factory):
    """A translator reading a context-patch embedding cuts and embeds both fields of view of a new section."""
    sd, _ = synthetic_factory(size_px=512, n_side=6)
    mst.pp.extract_patches(sd, patch_size=20.0, target_px=32, context_sizes_um=(40.0,))
    mst.tl.embed_patches(sd, "handcrafted")
    mst.tl.embed_patches(sd, "handcrafted", context_index=0, key_added="X_handcrafted_ctx0")
    a = sd.tables["table"]
    tr = mst.tl.fit_translator(
        a, "X_handcrafted", genes=["gene_a", "gene_b"], target="X", context_rep="X_handcrafted_ctx0"
    )
    assert tr.context_embed_params["X_handcrafted_ctx0"]["context_index"] == 0
    expected = tr.predict(a)
    del sd.tables["table"]
    tr.predict_sdata(sd, shapes_key="spots", um_per_unit=1.0)  # the µm declaration left with the table
    t = sd.tables["morph_predicted"]
    assert "X_handcrafted_ctx0" in t.obsm
    order = pd.Index(t.obs["instance_id"].to_numpy()).get_indexer(a.obs["instance_id"].to_numpy())
    np.testing.assert_allclose(t.X[order], expected, rtol=1e-5, atol=1e-5)


def test_learn_features_is_a_deprecated_dispatcher_to_learn_translation_features(grid):
    a, b = grid.copy(), grid.copy()
    kw = {
        "genes": list(a.var_names), "target": "y", "spatial_context": 4, "global_context": False, "n_components": 8,
        "options": TrainOptions(**{**FAST, "max_epochs": 6}), "train": ["s0", "s1", "s2"],
    }  # fmt: skip
    with pytest.warns(FutureWarning, match=r"learn_translation_features"):
        mst.tl.learn_features(a, "X_m", objective="translation", **kw)
    mst.tl.learn_translation_features(b, "X_m", **kw)
    assert np.array_equal(a.obsm["X_learned_translation"], b.obsm["X_learned_translation"])
    assert a.uns["X_learned_translation"]["params"] == b.uns["X_learned_translation"]["params"]
    # integration-only parameters are ignored for translation, as before; unknown ones are refused
    with pytest.warns(FutureWarning):
        mst.tl.learn_features(a, "X_m", objective="translation", expression_rep="X_pca", key_added="k2", **kw)
    assert np.array_equal(a.obsm["k2"], b.obsm["X_learned_translation"])
    with pytest.raises(TypeError, match="unknown keyword argument"):
        mst.tl.learn_features(a, "X_m", objective="translation", n_component=3)
    with pytest.raises(ValueError, match="`objective` must be one of"):
        mst.tl.learn_features(a, "X_m", objective="both")


def test_learn_translation_features_uses_the_recipe_of_predict_expression(grid):
    """The head trained by learn_translation_features is the one fit_translator(regressor=FeatureHead) trains."""
    a = grid.copy()
    opts = TrainOptions(**{**FAST, "max_epochs": 6})
    mst.tl.learn_translation_features(
        a, "X_m", genes=list(a.var_names), target="y", spatial_context=4, global_context=True, n_components=8,
        options=opts, train=["s0", "s1", "s2"],
    )  # fmt: skip
    head = FeatureHead(n_hidden=8, ensemble=False, random_state=0, **opts.record())
    tr = mst.tl.fit_translator(
        a, "X_m", genes=list(a.var_names), target="y", spatial_context=4, global_context=True, regressor=head,
        train=["s0", "s1", "s2"],
    )  # fmt: skip
    assert np.array_equal(tr.estimator.transform(tr.features(a)), a.obsm["X_learned_translation"])


def test_head_ensemble_is_stable_across_seeds_and_never_sees_the_held_out_section(grid):
    opts = {**FAST, "max_epochs": 15, "patience": 5}
    genes = list(grid.var_names)
    pcc = []
    for rs in (0, 1):
        a = grid.copy()
        head = FeatureHead(random_state=rs, **opts)
        mst.tl.predict_expression(a, "X_m", genes=genes, target="y", regressor=head, spatial_context=4)
        pcc.append(a.uns["predicted"]["summary"].loc["all", "pcc"])
        description = a.uns["predicted"]["params"]["model_description"]
        assert "ensemble of 3 heads (one per held-out training section)" in description
    assert abs(pcc[0] - pcc[1]) < 0.01
    # scrambling the expression of a held-out section leaves its out-of-fold predictions bit-identical
    b = grid.copy()
    s3 = (b.obs["section"] == "s3").to_numpy()
    y = np.array(b.layers["y"])
    y[s3] = y[s3][np.random.default_rng(0).permutation(int(s3.sum()))]
    b.layers["y"] = y
    head = FeatureHead(random_state=1, **opts)
    mst.tl.predict_expression(b, "X_m", genes=genes, target="y", regressor=head, spatial_context=4)
    assert np.array_equal(b.layers["predicted"][s3], a.layers["predicted"][s3])
