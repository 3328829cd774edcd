"""Preprocessed cases on disk, so epochs after the first decode and resample nothing.

Each case is a folder ``<case id>-<key>/`` holding ``image.npy``, ``label.npy`` and
``meta.json`` (the affine after preprocessing). The key is a hash of the input files'
identity (path, size, modification time) and the preprocessing settings, so folds and
reruns of one config share entries and a changed file or setting makes a new one.
Every file is written to a unique temporary name and renamed into place, so several
jobs filling one cache at once never show each other half a file; they write identical
content, so whichever rename comes last is as good as any.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from unet3d.atomic import atomic_path, disk_error, write_text
from unet3d.errors import UserError

CACHE_VERSION = 1
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


def file_identity(path):
    """``[absolute path, size, modification time in ns]``: changes whenever the file does."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def identity_key(files, settings):
    """A hex digest of the files' identities and the settings that produce the cached content."""
    text = json.dumps({"version": CACHE_VERSION, "files": [file_identity(p) for p in files], "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class PreprocessingCache:
    """Run ``transform`` once per case and keep its output under ``folder``.

    Args:
        folder: the cache folder (created on first write).
        transform: the deterministic preprocessing, case item -> ``{"image", "label"}`` MetaTensors.
        settings: everything the transform's output depends on besides the files (JSON-able).
    """

    def __init__(self, folder, transform, settings):
        self.folder = Path(folder)
        self.transform = transform
        self.settings = settings

    def entry(self, case):
        """The folder for ``case``'s preprocessed arrays (``case``: a ``unet3d.config.Case``)."""
        key = identity_key(case.files, self.settings)
        return self.folder / f"{UNSAFE_CHARACTERS.sub('_', case.id)}-{key[:20]}"

    def load(self, case):
        """``case`` preprocessed: from the cache, or computed and stored on a miss."""
        entry = self.entry(case)
        try:
            return self._read(case, entry)
        except (OSError, ValueError, KeyError):
            item = self.transform(case.as_dict())
        try:
            self._write(item, entry)
        except OSError as error:  # in a loader worker an OSError would reach the user as a traceback
            message = disk_error(error)
            if message is None:
                raise
            raise UserError(message) from error
        return self._read(case, entry)

    def _read(self, case, entry):
        meta = json.loads((entry / "meta.json").read_text())
        affine = torch.tensor(meta["affine"], dtype=torch.float64)
        item = {"id": case.id}
        for key in meta["keys"]:
            array = np.load(entry / f"{key}.npy")
            tensor = torch.from_numpy(array).to(torch.float32)
            item[key] = MetaTensor(tensor, affine=affine, meta={"filename_or_obj": case.images[0]})
        return item

    def _write(self, item, entry):
        keys = [key for key in ("image", "label") if key in item]
        for key in keys:
            array = item[key].detach().cpu().numpy()
            binary = key == "label" and np.array_equal(array, array.astype(np.uint8))
            with atomic_path(entry / f"{key}.npy") as tmp:
                np.save(tmp, array.astype(np.uint8) if binary else array.astype(np.float32))
        affine = item["image"].affine.tolist()
        # meta.json last: its presence means the arrays beside it are complete.
        write_text(entry / "meta.json", json.dumps({"keys": keys, "affine": affine, "shape": list(item["image"].shape)}))
