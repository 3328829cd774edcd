"""Preprocessed cases on disk, compact, so epochs after the first decode and resample nothing.

Each case is a folder ``<case id>-<key>/`` holding the compact form of
``unet3d.data.stored``: ``image.b2nd`` (float16 unless a value does not fit, see
``stored.image_dtype``) and ``label.b2nd`` (one uint8 channel of label values), both
Blosc2 arrays compressed in chunks about a patch's size, as nnU-Net stores its cases, so
that cutting a patch decompresses only the chunks it touches; ``locations.npy`` (sampled
foreground coordinates per label value) and ``meta.json`` (affine, shapes, counts). Nothing
is unpickled: Blosc2 frames and ``.npy`` files are read as plain arrays.

The key is a hash of the input files' identity (path, size, modification time), the
preprocessing settings and the format version, so folds and reruns of one config share
entries and a changed file, setting or format makes a new one. Every file is written to a
unique temporary name and renamed into place, ``meta.json`` last, so several jobs filling
one cache at once never show each other half an entry; they write identical content, so
whichever rename comes last is as good as any.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from unet3d.atomic import atomic_path, disk_error, write_text
from unet3d.data.formats import image_files
from unet3d.errors import UserError

CACHE_VERSION = 2  # 2: compact entries (float16 Blosc2 image, one label channel, foreground locations)
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")
CHUNK_EDGE = 64  # voxels per chunk edge: a 96-128 voxel patch touches a few chunks, not the whole case
BLOCK_EDGE = 16  # Blosc2 decompresses whole blocks: a 96-voxel patch spans about 111 voxels of 16-voxel blocks, 127 of 32


def blosc2():
    """The ``blosc2`` module, imported on first use (the commands that never touch the cache skip its import)."""
    import blosc2

    return blosc2


def file_identity(path):
    """``[absolute path, size, modification time in ns]``: changes whenever the file does."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def identity_key(files, settings):
    """A hex digest of the files' identities and the settings that produce the cached content."""
    # A DICOM series is a folder of slices, a .mhd or .nhdr header names a data file: each of those files counts.
    identities = [file_identity(p) for image in files for p in image_files(image)]
    text = json.dumps({"version": CACHE_VERSION, "files": identities, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_array(array, path):
    """Write ``array`` to ``path`` as a chunked, compressed Blosc2 array, atomically."""
    array = np.ascontiguousarray(array)
    spatial = array.shape[-3:]
    chunks = array.shape[:-3] and (1,) * (array.ndim - 3)
    chunks = (*chunks, *(min(CHUNK_EDGE, n) for n in spatial))
    blocks = (*chunks[:-3], *(min(BLOCK_EDGE, n) for n in chunks[-3:]))
    codecs = blosc2()
    # LZ4HC reads patches faster than ZSTD, which is a fifth smaller (27% against 22% of the float32 crop).
    compression = {"codec": codecs.Codec.LZ4HC, "clevel": 8, "filters": [codecs.Filter.SHUFFLE],
                   "typesize": array.dtype.itemsize}
    with atomic_path(path) as tmp:
        codecs.asarray(array, urlpath=str(tmp), mode="w", chunks=chunks, blocks=blocks, cparams=compression)


def read_array(path):
    """The Blosc2 array at ``path``, opened for reading: slicing it decompresses only the chunks sliced."""
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    codecs = blosc2()
    if torch.utils.data.get_worker_info() is not None:
        codecs.set_nthreads(1)  # loader workers decompress in parallel already, one item each
    return codecs.open(str(path), mode="r")


class PreprocessingCache:
    """Run ``transform`` once per case and keep its compact form under ``folder``.

    Args:
        folder: the cache folder (created on first write).
        transform: the deterministic preprocessing and compaction, case item -> compact case
            (``unet3d.data.stored``).
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
        """``case``'s compact form: from the cache, or computed and stored on a miss."""
        entry = self.entry(case)
        try:
            return self._read(case, entry)
        except (OSError, ValueError, KeyError, RuntimeError):  # RuntimeError: a damaged Blosc2 file
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
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        stored = {"id": case.id, "image": read_array(entry / "image.b2nd"),
                  "affine": torch.tensor(meta["affine"], dtype=torch.float64), "filename": case.images[0]}
        if "label" in meta["keys"]:
            stored["label"] = read_array(entry / "label.b2nd")
            coordinates = np.load(entry / "locations.npy", allow_pickle=False)
            bounds = np.cumsum([0] + [n for _, _, n in meta["locations"]])
            stored["locations"] = {value: (coordinates[bounds[i]:bounds[i + 1]], count)
                                   for i, (value, count, _) in enumerate(meta["locations"])}
        return stored

    def _write(self, stored, entry):
        keys = [key for key in ("image", "label") if key in stored]
        for key in keys:
            write_array(stored[key], entry / f"{key}.b2nd")
        meta = {"keys": keys, "affine": stored["affine"].tolist(), "shape": list(stored["image"].shape),
                "image_dtype": str(stored["image"].dtype)}
        if "label" in stored:
            locations = stored["locations"]
            meta["locations"] = [[value, count, len(points)] for value, (points, count) in locations.items()]
            points = [points for points, _ in locations.values()]
            with atomic_path(entry / "locations.npy") as tmp:
                with open(tmp, "wb") as stream:
                    np.save(stream, np.concatenate(points) if points else np.zeros((0, 3), np.int32))
        # meta.json last: its presence means the arrays beside it are complete.
        write_text(entry / "meta.json", json.dumps(meta))
