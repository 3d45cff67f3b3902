from __future__ import annotations

import re

import numpy as np
import pytest

import morphst as mst
from morphst.tl.models import bundled_efficientnet_lite0, get_model, list_models, map_by_position

DENSENET_SHA256 = "00cdb407813fc839cda8b2f3959f999454c278fad2c28a7e3fb17b3ec69fe8b3"  # ../shared/weights SOURCE.md
EFFNET_PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _subset(sdata, section: str, spot_rows, extra_xy=()):
    """A small SpatialData: one HER2ST section, some of its spots (by position), plus extra centres (image px)."""
    import anndata as ad
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    t = sdata.tables["table"]
    sec = t[t.obs["section"] == section]
    xy = sec.obsm["spatial"][list(spot_rows)]
    xy = np.vstack([xy, np.asarray(extra_xy, float).reshape(-1, 2)]) if len(extra_xy) else xy
    n = len(xy)
    tf = get_transformation(sdata.shapes[f"{section}_spots"], get_all=True)
    shapes = ShapesModel.parse(xy, geometry=0, radius=np.full(n, 70.0), index=np.arange(n), transformations=tf)
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * n), "instance_id": np.arange(n)})
    obs.index = [f"o{i}" for i in range(n)]
    table = TableModel.parse(
        ad.AnnData(np.zeros((n, 1), np.float32), obs=obs),
        region="spots",
        region_key="region",
        instance_key="instance_id",
    )
    out = SpatialData(
        images={f"{section}_he": sdata.images[f"{section}_he"]}, shapes={"spots": shapes}, tables={"table": table}
    )
    out.attrs.update(sdata.attrs)  # the loader's declaration: section coordinate systems are in µm
    return out


def test_registry_lists_models_with_metadata():
    df = list_models()
    for name in ["efficientnet_lite0", "densenet121", "resnet18", "resnet50", "uni", "phikon", "handcrafted"]:
        assert name in df.index
    for col in ["embedding_dim", "input_size", "mean", "std", "licence", "weight_source", "gated"]:
        assert col in df.columns
    assert df.loc["uni", "gated"]
    assert not df.loc["efficientnet_lite0", "gated"]
    assert df.loc["efficientnet_lite0", "licence"] == "Apache-2.0"
    # the recorded dims are the networks' real pooled feature sizes
    import timm

    for name in ["efficientnet_lite0", "densenet121", "resnet18", "resnet50"]:
        arch = df.loc[name, "arch"]
        assert timm.create_model(arch, pretrained=False, num_classes=0).num_features == df.loc[name, "embedding_dim"]
    assert df.loc["handcrafted", "embedding_dim"] == len(mst.tl.models.feature_names())


