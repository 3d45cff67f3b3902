"""A translator fit with `LastBlockFinetune` saved and loaded: bit-identical predictions, no weights needed to load."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import morphst as mst  # noqa: E402
from morphst.tl._nn._lastblock import split_last_block  # noqa: E402

GENES = [f"g{i}" for i in range(6)]
TRAIN = ["S0", "S1", "S2"]


def table(model: str, weights, *, side: int = 4, n_sections: int = 4, seed: int = 0):
    """``n_sections`` sections of ``side²`` spots; ``obsm["A"]``: the activations entering ``model``'s last block
    (its trunk run on images sharing a latent factor with the counts); ``obsm["F"]``: context features.
    """
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    n = n_sections * side * side
    latent = rng.standard_normal((n, 3))
    counts = rng.poisson(np.exp(1.5 + latent @ rng.standard_normal((3, 20)) * 0.5)).astype(np.float32)
    obs = pd.DataFrame({"section": pd.Categorical(np.repeat([f"S{i}" for i in range(n_sections)], side * side))})
    obs.index = [f"s{i}" for i in range(n)]
    adata = ad.AnnData(sparse.csr_matrix(counts), obs=obs)
    adata.var_names = [f"g{i}" for i in range(20)]
    enc = mst.tl.models.get_model(model, weights=weights)
    px = 160 if model == "test_vit" else 32  # test_vit takes 160 px; a CNN any size (DenseNet-121: 512 x 1 x 1)
    imgs = rng.standard_normal((n, 3, px, px)) * 0.5 + latent[:, :, None, None]
    trunk, _ = split_last_block(enc.module, pooling=enc.pooling)
    with torch.no_grad():
        adata.obsm["A"] = trunk(torch.from_numpy(imgs.astype(np.float32))).flatten(1).numpy()
    adata.obsm["F"] = (latent @ rng.standard_normal((3, 5))).astype(np.float32)
    return adata


def fit(adata, model, weights, train=TRAIN, **kw):
    opts = {"n_layers": 1, "n_hidden": 8, "probe_epochs": 4, "max_epochs": 2, "batch_size": 16}
    est = mst.tl.LastBlockFinetune(model=model, weights=weights, **{**opts, **kw})
    return mst.tl.fit_translator(
        adata, "A", regressor=est, context_rep="F", library_key="section", train=train, genes=GENES
    )


@pytest.fixture(scope="module")
def vit_saved(tmp_path_factory):
    """A fine-tuned (LoRA) test_vit translator of 3 members (timm name, random weights) and its file."""
    a = table("test_vit", "random")
    tr = fit(a, "test_vit", "random", lora_rank=4)
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
    a = table("densenet121", wfile, n_sections=4)
    tr = fit(a, "densenet121", wfile, ensemble=False)
    est = tr.estimator
    assert est.n_members_ == 1
    assert est.weights_sha256_ == hashlib.sha256(wfile.read_bytes()).hexdigest()
    tr.save(tmp_path / "d.morphst")
    # no weights anywhere and no hub: the architecture is built by name, the weights come from the file
    monkeypatch.setattr(mst.settings, "weights_dir", tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
    a = table("test_resnet", "random", n_sections=2)
    net = mst.tl.models.get_model("test_resnet", weights="random").module
    tr = fit(a, net, None, train=["S0", "S1"], ensemble=False, probe_epochs=2, max_epochs=1)
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
