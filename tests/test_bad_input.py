"""A corpus of bad inputs: each gives exit status 2, one line naming the key or file, and changes no file.

Every file under the data and config folders is hashed before and after each command: none
may change or disappear, and no file may appear among the data.

Every case runs on its own copy of the tiny data set (``workspace``); its spoiler breaks
one thing (the config, a data file, the output folder, a checkpoint or the command line),
and it states its whole command line, as a user would type it. Most run ``main([...])``
in-process; those marked ``script`` run the console script.
Only ``--debug`` shows the traceback behind the one line.
"""

import errno
import gzip
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from helpers import (convert_image, edit_config, random_weights, rewrite_nifti, run, write_config,
                     write_dicom_series)
from unet3d.data.synthetic import write_synthetic_nnunet
from unet3d.scripts.evaluate import main as evaluate_main
from unet3d.scripts.export import main as export_main
from unet3d.scripts.plan import main as plan_main
from unet3d.scripts.predict import main as predict_main
from unet3d.scripts.train import main as train_main

CASE = "data/train/BraTS20_Training_001/BraTS20_Training_001"


@dataclass
class Workspace:
    """A test's folder: ``data/`` (a copy of the tiny cases) and ``experiment/tiny.json``."""

    root: Path

    @property
    def config(self):
        return self.root / "experiment" / "tiny.json"

    def edit(self, change):
        edit_config(self.config, change)

    def nifti(self, name, array, affine=None):
        """Replace one file of the first case; its affine is kept unless given."""
        rewrite_nifti(self.file(name), array, affine)

    def volume(self, name):
        return np.asanyarray(nibabel.load(self.root / f"{CASE}_{name}.nii.gz").dataobj).copy()

    def file(self, name):
        return self.root / f"{CASE}_{name}.nii.gz"

    def write_json(self, text):
        self.config.write_text(text)

    def swap(self, name, target):
        """The config names ``target`` (relative to the case's folder) instead of the first case's ``name`` file."""
        path = self.file(name).parent / target
        old = os.path.basename(self.file(name))

        def change(config):
            case = config["training_filenames"][0]
            if name == "seg":
                case["label"] = str(path)
            else:
                case["image"] = [str(path) if p.endswith(old) else p for p in case["image"]]
        self.edit(change)
        return path

    def convert(self, name, suffix, nifti=None):
        """The first case's ``name`` file (or ``nifti`` instead) converted by ITK and named in the config."""
        return convert_image(nifti or self.file(name), self.swap(name, f"{CASE.rsplit('/', 1)[1]}_{name}{suffix}"))