def test_shared_densenet_loads_strictly(weights_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    path = weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    enc = get_model("densenet121", weights=path)
    assert enc.weights_sha256 == DENSENET_SHA256
    assert str(path) in enc.weights_source
    sd = load_file(str(path))
    assert set(sd) == set(enc.module.state_dict())
    # strict key matching: one missing tensor is an error naming the file and the key, not a silent partial load
    dropped = next(k for k in sd if k.endswith("conv.weight") or k.endswith("conv0.weight"))
    sd.pop(dropped)
    save_file(sd, str(tmp_path / "densenet121.safetensors"))
    with pytest.raises(ValueError, match=rf"densenet121\.safetensors.*1 missing \(e\.g\. {re.escape(dropped)}\)"):
        get_model("densenet121", weights=tmp_path / "densenet121.safetensors")


def test_efficientnet_package_equals_shared_file(weights_dir):
    import torch

    pkg = bundled_efficientnet_lite0()
    assert pkg is not None
    assert pkg.name == "efficientnet-lite0-57934424.pth"
    a = get_model("efficientnet_lite0", weights=pkg)
    assert a.weights_sha256 == EFFNET_PTH_SHA256
    b = get_model(
        "efficientnet_lite0",
        weights=weights_dir / "efficientnet_lite0_imagenet" / "tf_efficientnet_lite0.timm.safetensors",
    )
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        fa, fb = a.encode(a.transform(x)), b.encode(b.transform(x))
    assert fa.shape == (2, 1280)
    torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    # the by-position mapping checks every shape
    src = torch.load(pkg, map_location="cpu", weights_only=True)
    bad = dict(src)
    bad["_conv_stem.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="by position"):
        map_by_position(bad, a.module.state_dict(), drop_prefixes=("_fc.",))


def mean_rgb(x):
    return x.mean(dim=(2, 3))


def test_callable_model_and_auto_extraction(synthetic_sdata):
    sdata, _ = synthetic_sdata
    t = sdata.tables["table"]
    assert "patches" not in t.uns
    mst.tl.embed_patches(sdata, mean_rgb, dtype="float32", batch_size=5)
    # extract_patches ran with its defaults
    assert t.uns["patches"]["params"]["patch_size"] == 112.0
    assert t.obsm["X_mean_rgb"].dtype == np.float32
    p = mst.pp.get_patches(sdata)
    np.testing.assert_allclose(t.obsm["X_mean_rgb"], p.reshape(16, -1, 3).mean(1) / 255.0, atol=1e-5)
    params = t.uns["X_mean_rgb"]["params"]
    assert params["patch_size_um"] == 112.0
    assert params["um_per_px"] == 0.5
    assert params["dtype"] == "float32"
    assert params["pyramid_level"]["spots"] == 0


def test_random_weights_are_seeded(synthetic_sdata):
    sdata, _ = synthetic_sdata
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=64)
    t = sdata.tables["table"]
    mst.tl.embed_patches(sdata, "resnet18", weights="random", dtype="float32")
    first = t.obsm["X_resnet18_random"].copy()
    mst.tl.embed_patches(sdata, "resnet18", weights="random", dtype="float32")
    np.testing.assert_array_equal(t.obsm["X_resnet18_random"], first)
    mst.tl.embed_patches(sdata, "resnet18", weights="random", random_state=1, key_added="r1", dtype="float32")
    assert not np.allclose(t.obsm["r1"], first)
    assert t.uns["X_resnet18_random"]["params"]["weights"] == "random initialisation (seed 0)"


def test_her2st_bf16_close_to_fp32_and_identical_patches_identical(her2st_sdata):
    # 24 C2 spots plus 8 copies of the first 8 at the same centres
    sub = _subset(her2st_sdata, "C2", range(24), extra_xy=her2st_sdata.tables["table"].obsm["spatial"][:8])
    t = sub.tables["table"]
    mst.tl.embed_patches(sub, "efficientnet_lite0", dtype="float32", batch_size=10, key_added="fp32")
    mst.tl.embed_patches(sub, "efficientnet_lite0", dtype="bfloat16", batch_size=10, key_added="bf16")
    f32, b16 = t.obsm["fp32"], t.obsm["bf16"]
    assert f32.shape == (32, 1280)
    np.testing.assert_allclose(f32[24:], f32[:8], rtol=1e-5, atol=1e-6)
    rel = np.linalg.norm(b16 - f32, axis=1) / np.linalg.norm(f32, axis=1)
    assert rel.max() < 0.15  # bound stated in the embed_patches docstring
    assert t.uns["bf16"]["params"]["dtype"] == "bfloat16 autocast"
    assert t.uns["fp32"]["params"]["pyramid_level"] == {"spots": 0}
    # DenseNet-121 is closer in bf16 (docstring bound 0.05)
    mst.tl.embed_patches(sub, "densenet121", dtype="float32", key_added="d32")
    mst.tl.embed_patches(sub, "densenet121", dtype="bfloat16", key_added="d16")
    d32, d16 = t.obsm["d32"], t.obsm["d16"]
    rel = np.linalg.norm(d16 - d32, axis=1) / np.linalg.norm(d32, axis=1)
    assert rel.max() < 0.05
    assert t.uns["d32"]["params"]["weights_sha256"] == DENSENET_SHA256


def test_handcrafted_separates_background_from_tissue(her2st_sdata):
    from scipy.ndimage import minimum_filter
    from sklearn.metrics import roc_auc_score

    coarse = her2st_sdata.images["C2_he"]["scale4"]["image"].to_numpy().astype(float)
    f = her2st_sdata.images["C2_he"]["scale0"]["image"].shape[-1] / coarse.shape[-1]
    white = (coarse.mean(0) > 215) & (coarse.max(0) - coarse.min(0) < 30)
    ok = minimum_filter(white.astype(np.uint8), size=13).astype(bool)
    ok[:20], ok[-20:], ok[:, :20], ok[:, -20:] = False, False, False, False
    ys, xs = np.nonzero(ok)
    pick = np.linspace(0, len(ys) - 1, 12).astype(int)
    bg = np.column_stack([xs[pick], ys[pick]]) * f
    sub = _subset(her2st_sdata, "C2", range(0, 187, 4), extra_xy=bg)
    mst.tl.embed_patches(sub, "handcrafted")
    t = sub.tables["table"]
    x = t.obsm["X_handcrafted"]
    names = t.uns["X_handcrafted"]["feature_names"]
    is_bg = np.r_[np.zeros(len(x) - 12, bool), np.ones(12, bool)]
    frac = x[:, list(names).index("background_fraction")]
    assert frac[is_bg].min() > 0.9
    assert np.median(frac[~is_bg]) < 0.3
    assert roc_auc_score(is_bg, frac) == 1.0
    # haematoxylin density is higher on tissue
    assert roc_auc_score(~is_bg, x[:, list(names).index("hematoxylin_od_mean")]) > 0.95


def _handcrafted_reference(p: np.ndarray) -> np.ndarray:
    """The 29 features of one patch written out per patch with numpy and scikit-image, as the docstring says."""
    from skimage.color import rgb2hed
    from skimage.feature import graycomatrix, graycoprops

    f = p.reshape(-1, 3).astype(np.float64)
    hed = rgb2hed(p)
    grey = p.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    hist = np.histogram(grey, bins=8, range=(0, 256))[0] / grey.size
    bg = np.mean((grey > 220) & (np.ptp(p.astype(np.int16), axis=-1) < 30))
    q = np.clip(grey * (32 / 256), 0, 31).astype(np.uint8)
    glcm = graycomatrix(q, [1, 3], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, symmetric=True, normed=True)
    props = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
    tex = np.stack([graycoprops(glcm, pr).mean(axis=1) for pr in props], axis=1).reshape(-1)
    out = np.concatenate([f.mean(0), f.std(0), hed[..., :2].mean(axis=(0, 1)), hist, [bg], tex])
    return np.nan_to_num(out, nan=0.0)


def test_handcrafted_batch_equals_per_patch_reference(her2st_sdata):
    """The batched features equal numpy/scikit-image per patch, on real H&E and on edge cases."""
    from morphst.tl.models import feature_names, handcrafted_features, handcrafted_features_batch

    sub = _subset(her2st_sdata, "C2", range(0, 187, 6))
    mst.pp.extract_patches(sub, patch_size=112, target_px=64)
    he = mst.pp.get_patches(sub)
    rng = np.random.default_rng(0)
    edge = np.stack(
        [
            np.full((64, 64, 3), 255, np.uint8),  # white: background 1, correlation of a constant GLCM is 1
            np.zeros((64, 64, 3), np.uint8),
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        ]
    )
    patches = np.concatenate([he, edge])
    ref = np.stack([_handcrafted_reference(p) for p in patches])
    got = handcrafted_features_batch(patches)
    assert got.shape == (len(patches), len(feature_names()))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(handcrafted_features(patches[0]), got[0], rtol=1e-6)
    names = feature_names()
    assert got[-3, names.index("background_fraction")] == 1.0
    assert got[-3, names.index("glcm_correlation_d1")] == 1.0
    # the encoder's threaded split gives the same features as one batch
    enc = get_model("handcrafted", n_jobs=2)
    np.testing.assert_array_equal(enc.encode(patches), got)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\)"):
        handcrafted_features_batch(patches[0])


