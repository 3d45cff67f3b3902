"""The documentation builds with warnings as errors, and its API page lists every public function."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import morphst as mst

REPO = Path(__file__).resolve().parents[1]


def _public(module: types.ModuleType, prefix: str) -> set[str]:
    """Public functions and classes of ``module`` (its ``__all__``), and of its public submodules, as ``prefix.name``."""
    out = set()
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType):
            sub = obj
            for sname in getattr(sub, "__all__", []):
                sobj = getattr(sub, sname)
                if inspect.isfunction(sobj) or inspect.isclass(sobj):
                    out.add(f"{prefix}.{name}.{sname}")
        elif inspect.isfunction(obj) or inspect.isclass(obj):
            out.add(f"{prefix}.{name}")
    return out


def test_api_page_lists_every_public_function():
    text = (REPO / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^\s{3}((?:pp|tl|pl|datasets)\.[\w.]+)\s*$", text, flags=re.M))
    public = set()
    for name in ("pp", "tl", "pl", "datasets"):
        public |= _public(getattr(mst, name), name)
    missing = sorted(public - listed)
    assert not missing, f"add to docs/api.md: {missing}"
    stale = sorted(n for n in listed if n.count(".") == 1 and n not in public)
    assert not stale, f"not public any more, remove from docs/api.md: {stale}"


def test_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W`` on a copy of docs/ and tutorials/ (so stale generated stubs cannot hide or cause errors)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "docs", src / "docs", ignore=shutil.ignore_patterns("generated", "tutorials", "_build"))
    if (REPO / "tutorials").is_dir():
        shutil.copytree(REPO / "tutorials", src / "tutorials", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees")]
    proc = subprocess.run(
        [*cmd, str(src / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    api = (out / "api.html").read_text()
    for name in ("morphst.pl.predicted_vs_observed", "morphst.tl.predict_expression", "morphst.datasets.her2st"):
        assert name in api
    for nb in sorted((REPO / "tutorials").glob("*.ipynb")):
        assert (out / "tutorials" / f"{nb.stem}.html").is_file(), f"tutorial {nb.name} not rendered"


TUTORIALS = sorted(p.stem for p in (REPO / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorials_are_saved_executed(name):
    """The committed notebooks hold the outputs of one top-to-bottom run (CI re-executes them with nbmake)."""
    import nbformat

    nb = nbformat.read(REPO / "tutorials" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "re-run the notebook top to bottom and save it"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = [o for c in code for o in c.outputs if "data" in o and {"image/png", "image/jpeg"} & set(o.data)]
    assert len(figures) >= 2


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_outputs_are_current(name):
    """The saved outputs were produced by the current code: `tutorials/run.py` stamps the hash of src/morphst."""
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("tutorials_run", REPO / "tutorials" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    nb = nbformat.read(REPO / "tutorials" / f"{name}.ipynb", as_version=4)
    stamp = nb.metadata.get("morphst", {}).get("src_sha256")
    assert stamp == run.source_hash(), (
        f"{name}.ipynb was saved from other code than src/morphst now: run `python tutorials/run.py` and commit"
    )


def _code_snippets() -> list[tuple[str, str]]:
    """Python code of the README, the docs pages and the tutorials' code cells, as ``(where, code)``."""
    import json

    out = []
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for k, block in enumerate(re.findall(r"```python\n(.*?)```", md.read_text(), flags=re.S)):
            out.append((f"{md.name} block {k}", block))
    for nb in sorted((REPO / "tutorials").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                out.append((f"{nb.name} cell {k}", "\n".join(ln for ln in src.splitlines() if not ln.startswith("%"))))
    return out


def test_documented_calls_use_the_current_parameter_names():
    """Every ``mst.<module>.<function>(..., name=...)`` in the README, docs and tutorials names a real parameter."""
    import ast

    checked, bad = 0, []
    for where, code in _code_snippets():
        for node in ast.walk(ast.parse(code)):
            if not isinstance(node, ast.Call):
                continue
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if not (isinstance(f, ast.Name) and f.id == "mst" and parts):
                continue
            obj = mst
            for name in reversed(parts):
                obj = getattr(obj, name, None)
            if obj is None:
                bad.append(f"{where}: mst.{'.'.join(reversed(parts))} does not exist")
                continue
            if not callable(obj):
                continue
            params = inspect.signature(obj).parameters
            if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                continue
            checked += 1
            bad += [
                f"{where}: mst.{'.'.join(reversed(parts))}({kw.arg}=...)"
                for kw in node.keywords
                if kw.arg is not None and kw.arg not in params
            ]
    assert checked > 30
    assert bad == []


def test_readme_is_a_front_page():
    """The README stays a front page: at most 200 lines, measured tables on the benchmarks page, which the docs build
    includes; neither speaks of issue numbers."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "move detail to docs/ (measured tables: docs/benchmarks.md)"
    assert "docs/benchmarks.md" in readme
    index = (REPO / "docs" / "index.md").read_text()
    toctree = re.search(r"```\{toctree\}(.*?)```", index, flags=re.S).group(1)
    assert re.search(r"^benchmarks$", toctree, flags=re.M)
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert not re.search(r"\bissues? #?\d+", page.read_text(), flags=re.I), f"{page.name} names an issue"
