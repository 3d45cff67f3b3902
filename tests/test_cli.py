"""``morphst`` command line: user errors become one ``morphst: error:`` line and exit code 2, bugs keep tracebacks."""

from __future__ import annotations

import pytest

from morphst.__main__ import main


def test_unknown_section_is_a_user_error(capsys):
    assert main(["demo", "--sections", "C3,C9", "--data-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: ")
    assert "C9" in err
    assert "C2" in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_single_section_is_a_user_error(capsys, tmp_path):
    assert main(["demo", "--sections", "C3", "--data-dir", "/nonexistent", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: ")
    assert "two sections" in err


def test_missing_data_dir_is_a_user_error(capsys, tmp_path):
    assert main(["demo", "--data-dir", "/nonexistent", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: Could not find the 'her2st_patientC' dataset files")
    assert "/nonexistent" in err
    assert "MORPHST_DATA_DIR" in err


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    import morphst._demo

    def library_bug(**kwargs):
        import numpy as np

        np.zeros(2).reshape(3)  # ValueError raised inside numpy, not a morphst user error

    monkeypatch.setattr(morphst._demo, "run_demo", library_bug)
    with pytest.raises(ValueError, match="reshape"):
        main(["demo"])
    monkeypatch.setattr(morphst._demo, "run_demo", lambda **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        main(["demo"])


def test_demo_gene_table_ranks_genes_predicted_in_every_fold_first():
    import anndata as ad
    import numpy as np
    import pandas as pd

    from morphst._demo import gene_table

    a = ad.AnnData(np.zeros((2, 4), np.float32))
    a.var_names = ["ONCE", "ALL_LOW", "ALL_HIGH", "NEVER"]
    a.var["predicted_mask"] = [True, True, True, False]
    a.var["predicted_pcc"] = [0.9, 0.2, 0.5, np.nan]
    for m in ("mae", "mse", "rmse"):
        a.var[f"predicted_{m}"] = 1.0
    a.var["predicted_n_folds"] = [1, 3, 3, 0]
    a.uns["predicted"] = {"per_fold": pd.DataFrame({"fold": ["A", "B", "C"]})}
    t = gene_table(a)
    # the gene seen in one fold (r 0.9) ranks after every gene predicted in all three folds; unpredicted genes drop
    assert list(t.index) == ["ALL_HIGH", "ALL_LOW", "ONCE"]
    assert t["n_folds"].tolist() == [3, 3, 1]
    assert t["in_all_folds"].tolist() == [True, True, False]
