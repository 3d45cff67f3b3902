"""Sphinx configuration for morphst (API reference from numpydoc docstrings, tutorials rendered with myst-nb)."""

from __future__ import annotations

import shutil
from importlib.metadata import version as _pkg_version
from pathlib import Path

HERE = Path(__file__).parent
project = "morphst"
author = "morphst developers"
copyright = "2026, morphst developers"  # noqa: A001
release = _pkg_version("morphst")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
]
autosummary_generate = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
nb_execution_mode = "off"  # notebooks are executed in CI (pytest --nbmake); the docs render their saved outputs
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_title = "morphst"
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
nitpicky = False


def _copy_tutorials(app):
    """Render the notebooks of ../tutorials (the executed, committed ones) in the docs."""
    src, dst = HERE.parent / "tutorials", HERE / "tutorials"
    dst.mkdir(exist_ok=True)
    for nb in sorted(src.glob("*.ipynb")):
        shutil.copy2(nb, dst / nb.name)


def setup(app):
    app.connect("builder-inited", _copy_tutorials)