def _state(sdata):
    t = sdata.tables["table"]
    return sorted(t.obsm.keys()), sorted(t.uns.keys()), list(t.obs.columns)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"model": "not_a_model"}, ValueError, "not in the morphst registry"),
        ({"model": "resnet18"}, FileNotFoundError, "No weights for model 'resnet18'"),
        ({"model": "uni"}, FileNotFoundError, "gated"),
        ({"model": "hf-hub:MahmoodLab/uni"}, FileNotFoundError, "No weights for model 'uni'.*gated"),
        ({"model": "resnet18", "weights": "/nonexistent.safetensors"}, FileNotFoundError, "not found"),
        ({"model": "resnet18", "weights": "random", "dtype": "float16"}, ValueError, "dtype"),
        ({"model": "resnet18", "weights": "random", "table_key": "nope"}, ValueError, "Available tables"),
    ],
    ids=["unknown", "no-weights", "gated", "hub-name", "bad-path", "dtype", "table"],
)
def test_bad_input_raises_before_writing(synthetic_sdata, tmp_path, monkeypatch, kwargs, exc, match):
    sdata, _ = synthetic_sdata
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(mst.settings, "weights_dir", tmp_path)
    before = _state(sdata)
    with pytest.raises(exc, match=match):
        mst.tl.embed_patches(sdata, **kwargs)
    assert _state(sdata) == before


