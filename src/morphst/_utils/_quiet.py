"""Silence, around morphst's own calls only, warnings that third-party libraries raise about themselves."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: (category, message regex, where it comes from): warnings about the libraries' own code, not the user's data.
THIRD_PARTY_NOISE = (
    # docrep, at `import squidpy`: squidpy's docstrings name parameters docrep does not know
    (SyntaxWarning, r".* is not a valid key!", "docrep at squidpy import"),
    # scikit-image >= 0.26, inside squidpy.experimental.im.detect_tissue (remove_small_holes)
    (FutureWarning, r"Parameter `area_threshold` is deprecated", "scikit-image via squidpy detect_tissue"),
    # spatialdata, inside spatialdata_io.visium: the reader's own table gets a categorical region column
    (UserWarning, r"Converting `region_key: .*` to categorical dtype", "spatialdata via spatialdata_io.visium"),
)


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Inside the block, ignore the warnings of :data:`THIRD_PARTY_NOISE` (by category and message); every other
    warning, and everything outside the block, is left as it was."""
    with warnings.catch_warnings():
        for category, message, _ in THIRD_PARTY_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def import_squidpy():
    """``import squidpy`` without docrep's import-time ``SyntaxWarning`` (see :data:`THIRD_PARTY_NOISE`)."""
    with quiet_third_party():
        import squidpy

    return squidpy
