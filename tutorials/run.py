"""Execute the tutorials top to bottom, save their outputs, and stamp them with the hash of the code that ran.

Usage (from the repository root, with the shared data beside it or ``MORPHST_DATA_DIR`` set)::

    python tutorials/run.py            # all notebooks
    python tutorials/run.py 01_translation.ipynb

``tests/test_docs.py`` checks the stamp against the current ``src/morphst``: a notebook whose saved outputs come
from older code fails there, so the rendered docs never show stale results.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "morphst"


def source_hash(src: Path = SRC) -> str:
    """sha256 over the paths and contents of every ``.py`` file of the package, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(src.rglob("*.py")):
        h.update(f.relative_to(src).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main(names: list[str]) -> None:
    """Execute, save and stamp the named notebooks (all of them when ``names`` is empty)."""
    import nbformat
    from nbclient import NotebookClient

    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, timeout=900, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(HERE)}}
        ).execute()
        nb.metadata["morphst"] = {"src_sha256": source_hash()}
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
