"""One run per work folder at a time: a lock file holding the owner's pid and host.

Why a file and not ``fcntl.flock``: an advisory lock vanishes with its process, so it never goes
stale, but the file systems runs share on a cluster keep it badly. NFS emulates it with byte-range
locks through its lock manager (lost when a client's lease lapses); Lustre and BeeGFS may be mounted
so that it stays on one node (BeeGFS's default) or is refused. And nobody can see who holds it. So
the lock is a small JSON file a person can read (pid, host, since when), made so that it holds on
such file systems too:

- It is created whole: the content is written to a temporary file, which is then hard-linked to
  the lock's name. ``link(2)`` fails when the name exists, atomically on local file systems and on
  NFS (the way ``open(2)``'s manual recommends to lock over NFS; a lost reply is told apart from a
  refusal by the temporary file's link count). Where hard links are not supported it falls back to
  an exclusive ``open``, whose file may briefly be empty: a reader that finds an empty or
  half-written lock waits for its writer (``BEING_WRITTEN_SECONDS``) instead of refusing.
- A lock left by a process that is gone (on this host) is taken over; of the runs that find it
  at once, one wins. Each first creates a claim file named after the content it found (the same
  way, by link, so only one exists); the holder of the claim re-reads the lock and, if it is
  unchanged, renames its own file over it. A run that claims later finds the content changed and
  gives way. A claim whose maker died in between is taken over the same way.
- It is re-entrant within a process: a block inside a block holding the same folder (a fold
  inside the whole run) counts up, and only the outermost releases the file.

A lock from another host cannot be checked: it is refused, and the message says which file to
delete if that run is over.
"""

import errno
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from unet3d.atomic import process_running
from unet3d.errors import UserError

LOCK = ".unet3d.lock"
# How long a lock file found empty or half-written is taken to be still being written by its creator (and
# a dead run's lock to be still being taken over by another).
BEING_WRITTEN_SECONDS = 2.0
RETRY_SECONDS = 0.01
# Claims of claims: a claim's maker died while taking over a dead run's lock (rare; deeper is absurd).
MAX_CLAIM_DEPTH = 3
# Where hard links are refused (some FUSE and SMB mounts): fall back to an exclusive open.
NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}

_held = {}  # (pid, lock path) -> [number of blocks of this process holding it, the content written]
_held_guard = threading.Lock()


@contextmanager
def model_folder_lock(work_dir):
    """Hold ``<work_dir>/.unet3d.lock`` while the block runs; refuse a folder another live run holds.

    Re-entrant in one process (threads included); a dead run's lock (same host) is taken over.
    """
    path = Path(work_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (os.getpid(), str(path.resolve()))
    with _held_guard:
        if key in _held:
            _held[key][0] += 1
        else:
            _held[key] = [1, _acquire(path, work_dir)]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][0] -= 1
            if not _held[key][0]:
                _release(path, _held.pop(key)[1])


def _acquire(path, work_dir):
    """Create the lock file ``path`` for this process, taking over a dead run's; returns its content."""
    mine = _content()
    deadline = time.monotonic() + BEING_WRITTEN_SECONDS
    while not _create(path, mine):
        found = _read(path)
        if found is None:
            continue  # released meanwhile: try again
        owner = _owner(found)
        if owner is None:
            if time.monotonic() < deadline:
                time.sleep(RETRY_SECONDS)  # its creator is writing it
                continue
            raise UserError(f"{path}: a lock file that names no run (empty or unreadable for "
                            f"{BEING_WRITTEN_SECONDS:g} s); delete it if no run uses {work_dir}")
        if not _gone(owner):
            here = owner["host"] == socket.gethostname()
            where = "this machine" if here else f"host {owner['host']}"
            raise UserError(f"{work_dir}: another run (pid {owner['pid']} on {where}) uses this folder; wait for "
                            f"it, use another --output_dir, or delete {path} if that run is over")
        if _take_over(path, found, mine):
            break
        if time.monotonic() > deadline:  # a claim no run finishes (its file unreadable)
            raise UserError(f"{path}: the lock of a run that is gone cannot be taken over (a claim "
                            f"{path.name}.<hash> is in the way); delete both if no run uses {work_dir}")
        time.sleep(RETRY_SECONDS)  # another run is taking it over: see who got it
    return mine


def _release(path, mine):
    """Delete the lock file ``path`` if it is still this holder's (content ``mine``)."""
    if _read(path) == mine:
        path.unlink(missing_ok=True)


def _content():
    """A new lock file's content: this process, its host, since when, and a token that makes it unique."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": uuid.uuid4().hex}
    return (json.dumps(owner) + "\n").encode()


def _read(path):
    """The bytes of ``path``; None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _owner(content):
    """``{"pid": ..., "host": ...}`` of a lock file's content; None for an empty or half-written one."""
    try:
        owner = json.loads(content)
    except ValueError:
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or not isinstance(owner.get("host"), str):
        return None
    return owner


def _gone(owner):
    """Whether the run of ``owner`` is known to have ended: it ran on this host and its pid is gone."""
    return owner["host"] == socket.gethostname() and not process_running(owner["pid"])


def _temporary(path, content):
    """A complete file holding ``content`` beside ``path``, under a name no other writer uses."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "xb") as stream:
        stream.write(content)
    return tmp


def _create(path, content):
    """Create ``path`` holding ``content``, unless it exists; returns whether it was created."""
    tmp = _temporary(path, content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return os.stat(tmp).st_nlink == 2  # NFS: the link was made but its reply lost
    except OSError as error:
        if error.errno not in NO_LINKS:
            raise
        return _create_exclusively(path, content)
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusively(path, content):
    """``_create`` without hard links: an exclusive open, then the write (readers wait for it)."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(content)
    return True


def _take_over(path, stale, mine, depth=0):
    """Replace the lock file ``path`` of a run that is gone (content ``stale``) by ``mine``; whether it was
    replaced. Only the holder of the claim named after ``stale`` may replace it."""
    claim = path.with_name(f"{path.name}.{hashlib.sha256(stale).hexdigest()[:16]}")
    claimed = _content()
    if not _create(claim, claimed):
        found = _read(claim)
        owner = _owner(found) if found is not None else None
        if owner is None or not _gone(owner) or depth >= MAX_CLAIM_DEPTH:
            return False
        if not _take_over(claim, found, claimed, depth + 1):
            return False
    try:
        if _read(path) != stale:
            return False
        os.replace(_temporary(path, mine), path)
        return True
    finally:
        _release(claim, claimed)
