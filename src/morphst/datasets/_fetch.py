"""Find dataset files: ``data_dir`` argument, else ``$MORPHST_DATA_DIR``, else a pooch download with sha256."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .._settings import settings


def candidate_roots(folder: str, data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """Where to look for ``folder``, in order, as ``(source, root)`` pairs: ``data_dir``, then the data-dir setting."""
    out = []
    if data_dir is not None:
        out.append(("data_dir", Path(data_dir)))
    elif settings.data_dir is not None:
        out.append(("MORPHST_DATA_DIR", settings.data_dir))
    return [(src, p / folder if (p / folder).is_dir() else p) for src, p in out]


def fetch_files(
    folder: str,
    files: Mapping[str, str],
    *,
    data_dir: str | os.PathLike | None,
    base_url: str | None,
    required: list[str],
) -> Path:
    """Return a local folder holding ``required`` files of a dataset.

    Parameters
    ----------
    folder
        Name of the dataset folder (e.g. ``"her2st_patientC"``); ``data_dir`` may be that folder or its parent.
    files
        Relative path -> sha256 of every file the dataset can use.
    data_dir
        Explicit folder; when given, nothing is downloaded.
    base_url
        URL prefix of the original repository for the pooch download, or ``None`` when there is none.
    required
        Relative paths needed for this call.

    Raises
    ------
    FileNotFoundError
        When the files are neither in ``data_dir`` / ``$MORPHST_DATA_DIR`` nor downloadable; the message names
        all three options.
    """
    tried = []
    for source, root in candidate_roots(folder, data_dir):
        missing = [f for f in required if not (root / f).is_file()]
        if not missing:
            return root
        tried.append(f"{source}={str(root)!r} (missing e.g. {missing[0]!r})")
        if source == "data_dir":
            break
    if data_dir is None and base_url is not None:
        import pooch

        cache = settings.cache_dir / folder
        registry = {f: f"sha256:{files[f]}" for f in files}
        fetcher = pooch.create(path=cache, base_url=base_url, registry=registry, retry_if_failed=1)
        try:
            for f in required:
                fetcher.fetch(f, progressbar=settings.progress_bar)
            return Path(cache)
        except Exception as e:  # report every option in one message
            tried.append(f"download from {base_url} into {str(cache)!r} failed ({type(e).__name__}: {e})")
    msg = (
        f"Could not find the {folder!r} dataset files. Either pass `data_dir=` (a folder that holds {folder!r} or "
        f"its files), or set the `MORPHST_DATA_DIR` environment variable (or `mst.settings.data_dir`) to such a "
        f"folder, or let morphst download them (needs network access; cached in `$MORPHST_CACHE_DIR`). Tried: "
        + ("; ".join(tried) if tried else "nothing (no data_dir, MORPHST_DATA_DIR unset, no download source)")
        + "."
    )
    raise FileNotFoundError(msg)