def test_anndata_is_refused_before_the_model_is_built(synthetic_sdata, monkeypatch):
    import morphst.tl.models as models

    sdata, _ = synthetic_sdata
    calls = []
    monkeypatch.setattr(models, "get_model", lambda *a, **k: calls.append(a))
    adata = sdata.tables["table"]
    with pytest.raises(TypeError, match=r"`embed_patches` needs the SpatialData \(images \+ shapes"):
        mst.tl.embed_patches(adata, "resnet18", weights="random")
    assert calls == []
    assert "patches" not in adata.uns
    assert "not an anndata" in " ".join(mst.tl.embed_patches.__doc__.split()).lower()


def test_patch_geometry_is_checked_before_the_model_is_built(synthetic_sdata, monkeypatch):
    from spatialdata import SpatialData

    import morphst.tl.models as models

    sdata, _ = synthetic_sdata
    no_images = SpatialData(shapes=dict(sdata.shapes), tables={"table": sdata.tables["table"]})
    calls = []
    monkeypatch.setattr(models, "get_model", lambda *a, **k: calls.append(a))
    before = _state(no_images)
    with pytest.raises(ValueError, match="has no images"):
        mst.tl.embed_patches(no_images, "densenet121")
    assert calls == []
    assert _state(no_images) == before


def _hub_spy(monkeypatch, *, reachable: bool):
    """Replace the hub's TCP check (``socket.create_connection``) and timm.create_model(pretrained=True); return the
    call logs."""
    import contextlib
    import socket

    import timm

    log = {"reachable": 0, "hub": []}

    def fake_connect(address, timeout=None, *a, **k):
        log["reachable"] += 1
        if not reachable:
            raise OSError("spy: unreachable")
        return contextlib.nullcontext()

    real_create = timm.create_model

    def spy_create(name, *a, pretrained=False, **k):
        if pretrained:
            log["hub"].append(name)
            raise RuntimeError("spy: no network in tests")
        return real_create(name, *a, pretrained=pretrained, **k)

    monkeypatch.setattr(socket, "create_connection", fake_connect)
    monkeypatch.setattr(timm, "create_model", spy_create)
    return log


