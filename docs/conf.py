"""Sphinx configuration for morphst (API reference from numpydoc docstrings, tutorials rendered with myst-nb)."""

from __future__ import annotations

import shutil
from importlib.metadata import version as _pkg_version
from pathlib import Path

HERE = Path(__file__).parent
project = "morphst"
author = "morphst developers"
copyright = "2026, morphst developers"
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


def _patch_autosummary_summary() -> None:
    """Work around a Sphinx 9 bug: autosummary cuts the one-line summary at the first ". " even inside markup.

    ``sphinx.ext.autosummary.extract_summary`` means to extend the first sentence while cutting it breaks inline
    markup, but it re-parses the whole stanza instead of the candidate, so a summary such as "... Wählby,
    *Nat. Commun.* 2025" is cut inside the emphasis and the table warns. Here the candidate itself is checked (parsed
    quietly); nothing else changes.
    """
    import copy

    from docutils import nodes
    from sphinx.ext import autosummary as asm

    original = asm.extract_summary

    def extract_summary(doc, settings):
        summary = original(doc, settings)
        stanza = []
        for line in doc:
            if not line or line.isspace():
                if stanza:
                    break
                continue
            stanza.append(line)
        sentences = asm.periods_re.split(" ".join(stanza))
        if len(sentences) < 2:
            return summary
        quiet = copy.copy(settings)
        quiet.report_level = 5  # probe parses write nothing
        for i in range(len(sentences)):
            candidate = ". ".join(sentences[: i + 1]).rstrip(".") + "."
            if candidate.endswith(asm.WELL_KNOWN_ABBREVIATIONS):
                continue
            if not any(asm._parse_summary([candidate], quiet).findall(nodes.system_message)):
                return asm.literal_re.sub(".", candidate)
        return summary

    asm.extract_summary = extract_summary


def setup(app):  # noqa: D103 - sphinx entry point
    _patch_autosummary_summary()
    app.connect("builder-inited", _copy_tutorials)
