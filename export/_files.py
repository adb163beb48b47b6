"""Writing exported files so that a failure never leaves a half-written artifact, a planted
link is never written through, and a failed run never costs a file an earlier run shipped."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # a temporary file: .NAME.<random>.partial beside NAME
STAGING_PREFIX = ".keras-rnn-staging-"  # a multi-file export's private folder inside --out


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
    parent = _directory_of(path)
    if not parent.is_dir():
        raise ValueError(
            f"Cannot write {str(path)!r}: the directory {str(parent)!r} does not exist. "
            "Create it first."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {str(path)!r}: the directory {str(parent)!r} is not writable.")
    return path


def _directory_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def write_atomic(path, data: bytes) -> Path:
    """Writes `data` to a new temporary file beside `path`, then renames it into place.

    The temporary file is created exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`, through
    `tempfile.mkstemp`) under an unpredictable name, so nothing planted beside the target (a
    symlink, a hard link, a FIFO) is ever opened. The rename replaces the directory entry at
    `path` itself: a symlink, hard link or FIFO standing there is replaced, and what it pointed
    to is never written. A writer holds a lock on its temporary file while it writes; the
    unlocked leftovers of a killed run (`.NAME.*.partial`) are removed by the next write to that
    path, links among them unlinked without being followed.
    """
    path = Path(path)
    directory = _directory_of(path)
    if path.is_dir() and not path.is_symlink():
        raise ValueError(f"Output path {str(path)!r} is a directory; give a file name.")
    _remove_leftovers(directory, path.name)
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=directory)
    except OSError as error:
        raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from error
    temporary = Path(temporary)
    renamed = False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # ours alone: marks it as in use, not left over
        # 0666 minus the umask, as a plain open() gives (mkstemp makes 0600): a service running
        # as another user can read the exported model.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(descriptor, 0o666 & ~umask)
        with os.fdopen(os.dup(descriptor), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        renamed = True
    except OSError as error:
        raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from error
    finally:
        if not renamed:
            temporary.unlink(missing_ok=True)
        os.close(descriptor)  # releases the lock
    return path


def _remove_leftovers(directory: Path, name: str) -> None:
    """Removes what a killed write to `directory/name` left: temporary files no process holds
    locked (and the fixed `.NAME.partial` name older versions used). Never follows a link and
    never opens anything but a regular file (a FIFO would block)."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return  # the write itself reports the directory's problem
    prefix = f".{name}."
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(PARTIAL_SUFFIX)):
            continue
        leftover = directory / entry
        try:
            if not stat.S_ISREG(os.lstat(leftover).st_mode):
                leftover.unlink()  # a link, FIFO or device planted there: removed, not opened
                continue
            descriptor = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            leftover.unlink(missing_ok=True)
        except OSError:
            pass  # another writer holds it: a live temporary file, not a leftover
        finally:
            os.close(descriptor)


class Staging:
    """A private folder inside an output directory where a multi-file export writes and
    verifies its files before any of them reaches its final name (`publish`)."""

    def __init__(self, directory: Path):
        self.directory = directory
        try:  # created exclusively with mode 0700 under an unpredictable name
            self.folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory))
        except OSError as error:
            raise ValueError(
                f"Cannot write into {str(directory)!r}: {error.strerror or error}.") from error

    def path(self, name: str) -> Path:
        """Where to write the file that is to become `directory/name`."""
        return self.folder / name

    def publish(self, staged: list[Path]) -> list[Path]:
        """Renames each staged file to its final name in the directory, all or none: if one
        rename fails, the files it already replaced are put back. A rename never writes
        through a link standing at the final name; it replaces the link."""
        finals = [self.directory / Path(path).name for path in staged]
        for final in finals:
            if final.is_dir() and not final.is_symlink():
                raise ValueError(f"Cannot write {str(final)!r}: a directory stands there.")
        replaced = []  # (final, the previous file's backup or None)
        # backups in a folder of their own: no staged file name can collide with one
        previous = self.folder / "previous"
        try:
            previous.mkdir()
            for path, final in zip(staged, finals):
                backup = previous / final.name
                try:
                    os.link(final, backup, follow_symlinks=False)
                except FileNotFoundError:
                    backup = None
                os.replace(path, final)
                replaced.append((final, backup))
        except BaseException as error:
            for final, backup in reversed(replaced):
                if backup is None:
                    final.unlink(missing_ok=True)
                else:
                    os.replace(backup, final)
            if isinstance(error, OSError):
                raise ValueError(
                    f"Cannot write into {str(self.directory)!r}: {error.strerror or error}; "
                    "the directory holds what it held before this run.") from error
            raise
        return finals

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def staged_in(directory):
    """Yields a `Staging` inside `directory`, removed with whatever it still holds when the
    block ends (after `publish`, or on any failure or interruption)."""
    staging = Staging(Path(directory))
    try:
        yield staging
    finally:
        staging.remove()


@contextlib.contextmanager
def directory_lock(directory):
    """Holds an exclusive lock on an output directory for a multi-file export, so two runs
    writing into one directory cannot both report success for files the other overwrote.
    Holding it, removes the staging folders of runs that were killed (no live run has one),
    on the way in and on the way out."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    locked = False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"Another export is writing into {str(directory)!r} right now; wait for it to "
                "finish or choose another output directory.") from None
        locked = True
        _remove_staging_folders(Path(directory))
        yield
    finally:
        if locked:
            # Again on the way out, however it is left: a signal can land between a staging
            # folder's creation and the block that removes it; holding the lock, every
            # staging folder here is this run's or a dead run's.
            _remove_staging_folders(Path(directory))
        os.close(descriptor)


def _remove_staging_folders(directory: Path) -> None:
    for entry in os.listdir(directory):
        if not entry.startswith(STAGING_PREFIX):
            continue
        leftover = directory / entry
        if leftover.is_symlink() or not leftover.is_dir():
            leftover.unlink(missing_ok=True)  # a planted link is removed, never followed
        else:
            shutil.rmtree(leftover, ignore_errors=True)  # does not follow links inside
