"""Fine-tuning the encoder's last block inside each fold: the split, the activation cache, the regressor, saving."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import morphst as mst  # noqa: E402
from morphst.tl._nn._lastblock import split_last_block  # noqa: E402


def tiny_densenet(seed: int = 0):
    from timm.models.densenet import DenseNet

    torch.manual_seed(seed)
    return DenseNet(growth_rate=8, block_config=(1, 1, 1, 2), stem_type="", num_classes=0).eval()


def table_with_activations(seed: int = 0, side: int = 4, n_sections: int = 5, trunk=None, px: int = 32):
    """``n_sections`` sections of ``side²`` spots; counts and ``px``-pixel images share a latent factor; ``obsm["A"]``:
    the activations of ``trunk`` (a tiny DenseNet's by default), ``obsm["F"]``: context features.
    """
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    n = n_sections * side * side
    latent = rng.standard_normal((n, 3))
    counts = rng.poisson(np.exp(1.5 + latent @ rng.standard_normal((3, 40)) * 0.5)).astype(np.float32)
    obs = pd.DataFrame({"section": pd.Categorical(np.repeat([f"S{i}" for i in range(n_sections)], side * side))})
    obs.index = [f"s{i}" for i in range(n)]
    adata = ad.AnnData(sparse.csr_matrix(counts), obs=obs)
    adata.var_names = [f"g{i}" for i in range(40)]
    imgs = (rng.standard_normal((n, 3, px, px)) + latent[:, :, None, None]).astype(np.float32)
    trunk = split_last_block(tiny_densenet())[0] if trunk is None else trunk
    with torch.no_grad():
        adata.obsm["A"] = trunk(torch.from_numpy(imgs)).flatten(1).numpy().astype(np.float16)
    adata.obsm["F"] = (latent @ rng.standard_normal((3, 5))).astype(np.float32)
    return adata


def finetuner(**kw):
    opts = {"n_hidden": 8, "probe_epochs": 4, "max_epochs": 2, "patience": 2, "batch_size": 16}
    return mst.tl.LastBlockFinetune(model=tiny_densenet(), **{**opts, **kw})


@pytest.mark.parametrize("arch", ["densenet", "resnet"])
def test_split_last_block_reproduces_the_pooled_features(arch):
    import timm

    torch.manual_seed(0)
    net = tiny_densenet() if arch == "densenet" else timm.create_model("resnet18", pretrained=False, num_classes=0)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    trunk, block = split_last_block(net)
    with torch.no_grad():
        assert torch.allclose(block(trunk(x)), net(x), atol=1e-5)
    assert block.in_channels == (9 if arch == "densenet" else 256)


def test_split_last_block_refuses_other_architectures():
    with pytest.raises(ValueError, match="DenseNets"):
        split_last_block(torch.nn.Linear(2, 2))


def test_held_out_section_expression_does_not_reach_its_predictions():
    a = table_with_activations(n_sections=3)
    b = a.copy()
    test = np.flatnonzero(b.obs["section"].to_numpy() == "S1")
    rng = np.random.default_rng(1)
    xb = b.X.toarray()
    xb[test] = rng.poisson(5.0, size=(len(test), b.n_vars))  # the held-out section's expression, scrambled
    from scipy import sparse

    b.X = sparse.csr_matrix(xb)
    for d in (a, b):
        mst.tl.predict_expression(d, "A", context_rep="F", regressor=finetuner(), library_key="section")
    pa, pb = a.layers["predicted"][test], b.layers["predicted"][test]
    assert np.isfinite(pa).any(axis=0).sum() > 0
    np.testing.assert_array_equal(pa, pb)  # bit-identical
    other = np.flatnonzero(a.obs["section"].to_numpy() == "S2")  # S1 trained the model that predicts S2
    assert not np.array_equal(a.layers["predicted"][other], b.layers["predicted"][other], equal_nan=True)


def test_seeded_fit_is_repeatable_and_trains_only_the_last_units():
    a = table_with_activations()
    x = np.asarray(a.obsm["A"], dtype=np.float32)
    y = np.log1p(a.X.toarray()[:, :6])
    g = a.obs["section"].to_numpy()
    fits = [finetuner(n_layers=1, max_epochs=3, patience=3, ensemble=False).fit(x, y, groups=g) for _ in range(2)]
    np.testing.assert_array_equal(fits[0].predict(x), fits[1].predict(x))
    assert fits[0].curve_["epoch"][0] == 0
    assert len(fits[0].curve_["epoch"]) == 4
    ref = split_last_block(tiny_densenet())[1].state_dict()
    got = fits[0].module_["block"].state_dict()
    frozen = [k for k in ref if k.startswith("units.0.")]
    trained = [k for k in ref if k.startswith("units.1.") and k.endswith("weight")]
    assert all(torch.equal(ref[k], got[k]) for k in frozen)
    changed = any(not torch.equal(ref[k], got[k]) for k in trained)
    assert changed == (fits[0].chosen_epoch_ > 0)


def test_ensemble_has_one_member_per_held_out_section_and_averages_them():
    import copy

    a = table_with_activations(n_sections=3)
    x, y = np.asarray(a.obsm["A"], dtype=np.float32), np.log1p(a.X.toarray()[:, :4])
    g = a.obs["section"].to_numpy()
    est = finetuner(random_state=5).fit(x, y, groups=g)
    assert est.n_members_ == 3
    assert [len(est.module_), len(est.chosen_epochs_), len(est.head_epochs_)] == [3, 3, 3]
    assert sorted(set(est.curve_["member"])) == [0.0, 1.0, 2.0]
    singles = []
    for member in est.module_:  # each member alone, with the shared standardisation
        one = copy.copy(est)
        one.module_ = member
        singles.append(one.predict(x))
    np.testing.assert_allclose(est.predict(x), np.mean(singles, axis=0), rtol=0, atol=1e-12)
    assert not np.allclose(singles[0], singles[1])  # other held-out sections and seeds: other members
    one_section = finetuner(random_state=5).fit(x[g == "S0"], y[g == "S0"], groups=g[g == "S0"])
    assert one_section.n_members_ == 1  # one training section: no ensemble


def test_other_seed_gives_other_predictions():
    a = table_with_activations()
    x, y = np.asarray(a.obsm["A"], dtype=np.float32), np.log1p(a.X.toarray()[:, :6])
    g = a.obs["section"].to_numpy()
    p0 = finetuner(random_state=0).fit(x, y, groups=g).predict(x)
    p1 = finetuner(random_state=1).fit(x, y, groups=g).predict(x)
    assert not np.allclose(p0, p1)


def test_wrong_activations_and_options_are_refused():
    a = table_with_activations()
    y = np.log1p(a.X.toarray()[:, :3])
    with pytest.raises(ValueError, match="cache_activations"):
        finetuner().fit(np.asarray(a.obsm["F"]), y)
    with pytest.raises(ValueError, match="n_layers"):
        finetuner(n_layers=3).fit(np.asarray(a.obsm["A"], dtype=np.float32), y)
    from morphst.tl._translation._model import check_model, make_model

    check_model("finetune")
    est, text = make_model("finetune", n_train=10, n_features=25088, blocks=[("patch", 25088)], random_state=3)
    assert isinstance(est, mst.tl.LastBlockFinetune)
    assert est.random_state == 3
    assert "LastBlockFinetune" in text
    with pytest.raises(ValueError, match="'finetune'"):
        check_model("fine-tune")


def test_cache_activations_matches_the_encoder_and_reads_back(synthetic_sdata, tmp_path):
    sdata, _ = synthetic_sdata
    mst.pp.extract_patches(sdata, patch_size=32.0, target_px=32)
    store = tmp_path / "acts.zarr"
    mst.tl.cache_activations(sdata, "resnet18", weights="random", path=store, batch_size=8)
    adata = sdata.tables["table"]
    p = adata.uns["X_resnet18_lastblock"]["params"]
    acts = adata.obsm["X_resnet18_lastblock"]
    assert acts.dtype == np.float16
    assert p["activation_shape"] == [256, 14, 14]
    assert not p["from_cache"]
    # the frozen block over the cached activations gives the encoder's own features (float16 rounding aside)
    mst.tl.embed_patches(sdata, "resnet18", weights="random", dtype="float32", key_added="X_ref")
    enc = mst.tl.models.get_model("resnet18", weights="random")
    _, block = split_last_block(enc.module)
    with torch.no_grad():
        pooled = block.eval()(torch.from_numpy(acts.astype(np.float32)).view(-1, 256, 14, 14)).numpy()
    ref = adata.obsm["X_ref"]
    assert np.abs(pooled - ref).max() <= 2e-3 * np.abs(ref).max()
    before = acts.copy()
    mst.tl.cache_activations(sdata, "resnet18", weights="random", path=store, key_added="again")
    assert adata.uns["again"]["params"]["from_cache"]
    np.testing.assert_array_equal(adata.obsm["again"], before)
    assert adata.uns["again"]["params"]["sha256"] == p["sha256"]
    with pytest.raises(ValueError, match="another model"):
        mst.tl.cache_activations(sdata, "densenet121", weights="random", path=store, key_added="x")
    import zarr

    arr = zarr.open_group(str(store), mode="r+")["activations"]
    arr[0, 0, 0, 0] = arr[0, 0, 0, 0] + 1  # a damaged store
    with pytest.raises(ValueError, match="sha256"):
        mst.tl.cache_activations(sdata, "resnet18", weights="random", path=store, key_added="x")
    assert "x" not in adata.obsm


def test_cache_activations_needs_patches_and_a_supported_model(synthetic_sdata):
    sdata, _ = synthetic_sdata
    with pytest.raises(ValueError, match="extract_patches"):
        mst.tl.cache_activations(sdata, "resnet18", weights="random")
    mst.pp.extract_patches(sdata, patch_size=32.0, target_px=32)
    with pytest.raises(ValueError, match="DenseNets"):
        mst.tl.cache_activations(sdata, "efficientnet_lite0", weights="random")
    assert not any(k.endswith("_lastblock") for k in sdata.tables["table"].obsm)


def tiny_vit(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=3, embed_dim=16,
        num_heads=2,
    ).eval()  # fmt: skip


def test_vit_split_and_lora_start_from_the_pretrained_features():
    from morphst.tl._nn._lastblock import lora_linear

    net, x = tiny_vit(), torch.randn(3, 3, 32, 32)
    trunk, block = split_last_block(net, n_blocks=2)
    with torch.no_grad():
        ref = net(x)
        assert torch.allclose(block(trunk(x)), ref, atol=1e-5)
        block.freeze_first(1, lora_rank=4)  # B = 0 at the start: the same features
        assert torch.allclose(block(trunk(x)), ref, atol=1e-5)
        lin = torch.nn.Linear(5, 3)
        lo = lora_linear(lin, 2)
        lo.lora_b.fill_(1.0)
        v = torch.randn(4, 5)
        expected = lin(v) + (v @ lo.lora_a.T).sum(dim=1, keepdim=True) * 1.0  # B = ones: each output adds sum(A v)
        assert torch.allclose(lo(v), expected, atol=1e-6)
    trained = [n for n, p in block.named_parameters() if p.requires_grad]
    assert trained
    assert all("lora_" in n and n.startswith("units.1.") for n in trained)
    assert block.in_shape(17 * 16) == (17, 16)
    assert block.in_shape(17 * 16 + 1) is None
    with pytest.raises(ValueError, match="n_blocks"):
        split_last_block(net, n_blocks=3)


def test_lora_finetune_of_a_tiny_vit_is_repeatable_and_keeps_base_weights():
    a = table_with_activations(n_sections=3)
    net = tiny_vit()
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.standard_normal((a.n_obs, 3, 32, 32)).astype(np.float32))
    trunk, _ = split_last_block(net, n_blocks=1)
    with torch.no_grad():
        x = trunk(imgs).flatten(1).numpy()
    y = np.log1p(a.X.toarray()[:, :5])
    g = a.obs["section"].to_numpy()
    kw = {
        "model": net,
        "n_blocks": 1,
        "lora_rank": 4,
        "n_hidden": 8,
        "probe_epochs": 3,
        "max_epochs": 2,
        "ensemble": False,
    }
    fits = [mst.tl.LastBlockFinetune(**kw).fit(x, y, groups=g) for _ in range(2)]
    np.testing.assert_array_equal(fits[0].predict(x), fits[1].predict(x))
    sd = fits[0].module_["block"].state_dict()
    ref = net.blocks[2].attn.qkv.weight
    assert torch.equal(sd["units.0.attn.qkv.base.weight"], ref)  # the pretrained weights stay frozen
    with pytest.raises(ValueError, match="lora_rank"):
        finetuner(lora_rank=4).fit(np.asarray(a.obsm["A"], dtype=np.float32), y)


# ------------------------------------------------------------------------------------------------------------------
# A translator fit with LastBlockFinetune saved and loaded: bit-identical predictions, no weights needed to load
# ------------------------------------------------------------------------------------------------------------------
GENES = [f"g{i}" for i in range(6)]
TRAIN = ["S0", "S1", "S2"]


def named_table(model: str, weights, n_sections: int = 4):
    """:func:`table_with_activations` with the activations entering ``model``'s last block (test_vit: 160 px)."""
    enc = mst.tl.models.get_model(model, weights=weights)
    trunk = split_last_block(enc.module, pooling=enc.pooling)[0]
    return table_with_activations(n_sections=n_sections, trunk=trunk, px=160 if model == "test_vit" else 32)


def fit_saveable(adata, model, weights, train=TRAIN, **kw):
    opts = {"n_layers": 1, "n_hidden": 8, "probe_epochs": 4, "max_epochs": 2, "batch_size": 16}
    est = mst.tl.LastBlockFinetune(model=model, weights=weights, **{**opts, **kw})
    return mst.tl.fit_translator(
        adata, "A", regressor=est, context_rep="F", library_key="section", train=train, genes=GENES
    )


@pytest.fixture(scope="module")
def vit_saved(tmp_path_factory):
    """A fine-tuned (LoRA) test_vit translator of 3 members (timm name, random weights) and its file."""
    a = named_table("test_vit", "random")
    tr = fit_saveable(a, "test_vit", "random", lora_rank=4)
    path = tmp_path_factory.mktemp("vit") / "tr.morphst"
    tr.save(path)
    return tr, path, a


def test_ensemble_round_trip_is_bit_identical_and_leaves_the_torch_seed(vit_saved):
    tr, path, a = vit_saved
    est = tr.estimator
    assert est.n_members_ == 3
    assert isinstance(est.module_, torch.nn.ModuleList)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    tr2 = mst.tl.Translator.load(path)
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading does not move the caller's torch seed
    new = tr2.estimator
    assert isinstance(new, mst.tl.LastBlockFinetune)
    assert isinstance(new.module_, torch.nn.ModuleList)
    assert len(new.module_) == 3
    assert (new.chosen_epochs_, new.head_epochs_, new.lora_rank) == (est.chosen_epochs_, est.head_epochs_, 4)
    for m_old, m_new in zip(est.module_, new.module_, strict=True):
        old_sd, new_sd = m_old.state_dict(), m_new.state_dict()
        assert old_sd.keys() == new_sd.keys()
        assert any("lora_a" in k for k in new_sd)
        assert all(torch.equal(old_sd[k], new_sd[k]) for k in old_sd)
    held_out = a[a.obs["section"] == "S3"].copy()  # a section the translator never saw
    for d in (a, held_out):
        p = tr.predict(d)
        assert p.shape == (d.n_obs, len(GENES))
        assert np.isfinite(p).all()
        assert np.array_equal(tr2.predict(d), p)
    s_old, s_new = tr.applicability_scores(held_out)[0], tr2.applicability_scores(held_out)[0]
    assert np.isfinite(s_old).all()
    np.testing.assert_array_equal(s_new, s_old)
    assert tr2.params.keys() == tr.params.keys()
    assert tr2.blocks == tr.blocks


def test_one_member_with_a_weights_file_loads_without_the_file(weights_dir, tmp_path, monkeypatch):
    wfile = weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    if not wfile.is_file():
        pytest.fail(f"shared DenseNet-121 weights not found at {wfile}; set MORPHST_WEIGHTS_DIR")
    a = named_table("densenet121", wfile)
    tr = fit_saveable(a, "densenet121", wfile, ensemble=False)
    est = tr.estimator
    assert est.n_members_ == 1
    assert est.weights_sha256_ == hashlib.sha256(wfile.read_bytes()).hexdigest()
    tr.save(tmp_path / "d.morphst")
    # no weights anywhere and no hub: the architecture is built by name, the weights come from the file
    import morphst.tl.models._registry as registry

    class ConsultedError(Exception):
        pass

    def refused(*args, **kwargs):
        raise ConsultedError("a weights file or the hub was consulted")

    monkeypatch.setattr(mst.settings, "weights_dir", tmp_path / "empty")
    for name in ("read_state_dict", "find_weights_file", "hub_plan"):
        monkeypatch.setattr(registry, name, refused)
    with pytest.raises(ConsultedError, match="consulted"):  # the guard works: the fit's way is refused
        mst.tl.LastBlockFinetune(model="densenet121")._load_block(0)
    tr2 = mst.tl.Translator.load(tmp_path / "d.morphst")
    new = tr2.estimator
    assert isinstance(new.module_, torch.nn.ModuleDict)
    assert new.weights_sha256_ == est.weights_sha256_
    assert new.weights == str(wfile)
    ref = est.module_["block"].state_dict()
    got = new.module_["block"].state_dict()
    assert len(got) == len(ref)
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # every unit, the frozen ones included
    assert np.array_equal(tr2.predict(a), tr.predict(a))


def test_loaded_translator_refuses_activations_of_another_width(vit_saved):
    _, path, a = vit_saved
    tr2 = mst.tl.Translator.load(path)
    b = a.copy()
    b.obsm["A"] = b.obsm["A"][:, :-64]  # one token fewer: another model or image size
    with pytest.raises(ValueError, match=r"`obsm\['A'\]` has 6400 features; the translator was fit on 6464"):
        tr2.predict(b)


def test_module_model_is_refused_with_the_way_out(tmp_path):
    a = named_table("test_resnet", "random", n_sections=2)
    net = mst.tl.models.get_model("test_resnet", weights="random").module
    tr = fit_saveable(a, net, None, train=["S0", "S1"], ensemble=False, probe_epochs=2, max_epochs=1)
    with pytest.raises(TypeError, match=r"Fit with model='<registry name>'.*to save") as e:
        tr.save(tmp_path / "m.morphst")
    assert "ResNet module" in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing written


def _rewrite(path, edit) -> None:
    """Apply ``edit`` to the JSON header of a translator file and write it back with a valid checksum."""
    data = path.read_bytes()
    hlen = int.from_bytes(data[19:27], "little")
    header = json.loads(data[27 : 27 + hlen])
    edit(header["payload"]["__dict__"]["estimator"])
    hb = json.dumps(header).encode()
    body = data[:19] + len(hb).to_bytes(8, "little") + hb + data[27 + hlen : -32]
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_damaged_or_altered_files_are_refused(vit_saved, tmp_path):
    _, path, _ = vit_saved
    data = path.read_bytes()
    bad = tmp_path / "bad.morphst"
    for pos in (len(data) // 2, len(data) - 100):  # a byte of the arrays
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=r"not a readable morphst translator file.*damaged or truncated"):
            mst.tl.Translator.load(bad)
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="damaged or truncated"):
        mst.tl.Translator.load(bad)

    def other_class(est):  # a valid checksum, but a class outside the allowed ones
        est["__saved_state__"] = "builtins:eval"

    def missing_weight(est):  # a valid checksum, but a block without one of its weights
        block = est["state"]["__dict__"]["members"][0]["__dict__"]["block"]["__dict__"]
        block.pop(next(k for k in block if k.endswith("lora_a")))

    for edit, match in [(other_class, "'builtins:eval' is not allowed"), (missing_weight, r"block of member 0")]:
        bad.write_bytes(data)
        _rewrite(bad, edit)
        with pytest.raises(ValueError, match=match):
            mst.tl.Translator.load(bad)
    bad.write_bytes(data)
    _rewrite(bad, lambda est: None)
    assert isinstance(mst.tl.Translator.load(bad).estimator, mst.tl.LastBlockFinetune)  # the rewrite itself is fine


