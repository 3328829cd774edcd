"""What the tests share: tiny settings, running unet3d's commands as a user would, reading their outputs."""

import copy
import csv
import importlib.util
import json
import locale
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel
import numpy as np

from unet3d.data.brats import write_brats_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_SETTINGS = {
    "model": {
        "name": "DynUNet",
        "spatial_dims": 3,
        "in_channels": 4,
        "out_channels": 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "filters": [4, 8, 16],
        "kernel_size": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "upsample_kernel_size": [[2, 2, 2], [2, 2, 2]],
    },
    "optimizer": {"name": "Adam", "lr": 0.01},
    "loss": {"name": "DiceCELoss", "sigmoid": True},
    "scheduler": {"name": "ReduceLROnPlateau", "patience": 2, "factor": 0.5},
    "cross_validation": {"n_folds": 2, "random_seed": 25},
    "dataset": {
        "name": "SegmentationDataset",
        "desired_shape": [16, 16, 16],
        "labels": [2, 1, 4],
        "setup_label_hierarchy": True,
        "normalization": "NormalizeIntensityD",
        "normalization_kwargs": {"channel_wise": True, "nonzero": True},
        "resample": True,
        "crop_foreground": True,
    },
    "training": {"batch_size": 2, "validation_batch_size": 2, "n_epochs": 2, "amp": False},
}

# Columns of a training log that measure time: they differ between otherwise identical runs.
TIMING_COLUMNS = {"epoch_time", "data_time", "compile_time"}


def load_module(path, name=None):
    """The Python file at ``path`` (a benchmark or an example's script, not a package module), imported."""
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(name):
    """Path of an installed console script (``unet3d-train``, ...)."""
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def environment(env=None):
    """The environment commands run in: this one, warnings off, plus ``env``."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}


def command_line(name):
    """The program that runs a console script: the installed one, else its module (in an environment where unet3d
    was installed before that script was added)."""
    path = command(name)
    return [path] if path else [sys.executable, "-m", f"unet3d.scripts.{name.removeprefix('unet3d-')}"]


def run(name, *args, cwd=None, check=True, env=None):
    """Run a console script; returns the CompletedProcess with text output."""
    result = subprocess.run(
        [*command_line(name), *map(str, args)], cwd=cwd, capture_output=True, encoding="utf-8", env=environment(env),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def start(name, *args, env=None, **popen_kwargs):
    """Start a console script in the background; returns the Popen.

    ``name`` may also be the absolute path of a program (``sys.executable``); ``env``
    adds variables to the environment and ``popen_kwargs`` go to ``subprocess.Popen``.
    """
    program = name if os.path.isabs(name) else command(name)
    return subprocess.Popen([program, *map(str, args)], env=environment(env), **popen_kwargs)


def train(config, *args, device="cpu", check=True, env=None):
    """Run ``unet3d-train --config_filename config --device device *args``; returns the CompletedProcess."""
    return run("unet3d-train", "--config_filename", config, "--device", device, *args, check=check, env=env)


def start_training(config, output_dir, *args, program=("unet3d-train",), env=None, **popen_kwargs):
    """Start ``program`` (``unet3d-train``) on ``config`` into ``output_dir`` on the CPU, in the background.

    Its stdout is dropped and its stderr goes to ``output_dir/stderr.txt``; returns (process, stderr path).
    """
    stderr = Path(output_dir) / "stderr.txt"
    stderr.parent.mkdir(parents=True, exist_ok=True)
    process = start(*program, "--config_filename", config, "--device", "cpu", "--output_dir", output_dir, *args,
                    env=env, stdout=subprocess.DEVNULL, stderr=stderr.open("w"), **popen_kwargs)
    return process, stderr


def wait_for(path, process, rows=0, timeout=600):
    """Wait while ``process`` runs until the file ``path`` exists and, for a CSV log, holds ``rows`` rows."""
    deadline = time.monotonic() + timeout
    while not (Path(path).is_file() and (not rows or len(read_log(path)) >= rows)):
        assert process.poll() is None, f"the command ended while waiting for {path}"
        assert time.monotonic() < deadline, f"waited {timeout} s for {path}"
        time.sleep(0.05)


def write_config(path, training_dir, groups=(), settings=TINY_SETTINGS):
    """Write the config ``path``: ``settings`` with filename lists from BraTS folders; returns ``path``.

    As a user would, through ``write_brats_config`` and a template (kept nowhere);
    ``groups`` are ``(name, folder)`` pairs of unlabelled cases. Makes ``path``'s folder.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        template = Path(folder) / "template.json"
        template.write_text(json.dumps(settings))
        write_brats_config(template, path, training_dir, groups)
    return path


def tiny_settings(**sections):
    """A config dict of ``TINY_SETTINGS`` with ``sections`` replaced and one case that is never read."""
    return dict(copy.deepcopy(TINY_SETTINGS), training_filenames=[{"image": "a.nii", "label": "b.nii"}], **sections)


def edit_config(path, change):
    """Apply ``change(config)`` to the JSON config at ``path`` in place."""
    config = json.loads(Path(path).read_text())
    change(config)
    Path(path).write_text(json.dumps(config))


