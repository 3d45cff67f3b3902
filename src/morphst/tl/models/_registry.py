"""Building an encoder from a registry name, a timm name or a callable: :func:`get_model`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

from ..._settings import settings
from ..._utils import list_keys
from ._base import CallableEncoder, ModelSpec, TorchEncoder
from ._specs import (
    REGISTRY,
)
from ._weights import (
    cached_repo_id,
    cached_revision,
    file_sha256,
    find_weights_file,
    hf_offline_mode,
    hub_plan,
    hub_repo_id,
    is_hf_hub,
    load_state_dict_checked,
    no_weights_error,
    normalise_name,
    read_state_dict,
    weights_names,
)


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
        path = find_weights_file(weights_names(spec), settings.weights_dir)
        if path is None and spec.bundled_weights is not None:
            path = spec.bundled_weights()
    if path is not None:
        model = timm.create_model(spec.arch, pretrained=False, **kw)
        sd = read_state_dict(path)
        target = model.state_dict()
        if spec.convert_state_dict is not None:
            try:
                sd = spec.convert_state_dict(sd, target)
            except ValueError as e:
                msg = f"Weights file {str(path)!r} does not fit model {spec.name!r} ({spec.arch}): {e}"
                raise ValueError(msg) from e
        classifier = model.pretrained_cfg.get("classifier", "classifier")
        sd = {k: v for k, v in sd.items() if k in target or not k.startswith(f"{classifier}.")}
        if spec.pooling == "cls+mean":
            sd = {k: v for k, v in sd.items() if k in target or not k.startswith("head")}
        load_state_dict_checked(model, sd, path, spec.name, spec.arch)
        return model, f"file {path}", file_sha256(path), str(path)

    hub = spec.hub
    err = ""
    if hub is not None:
        repo, cache_only, err = hub_plan(hub)
    if hub is not None and not err:
        try:
            with hf_offline_mode() if cache_only else nullcontext():
                if is_hf_hub(hub):
                    kw.pop("num_classes", None)
                    model = timm.create_model(f"hf-hub:{repo}", pretrained=True, **kw, num_classes=0)
                else:
                    model = timm.create_model(
                        spec.arch, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": repo}, **kw
                    )
            rev = cached_revision(repo) if cache_only else None
            where = f" (local Hugging Face cache, revision {rev})" if cache_only else ""
            return model, f"hub {hub}{where}", None, None
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:300]
    raise no_weights_error(spec, err)


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
    repo = hub_repo_id(spec.hub) if spec.hub else None
    if isinstance(weights, str) and weights == "random":
        where = _local_folder(None, spec) or (cached_repo_id(repo) if repo else None)
        if where is None:
            msg = (
                f"A random {spec.name!r} needs its config.json: put the hub folder under `mst.settings.weights_dir` "
                f"or in the Hugging Face cache ({repo!r})."
            )
            raise FileNotFoundError(msg)
        with hf_offline_mode():
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
        repo_to_load, cache_only, err = hub_plan(spec.hub)
    if repo is not None and not err:
        try:
            with hf_offline_mode() if cache_only else nullcontext():
                model = AutoModel.from_pretrained(repo_to_load, local_files_only=cache_only, **kw)
            rev = cached_revision(repo_to_load) if cache_only else None
            where = f" (local Hugging Face cache, revision {rev})" if cache_only else ""
            return TokenModel(model), f"hub {spec.hub}{where}", None, None
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:300]
    raise no_weights_error(spec, err)


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
    wanted = {normalise_name(n) for n in weights_names(spec)}
    for cfg in sorted(Path(wdir).rglob("config.json")):
        if normalise_name(cfg.parent.name) in wanted:
            return cfg.parent
    return None


def _close_matches(name: str, timm_names: Sequence[str], n: int = 3) -> list[str]:
    """Registry names first, then timm architectures, closest to ``name`` (``-`` read as ``_``, case ignored)."""
    q = normalise_name(name)
    out: list[str] = []
    for pool in (list(REGISTRY), list(timm_names)):
        by_norm = {normalise_name(c): c for c in pool}
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
        q = hub_repo_id(model).lower()
        spec = next((s for s in REGISTRY.values() if s.hub is not None and hub_repo_id(s.hub).lower() == q), None)
    if spec is None and is_hf_hub(model):
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