def test_a_block_tensor_outside_the_state_dict_is_built_on_the_cpu(vit_saved, monkeypatch):
    """The block is rebuilt on the meta device; one with a non-persistent buffer falls back to a CPU build."""
    tr, path, a = vit_saved
    plain = mst.tl.LastBlockFinetune._block_from
    built = []

    def with_buffer(self, module, pooling, seed):
        block = plain(self, module, pooling, seed)
        block.register_buffer("extra", torch.ones(2), persistent=False)
        built.append(block.extra.device.type)
        return block

    monkeypatch.setattr(mst.tl.LastBlockFinetune, "_block_from", with_buffer)
    tr2 = mst.tl.Translator.load(path)
    assert built == ["meta", "cpu"] * 3  # each member: the meta attempt, then the CPU build
    for m in tr2.estimator.module_:
        assert not any(t.is_meta for t in (*m.parameters(), *m.buffers()))
        assert torch.equal(m["block"].extra, torch.ones(2))
    assert np.array_equal(tr2.predict(a), tr.predict(a))


def test_predict_sdata_of_a_finetuned_translator_runs_the_trunk_on_the_new_section(synthetic_factory, with_image):
    """A translator fit on cached activations caches them again for a new section (not embed_patches features)."""
    import pandas as pd

    sd, _ = synthetic_factory(size_px=512, n_side=6)
    texture = np.random.default_rng(0).integers(0, 256, size=(3, 512, 512), dtype=np.uint8)
    sd = with_image(sd, texture, ["r", "g", "b"])  # every spot's patch differs
    mst.pp.extract_patches(sd, patch_size=20.0, target_px=32)
    mst.tl.cache_activations(sd, "resnet18", weights="random")
    a = sd.tables["table"]
    est = mst.tl.LastBlockFinetune(
        model="resnet18", weights="random", n_layers=1, n_hidden=8, probe_epochs=3, max_epochs=1
    )
    tr = mst.tl.fit_translator(a, "X_resnet18_lastblock", genes=["gene_a", "gene_b"], target="X", regressor=est)
    expected = tr.predict(a)
    del sd.tables["table"]
    tr.predict_sdata(sd, shapes_key="spots", um_per_unit=1.0, weights="random")
    t = sd.tables["morph_predicted"]
    assert t.obsm["X_resnet18_lastblock"].shape == a.obsm["X_resnet18_lastblock"].shape
    order = pd.Index(t.obs["instance_id"].to_numpy()).get_indexer(a.obs["instance_id"].to_numpy())
    np.testing.assert_array_equal(t.obsm["X_resnet18_lastblock"][order], a.obsm["X_resnet18_lastblock"])
    np.testing.assert_allclose(t.X[order], expected, rtol=1e-6, atol=1e-6)
    assert np.ptp(expected, axis=0).min() > 0  # predictions that vary over the spots
    tr.embed_params = {**tr.embed_params, "weights_sha256": "0" * 64}  # as if fit with other weights
    with pytest.raises(ValueError, match="pass `weights=`"):
        tr.predict_sdata(sd, shapes_key="spots", um_per_unit=1.0, weights="random", table_key="other")
    assert "other" not in sd.tables
