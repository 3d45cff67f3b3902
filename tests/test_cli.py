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