@pytest.mark.parametrize("model", ["densenet121", "hf-hub:MahmoodLab/uni"])
def test_unreachable_hub_fails_fast_without_hub_calls(synthetic_sdata, tmp_path, monkeypatch, model):
    import time

    sdata, _ = synthetic_sdata
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(mst.settings, "weights_dir", tmp_path)
    log = _hub_spy(monkeypatch, reachable=False)
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="hub was unreachable") as e:
        mst.tl.embed_patches(sdata, model)
    assert time.perf_counter() - t0 < 10
    assert log == {"reachable": 1, "hub": []}
    msg = str(e.value)
    # the three ways to provide weights
    assert "Pass `weights=` a local file" in msg
    assert "$MORPHST_WEIGHTS_DIR" in msg
    assert "load from the hub" in msg
    assert "patches" not in sdata.tables["table"].uns


def test_reachable_hub_is_tried_and_hf_hub_offline_skips_the_check(synthetic_sdata, tmp_path, monkeypatch):
    sdata, _ = synthetic_sdata
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(mst.settings, "weights_dir", tmp_path)
    log = _hub_spy(monkeypatch, reachable=True)
    with pytest.raises(FileNotFoundError, match="failed: RuntimeError: spy"):
        mst.tl.embed_patches(sdata, "densenet121")
    assert log == {"reachable": 1, "hub": ["densenet121"]}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        mst.tl.embed_patches(sdata, "densenet121")
    assert log == {"reachable": 1, "hub": ["densenet121"]}  # neither checked nor tried again


