"""Writing exported files so that a failure never leaves a half-written artifact."""

from __future__ import annotations

import contextlib
import fcntl
import os
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
    """Writes `data` to a temporary file beside `path`, then renames it into place.

    The temporary file has one fixed name per target (`.NAME.partial`), so a run killed
    mid-write leaves at most one behind, which the next write to that path reuses; it is
    locked while written, so two processes writing the same path at once cannot mix their
    bytes (the second one is refused).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    temporary = directory / f".{path.name}.partial"
    try:
        # 0666 minus the umask, as a plain open() gives: a service running as another user
        # can read the exported model.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as error:
        raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from error
    locked = renamed = False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise ValueError(
                f"Another process is writing {str(path)!r} right now; wait for it to finish or "
                "write to another path.") from None
        if os.fstat(descriptor).st_ino != _inode(temporary):
            # the other writer renamed this file into place between our open and our lock
            raise ValueError(f"Another process just wrote {str(path)!r}; run again to replace it.")
        os.ftruncate(descriptor, 0)
        with os.fdopen(os.dup(descriptor), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        renamed = True
    except OSError as error:
        raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from error
    finally:
        if locked and not renamed and _inode(temporary) == os.fstat(descriptor).st_ino:
            temporary.unlink(missing_ok=True)
        os.close(descriptor)  # releases the lock
    return path


def _inode(path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def directory_lock(directory):
    """Holds an exclusive lock on an output directory for a multi-file export, so two runs
    writing into one directory cannot both report success for files the other overwrote."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"Another export is writing into {str(directory)!r} right now; wait for it to "
                "finish or choose another output directory.") from None
        yield
    finally:
        os.close(descriptor)
