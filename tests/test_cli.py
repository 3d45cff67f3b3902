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
    assert main(["demo", "--data-dir", "/nonexistent", "--out", str(tmp_path / "o" / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: Could not find the 'her2st_patientC' dataset files")
    assert "/nonexistent" in err
    assert "MORPHST_DATA_DIR" in err
    # the command line's option, not the Python keyword
    assert "pass `--data-dir`" in err
    assert "--data-dir='/nonexistent'" in err
    assert "data_dir=" not in err.replace("--data-dir=", "")
    assert "mst.settings" not in err
    # no empty output folder (nor its new parent) is left behind
    assert list(tmp_path.iterdir()) == []


def test_existing_out_folder_is_kept_on_error(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    assert main(["demo", "--data-dir", "/nonexistent", "--out", str(out)]) == 2
    assert out.is_dir()


@pytest.mark.parametrize("option", ["--library-id", "--sections"])
def test_library_id_option_and_its_alias(capsys, option, tmp_path):
    assert main(["demo", option, "C3,C9", "--data-dir", "/nonexistent", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: ")
    assert "C9" in err
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    import morphst

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"morphst {morphst.__version__}"


def test_out_that_cannot_be_created_is_a_user_error(capsys):
    # /proc refuses new folders (ENOENT from the kernel, whatever the user's rights)
    assert main(["demo", "--sections", "C2,C3", "--data-dir", "/nonexistent", "--out", "/proc/morphst_out/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: Cannot create the output folder '/proc/morphst_out/x'")
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_demo_rounds_once_where_shown(capsys):
    # four folds at 0.3484 and one at 0.3491: the mean is 0.34854 -> "0.349"; rounding each fold first would give
    # (4 x 0.348 + 0.349) / 5 = 0.3482 -> "0.348", a figure the log of predict_expression never shows
    import anndata as ad
    import numpy as np
    import pandas as pd

    from morphst._demo import _print_results, section_table

    pcc = [0.3484, 0.3484, 0.3484, 0.3484, 0.3491]
    folds = list("ABCDE")
    per_fold = pd.DataFrame(
        {
            "fold": folds,
            "n_test": 10,
            "n_genes": 2,
            "pcc": pcc,
            "n_excluded": 0,
            "mae": 0.1,
            "rmse": 0.2,
            "mse": 0.04,
            "mse_train_mean": 0.05,
            "alpha": 1.0,
        }
    )
    fm = pd.DataFrame({"fold": np.repeat(folds, 2), "pcc": np.repeat(pcc, 2)})
    a = ad.AnnData(np.zeros((2, 2), np.float32))
    a.uns["predicted"] = {"per_fold": per_fold, "fold_metrics": fm}
    sec = section_table(a)
    assert f"{sec['mean_pcc'].mean():.3f}" == f"{np.mean(pcc):.3f}" == "0.349"
    genes = pd.DataFrame({"pcc": [0.5], "rmse": [0.1], "n_folds": [5], "in_all_folds": [True]}, index=["G"])
    _print_results(sec, genes, pd.Series(pcc))
    out = capsys.readouterr().out
    assert "mean PCC over held-out sections (each the mean over that section's genes): 0.349" in out
    assert "(range 0.348–0.349)" in out


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


# ------------------------------------------------------------------------------------------------------------------
# the demo's writers: a killed or failed write never leaves a store that reads back as valid
# ------------------------------------------------------------------------------------------------------------------
def _small_results(value: float = 1.0):
    import anndata as ad
    import numpy as np
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    n = 6
    shapes = ShapesModel.parse(
        np.c_[np.arange(n), np.arange(n)].astype(float),
        geometry=0,
        radius=np.ones(n),
        index=np.arange(n),
        transformations={"global": Identity()},
    )
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * n), "instance_id": np.arange(n)}, index=list("abcdef"))
    table = TableModel.parse(
        ad.AnnData(np.full((n, 2), value, np.float32), obs=obs),
        region="spots",
        region_key="region",
        instance_key="instance_id",
    )
    return SpatialData(shapes={"spots": shapes}, tables={"table": table})


def test_write_results_round_trip(tmp_path):
    import warnings

    import numpy as np
    from spatialdata import read_zarr

    from morphst._demo import write_results

    path = tmp_path / "res.zarr"
    write_results(_small_results(1.0), path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        write_results(_small_results(2.0), path)  # replaces the old store
    # the libraries' notes about their own defaults (zarr v3 sharding, ome-zarr's Scaler) do not reach the user
    assert [str(w.message)[:60] for w in rec if "zarr" in str(w.message) or "Scaler" in str(w.message)] == []
    back = read_zarr(path)
    np.testing.assert_array_equal(back.tables["table"].X, np.full((6, 2), 2.0, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.zarr"]


def test_write_results_killed_midway_leaves_old_store_or_nothing(tmp_path, monkeypatch):
    import numpy as np
    from spatialdata import SpatialData, read_zarr

    from morphst._demo import write_results

    real_write = SpatialData.write

    def killed(self, file_path, *args, **kwargs):
        real_write(self, file_path, *args, **kwargs)  # the store is complete on disk at the temporary path ...
        raise KeyboardInterrupt  # ... but the run dies before it is moved into place

    path = tmp_path / "res.zarr"
    monkeypatch.setattr(SpatialData, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        write_results(_small_results(1.0), path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_results(_small_results(1.0), path)
    monkeypatch.setattr(SpatialData, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        write_results(_small_results(2.0), path)
    monkeypatch.undo()
    back = read_zarr(path)
    np.testing.assert_array_equal(back.tables["table"].X, np.full((6, 2), 1.0, np.float32))  # old store intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.zarr"]


def test_report_files_are_replaced_atomically(tmp_path):
    import pandas as pd

    from morphst._demo import atomic_path

    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1]}).to_csv(path)
    before = path.read_text()

    def interrupted():
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        interrupted()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_out_below_a_file_is_a_user_error(capsys, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["demo", "--sections", "C2,C3", "--data-dir", "/nonexistent", "--out", str(f / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("morphst: error: Cannot create the output folder")
    assert "Traceback" not in err
    assert err.count("\n") == 1
