"""One run per work folder at a time: a lock file holding the owner's pid and host."""

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from unet3d.atomic import process_running
from unet3d.errors import UserError

LOCK = ".unet3d.lock"


@contextmanager
def model_folder_lock(work_dir):
    """Hold ``<work_dir>/.unet3d.lock`` while the block runs; refuse a folder another live run holds.

    The file is created exclusively, so of two runs started together one gets it. A lock
    left by a process that is gone (killed, or the machine restarted) is taken over. A lock
    from another host cannot be checked: it is refused, and the message says which file to
    delete if that run is over.
    """
    path = Path(work_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    while not _create(path, me):
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # released meanwhile: try again
        except (OSError, ValueError):
            owner = {}
        here = owner.get("host") == me["host"]
        if owner == me:
            break  # this process holds it already (a fold inside the whole run)
        if here and not process_running(int(owner.get("pid", -1))):
            path.unlink(missing_ok=True)  # a run that is gone
            continue
        where = "this machine" if here else f"host {owner.get('host')}"
        raise UserError(f"{work_dir}: another run (pid {owner.get('pid')} on {where}) uses this folder; wait for it, "
                        f"use another --output_dir, or delete {path} if that run is over")
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text(encoding="utf-8")) == me:
                path.unlink()
        except (OSError, ValueError):
            pass


def _create(path, owner):
    """Create ``path`` holding ``owner``, unless it exists; returns whether it was created."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as stream:
        json.dump(owner, stream)
    return True