def test_hub_reachable_reads_hf_endpoint(monkeypatch):
    import socket

    from morphst.tl.models import _weights

    seen = []

    def fake_connect(addr, timeout=None):
        seen.append((addr, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", fake_connect)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert _weights.hub_reachable() is False
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    assert _weights.hub_reachable(timeout=1.5) is False
    assert seen == [(("huggingface.co", 443), 3.0), (("mirror.example", 8080), 1.5)]


def test_find_weights_file_accepts_a_string_and_a_path(weights_dir):
    from morphst.tl.models import find_weights_file

    want = weights_dir / "densenet121_imagenet_capricorn" / "densenet121.timm.safetensors"
    assert find_weights_file("densenet121", str(weights_dir)) == want
    assert find_weights_file("densenet121", weights_dir) == want
    assert find_weights_file(["resnet18", "densenet121"], weights_dir) == want
    # a name is a whole name, not a sequence of letters
    assert find_weights_file("d", weights_dir) is None


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("efficientnet-lite0", "efficientnet_lite0"), ("densnet121", "densenet121"), ("UNI", "uni")],
)
def test_unknown_model_suggests_close_names(name, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'"):
        get_model(name)


def test_auto_extraction_is_logged_and_blank_patches_warn(synthetic_factory, morphst_log):
    import warnings

    import xarray as xr

    sdata, _ = synthetic_factory(size_px=1024)  # 224 px patches inside the image: no padding
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mst.tl.embed_patches(sdata, mean_rgb, dtype="float32")
    assert not [w for w in caught if "constant" in str(w.message)]  # spot marks on white: not constant
    assert "running `mst.pp.extract_patches` with its defaults (112 µm at 224 px)" in morphst_log.text
    # the same slide, all black (the placeholder hires image of some readers): every patch is constant
    black, _ = synthetic_factory(size_px=1024)
    img = black.images["image"]
    for scale in img:
        node = img[scale]
        node["image"] = xr.zeros_like(node["image"])
    with pytest.warns(UserWarning, match=r"16 of 16 patches are constant \(all black; e.g. \['s0'"):
        mst.tl.embed_patches(black, mean_rgb, dtype="float32")
    np.testing.assert_array_equal(black.tables["table"].obsm["X_mean_rgb"], 0.0)


def test_blank_patch_counter_threshold():
    from morphst.tl._embed._blank import BlankPatches

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    patches[:2] = 255  # 2 of 40 (5 %): at the threshold, no warning
    b = BlankPatches([f"c{i}" for i in range(40)])
    b.update(np.arange(40), patches)
    assert b.n_constant == 2
    b.warn()  # pytest runs with warnings visible; nothing is raised or warned here
    patches[2] = 128  # 3 of 40 (7.5 %)
    b = BlankPatches([f"c{i}" for i in range(40)])
    b.update(np.arange(40), patches)
    with pytest.warns(UserWarning, match=r"3 of 40 patches are constant \(one colour; e.g. \['c0', 'c1', 'c2'\]"):
        b.warn()


def channel_stats(x):
    """Mean, std and max per channel of float patches in [0, 1]: a deterministic stand-in encoder."""
    import torch

    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def test_embedding_is_identical_for_any_reader_threads_and_equals_the_encoder_on_get_patches(her2st_sdata, monkeypatch):
    """Real patches (40 HER2ST C2 spots): 1 or 2 reader threads, any batch size, give the same features, and they
    are the encoder applied to the patches of get_patches (scaled to [0, 1])."""
    import torch

    sub = _subset(her2st_sdata, "C2", range(40))
    t = sub.tables["table"]
    mst.pp.extract_patches(sub)
    runs = {}
    for n_jobs, bs in [(1, 8), (2, 8), (2, 64)]:
        monkeypatch.setattr(mst.settings, "n_jobs", n_jobs)
        mst.tl.embed_patches(sub, channel_stats, dtype="float32", batch_size=bs, key_added=f"j{n_jobs}b{bs}")
        runs[(n_jobs, bs)] = t.obsm[f"j{n_jobs}b{bs}"]
    np.testing.assert_array_equal(runs[(2, 8)], runs[(1, 8)])
    np.testing.assert_allclose(runs[(2, 64)], runs[(1, 8)], rtol=1e-6, atol=1e-7)  # other batches: reductions
    p = torch.from_numpy(mst.pp.get_patches(sub)).permute(0, 3, 1, 2).float() / 255.0
    want = channel_stats(p).numpy()
    np.testing.assert_allclose(runs[(1, 8)], want, rtol=1e-5, atol=1e-6)
    assert want[:, :3].min() > 0.3  # H&E tissue: bright, not a blank patch


def test_device_encoder_keeps_the_order_with_batches_in_flight(synthetic_sdata):
    """The encoder stream with 3 batches launched ahead (as on CUDA) yields the rows and features in order."""
    from morphst.pp._patches import PatchReader
    from morphst.tl._embed._compute import DeviceEncoder
    from morphst.tl.models import get_model

    sdata, _ = synthetic_sdata
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=32)
    enc = DeviceEncoder(get_model(channel_stats), "cpu", "float32")
    one = list(enc.encode_stream(PatchReader(sdata).iter_batches(batch_size=3)))
    enc.depth = 3
    ahead = list(enc.encode_stream(PatchReader(sdata).iter_batches(batch_size=3)))
    assert [len(r) for r, _ in ahead] == [3, 3, 3, 3, 3, 1]
    for (r1, f1), (r3, f3) in zip(one, ahead, strict=True):
        np.testing.assert_array_equal(r3, r1)
        np.testing.assert_array_equal(f3, f1)
    rows = np.concatenate([r for r, _ in ahead])
    assert sorted(rows) == list(range(16))


def test_precision_rule_lives_in_settings_and_test_knobs_are_not_exported():
    import inspect

    import torch

    import morphst._settings
    from morphst.tl import _embed

    assert _embed.__all__ == ["embed_patches"]
    assert not any(hasattr(_embed, k) for k in ("_BLOCK_PATCHES", "_WORKER_MODELS", "_autocast_dtype"))
    assert "tl._embed" not in inspect.getsource(morphst._settings)
    assert mst.settings.resolve_autocast("cpu", "float32") is None
    assert mst.settings.resolve_autocast("cpu", "bfloat16") is torch.bfloat16
    bf16_cpu = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert (mst.settings.resolve_autocast("cpu") is torch.bfloat16) == bf16_cpu
