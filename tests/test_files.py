"""Writing exported files (`export/_files.py`): no partial file on a failed write, the
directory lock, the usual permissions (planted links and signals: tests/test_hostile.py)."""

from pathlib import Path

import pytest

from export import export_onnx
from keras_rnn import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch, failing):
    """A disk that fails mid-write (fsync) or at the rename: a ValueError, and neither the
    target nor the temporary file stays (root may write anywhere, so the failure is made)."""
    import errno
    import os

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    model = build_model(cell="gru", input_size=3, hidden_size=2, seq_len=4)
    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(ValueError, match="Cannot write .*No space left"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_write_leaves_one_reusable_temporary_file(tmp_path):
    from export._files import write_atomic

    stale = tmp_path / ".m.onnx.partial"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half a model")
    write_atomic(tmp_path / "m.onnx", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"whole"


def test_two_exports_into_one_directory_cannot_both_succeed(tmp_path):
    """(Two writers of one file no longer refuse each other: each writes its own exclusive
    temporary file and the last rename wins whole; see tests/test_hostile.py.)"""
    from export._files import directory_lock

    with directory_lock(tmp_path):
        with pytest.raises(ValueError, match="Another export is writing into"):
            with directory_lock(tmp_path):
                pass


def test_written_files_get_the_usual_permissions(tmp_path):
    """The result of an atomic write must be readable like a file written with open(): 0666
    minus the umask."""
    import os

    from export._files import write_atomic

    umask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "m.onnx", b"data")
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o644