def checksums(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(brats_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(brats_data / "train", data / "train", ignore=shutil.ignore_patterns("*_00[56]*"))
    shutil.copytree(brats_data / "test", data / "test")
    write_config(tmp_path / "experiment" / "tiny.json", data / "train", [("test", data / "test")])
    return Workspace(tmp_path)


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def spoil_checkpoint(ws, payload):
    (ws.root / "experiment" / "tiny" / "fold1").mkdir(parents=True)
    path = ws.root / "experiment" / "tiny" / "fold1" / "checkpoint.pth"
    torch.save(payload, path)
    return path


def disk_error(code):
    """A monkeypatch under which every fsync fails with ``code`` (ENOSPC, EROFS, EDQUOT)."""
    def patch(monkeypatch):
        def fsync(fd):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "fsync", fsync)
    return patch


@dataclass
class Bad:
    """One corpus entry: how to spoil the workspace, the command it runs, and fragments of the one-line error.

    ``command`` is the whole command line, with placeholders: ``{root}`` (the workspace), ``{config}``
    (its config file) and ``{case}`` (the first case's files' common start: ``{case}_t1.nii.gz``).
    ``not_logged`` and ``leaves_no`` state that a command checks before it works: no log line of its
    first expensive step (the fingerprint, an epoch, "predicting"), no file of a run.
    """

    name: str
    spoil: object
    command: str
    fragments: tuple
    script: bool = False
    monkeypatch: object = None
    status: int = 2  # 1: an internal error, which says to rerun with --debug
    not_logged: tuple = ()  # fragments no log line may hold: of the work a check must come before, or noise
    leaves_no: tuple = ()  # paths (relative to the workspace) that must not exist afterwards


def with_fold_dir(ws):
    (ws.root / "experiment" / "tiny").mkdir()


CONFIG = [
    Bad("malformed-json", lambda ws: ws.write_json('{\n  "model": {"name": "DynUNet",}\n}\n'),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json:2:31: invalid JSON",), script=True),
    Bad("not-an-object", lambda ws: ws.write_json("[1, 2]"),
        "unet3d-train --config_filename {config} --device cpu",
        ("expected a JSON object at the top level",)),
    Bad("nan-literal", lambda ws: ws.write_json(ws.config.read_text().replace('"lr": 0.01', '"lr": NaN')),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json: NaN is not a JSON number",)),
    Bad("duplicate-key", lambda ws: ws.write_json(ws.config.read_text().replace('"lr": 0.01', '"lr": 0.01, "lr": 1')),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json: key 'lr' is given twice in one object",)),
    Bad("deep-json", lambda ws: ws.write_json('{"model": ' + "[" * 100000 + "]" * 100000 + "}"),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json: the JSON is nested too deeply",)),
    Bad("set-without-value", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --set training.n_epochs",
        ("--set 'training.n_epochs': expected KEY.PATH=VALUE",)),
    Bad("set-through-a-value", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --set training.n_epochs.x=1",
        ("'training.n_epochs' holds", "not an object")),
    Bad("label-names-count", lambda ws: ws.edit(lambda c: c["dataset"].update(label_names=["WT"])),
        "unet3d-train --config_filename {config} --device cpu",
        ("'dataset.label_names' must have one name per label",)),
    Bad("classes-without-background", lambda ws: ws.edit(lambda c: (c["dataset"].update(
        label_mode="classes", setup_label_hierarchy=False), c["loss"].update(sigmoid=False, softmax=True))),
        "unet3d-train --config_filename {config} --device cpu",
        ("'model.out_channels' is 3", "background channel is missing")),
    Bad("regions-with-softmax", lambda ws: ws.edit(lambda c: c["loss"].update(sigmoid=False, softmax=True)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'loss.softmax' is true but label_mode \"regions\" takes a sigmoid",)),
    Bad("freeze-nothing", lambda ws: ws.edit(lambda c: c["training"].update(freeze=["encoder"])),
        "unet3d-train --config_filename {config} --device cpu",
        ("'training.freeze': 'encoder' starts no parameter name",)),
    Bad("bad-machine-config", lambda ws: (ws.root / "machine.json").write_text('{"n_gpu": 2}'),
        "unet3d-train --config_filename {config} --device cpu --machine_config_filename {root}/machine.json",
        ("machine.json: unknown machine config key 'n_gpu'",)),
    Bad("empty-file", lambda ws: ws.write_json(""),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json:1:1: invalid JSON",)),
    Bad("missing-config", lambda ws: ws.config.unlink(),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json: config file not found",)),
    Bad("config-is-a-folder", lambda ws: (ws.config.unlink(), ws.config.mkdir()),
        "unet3d-train --config_filename {config} --device cpu",
        ("cannot read config file",)),
    Bad("missing-model", lambda ws: ws.edit(lambda c: c.pop("model")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model' is missing",)),
    Bad("model-not-object", lambda ws: ws.edit(lambda c: c.update(model="DynUNet")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model' must be an object with a string 'name'",)),
    Bad("unknown-model", lambda ws: ws.edit(lambda c: c["model"].update(name="DynUNett")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model.name'", "closest matches: DynUNet")),
    Bad("bad-model-kwarg", lambda ws: ws.edit(lambda c: c["model"].update(filterz=[4, 8, 16])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model'", "'filterz'", "did you mean 'filters'")),
    Bad("missing-model-kwarg", lambda ws: ws.edit(lambda c: c["model"].pop("spatial_dims")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model': DynUNet needs 'spatial_dims'",)),
    Bad("model-wrong-kwarg-value", lambda ws: ws.edit(lambda c: c["model"].update(strides=[[1, 1, 1]])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model': DynUNet could not be built",)),
    Bad("loss-os-system", lambda ws: ws.edit(lambda c: c["loss"].update(name="os.system")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'loss.name'", "not a valid loss name")),
    Bad("optimizer-kwarg", lambda ws: ws.edit(lambda c: c["optimizer"].update(learning_rate=0.1)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'optimizer'", "'learning_rate'", "accepted: lr, betas")),
    Bad("nested-scheduler", lambda ws: ws.edit(lambda c: c.update(scheduler={
        "name": "SequentialLR", "milestones": [1], "schedulers": [{"name": "LinearLR"}, {"name": "subprocess.Popen"}]})),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'scheduler.schedulers[1].name'", "not a valid scheduler name")),
    Bad("misspelled-section", lambda ws: ws.edit(lambda c: c.update(trainig=c.pop("training"))),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'trainig' is not known", "did you mean 'training'")),
    Bad("misspelled-training-key", lambda ws: ws.edit(lambda c: c["training"].update(n_epoch=3)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.n_epoch' is not known", "did you mean 'n_epochs'")),
    Bad("original-docs-spelling", lambda ws: ws.edit(lambda c: c["cross_validation"].update(fold=3)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'cross_validation.fold' is not known", "did you mean 'folds'")),
    Bad("string-batch-size", lambda ws: ws.edit(lambda c: c["training"].update(batch_size="2")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.batch_size' must be a positive integer, got \"2\"",)),
    Bad("zero-epochs", lambda ws: ws.edit(lambda c: c["training"].update(n_epochs=0)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.n_epochs' must be a positive integer, got 0",)),
    Bad("negative-batch", lambda ws: ws.edit(lambda c: c["training"].update(batch_size=-1)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.batch_size' must be a positive integer, got -1",)),
    Bad("zero-desired-shape", lambda ws: ws.edit(lambda c: c["dataset"].update(desired_shape=[16, 0, 16])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.desired_shape' must be three positive integers",)),
    Bad("negative-patch", lambda ws: ws.edit(lambda c: c["dataset"].update(patch_size=-8)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.patch_size' must be three positive integers",)),
    Bad("overlap-one", lambda ws: ws.edit(lambda c: c.update(prediction={"overlap": 1.0})),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'prediction.overlap' must be a number in [0, 1)",)),
    Bad("window-two-values", lambda ws: ws.edit(lambda c: c.update(prediction={"window": [8, 8]})),
        "unet3d-train --config_filename {config} --device cpu",
        ("'prediction.window'", "three positive integers")),
    Bad("amp-fp8", lambda ws: ws.edit(lambda c: c["training"].update(amp="fp8")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.amp' must be one of",)),
    Bad("unknown-tracker", lambda ws: ws.edit(lambda c: c["training"].update(trackers=["tensorboard", "wandb"])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.trackers' holds 'wandb'; expected names among \"tensorboard\", \"mlflow\"",)),
    Bad("metric-mode", lambda ws: ws.edit(lambda c: c["training"].update(metric_mode="maximum")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.metric_mode' must be one of \"min\", \"max\"",)),
    Bad("string-labels", lambda ws: ws.edit(lambda c: c["dataset"].update(labels=["1", "2"])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.labels' must be a list of integers",)),
    Bad("normalization-name", lambda ws: ws.edit(lambda c: c["dataset"].update(normalization="NormaliseIntensityd")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.normalization'", "NormalizeIntensityd")),
    Bad("augmentation-kwarg", lambda ws: ws.edit(lambda c: c["dataset"].update(
        spatial_augmentations=[{"name": "RandFlipd", "probability": 0.5}])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.spatial_augmentations[0]'", "'probability' (did you mean 'prob'?)")),
    Bad("unknown-dataset", lambda ws: ws.edit(lambda c: c["dataset"].update(name="BratsDataset")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.name': unknown dataset 'BratsDataset'",)),
    Bad("too-many-folds", lambda ws: ws.edit(lambda c: c["cross_validation"].update(n_folds=9)),
        "unet3d-train --config_filename {config} --device cpu",
        ("cross_validation.n_folds", "9 folds need at least 9")),
    Bad("one-fold", lambda ws: ws.edit(lambda c: c["cross_validation"].update(n_folds=1)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'cross_validation.n_folds' must be an integer of at least 2, got 1",)),
    Bad("group-by-missing", lambda ws: ws.edit(lambda c: c["cross_validation"].update(group_by="subject")),
        "unet3d-train --config_filename {config} --device cpu",
        ("has no 'subject'", "cross_validation.group_by")),
    Bad("empty-training", lambda ws: ws.edit(lambda c: c.update(training_filenames=[])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training_filenames' must be a non-empty list",)),
    Bad("missing-training", lambda ws: ws.edit(lambda c: c.pop("training_filenames")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training_filenames' is missing",)),
    Bad("misspelled-group", lambda ws: ws.edit(lambda c: c.update(test_filename=c.pop("test_filenames"))),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'test_filename' is not known", "did you mean 'test_filenames'")),
    Bad("case-without-image", lambda ws: ws.edit(lambda c: c["test_filenames"][0].pop("image")),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'test_filenames'[0] must be an object with an 'image'",)),
    Bad("misspelled-label", lambda ws: ws.edit(lambda c: c["training_filenames"][1].update(
        lable=c["training_filenames"][1].pop("label"))),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training_filenames[1].lable' is not known", "did you mean 'label'")),
    Bad("validation-and-folds", lambda ws: ws.edit(lambda c: c.update(validation_filenames=c["test_filenames"])),
        "unet3d-train --config_filename {config} --device cpu",
        ("both 'cross_validation' and 'validation_filenames'",)),
    Bad("missing-decathlon", lambda ws: ws.edit(lambda c: (c.pop("training_filenames"), c.pop("test_filenames"),
                                                          c.update(decathlon_datalist="dataset.json"))),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'decathlon_datalist'", "dataset.json")),
]


def modality_elsewhere(ws):
    """The first case's T2 becomes a 10x10x10 scan outside the data folder."""
    path = ws.root / "small_t2.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), path)
    ws.edit(lambda c: c["training_filenames"][0]["image"].__setitem__(3, str(path)))


def all_labels(ws, change):
    for path in sorted(ws.root.glob("data/train/*/*_seg.nii.gz")):
        image = nibabel.load(path)
        nibabel.save(nibabel.Nifti1Image(change(np.asanyarray(image.dataobj).copy()), image.affine), path)


def corrupt_nrrd(ws):
    ws.swap("flair", "BraTS20_Training_001_flair.nrrd").write_text(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 24 24\nencoding: raw\n\n")


def dicom_series_of_two(ws):
    """The first case's FLAIR as a folder holding two DICOM series of two slices each."""
    folder = ws.swap("flair", "flair_dicom")
    for number, uid in ((1, "1.2.826.0.1.3680043.10.1.1"), (3, "1.2.826.0.1.3680043.10.1.2")):
        write_dicom_series(np.zeros((2, 24, 24), np.int16), (1, 1, 1), (0, 0, number), np.eye(3), folder, uid, number)


def nan_geometry(ws):
    ws.swap("t1", "BraTS20_Training_001_t1.nrrd").write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 24 24 24\n"
        b"space directions: (0,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
        b"encoding: raw\nspace origin: (0,0,0)\n\n" + bytes(4 * 24 ** 3))


def nrrd_of_another_grid(ws):
    """The first case's T2 as NRRD with 2 mm voxels along x."""
    ws.nifti("t2", ws.volume("t2"), np.diag([2.0, 1.0, 1.0, 1.0]) @ nibabel.load(ws.file("t2")).affine)
    ws.convert("t2", ".nrrd")


DATA = [
    Bad("missing-image", lambda ws: ws.file("t1").unlink(),
        "unet3d-train --config_filename {config} --device cpu",
        ("1 data file(s) named in the config do not exist",
                                                             "BraTS20_Training_001_t1.nii.gz")),
    Bad("missing-label", lambda ws: ws.edit(lambda c: c["training_filenames"][1].update(label="gone/seg.nii.gz")),
        "unet3d-train --config_filename {config} --device cpu",
        ("1 data file(s) named in the config do not exist", "gone/seg.nii.gz")),
    Bad("empty-image", lambda ws: ws.file("t1").write_bytes(b""),
        "unet3d-train --config_filename {config} --device cpu",
        ("BraTS20_Training_001_t1.nii.gz: cannot read",)),
    Bad("truncated-image", lambda ws: truncate(ws.file("t2")),
        "unet3d-train --config_filename {config} --device cpu",
        ("BraTS20_Training_001_t2.nii.gz", "truncated")),
    Bad("truncated-label", lambda ws: truncate(ws.file("seg"), 0.3),
        "unet3d-train --config_filename {config} --device cpu",
        ("BraTS20_Training_001_seg.nii.gz", "cannot read")),
    Bad("not-nifti", lambda ws: ws.file("flair").write_bytes(gzip.compress(b"hello, not an image")),
        "unet3d-train --config_filename {config} --device cpu",
        ("BraTS20_Training_001_flair.nii.gz: cannot read as NIfTI",)),
    Bad("text-file", lambda ws: ws.file("flair").write_text("subject,age\n1,2\n"),
        "unet3d-train --config_filename {config} --device cpu",
        ("BraTS20_Training_001_flair.nii.gz: cannot read as NIfTI",)),
    Bad("2d-image", lambda ws: ws.nifti("t1", np.zeros((24, 24), np.float32)),
        "unet3d-train --config_filename {config} --device cpu",
        ("_t1.nii.gz is 2D", "expected a 3D volume")),
    Bad("4d-label", lambda ws: ws.nifti("seg", np.zeros((24, 24, 24, 2), np.uint8)),
        "unet3d-train --config_filename {config} --device cpu",
        ("_seg.nii.gz is 4D",)),
    Bad("shape-mismatch", lambda ws: ws.nifti("t1ce", np.zeros((24, 24, 20), np.float32)),
        "unet3d-train --config_filename {config} --device cpu",
        ("shapes differ",)),
    Bad("modality-elsewhere-of-another-shape", modality_elsewhere,
        "unet3d-train --config_filename {config} --device cpu",
        ("case 'BraTS20_Training_001'", "shapes differ", "small_t2.nii.gz (10, 10, 10)")),
    Bad("affine-mismatch", lambda ws: ws.nifti("t2", ws.volume("t2"), np.diag([2.0, 1.0, 1.0, 1.0])),
        "unet3d-train --config_filename {config} --device cpu",
        ("has another affine", "_t2.nii.gz")),
    Bad("nan-image", lambda ws: ws.nifti("flair", np.where(ws.volume("flair") > 0, np.nan, 0).astype(np.float32)),
        "unet3d-train --config_filename {config} --device cpu",
        ("_flair.nii.gz contains NaN or infinite values",)),
    Bad("inf-image", lambda ws: ws.nifti("t1", np.full((24, 24, 24), np.inf, np.float32)),
        "unet3d-train --config_filename {config} --device cpu",
        ("_t1.nii.gz contains NaN or infinite values",)),
    Bad("undeclared-label", lambda ws: ws.nifti("seg", np.where(ws.volume("seg") == 4, 3, ws.volume("seg")).astype(np.uint8)),
        "unet3d-train --config_filename {config} --device cpu",
        ("_seg.nii.gz has label values 3 not in dataset.labels",)),
    Bad("no-foreground-anywhere", lambda ws: all_labels(ws, np.zeros_like),
        "unet3d-train --config_filename {config} --device cpu",
        ("_seg.nii.gz has no foreground", "nor has any other label")),
    Bad("rgb-image", lambda ws: ws.nifti("t1", np.zeros((24, 24, 24), [("R", "u1"), ("G", "u1"), ("B", "u1")])),
        "unet3d-train --config_filename {config} --device cpu",
        ("_t1.nii.gz holds rgb voxels; expected one number per voxel",)),
    Bad("corrupt-nrrd", corrupt_nrrd,
        "unet3d-train --config_filename {config} --device cpu",
        ("_flair.nrrd: cannot read as NRRD", "parsed 2 values, but dimension is 3")),
    Bad("truncated-nrrd", lambda ws: truncate(ws.convert("flair", ".mha")),
        "unet3d-train --config_filename {config} --device cpu",
        ("_flair.mha: cannot read its voxels",)),
    Bad("nan-geometry", nan_geometry,
        "unet3d-train --config_filename {config} --device cpu",
        ("_t1.nrrd has a singular affine or one that is not finite",)),
    Bad("nrrd-of-another-grid", nrrd_of_another_grid,
        "unet3d-train --config_filename {config} --device cpu",
        ("_t2.nrrd has another affine than BraTS20_Training_001_flair",)),
    Bad("dicom-two-series", dicom_series_of_two,
        "unet3d-train --config_filename {config} --device cpu",
        ("flair_dicom: holds 2 DICOM series; expected one series per folder",)),
    Bad("dicom-no-slices", lambda ws: ws.swap("flair", "flair_dicom").mkdir(),
        "unet3d-train --config_filename {config} --device cpu",
        ("flair_dicom: no DICOM slices",)),
    Bad("itk-missing", lambda ws: ws.convert("flair", ".nrrd"),
        "unet3d-train --config_filename {config} --device cpu",
        ("_flair.nrrd: NRRD images need ITK, which is not installed: pip install \"unet3d-toolkit[formats]\"",),
        monkeypatch=lambda mp: mp.setitem(sys.modules, "itk", None)),
    Bad("duplicate-ids", lambda ws: ws.edit(lambda c: c["training_filenames"].append(c["training_filenames"][0])),
        "unet3d-train --config_filename {config} --device cpu",
        ("two cases are both named 'BraTS20_Training_001'",)),
]

ENVIRONMENT = [
    Bad("output-under-a-file", lambda ws: (ws.root / "notes.txt").write_text("x"),
        "unet3d-train --config_filename {config} --device cpu --output_dir {root}/notes.txt/runs",
        ("notes.txt is a file, not a folder",)),
    Bad("output-is-a-file", lambda ws: (ws.root / "runs").mkdir() or (ws.root / "runs" / "tiny").write_text("x"),
        "unet3d-train --config_filename {config} --device cpu --output_dir {root}/runs",
        ("runs/tiny: is a file, not a folder",)),
    Bad("output-unwritable", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu",
        ("is not writable",), monkeypatch=lambda mp: mp.setattr(os, "access", lambda path, mode, **kw: False)),
    Bad("disk-full", lambda ws: (with_fold_dir(ws), (ws.root / "experiment" / "tiny" / "fold1.json").write_text("{}")),
        "unet3d-train --config_filename {config} --device cpu",
        (": No space left on device",), monkeypatch=disk_error(errno.ENOSPC)),
    Bad("read-only-disk", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu",
        ("cache/preflight/", "Read-only file system (nothing was replaced"), monkeypatch=disk_error(errno.EROFS)),
    Bad("quota-exceeded", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu",
        ("cache/preflight/", "Disk quota exceeded (nothing was replaced"), monkeypatch=disk_error(errno.EDQUOT)),
    Bad("cache-is-a-file", lambda ws: (ws.root / "cache").write_text("x"),
        "unet3d-train --config_filename {config} --device cpu --cache_dir {root}/cache",
        ("cache folder", "cache: is a file, not a folder (see --cache_dir)"), leaves_no=("experiment/tiny",)),
    Bad("tracker-not-installed", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --trackers tensorboard",
        ('training.trackers: tensorboard needs the tensorboard package: pip install "unet3d-toolkit[tensorboard]"',),
        monkeypatch=lambda mp: mp.setitem(sys.modules, "tensorboard", None)),
]

CHECKPOINTS = [
    Bad("truncated-checkpoint", lambda ws: truncate(spoil_checkpoint(ws, {"model": {}, "epoch": 1, "rows": []})),
        "unet3d-train --config_filename {config} --device cpu --fold 1",
        ("fold1/checkpoint.pth: cannot read as a unet3d checkpoint", "--restart")),
    Bad("checkpoint-of-another-config", lambda ws: spoil_checkpoint(ws, {"model": {}, "epoch": 1, "rows": [],
                                                                         "config_hash": {"model": "0"}}),
        "unet3d-train --config_filename {config} --device cpu --fold 1",
        ("checkpoint.pth: config key(s) model", "changed since this checkpoint")),
    Bad("pickled-checkpoint", lambda ws: spoil_checkpoint(ws, {"model": {}, "hook": subprocess.Popen}),
        "unet3d-train --config_filename {config} --device cpu --fold 1",
        ("checkpoint.pth: cannot read as a unet3d checkpoint",)),
    Bad("weights-of-another-architecture", lambda ws: random_weights(ws.root / "other.pth", {
        "name": "UNet", "spatial_dims": 3, "in_channels": 4, "out_channels": 3, "channels": [4, 8], "strides": [2]}),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/other.pth --group test "
        "--output_dir {root}/predictions",
        ("other.pth: weights do not fit the config's model",)),
    Bad("garbage-model-file", lambda ws: (ws.root / "model.pth").write_bytes(b"PK\x03\x04 not a zip"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions",
        ("model.pth: cannot read as a unet3d checkpoint",)),
    Bad("text-model-file", lambda ws: (ws.root / "m.pth").write_bytes(b"not a checkpoint"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/m.pth --group test "
        "--output_dir {root}/predictions",
        ("m.pth: cannot read as a unet3d checkpoint",)),
    Bad("missing-model-file", lambda ws: None,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/gone.pth --group test "
        "--output_dir {root}/predictions",
        ("gone.pth: model file not found",)),
]

def postprocessing_of_classes(ws):
    random_weights(ws.root / "model.pth")
    (ws.root / "postprocessing.json").write_text(json.dumps({
        "label_scheme": {"mode": "classes", "values": [1, 2]},
        "regions": [{"region": "label1", "step": None}, {"region": "label2", "step": {"keep_largest": True}}]}))


CLI = [
    Bad("crossval-only-and-fold", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --setup_crossval_only --fold 1",
        ("--setup_crossval_only and --fold cannot be used together",)),
    Bad("summarize-and-restart", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --summarize --restart",
        ("--summarize and --restart cannot be used together",)),
    Bad("check-and-restart", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --check --restart",
        ("--check and --restart cannot be used together",)),
    Bad("ngpus-zero-on-cuda", lambda ws: None,
        "unet3d-train --config_filename {config} --device cuda --ngpus 0",
        ("--ngpus 0 runs on the CPU but --device is cuda",), script=True),
    Bad("ngpus-negative", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --ngpus -1",
        ("--ngpus must be 0 or more, got -1",)),
    Bad("machine-n-gpus-zero-on-cuda", lambda ws: (ws.root / "machine.json").write_text('{"n_gpus": 0}'),
        "unet3d-train --config_filename {config} --device cuda --machine_config_filename {root}/machine.json",
        ("machine.json: n_gpus 0 runs on the CPU but --device is cuda",)),
    Bad("negative-nthreads", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --nthreads -1",
        ("--nthreads must be 0 or more",)),
    Bad("fold-out-of-range", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --fold 3",
        ("--fold 3: the config has folds 1 to 2",)),
    Bad("fold-without-folds", lambda ws: ws.edit(lambda c: c.pop("cross_validation")),
        "unet3d-train --config_filename {config} --device cpu --fold 1",
        ("--fold needs a 'cross_validation' section",)),
    Bad("slurm-without-setup", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --slurm_time 1:00:00",
        ("--slurm_time only applies",)),
    Bad("trackers-flag", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --trackers wandb",
        ("--trackers wandb: expected tensorboard or mlflow",)),
    Bad("missing-plugin", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --plugin lab_nets",
        ("--plugin lab_nets: cannot import it",)),
    Bad("predict-overlap", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --overlap 1.5",
        ("--overlap 1.5: must be a number in [0, 1)",), script=True),
    Bad("predict-activation", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --activation softplus",
        ("--activation softplus: must be one of \"sigmoid\", \"softmax\", \"none\"",)),
    Bad("predict-output-format", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --output_format dicom",
        ("--output_format dicom: must be one of \"nifti\", \"nrrd\", \"mha\"",)),
    Bad("predict-component-size", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --min_component_size -1",
        ("--min_component_size -1: must be an integer of at least 0",)),
    Bad("predict-ngpus-zero-on-cuda", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cuda --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --ngpus 0",
        ("--ngpus 0 runs on the CPU but --device is cuda",)),
    Bad("predict-ngpus-missing-model", lambda ws: None,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/gone.pth --group test "
        "--output_dir {root}/predictions --ngpus 2",
        ("gone.pth: model file not found",)),
    Bad("predict-unknown-group", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group tset "
        "--output_dir {root}/predictions",
        ("no 'tset_filenames'", "training, test")),
    Bad("predict-postprocessing-missing", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --postprocessing {root}/gone.json",
        ("--postprocessing", "gone.json: no such file")),
    Bad("predict-postprocessing-of-other-labels", postprocessing_of_classes,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --postprocessing {root}/postprocessing.json",
        ("postprocessing.json: chosen for the labels", "but the config's are")),
    Bad("predict-postprocessing-and-keep-largest", postprocessing_of_classes,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --postprocessing {root}/postprocessing.json --keep_largest",
        ("--keep_largest chooses the clean-up already",)),
]

def earlier_export(ws):
    random_weights(ws.root / "model.pth")
    (ws.root / "export").mkdir()
    (ws.root / "export" / "manifest.json").write_text("{}")


EXPORT = [
    Bad("export-missing-weights", lambda ws: None,
        "unet3d-export --config_filename {config} --model_filename {root}/gone.pth --output_dir {root}/export",
        ("gone.pth: model file not found",), not_logged=("vs PyTorch",)),
    Bad("export-weights-of-another-architecture", lambda ws: random_weights(ws.root / "other.pth", {
        "name": "UNet", "spatial_dims": 3, "in_channels": 4, "out_channels": 3, "channels": [4, 8], "strides": [2]}),
        "unet3d-export --config_filename {config} --model_filename {root}/other.pth --output_dir {root}/export",
        ("other.pth: weights do not fit the config's model",)),
    Bad("export-output-dir-is-a-file",
        lambda ws: (random_weights(ws.root / "model.pth"), (ws.root / "export.txt").write_text("x")),
        "unet3d-export --config_filename {config} --model_filename {root}/model.pth --output_dir {root}/export.txt",
        ("export.txt: --output_dir is a file; expected a folder",)),
    Bad("export-over-an-earlier-export", earlier_export,
        "unet3d-export --config_filename {config} --model_filename {root}/model.pth --output_dir {root}/export",
        ("export/manifest.json: exists", "--overwrite")),
    Bad("export-without-labels",
        lambda ws: (random_weights(ws.root / "model.pth"), ws.edit(lambda c: c["dataset"].pop("labels"))),
        "unet3d-export --config_filename {config} --model_filename {root}/model.pth --output_dir {root}/export",
        ("config key 'dataset.labels' is missing", "decode the network's outputs")),
]


def singular_affine(ws):
    """Every file of the first case gets an sform with a voxel size of 0 (nibabel cannot make a qform of it)."""
    for name in ("flair", "t1", "t1ce", "t2", "seg"):
        image = nibabel.Nifti1Image(ws.volume(name), None)
        image.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=2)
        nibabel.save(image, ws.file(name))


def rgb(ws):
    volume = np.zeros((24, 24, 24), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nibabel.save(nibabel.Nifti1Image(volume, nibabel.load(ws.file("t1")).affine), ws.file("t1"))


def set_test_case_id(ws, case_id):
    ws.edit(lambda c: c["test_filenames"][0].update(id=case_id))


def fresh_predictions(ws):
    """A prediction folder holding the first training case's label, named by its id."""
    (ws.root / "predicted").mkdir()
    shutil.copy(ws.file("seg"), ws.root / "predicted" / "BraTS20_Training_001.nii.gz")


# Configs that would reach files or code, and outputs that would land on inputs.
REACH = [
    Bad("loss-with-hub-cache", lambda ws: ws.edit(lambda c: c.update(loss={
        "name": "PerceptualLoss", "spatial_dims": 3, "cache_dir": str(ws.root / "data")})),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'loss.name': PerceptualLoss", "'cache_dir'")),
    Bad("augmentation-saves-images", lambda ws: ws.edit(lambda c: c["dataset"].update(spatial_augmentations=[
        {"name": "SaveImaged", "output_dir": str(ws.root / "data" / "train"), "separate_folder": False}])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.spatial_augmentations[0].name': SaveImaged", "'output_dir'")),
    Bad("augmentation-loads-images", lambda ws: ws.edit(lambda c: c["dataset"].update(intensity_augmentations=[
        {"name": "LoadImaged"}])),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.intensity_augmentations[0].name': LoadImaged", "'reader'")),
    Bad("normalization-writes-files", lambda ws: ws.edit(lambda c: c["dataset"].update(
        normalization="WriteFileMappingd", normalization_kwargs={"mapping_file_path": str(ws.config)})),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'dataset.normalization': WriteFileMappingd", "'mapping_file_path'")),
    Bad("model-downloads-weights", lambda ws: ws.edit(lambda c: c.update(model={
        "name": "FlexibleUNet", "in_channels": 4, "out_channels": 3, "backbone": "efficientnet-b0",
        "pretrained": True, "spatial_dims": 3})),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'model.name': FlexibleUNet", "'pretrained'")),
    Bad("case-id-into-the-data", lambda ws: set_test_case_id(ws, "../data/train/BraTS20_Training_002/x"),
        "unet3d-train --config_filename {config} --device cpu",
        ("case id '../data/train/BraTS20_Training_002/x' cannot name an output file",)),
    Bad("case-id-dot-dot", lambda ws: set_test_case_id(ws, ".."),
        "unet3d-train --config_filename {config} --device cpu",
        ("case id '..' cannot name an output file",)),
    Bad("case-id-empty", lambda ws: set_test_case_id(ws, ""),
        "unet3d-train --config_filename {config} --device cpu",
        ("id must be a non-empty string",)),
    Bad("log-copy-over-the-config", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --training_log_filename {config} --fold 1",
        ("--training_log_filename", "tiny.json: expected a new .csv file")),
    Bad("predict-over-its-input", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth "
        "--images {case}_flair.nii.gz {case}_t1.nii.gz {case}_t1ce.nii.gz {case}_t2.nii.gz "
        "--output_dir {root}/data/train/BraTS20_Training_001 --ids BraTS20_Training_001_seg --overwrite",
        ("would overwrite an input file",), not_logged=("predicting",)),
    Bad("evaluate-over-a-label", fresh_predictions,
        "unet3d-evaluate --config_filename {config} --prediction_dir {root}/predicted --group training "
        "--output_filename {case}_seg.nii.gz --no_hausdorff",
        ("expected a new .csv file",)),
    Bad("evaluate-over-the-config", fresh_predictions,
        "unet3d-evaluate --config_filename {config} --prediction_dir {root}/predicted --group training "
        "--output_filename {config} --no_hausdorff",
        ("expected a new .csv file",)),
    Bad("evaluate-against-itself", fresh_predictions,
        "unet3d-evaluate --config_filename {config} --prediction_dir {root}/predicted --label_dir {root}/predicted "
        "--no_hausdorff",
        ("is its own reference label",)),
]

# Configs that --check passed but that stopped mid-run or trained on NaN.
DRY_RUN = [
    Bad("model-of-2d", lambda ws: ws.edit(lambda c: c["model"].update(
        spatial_dims=2, strides=[[1, 1], [2, 2], [2, 2]], kernel_size=[[3, 3]] * 3, upsample_kernel_size=[[2, 2]] * 2)),
        "unet3d-train --config_filename {config} --device cpu",
        ("model: DynUNet", "(1, 4, ")),
    Bad("optimizer-needs-closure", lambda ws: ws.edit(lambda c: c.update(optimizer={"name": "LBFGS"})),
        "unet3d-train --config_filename {config} --device cpu",
        ("optimizer: LBFGS",)),
    Bad("loss-not-a-loss", lambda ws: ws.edit(lambda c: c.update(loss={"name": "ReLU"})),
        "unet3d-train --config_filename {config} --device cpu",
        ("loss: ReLU",)),
    Bad("loss-not-a-number", lambda ws: ws.edit(lambda c: c.update(loss={"name": "BCEWithLogitsLoss",
                                                                         "reduction": "none"})),
        "unet3d-train --config_filename {config} --device cpu",
        ("loss: BCEWithLogitsLoss", "not a single number")),
    Bad("loss-gives-nan", lambda ws: ws.edit(lambda c: c.update(loss={"name": "PoissonNLLLoss", "log_input": False})),
        "unet3d-train --config_filename {config} --device cpu",
        ("loss: PoissonNLLLoss returned nan",)),
    Bad("weights-diverge", lambda ws: ws.edit(lambda c: (c.update(optimizer={"name": "SGD", "lr": 1e30}),
                                                         c["training"].update(batch_size=1))),
        "unet3d-train --config_filename {config} --device cpu --fold 1",
        ("epoch 1: the training loss is nan", "the weights diverged")),
    Bad("scheduler-past-its-total", lambda ws: ws.edit(lambda c: c.update(scheduler={
        "name": "OneCycleLR", "max_lr": 0.01, "total_steps": 2, "step_per_batch": True})),
        "unet3d-train --config_filename {config} --device cpu",
        ("scheduler: OneCycleLR", "step")),
    Bad("seed-beyond-64-bits", lambda ws: ws.edit(lambda c: c["training"].update(seed=2**70)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'training.seed'",)),
    Bad("split-seed-beyond-64-bits", lambda ws: ws.edit(lambda c: c["cross_validation"].update(random_seed=-1)),
        "unet3d-train --config_filename {config} --device cpu",
        ("config key 'cross_validation.random_seed'",)),
    Bad("shape-beyond-memory", lambda ws: ws.edit(lambda c: c["dataset"].update(desired_shape=[4096, 4096, 4096])),
        "unet3d-train --config_filename {config} --device cpu",
        ("dataset.desired_shape", "GiB")),
]

VALUES = [
    Bad("all-zero-scan", lambda ws: ws.nifti("t1", np.zeros((24, 24, 24), np.float32)),
        "unet3d-train --config_filename {config} --device cpu",
        ("_t1.nii.gz is all 0",)),
    Bad("singular-affine", singular_affine,
        "unet3d-train --config_filename {config} --device cpu",
        ("_flair.nii.gz has a singular affine or one that is not finite",)),
    Bad("rgb-voxels", rgb,
        "unet3d-train --config_filename {config} --device cpu",
        ("_t1.nii.gz", "rgb voxels", "one number per voxel")),
    Bad("beyond-float32", lambda ws: ws.nifti("t2", ws.volume("t2").astype(np.float64) * 1e300),
        "unet3d-train --config_filename {config} --device cpu",
        ("_t2.nii.gz", "float32")),
    Bad("predict-negative-nthreads", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --nthreads -1",
        ("--nthreads must be 0 or more",)),
    Bad("predict-threshold-above-one", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --threshold 1.5",
        ("--threshold 1.5",)),
    Bad("predict-threshold-zero", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/predictions --threshold 0",
        ("--threshold 0.0",)),
]


def nnunet(ws, change=None, n_cases=2):
    """A tiny nnU-Net raw dataset at ``ws.root/nn``, its dataset.json passed through ``change``."""
    root = write_synthetic_nnunet(ws.root / "nn", n_cases, shape=(16, 16, 8), n_test=0)
    if change:
        description = json.loads((root / "dataset.json").read_text())
        change(description)
        (root / "dataset.json").write_text(json.dumps(description))
    return root


PLAN = [
    Bad("plan-empty-folder", lambda ws: (ws.root / "empty").mkdir(),
        "unet3d-plan --input_dir {root}/empty --output_filename {root}/planned.json --device cpu",
        ("empty: no dataset found", "dataset.json"), script=True),
    Bad("plan-no-file-ending", lambda ws: nnunet(ws, lambda d: d.pop("file_ending")),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("nn/dataset.json: key 'file_ending' is missing",)),
    Bad("plan-no-labels", lambda ws: nnunet(ws, lambda d: d.pop("labels")),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("nn/dataset.json: key 'labels' is missing",)),
    Bad("plan-no-channel-names", lambda ws: nnunet(ws, lambda d: d.pop("channel_names")),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("nn/dataset.json: key 'channel_names' must be an object",)),
    Bad("plan-missing-channel-file", lambda ws: (nnunet(ws) / "imagesTr" / "case_001_0002.nii.gz").unlink(),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("case 'case_001' does not have one file per channel of dataset.json (4): missing case_001_0002.nii.gz",)),
    Bad("plan-more-channels-than-named", lambda ws: nnunet(ws, lambda d: d["channel_names"].pop("3")),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("does not have one file per channel of dataset.json (3): unexpected case_000_0003.nii.gz",)),
    Bad("plan-missing-label-file", lambda ws: (nnunet(ws) / "labelsTr" / "case_000.nii.gz").unlink(),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("labelsTr/case_000.nii.gz: label file missing for case 'case_000'",)),
    Bad("plan-unnamed-label-value", lambda ws: nnunet(ws, lambda d: d["labels"].pop("enhancing tumour")),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("the label maps hold value(s) [3] that the dataset's labels [1, 2] do not name",)),
    Bad("plan-regions-that-do-not-nest", lambda ws: nnunet(ws, lambda d: d.update(labels={
        "background": 0, "a": [1, 2], "b": [2, 3]})),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("nn/dataset.json: regions 'a' [1, 2] and 'b' [2, 3] do not nest, so key 'regions_class_order' is needed",)),
    Bad("plan-unreadable-image", lambda ws: truncate(nnunet(ws) / "imagesTr" / "case_000_0001.nii.gz"),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("case_000_0001.nii.gz: cannot read its voxels, the file may be truncated",)),
    Bad("plan-unsupported-file-ending", lambda ws: nnunet(ws, lambda d: d.update(file_ending=".tif")),
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/planned.json --device cpu",
        ("nn/dataset.json: file_ending '.tif' is not supported (expected one of .nii.gz, .nii, .nrrd",)),
    Bad("plan-brats-missing-modality", lambda ws: ws.file("t1").unlink(),
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu",
        ("BraTS20_Training_001: no t1 image",)),
    Bad("plan-output-exists", lambda ws: (ws.root / "planned.json").write_text("{}"),
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu",
        ("planned.json exists; give --overwrite",)),
    Bad("plan-zero-budget", lambda ws: None,
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu "
        "--budget_minutes 0",
        ("--budget_minutes must be above 0, got 0",)),
    Bad("plan-zero-step-seconds", lambda ws: None,
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu "
        "--step_seconds 0",
        ("--step_seconds must be above 0, got 0",)),
    Bad("plan-budget-too-short", lambda ws: None,
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu "
        "--budget_minutes 0.2 --step_seconds 1",
        ("--budget_minutes 0.2 is too short: preprocessing, 5 validated epochs and the predictions of 2 folds",)),
]

def nested(depth):
    """A JSON value ``depth`` objects deep."""
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def internal_error(mp):
    """A bug: loading the config raises an error that is not the user's."""
    import unet3d.config.experiment

    def broken(*args, **kwargs):
        raise ValueError("a bug in the loader")
    mp.setattr(unet3d.config.experiment, "experiment_from_dict", broken)


def disk_full_in_torch_save(mp):
    """The disk fills while torch.save writes: its zip writer says only "unexpected pos", and no space is left."""
    import torch.serialization

    def fill(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4032 vs 3968")
    mp.setattr(torch.serialization, "_save", fill)
    mp.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, 0))


LAST_RESORT = [
    Bad("deeply-nested-kwarg", lambda ws: ws.edit(lambda c: c["model"].update(deep=nested(700))),
        "unet3d-train --config_filename {config} --device cpu",
        ("tiny.json: config key 'model.deep.a...': nested too deeply (over 100 levels)",)),
    Bad("internal-error", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu",
        ("internal error: ValueError: a bug in the loader (rerun with --debug for the traceback)",),
        monkeypatch=internal_error, status=1),
    Bad("disk-full-in-torch-save", lambda ws: ws.edit(lambda c: c["training"].update(n_epochs=1)),
        "unet3d-train --config_filename {config} --device cpu",
        (".pth: No space left on device (nothing was replaced",), monkeypatch=disk_full_in_torch_save),
]

def nrrd_scans(ws):
    """Weights, and the first case's images as NRRD files ``scan_<name>.nrrd`` in the workspace."""
    random_weights(ws.root / "model.pth")
    for name in ("flair", "t1", "t1ce", "t2"):
        convert_image(ws.file(name), ws.root / f"scan_{name}.nrrd")


def weights_and_a_file(ws):
    random_weights(ws.root / "model.pth")
    (ws.root / "afile").write_text("x")


NOWHERE = "/proc/nope"  # a folder no one can make
PLAN_WORK = ("reading them", "fingerprint")
SCHEME_READ = ("read from the reference label maps",)
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: refused at once

# Each command checks every path, flag and tracker before its first expensive step, and says what the user named.
CHECK_FIRST = [
    Bad("plan-output-in-no-folder", lambda ws: None,
        "unet3d-plan --input_dir {root}/data/train --output_filename /proc/nope/planned.json --device cpu",
        (f"--output_filename {NOWHERE}/planned.json: ",), not_logged=PLAN_WORK),
    Bad("plan-output-under-a-file", lambda ws: (ws.root / "afile").write_text("x"),
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/afile/planned.json --device cpu",
        ("--output_filename", "afile is a file, not a folder"), not_logged=PLAN_WORK),
    Bad("plan-missing-input", lambda ws: None,
        "unet3d-plan --input_dir {root}/gone --output_filename {root}/planned.json --device cpu",
        ("--input_dir", "gone: not a folder"), not_logged=PLAN_WORK),
    Bad("plan-over-its-dataset-json", nnunet,
        "unet3d-plan --input_dir {root}/nn --output_filename {root}/nn/dataset.json --device cpu --overwrite",
        ("--output_filename", "dataset.json: expected a new file, not one of the command's inputs"),
        not_logged=PLAN_WORK),
    Bad("plan-nthreads-zero", lambda ws: None,
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu --nthreads 0",
        ("--nthreads must be 1 or more, got 0",), not_logged=PLAN_WORK),
    Bad("plan-workers-is-nthreads", lambda ws: None,
        "unet3d-plan --input_dir {root}/data/train --output_filename {root}/planned.json --device cpu --workers 0",
        ("--nthreads must be 1 or more, got 0",), not_logged=PLAN_WORK),
    Bad("evaluate-missing-prediction-dir", lambda ws: None,
        "unet3d-evaluate --prediction_dir {root}/gone --label_dir {root}/data/train --no_hausdorff",
        ("--prediction_dir", "gone: not a folder"), not_logged=SCHEME_READ),
    Bad("evaluate-output-in-no-folder", fresh_predictions,
        "unet3d-evaluate --prediction_dir {root}/predicted --label_dir {root}/data/train --no_hausdorff "
        "--output_filename /proc/nope/evaluation.csv",
        (f"--output_filename {NOWHERE}/evaluation.csv: ",), not_logged=SCHEME_READ),
    Bad("evaluate-output-under-a-file", lambda ws: (fresh_predictions(ws), (ws.root / "afile").write_text("x")),
        "unet3d-evaluate --prediction_dir {root}/predicted --label_dir {root}/data/train --no_hausdorff "
        "--output_filename {root}/afile/evaluation.csv",
        ("--output_filename", "afile is a file, not a folder"), not_logged=SCHEME_READ),
    Bad("evaluate-set-without-config", fresh_predictions,
        "unet3d-evaluate --prediction_dir {root}/predicted --label_dir {root}/data/train --set dataset.labels=[1]",
        ("--set changes how a config is read: give --config_filename",), not_logged=SCHEME_READ),
    Bad("train-check-log-copy-in-no-folder", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --check --training_log_filename /proc/nope/log.csv",
        (f"--training_log_filename {NOWHERE}/log.csv: ",), leaves_no=("experiment/tiny",)),
    Bad("train-log-copy-in-no-folder", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --fold 1 --training_log_filename /proc/nope/log.csv",
        (f"--training_log_filename {NOWHERE}/log.csv: ",), not_logged=("epoch",), leaves_no=("experiment/tiny",)),
    Bad("train-fold-out-of-range-writes-nothing", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --fold 3",
        ("--fold 3: the config has folds 1 to 2",), leaves_no=("experiment/tiny",)),
    Bad("train-missing-input", lambda ws: ws.file("t2").unlink(),
        "unet3d-train --config_filename {config} --device cpu",
        ("1 data file(s) named in the config do not exist",), not_logged=("epoch",), leaves_no=("experiment/tiny",)),
    Bad("mlflow-server-unreachable", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --trackers mlflow",
        (f"MLFLOW_TRACKING_URI {UNREACHABLE}: the MLflow server does not answer",), not_logged=("epoch",),
        leaves_no=("experiment/tiny",), monkeypatch=lambda mp: mp.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)),
    Bad("mlflow-folder-store", lambda ws: None,
        "unet3d-train --config_filename {config} --device cpu --trackers mlflow --check",
        ("MLFLOW_TRACKING_URI file:///", "MLFLOW_ALLOW_FILE_STORE=true"), leaves_no=("experiment/tiny",),
        monkeypatch=lambda mp: (mp.setenv("MLFLOW_TRACKING_URI", "file:///tmp/unet3d-test-mlruns"),
                                mp.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False))),
    Bad("in-channels-of-another-count", lambda ws: ws.edit(lambda c: c["model"].update(in_channels=3)),
        "unet3d-train --config_filename {config} --device cpu",
        ("case 'BraTS20_Training_001' has 4 image(s) but the model takes 3 (config key 'model.in_channels')",),
        not_logged=("epoch",), leaves_no=("experiment/tiny/config.json",)),
    Bad("out-channels-of-another-count", lambda ws: ws.edit(lambda c: c["model"].update(out_channels=2)),
        "unet3d-train --config_filename {config} --device cpu",
        ("'model.out_channels' is 2 but label_mode \"regions\" with 3 labels needs 3",),
        leaves_no=("experiment/tiny",)),
    Bad("predict-output-dir-is-a-file", weights_and_a_file,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir {root}/afile",
        ("--output_dir", "afile: is a file, not a folder"), not_logged=("predicting",)),
    Bad("predict-output-directory-is-output-dir", weights_and_a_file,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_directory {root}/afile",
        ("--output_dir", "afile: is a file, not a folder"), not_logged=("predicting",)),
    Bad("predict-output-in-no-folder", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --group test "
        "--output_dir /proc/nope/predictions",
        (f"--output_dir {NOWHERE}/predictions: ",), not_logged=("predicting",)),
    Bad("predict-missing-images", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth "
        "--images {root}/a.nii.gz {root}/b.nii.gz {root}/c.nii.gz {root}/d.nii.gz --output_dir {root}/predictions",
        ("4 data file(s) given with --images do not exist",), not_logged=("predicting",)),
    Bad("export-output-in-no-folder", lambda ws: random_weights(ws.root / "model.pth"),
        "unet3d-export --config_filename {config} --model_filename {root}/model.pth --output_dir /proc/nope/export",
        (f"--output_dir {NOWHERE}/export: ",), not_logged=("vs PyTorch",)),
    Bad("dicom-no-slices-without-itk-warnings", lambda ws: ws.swap("flair", "flair_dicom").mkdir(),
        "unet3d-train --config_filename {config} --device cpu --check",
        ("flair_dicom: no DICOM slices",), script=True),  # ITK's C++ warning would come first, past Python's capture
    Bad("predict-nrrd-without-the-readers-refusals", nrrd_scans,
        "unet3d-predict --config_filename {config} --device cpu --model_filename {root}/model.pth --images "
        "{root}/scan_flair.nrrd {root}/scan_t1.nrrd {root}/scan_t1ce.nrrd {root}/scan_t2.nrrd "
        "--output_dir {root}/experiment",
        (": No space left on device",), monkeypatch=disk_error(errno.ENOSPC),
        not_logged=("unable to load",)),  # MONAI's LoadImage trying nibabel first, at INFO, and a blank line
    Bad("dicom-itk-missing", lambda ws: ws.swap("flair", "flair_dicom").mkdir(),
        "unet3d-train --config_filename {config} --device cpu",
        ("flair_dicom: DICOM series need ITK, which is not installed",),
        monkeypatch=lambda mp: mp.setitem(sys.modules, "itk", None)),
]

CORPUS = (CONFIG + DATA + ENVIRONMENT + CHECKPOINTS + CLI + REACH + DRY_RUN + VALUES + EXPORT + PLAN
          + LAST_RESORT + CHECK_FIRST)
MAINS = {"unet3d-train": train_main, "unet3d-predict": predict_main, "unet3d-evaluate": evaluate_main,
         "unet3d-export": export_main, "unet3d-plan": plan_main}


def command_line(bad, ws):
    """The program of ``bad``'s command and its arguments, the placeholders filled in from the workspace."""
    program, *args = shlex.split(bad.command)
    places = {"root": ws.root, "config": ws.config, "case": ws.root / CASE}
    return program, [arg.format(**places) for arg in args]


def test_the_corpus_is_large_and_named_uniquely():
    assert len(CORPUS) >= 40 and len({bad.name for bad in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("bad", CORPUS, ids=lambda bad: bad.name)
def test_bad_input_stops_with_one_line_and_changes_nothing(bad, workspace, capsys, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    bad.spoil(workspace)
    before = checksums(workspace.root)
    prog, args = command_line(bad, workspace)
    if bad.script:
        result = run(prog, *args, check=False)
        status, stderr = result.returncode, result.stderr
    else:
        if bad.monkeypatch:
            bad.monkeypatch(monkeypatch)
        with pytest.raises(SystemExit) as stop:
            MAINS[prog](args)
        monkeypatch.undo()
        status, stderr = stop.value.code, capsys.readouterr().err
    lines = stderr.strip().splitlines()
    logged = stderr if bad.script else "\n".join(record.getMessage() for record in caplog.records)
    for fragment in bad.not_logged:
        assert fragment not in logged, logged
    for path in bad.leaves_no:
        assert not (workspace.root / path).exists(), path
    assert status == bad.status, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), stderr
    for fragment in bad.fragments:
        assert fragment in lines[0], lines[0]
    after = checksums(workspace.root)
    assert {path: after.get(path) for path in before} == before  # nothing the user had changed or went away
    data = workspace.root / "data"
    assert {p for p in after if data in p.parents} == {p for p in before if data in p.parents}  # nor was added to the data
    if prog == "unet3d-predict":
        assert not (workspace.root / "predictions").exists()  # no output folder either
    if prog == "unet3d-export":
        assert set(after) == set(before)  # no file written


def test_one_label_without_foreground_is_a_warning(workspace, caplog):
    from unet3d.config.experiment import load_experiment
    from unet3d.data.files import preflight

    workspace.nifti("seg", np.zeros((24, 24, 24), np.uint8))
    experiment = load_experiment(workspace.config)
    cases = experiment.cases("training")
    preflight(cases, experiment.labels.values, cache_dir=workspace.root / "cache")
    preflight(cases, experiment.labels.values, cache_dir=workspace.root / "cache")  # the second run reads markers
    warnings = [r.message for r in caplog.records if "has no foreground" in r.message]
    assert len(warnings) == 2 and "BraTS20_Training_001_seg.nii.gz" in warnings[0] and "negative case" in warnings[0]


def test_debug_shows_the_traceback(tmp_path):
    result = run("unet3d-train", "--config_filename", tmp_path / "nope.json", "--debug", check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr
