"""Global settings: device, mixed precision, workers, progress bars, data and weight directories.

Torch is imported lazily, so ``import morphst`` stays fast and the settings work without it.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path


class _EnvDir:
    """A folder setting: the path set, else the path in the environment variable ``env``, else ``None``.

    A ``str`` or ``PathLike`` set is kept as a :class:`~pathlib.Path`; ``None`` unsets it.
    """

    def __init__(self, env: str) -> None:
        self.env = env

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}"

    def __get__(self, obj: object, objtype: type | None = None) -> Path | None:
        if obj is None:
            return self  # type: ignore[return-value]
        path = getattr(obj, self.attr)
        if path is not None:
            return path
        value = os.environ.get(self.env)
        return Path(value) if value else None

    def __set__(self, obj: object, value: str | os.PathLike | None) -> None:
        setattr(obj, self.attr, None if value is None else Path(value))


class _Settings:
    """morphst settings, available as ``mst.settings``.

    Attributes
    ----------
    device
        ``"auto"`` (cuda, then mps, then cpu) or a torch device string.
    autocast
        ``"auto"`` uses bf16 autocast where the device supports it, ``"float32"`` forces fp32.
    n_jobs
        Worker threads for patch reading (``None``: all cores).
    progress_bar
        Show tqdm progress bars on long work.
    verbosity
        ``0``: errors only, ``1``: warnings, ``2``: progress and "finished" lines (default), ``3``: debug. Sets the
        level of the ``morphst`` logger; warnings a user must act on are :func:`warnings.warn` ``UserWarning``s and
        follow Python's warning filters instead.
    data_dir
        Folder with the sample datasets (default: ``$MORPHST_DATA_DIR``).
    weights_dir
        Folder with local model weight files (default: ``$MORPHST_WEIGHTS_DIR``).
    checkpoint_block_size
        Patches per block of an ``embed_patches(checkpoint=...)`` store (default 2048, rounded down to whole
        batches, at least one): the work a crash can lose, and one zarr chunk of the store. A store is resumed only
        with the block size it was written with.
    """

    data_dir = _EnvDir("MORPHST_DATA_DIR")
    weights_dir = _EnvDir("MORPHST_WEIGHTS_DIR")

    def __init__(self) -> None:
        self.device: str = "auto"
        self.autocast: str = "auto"
        self.n_jobs: int | None = None
        self.progress_bar: bool = True
        self._verbosity: int = 2
        self._data_dir: Path | None = None
        self._weights_dir: Path | None = None
        self._checkpoint_block_size: int = 2048

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        from ._logging import VERBOSITY_LEVELS, logger

        if isinstance(value, bool) or value not in VERBOSITY_LEVELS:
            msg = f"`verbosity` must be 0 (errors), 1 (warnings), 2 (info) or 3 (debug), got {value!r}."
            raise ValueError(msg)
        self._verbosity = int(value)
        logger.setLevel(VERBOSITY_LEVELS[self._verbosity])

    @property
    def checkpoint_block_size(self) -> int:
        return self._checkpoint_block_size

    @checkpoint_block_size.setter
    def checkpoint_block_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            msg = f"`checkpoint_block_size` must be a positive integer (patches per block), got {value!r}."
            raise ValueError(msg)
        self._checkpoint_block_size = int(value)

    @property
    def cache_dir(self) -> Path:
        """Where downloads are cached (``$MORPHST_CACHE_DIR`` or the OS cache folder)."""
        env = os.environ.get("MORPHST_CACHE_DIR")
        if env:
            return Path(env)
        import pooch

        return Path(pooch.os_cache("morphst"))

    def resolve_device(self, device: str | None = None):
        """Return a :class:`torch.device`: ``device`` if given, else the setting; ``"auto"``: cuda, mps, cpu."""
        import torch

        dev = device if device is not None else self.device
        if dev in (None, "auto"):
            if torch.cuda.is_available():
                return torch.device("cuda")
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        return torch.device(dev)

    def resolve_autocast(self, device=None, dtype: str = "auto"):
        """The autocast dtype of ``embed_patches(dtype=dtype)`` on ``device``: ``torch.bfloat16`` or ``None`` (fp32).

        ``dtype="float32"`` gives ``None`` and ``"bfloat16"`` bf16. With ``"auto"``: ``None`` when the setting
        ``autocast`` is ``"float32"`` or on a device without bf16 support (CPUs without AVX512-BF16/AMX, GPUs before
        Ampere, mps), else bf16. ``device``: a torch device or string; ``None`` resolves the ``device`` setting.
        """
        import torch

        if dtype == "float32":
            return None
        if dtype == "bfloat16":
            return torch.bfloat16
        if self.autocast == "float32":
            return None
        dev = device if isinstance(device, torch.device) else self.resolve_device(device)
        if dev.type == "cpu":
            try:
                ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            except (AttributeError, RuntimeError):  # pragma: no cover - old torch
                ok = False
            return torch.bfloat16 if ok else None
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return None

    @property
    def n_workers(self) -> int:
        """Number of worker threads to use (``n_jobs`` or the CPU count)."""
        return self.n_jobs if self.n_jobs is not None else max(1, os.cpu_count() or 1)

    def __repr__(self) -> str:
        return (
            f"morphst settings: device={self.device!r}, autocast={self.autocast!r}, n_jobs={self.n_jobs}, "
            f"progress_bar={self.progress_bar}, verbosity={self.verbosity}, data_dir={self.data_dir}, weights_dir={self.weights_dir}"
        )


settings = _Settings()
