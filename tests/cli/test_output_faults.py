"""Fault injection with real files (output paths checked before the model loads; OSErrors as one-line errors): damaged inputs never give wrong results or tracebacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faults import (
    FAULT_MODEL,
    _assert_one_line_error,
    _encode_args,
)

# ================================================================================================
# output paths: checked before the model is loaded; OSErrors are one-line errors
# ================================================================================================


def _unloadable(monkeypatch):
    """Loading a model fails the test: the output check must come first."""
    import prompteol.cli.common as common

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(common, "build_encoder", no_load)
    monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", no_load)
    monkeypatch.setattr("prompteol.cli.eval_cmd.build_encoder", no_load)


def _read_only_dir(tmp_path: Path) -> Path:
    import os

    if os.geteuid() == 0:  # root writes through permissions: use a place no one can create files in
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("case", ["parent is a file", "is a directory", "read-only folder"])
def test_unwritable_encode_output_fails_before_loading(tmp_path, fault_cli, monkeypatch, case):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir.npy").mkdir()
    out = {"parent is a file": tmp_path / "a-file" / "sub" / "out.npy", "is a directory": tmp_path / "a-dir.npy",
           "read-only folder": _read_only_dir(tmp_path) / "out.npy"}[case]  # fmt: skip
    _unloadable(monkeypatch)
    code, err = fault_cli(*_encode_args(src, out))
    words = {"parent is a file": "cannot create the folder", "is a directory": "is a directory",
             "read-only folder": "cannot write in"}[case]  # fmt: skip
    _assert_one_line_error(code, err, "-o", words)
    assert not (out.is_file())


def test_missing_output_parents_are_created(tmp_path, fault_cli):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    out = tmp_path / "new" / "deeper" / "out.npy"
    code, err = fault_cli(*_encode_args(src, out))
    assert code == 0, err
    assert np.load(out).shape[0] == 2
    assert [p.name for p in out.parent.iterdir()] == ["out.npy"]  # the probe file is gone


def test_unwritable_eval_output_fails_before_loading_and_before_the_data(tmp_path, fault_cli, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    _unloadable(monkeypatch)
    code, err = fault_cli("eval", "--model", FAULT_MODEL, "--tasks", "STS12", "--data-dir", str(tmp_path / "none"),
                          "-o", str(tmp_path / "a-file" / "results.json"))  # fmt: skip
    _assert_one_line_error(code, err, "-o", "cannot create the folder")


def test_oserror_while_writing_is_one_line_and_leaves_nothing(tmp_path, fault_cli, monkeypatch):
    import errno

    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    out = tmp_path / "out.npy"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    code, err = fault_cli(*_encode_args(src, out))
    _assert_one_line_error(code, err, "No space left on device")
    assert list(tmp_path.iterdir()) == [src]  # neither the output nor its temporary file


def test_a_real_bug_keeps_its_traceback(tmp_path, fault_cli, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text("one\n")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(np, "save", bug)
    with pytest.raises(ZeroDivisionError):
        fault_cli(*_encode_args(src, tmp_path / "out.npy"))
