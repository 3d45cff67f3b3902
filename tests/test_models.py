"""Foundation-model recipes of the registry, loaded offline through the path a user with network access takes.

For each pathology foundation model, the test writes a local Hugging Face cache laid out as the hub repo
(``models--org--name/snapshots/<rev>/config.json`` + the weights file, ``refs/main``), with weights of a randomly
initialised network built by the *model card's own recipe* (transcribed below from the cited source, independently
of the registry), sets ``HF_HUB_OFFLINE=1`` and runs ``mst.tl.embed_patches(sdata, model=name)``: timm
``create_model("hf-hub:...", pretrained=True)`` / transformers ``from_pretrained`` resolve from that cache. The
features must equal the card's pipeline (its preprocessing, normalisation constants and pooling) applied to the
same patches with the same weights. A second check loads the same weights from a file under ``weights_dir``
(the registry's ``timm_kwargs`` alone must rebuild the card's network, strict keys).

What the fast tests cover and what they do not: every architecture argument of each recipe is exact, except that
the number of transformer blocks is capped at 1 (``depth`` / ``num_hidden_layers``) in both the card network and
the one morphst builds, so that ViT-g/H models (0.6-1.1B parameters) run in seconds on 2 CPU cores. Blocks are
identical in structure, so key names and shapes of every other tensor are checked as in the full model. The
``slow`` test repeats the check at full depth (full-size weights files, one spot; opt-in with
``MORPHST_FULL_SIZE_MODELS=1``: ~15 GB peak memory for the ViT-g models). The config.json files written
here follow the published ones where a mirror could be read (Virchow2, Prov-GigaPath); for the others they are
reconstructed (architecture + minimal ``model_args``), so that the registry's explicit kwargs, not the file, have
to define the network. No test here touches real weights: whether the published checkpoints give the published
features cannot be checked offline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import morphst as mst
from morphst.tl.models import REGISTRY, get_model, list_models

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
H_OPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
FAST_DEPTH = 1


def _swiglu() -> dict[str, Any]:
    import torch
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


def _pretrained_cfg(mean_std, interpolation="bicubic", crop_pct=1.0, tag=""):
    return {
        "tag": tag,
        "input_size": [3, 224, 224],
        "interpolation": interpolation,
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "mean": list(mean_std[0]),
        "std": list(mean_std[1]),
        "num_classes": 0,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }


@dataclass
class Card:
    """One model card's recipe, transcribed from its source (independent of the registry)."""

    repo: str  # as spelled in the cache written here
    filename: str  # weights file of the hub repo
    dim: int
    mean_std: tuple
    transforms: list  # torchvision transforms before ToTensor/Normalize
    arch: str = ""  # timm: create_model(arch, **kwargs); "" for transformers
    kwargs: dict = field(default_factory=dict)
    lazy: bool = False  # add SwiGLUPacked + SiLU (not JSON: passed in code by the card)
    config: dict = field(default_factory=dict)  # config.json of the hub repo (timm)
    pool: str = "model"  # "model": model(x); "cls+mean<k>": cat(tok[:, 0], tok[:, k:].mean(1)); "hf_cls"
    hf: str = ""  # transformers model class and config
    hf_config: dict = field(default_factory=dict)
    source: str = ""


def _resize(size, bicubic=False):
    from torchvision import transforms as T

    mode = T.InterpolationMode.BICUBIC if bicubic else T.InterpolationMode.BILINEAR
    return T.Resize(size, interpolation=mode)


def _crop(size):
    from torchvision import transforms as T

    return T.CenterCrop(size)


