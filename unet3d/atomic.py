"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

import errno
import os
from contextlib import contextmanager
from pathlib import Path

# A full disk, a read-only file system, an exceeded quota: the user's to fix, then rerun.
DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
               errno.EDQUOT: "the disk quota is exceeded"}


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is flushed and renamed onto ``path``.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.csv``) so writers that
    choose a format by extension still work. On error the temporary file is removed and
    ``path`` is left as it was. An OSError always names ``path`` (``disk_error`` words it for the user).
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.filename is None:  # a full disk reports no file name; name the one being written
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def disk_error(error):
    """The one line for a full disk, a read-only file system or an exceeded quota (``error``, an OSError
    naming its file), saying that nothing was replaced; None for other errors."""
    if error.errno not in DISK_ERRORS:
        return None
    return (f"{error.filename}: {error.strerror or DISK_ERRORS[error.errno]} (nothing was replaced: make room or "
            "make the folder writable, then rerun)")


def remove_stale_temporaries(folder):
    """Delete ``.tmp-<pid>-*`` files in ``folder`` left by writers that were killed (their pid is gone).

    They are harmless (nothing reads or globs them) but can be as large as a checkpoint.
    """
    for tmp in Path(folder).glob(".tmp-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and not process_running(int(pid)):
            tmp.unlink(missing_ok=True)


def process_running(pid):
    """Whether a process of this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text(path, text):
    """Write ``text`` to ``path`` atomically, as UTF-8 (what JSON and the configs are read as)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_csv(frame, path):
    """Write a pandas DataFrame to ``path`` as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
