"""House habits of issue 12: light imports, logging and warnings, stored parameters."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest

import morphst as mst


def test_anndata_only_pipeline_does_not_import_spatialdata():
    code = """
import sys
import anndata as ad, numpy as np, scanpy as sc
import morphst as mst
rng = np.random.default_rng(0)
a = ad.AnnData(rng.poisson(3, (200, 60)).astype(np.float32))
a.obs["section"] = np.repeat(["s1", "s2"], 100)
a.obsm["spatial"] = rng.random((200, 2)) * 1000
a.obsm["X_efficientnet_lite0"] = rng.random((200, 16)).astype(np.float32)
mst.settings.progress_bar = False
mst.pp.normalize(a)
mst.pp.select_genes(a, n_top_genes=10)
mst.tl.predict_expression(a)
sc.pp.pca(a, n_comps=10)
mst.tl.fuse(a)
mst.tl.domains(a, method="kmeans", n_domains=3)
print(sorted(m for m in ("spatialdata", "torch", "timm") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_logger_propagates_and_verbosity_sets_its_level(caplog):
    caplog.set_level(logging.DEBUG)
    before = mst.settings.verbosity
    try:
        mst.settings.verbosity = 1
        assert logging.getLogger("morphst").level == logging.WARNING
        from morphst import _logging as logg

        logg.info("hidden at verbosity 1")
        mst.settings.verbosity = 2
        logg.info("shown at verbosity 2")
        with pytest.raises(ValueError, match="verbosity"):
            mst.settings.verbosity = 5
        with pytest.raises(ValueError, match="verbosity"):
            mst.settings.verbosity = True
    finally:
        mst.settings.verbosity = before
    msgs = [r.getMessage() for r in caplog.records if r.name == "morphst"]
    assert msgs == ["shown at verbosity 2"]  # caplog (on the root logger) sees morphst's records


def test_user_warnings_point_at_the_callers_line():
    from morphst import _logging as logg

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        logg.warning("check this")
    assert [(str(w.message), w.category, w.filename) for w in rec] == [("check this", UserWarning, __file__)]


def test_none_parameters_are_left_out_of_uns():
    from morphst._utils import records_params

    p = records_params(a=None, b=(1, None), c={"x": None, "y": 2}, d="None", e=np.int64(3))
    assert set(p) == {"b", "c", "d", "e"}
    assert p["b"][0] == 1
    assert np.isnan(p["b"][1])
    assert p["c"] == {"y": 2}
    assert p["e"] == 3
    assert type(p["e"]) is int
    assert p.get("a") is None
    assert p["d"] == "None"  # a string is stored as given, never read back as None


def test_check_positive_um_is_the_one_size_check():
    from morphst._utils._units import check_positive_um

    assert check_positive_um("patch_size", 112) == 112.0
    assert check_positive_um("patch_size", None) is None
    for bad in (0, -1.0, float("nan"), float("inf"), "a", True):
        with pytest.raises(ValueError, match=r"`patch_size` must be a positive number \(µm\)"):
            check_positive_um("patch_size", bad)


def test_resolve_autocast_follows_the_setting(monkeypatch):
    import torch

    auto = mst.settings.resolve_autocast("cpu")
    try:
        bf16_cpu = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16_cpu = False
    assert auto is (torch.bfloat16 if bf16_cpu else None)
    monkeypatch.setattr(mst.settings, "autocast", "float32")
    assert mst.settings.resolve_autocast("cpu") is None