CARDS: dict[str, Card] = {
    # github.com/mahmoodlab/UNI uni/get_encoder/get_encoder.py (uni_kwargs) and README_old.md; cache spelled as
    # the HF card's "hf-hub:MahmoodLab/uni" (the registry says MahmoodLab/UNI: repo ids ignore case)
    "uni": Card(
        repo="MahmoodLab/uni",
        filename="pytorch_model.bin",
        dim=1024,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(224)],
        arch="vit_large_patch16_224",
        kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
        config={
            "architecture": "vit_large_patch16_224",
            "num_classes": 0,
            "num_features": 1024,
            "global_pool": "token",
            "model_args": {"img_size": 224, "patch_size": 16, "num_classes": 0, "dynamic_img_size": True},
            "pretrained_cfg": _pretrained_cfg(IMAGENET, "bilinear", tag="uni_mass100k"),
        },
    ),
    # github.com/mahmoodlab/UNI README.md (timm_kwargs, Resize(224) + CenterCrop(224), ImageNet)
    "uni2_h": Card(
        repo="MahmoodLab/UNI2-h",
        filename="pytorch_model.bin",
        dim=1536,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(224), lambda: _crop(224)],
        arch="vit_giant_patch14_224",
        kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        lazy=True,
        config={
            "architecture": "vit_giant_patch14_224",
            "num_classes": 0,
            "model_args": {"img_size": 224, "num_classes": 0},
            "pretrained_cfg": _pretrained_cfg(IMAGENET, "bilinear"),
        },
    ),
    # github.com/bioptimus/releases models/h-optimus/v0/README.md: timm.models.VisionTransformer(**params) (built
    # below from these params, not from a timm architecture name), ToTensor + Normalize (224 px at 0.5 µm/px)
    "h_optimus_0": Card(
        repo="bioptimus/H-optimus-0",
        filename="pytorch_model.bin",
        dim=1536,
        mean_std=H_OPTIMUS,
        transforms=[],
        arch="VisionTransformer",
        kwargs={
            "patch_size": 14,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-05,
            "mlp_ratio": 5.33334,
            "reg_tokens": 4,
            "no_embed_class": True,
            "img_size": 224,
            "num_classes": 0,
            "in_chans": 3,
        },
        config={
            "architecture": "vit_giant_patch14_reg4_dinov2",
            "num_classes": 0,
            "num_features": 1536,
            "global_pool": "token",
            "model_args": {"img_size": 224, "num_classes": 0, "global_pool": "token"},
            "pretrained_cfg": _pretrained_cfg(H_OPTIMUS),
        },
    ),
    # mahmoodlab/TRIDENT load.py HOptimus1InferenceEncoder; H-optimus-0's network and constants
    "h_optimus_1": Card(
        repo="bioptimus/H-optimus-1",
        filename="pytorch_model.bin",
        dim=1536,
        mean_std=H_OPTIMUS,
        transforms=[lambda: _resize(224)],
        arch="vit_giant_patch14_reg4_dinov2",
        kwargs={"num_classes": 0, "img_size": 224, "global_pool": "token", "init_values": 1e-5},
        config={
            "architecture": "vit_giant_patch14_reg4_dinov2",
            "num_classes": 0,
            "num_features": 1536,
            "global_pool": "token",
            "model_args": {"img_size": 224, "num_classes": 0, "global_pool": "token"},
            "pretrained_cfg": _pretrained_cfg(H_OPTIMUS),
        },
    ),
    # mahmoodlab/TRIDENT load.py VirchowInferenceEncoder: output = model(x); cat(output[:, 0], output[:, 1:].mean(1))
    "virchow": Card(
        repo="paige-ai/Virchow",
        filename="pytorch_model.bin",
        dim=2560,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(224, bicubic=True)],
        arch="vit_huge_patch14_224",
        kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
        },
        lazy=True,
        config={
            "architecture": "vit_huge_patch14_224",
            "model_args": {
                "img_size": 224,
                "init_values": 1e-5,
                "num_classes": 0,
                "mlp_ratio": 5.3375,
                "global_pool": "",
            },
            "pretrained_cfg": _pretrained_cfg(IMAGENET, tag="virchow_v1"),
        },
        pool="cls+mean1",
    ),
    # TRIDENT Virchow2InferenceEncoder: cat(output[:, 0], output[:, 5:].mean(1)); config.json as mirrored in
    # slide2vec models.py (tag virchow_v2)
    "virchow2": Card(
        repo="paige-ai/Virchow2",
        filename="model.safetensors",
        dim=2560,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(224, bicubic=True)],
        arch="vit_huge_patch14_224",
        kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
        },
        lazy=True,
        config={
            "architecture": "vit_huge_patch14_224",
            "model_args": {
                "img_size": 224,
                "init_values": 1e-5,
                "num_classes": 0,
                "reg_tokens": 4,
                "mlp_ratio": 5.3375,
                "global_pool": "",
                "dynamic_img_size": True,
            },
            "pretrained_cfg": _pretrained_cfg(IMAGENET, tag="virchow_v2"),
        },
        pool="cls+mean5",
    ),
    # prov-gigapath config.json (mirrored); card / TRIDENT: Resize(256, bicubic), CenterCrop(224), ImageNet
    "prov_gigapath": Card(
        repo="prov-gigapath/prov-gigapath",
        filename="pytorch_model.bin",
        dim=1536,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(256, bicubic=True), lambda: _crop(224)],
        arch="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-05,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
        },
        config={
            "architecture": "vit_giant_patch14_dinov2",
            "num_classes": 0,
            "num_features": 1536,
            "global_pool": "token",
            "model_args": {
                "img_size": 224,
                "in_chans": 3,
                "patch_size": 16,
                "embed_dim": 1536,
                "depth": 40,
                "num_heads": 24,
                "init_values": 1e-05,
                "mlp_ratio": 5.33334,
                "num_classes": 0,
            },
            "pretrained_cfg": _pretrained_cfg(IMAGENET, tag=""),
        },
    ),
    # TRIDENT PhikonInferenceEncoder / HEST: ViTModel(add_pooling_layer=False), last_hidden_state[:, 0]. The
    # config is transformers' ViT-B/16 (the published config.json could not be read here)
    "phikon": Card(
        repo="owkin/phikon",
        filename="model.safetensors",
        dim=768,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(224)],
        pool="hf_cls",
        hf="ViT",
        hf_config={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "patch_size": 16},
    ),
    # TRIDENT Phikonv2InferenceEncoder: AutoModel (DINOv2 ViT-L), last_hidden_state[:, 0], Resize + CenterCrop 224
    "phikon_v2": Card(
        repo="owkin/phikon-v2",
        filename="model.safetensors",
        dim=1024,
        mean_std=IMAGENET,
        transforms=[lambda: _resize(224), lambda: _crop(224)],
        pool="hf_cls",
        hf="Dinov2",
        hf_config={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 16},
    ),
}


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty local HF cache, ``HF_HUB_OFFLINE=1``, an empty weights dir; any TCP connection (the hub reachability
    check included) fails the test."""
    import socket

    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these at import: set them as a fresh process with that environment would have them
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    wdir = tmp_path / "weights"
    wdir.mkdir()
    monkeypatch.setattr(mst.settings, "weights_dir", wdir)

    def no_network(*a, **k):
        raise AssertionError("HF_HUB_OFFLINE is set: the hub must not be contacted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache, wdir


def _cap_depth(monkeypatch, depth: int | None) -> None:
    """Cap the number of transformer blocks of timm ViTs and transformers ViT/DINOv2 models built from now on."""
    if depth is None:
        return
    from timm.models.vision_transformer import VisionTransformer

    init = VisionTransformer.__init__

    def capped(self, *a, **k):
        k["depth"] = min(int(k.get("depth", 12)), depth)
        init(self, *a, **k)

    monkeypatch.setattr(VisionTransformer, "__init__", capped)


def _card_model(card: Card, depth: int | None):
    """The network of the card's recipe, random weights perturbed so that every tensor matters."""
    import timm
    import torch

    torch.manual_seed(123)
    if card.hf:
        import transformers

        cfg_cls = getattr(transformers, f"{card.hf}Config")
        model_cls = getattr(transformers, f"{card.hf}Model")
        cfg = dict(card.hf_config, image_size=224)
        if depth is not None:
            cfg["num_hidden_layers"] = min(cfg["num_hidden_layers"], depth)
        kw = {"add_pooling_layer": False} if card.hf == "ViT" else {}
        model = model_cls(cfg_cls(**cfg), **kw)
    else:
        kw = dict(card.kwargs, **(_swiglu() if card.lazy else {}))
        if card.arch == "VisionTransformer":  # bioptimus/releases: functools.partial(GluMlp, SiLU, gate_last=False)
            import functools

            kw["mlp_layer"] = functools.partial(
                timm.layers.mlp.GluMlp, act_layer=torch.nn.modules.activation.SiLU, gate_last=False
            )
            kw["act_layer"] = torch.nn.modules.activation.SiLU
            model = timm.models.VisionTransformer(**kw)
        else:
            model = timm.create_model(card.arch, pretrained=False, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _write_hub_repo(cache: Path, card: Card, model) -> Path:
    """``models--org--name`` with ``refs/main`` and ``snapshots/<rev>/`` (config.json + weights), as the hub client."""
    import torch
    from safetensors.torch import save_file

    repo_dir = cache / ("models--" + card.repo.replace("/", "--"))
    rev = hashlib.sha1(card.repo.encode()).hexdigest()
    snap = repo_dir / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    if card.hf:
        model.save_pretrained(snap)  # config.json + model.safetensors, as on the hub
    else:
        (snap / "config.json").write_text(json.dumps(card.config, indent=2))
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        if card.filename.endswith(".safetensors"):
            save_file(sd, str(snap / card.filename))
        else:
            torch.save(sd, snap / card.filename)
    return snap


def _card_features(card: Card, model, patches: np.ndarray) -> np.ndarray:
    """The card's pipeline on uint8 patches ``(N, H, W, 3)``: PIL transforms, ToTensor, Normalize, pooling."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([f() for f in card.transforms] + [T.ToTensor(), T.Normalize(*card.mean_std)])
    x = torch.stack([tf(Image.fromarray(p)) for p in patches])
    with torch.inference_mode():
        if card.pool == "hf_cls":
            return model(pixel_values=x).last_hidden_state[:, 0].numpy()
        out = model(x)
        if card.pool.startswith("cls+mean"):
            k = int(card.pool[len("cls+mean") :])
            out = torch.cat([out[:, 0], out[:, k:].mean(1)], dim=-1)
    return out.numpy()


def _check_model(name, sdata, offline_hub, monkeypatch, depth):
    if CARDS[name].hf:
        pytest.importorskip("transformers")
    import torch

    card = CARDS[name]
    spec = REGISTRY[name]
    cache, wdir = offline_hub
    _cap_depth(monkeypatch, depth)
    model = _card_model(card, depth)
    _write_hub_repo(cache, card, model)

    # 1. the user's path: embed_patches -> get_model -> hub (here the offline cache); the encoder it built is kept
    import morphst.tl.models as models

    built = []
    real_get_model = models.get_model
    monkeypatch.setattr(models, "get_model", lambda *a, **k: built.append(real_get_model(*a, **k)) or built[-1])
    mst.tl.embed_patches(sdata, name, dtype="float32", batch_size=8)
    monkeypatch.setattr(models, "get_model", real_get_model)
    (enc,) = built
    t = sdata.tables["table"]
    feats = t.obsm[f"X_{name}"]
    params = t.uns[f"X_{name}"]["params"]
    assert feats.shape == (t.n_obs, spec.embedding_dim) == (t.n_obs, card.dim)
    assert "local Hugging Face cache" in params["weights"]
    patches = mst.pp.get_patches(sdata)
    want = _card_features(card, model, patches)
    rel = np.linalg.norm(feats - want, axis=1) / np.linalg.norm(want, axis=1)
    # same weights, same patches: equal up to float error. Prov-GigaPath upsamples 224 -> 256 px (bicubic) before
    # its centre crop: torch here, PIL in the card, whose resampling differs slightly (measured 5e-4), hence 2e-3
    assert rel.max() < (2e-3 if name == "prov_gigapath" else 1e-5), rel.max()

    # 2. the recipe: normalisation constants, input size, pooling offsets, every tensor's name and shape
    np.testing.assert_array_equal(enc.mean.flatten().numpy(), np.asarray(card.mean_std[0], np.float32))
    np.testing.assert_array_equal(enc.std.flatten().numpy(), np.asarray(card.mean_std[1], np.float32))
    assert enc.input_size == 224
    assert enc.embedding_dim == card.dim
    if spec.pooling == "cls+mean":
        assert spec.n_prefix_tokens == enc.module.num_prefix_tokens == int(card.pool[len("cls+mean") :])
    sd_card = model.state_dict()
    sd_enc = enc.module.state_dict() if not card.hf else enc.module.model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd_enc.items()} == {k: tuple(v.shape) for k, v in sd_card.items()}

    # 3. the same weights from a local file / folder named after the model (hub cache emptied): the registry's
    # kwargs alone rebuild the card's network (strict keys)
    import shutil

    for d in cache.iterdir():
        shutil.rmtree(d)
    if card.hf:
        model.save_pretrained(wdir / name)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd_card.items()}, str(wdir / f"{name}.safetensors"))
    local = get_model(name)
    assert local.weights_source.startswith(("file ", "folder ")), local.weights_source
    assert local.weights_sha256 is not None
    x = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        a = local.encode(local.transform(x))
        b = enc.encode(enc.transform(x))
    # relative to the feature norm: element-wise, 24-40 full-depth blocks accumulate ~2e-5 absolute float error
    # (channels_last in embed_patches changes the patch-embedding convolution's summation order)
    assert float(torch.linalg.norm(a - b) / torch.linalg.norm(b)) < 1e-5
    return rel.max()


FOUNDATION = [n for n in CARDS]


@pytest.mark.parametrize("name", FOUNDATION)
def test_foundation_model_loads_offline_and_matches_its_card(name, synthetic_factory, offline_hub, monkeypatch):
    sdata, _ = synthetic_factory(n_side=2)  # 4 spots
    _check_model(name, sdata, offline_hub, monkeypatch, depth=FAST_DEPTH)


@pytest.mark.slow
@pytest.mark.parametrize("name", FOUNDATION)
def test_foundation_model_full_size(name, synthetic_factory, offline_hub, monkeypatch):
    import os

    if os.environ.get("MORPHST_FULL_SIZE_MODELS") != "1":
        # ViT-g: ~4.5 GB weights file, ~15 GB peak memory, minutes per model on a CPU: opt-in only
        pytest.skip("full-size foundation-model check: set MORPHST_FULL_SIZE_MODELS=1")
    sdata, _ = synthetic_factory(n_side=1)  # one spot: a full-size forward pass costs seconds on a CPU
    _check_model(name, sdata, offline_hub, monkeypatch, depth=None)


def test_every_foundation_entry_is_checked_and_cites_its_source():
    df = list_models()
    hub_models = [n for n, s in REGISTRY.items() if s.hub is not None and (s.gated or s.backend != "timm")]
    assert sorted(hub_models) == sorted(FOUNDATION)
    for name in FOUNDATION:
        assert df.loc[name, "source"], name
        assert df.loc[name, "embedding_dim"] == CARDS[name].dim


def test_hub_name_is_case_insensitive_and_hf_hub_alias(offline_hub):
    for q in ["hf-hub:MahmoodLab/uni", "hf_hub:mahmoodlab/UNI", "MahmoodLab/UNI"]:
        with pytest.raises(FileNotFoundError, match=r"No weights for model 'uni'.*HF_HUB_OFFLINE is set.*gated"):
            get_model(q)


def test_foundation_weights_are_not_taken_from_a_generic_architecture_file(offline_hub):
    from safetensors.torch import save_file

    _, wdir = offline_hub
    # a file named after the shared timm architecture (H-optimus-0 and -1 share it; so do ImageNet ViTs and UNI)
    import torch

    save_file({"x": torch.zeros(1)}, str(wdir / "vit_giant_patch14_reg4_dinov2.safetensors"))
    save_file({"x": torch.zeros(1)}, str(wdir / "vit_large_patch16_224.augreg_in21k.safetensors"))
    for name in ["h_optimus_1", "uni"]:
        with pytest.raises(FileNotFoundError, match=rf"'{name}\.safetensors'"):
            get_model(name)


def test_transformers_models_name_the_extra_when_missing(monkeypatch, offline_hub):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"morphst\[foundation\]"):
        get_model("phikon_v2")


def test_model_quirks_live_on_their_specs():
    from morphst.tl.models import _specs

    assert REGISTRY["virchow2"].lazy_kwargs is _specs.swiglu_silu
    assert REGISTRY["uni2_h"].lazy_kwargs is _specs.swiglu_silu
    import torch
    from timm.layers import SwiGLUPacked

    kw = REGISTRY["virchow2"].create_kwargs()
    assert kw["mlp_layer"] is SwiGLUPacked
    assert kw["act_layer"] is torch.nn.SiLU
    assert REGISTRY["efficientnet_lite0"].convert_state_dict is _specs.efficientnet_pytorch_to_timm
    assert REGISTRY["efficientnet_lite0"].bundled_weights is _specs.bundled_efficientnet_lite0
    # the recorded recipe (timm_kwargs) stays plain data
    json.dumps({n: s.timm_kwargs for n, s in REGISTRY.items()})


def test_crop_pct_is_resize_then_centre_crop():
    import torch
    from torchvision.transforms import v2 as T

    from morphst.tl.models import TorchEncoder

    enc = TorchEncoder(torch.nn.Identity(), name="x", input_size=224, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.875)
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    got = enc.transform(x)
    assert got.shape == (2, 3, 224, 224)
    up = torch.nn.functional.interpolate(x.float(), size=(256, 256), mode="bilinear", antialias=True)
    want = T.CenterCrop(224)(up) / 255.0
    torch.testing.assert_close(got, want, rtol=0, atol=1.01 / 255)  # uint8 resize rounding
    with pytest.raises(ValueError, match="crop_pct"):
        TorchEncoder(torch.nn.Identity(), name="x", input_size=224, crop_pct=0)


def test_uni_from_the_cache_in_a_fresh_process_with_hf_hub_offline(tmp_path):
    """The environment variables themselves (set before any import), as a user on an offline compute node."""
    import os
    import subprocess
    import sys

    import torch

    card = CARDS["uni"]
    # UNI's recipe does not set depth: a one-block model (config.json model_args) keeps this quick
    card = Card(**{**card.__dict__, "config": {**card.config, "model_args": {**card.config["model_args"], "depth": 1}}})
    import timm

    torch.manual_seed(0)
    model = timm.create_model(card.arch, pretrained=False, **dict(card.kwargs, depth=1)).eval()
    cache = tmp_path / "hf" / "hub"
    _write_hub_repo(cache, card, model)
    patches = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.save(tmp_path / "patches.npy", patches)
    np.save(tmp_path / "want.npy", _card_features(card, model, patches))
    code = f"""
import numpy as np, torch, morphst as mst
enc = mst.tl.models.get_model("uni")
assert "local Hugging Face cache" in enc.weights_source, enc.weights_source
x = torch.from_numpy(np.load({str(tmp_path / "patches.npy")!r})).permute(0, 3, 1, 2).contiguous()
with torch.inference_mode():
    got = enc.encode(enc.transform(x)).numpy()
want = np.load({str(tmp_path / "want.npy")!r})
assert got.shape == (2, 1024), got.shape
np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
print("OK", enc.weights_source)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", MORPHST_WEIGHTS_DIR=str(tmp_path / "none"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK hub hf-hub:MahmoodLab/UNI (local Hugging Face cache, revision" in r.stdout
