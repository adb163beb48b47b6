"""Writing exported files so that a failure never leaves a half-written artifact."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def check_writable(path, *, suffix: str) -> Path:
    """Checks, before any slow conversion, that `path` can be written.

    Raises:
        ValueError: wrong suffix, a missing or unwritable directory, or a directory as path.
    """
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"Output path {str(path)!r} should end in {suffix!r}.")
    if path.is_dir():
        raise ValueError(f"Output path {str(path)!r} is a directory; give a file name.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(
            f"Cannot write {str(path)!r}: the directory {str(parent)!r} does not exist. "
            "Create it first."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {str(path)!r}: the directory {str(parent)!r} is not writable.")
    return path


@contextlib.contextmanager
def removed_on_failure():
    """Yields a list for the paths a multi-file export writes; if the block fails, those
    files are removed before the error propagates, so no partial set is left behind."""
    written = []
    try:
        yield written
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise


def write_atomic(path, data: bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=directory)
    except OSError as error:
        raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from error
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would (0666
        # minus the umask), so a service or another user can read the exported model.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(descriptor, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from error
        raise
    return path