def read_log(path):
    """The rows of a CSV that unet3d wrote (a training log, an evaluation) as dicts of strings."""
    with open(path) as stream:
        return list(csv.DictReader(stream))


def figures(rows):
    """Training log rows without their timing columns: what two runs must agree on."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def assert_same_weights(a, b):
    """The weight files ``a`` and ``b`` hold the same tensors, bit for bit."""
    import torch

    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def assert_one_line_error(result, *fragments, prog="unet3d-train"):
    """A console script stopped with status 2 and one ``<prog>: error:`` line holding every fragment."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def rewrite_nifti(path, array, affine=None):
    """Replace the voxels of the NIfTI file at ``path``, keeping its affine unless another is given."""
    affine = nibabel.load(path).affine if affine is None else affine
    nibabel.save(nibabel.Nifti1Image(np.asarray(array), affine), path)


def random_weights(path, model=None, seed=None):
    """Save at ``path`` the weights of an untrained model; returns ``path``.

    ``model`` is a config's model section or the config file (``TINY_SETTINGS``' model when not given); the
    weights are initialised under ``seed`` when one is given.
    """
    import torch

    from unet3d.config.resolve import resolve

    if isinstance(model, (str, Path)):
        model = json.loads(Path(model).read_text())["model"]
    if seed is not None:
        torch.manual_seed(seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(resolve("model", model or TINY_SETTINGS["model"], "model").state_dict(), path)
    return path


def assert_same_grid(path, reference, atol):
    """The image at ``path`` lies on the grid of the image at ``reference``, within ``atol``.

    Two NIfTI files as nibabel reads them: one shape (a 4D ``path`` holds a volume per channel), affine and
    orientation. Any other pair as ITK reads it: one size, spacing, origin and direction.
    """
    if all(str(p).endswith((".nii", ".nii.gz")) for p in (path, reference)):
        written, source = nibabel.load(path), nibabel.load(reference)
        assert written.shape[:3] == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=atol)
        assert nibabel.aff2axcodes(written.affine) == nibabel.aff2axcodes(source.affine)
        return
    import itk

    image, expected = itk.imread(str(path)), itk.imread(str(reference))
    assert tuple(itk.size(image)) == tuple(itk.size(expected))
    for get in ("GetSpacing", "GetOrigin"):
        np.testing.assert_allclose(getattr(image, get)(), getattr(expected, get)(), rtol=0, atol=atol)
    np.testing.assert_allclose(itk.array_from_matrix(image.GetDirection()),
                               itk.array_from_matrix(expected.GetDirection()), rtol=0, atol=atol)


def assert_on_input_grid(prediction, reference):
    """The label map at ``prediction`` lies on the grid of the scan at ``reference`` and holds BraTS labels only."""
    assert_same_grid(prediction, reference, atol=1e-5)
    label_map = nibabel.load(prediction)
    assert label_map.ndim == 3  # one label per voxel
    assert set(np.unique(np.asarray(label_map.dataobj))) <= {0, 1, 2, 4}


def convert_image(source, target, series_uid="1.2.826.0.1.3680043.10.1.1"):
    """Write the image file ``source`` again as ``target`` with ITK alone: a file (``.nrrd``, ``.mha``, ...) or,
    for a target without suffix, a folder holding a DICOM series of int16 axial slices; returns ``target``."""
    import itk

    itk.ProcessObject.SetGlobalWarningDisplay(False)  # NIfTI header fields MetaImage has no place for
    image = itk.imread(str(source))
    if Path(target).suffix:
        itk.imwrite(image, str(target), compression=True)
        return target
    volume = np.rint(itk.array_from_image(image)).astype(np.int16)  # (Z, Y, X)
    direction = itk.array_from_matrix(image.GetDirection())
    spacing, origin = np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin())
    return write_dicom_series(volume, spacing, origin, direction, target, series_uid)


def write_dicom_series(volume, spacing, origin, direction, folder, series_uid, first_number=1):
    """Write ``volume`` (Z, Y, X) as one DICOM file per slice in ``folder``, with the given LPS geometry."""
    import itk

    Path(folder).mkdir(parents=True, exist_ok=True)
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer leaves the C locale set: text reads turn ASCII
    try:
        io = itk.GDCMImageIO.New()
        io.SetKeepOriginalUID(True)  # keep the series UID given below
        orientation = "\\".join(f"{v:.6f}" for v in [*direction[:, 0], *direction[:, 1]])
        for index, plane in enumerate(volume):
            image = itk.image_from_array(np.ascontiguousarray(plane))
            image.SetSpacing([float(spacing[0]), float(spacing[1])])
            position = np.asarray(origin) + direction[:, 2] * spacing[2] * index
            tags = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.10.1", "0020|000e": series_uid,
                    "0020|0013": str(first_number + index), "0020|0037": orientation,
                    "0020|0032": "\\".join(f"{v:.6f}" for v in position)}
            dictionary = image.GetMetaDataDictionary()
            for key, value in tags.items():
                dictionary[key] = value
            itk.imwrite(image, str(Path(folder) / f"slice{first_number + index:04d}.dcm"), imageio=io)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder
