"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

import os
from contextlib import contextmanager
from pathlib import Path

from unet3d.errors import UserError


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is flushed and renamed onto ``path``.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.csv``) so writers that
    choose a format by extension still work. On error the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
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


def check_new_output(path, inputs, flag, suffix=None):
    """Raise a UserError naming ``flag`` when the output ``path`` is one of ``inputs`` (through any link)
    or lacks ``suffix``: no command writes over a file it reads."""
    path = Path(path)
    if (suffix and path.suffix != suffix) or path.resolve() in {Path(p).resolve() for p in inputs}:
        expected = f"a new {suffix} file" if suffix else "a new file"
        raise UserError(f"{flag} {path}: expected {expected}, not one of the command's inputs")


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
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_csv(frame, path):
    """Write a pandas DataFrame to ``path`` as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
