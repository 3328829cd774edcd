"""A corpus of bad inputs: each gives exit status 2, one line naming the key or file, and changes no file.

Every file under the data and config folders is hashed before and after each command: none
may change or disappear, and no file may appear among the data.

Every case runs on its own copy of the tiny data set (``workspace``); its spoiler breaks
one thing (the config, a data file, the output folder, a checkpoint or the command line).
Most run ``main([...])`` in-process; those marked ``script`` run the console script.
Only ``--debug`` shows the traceback behind the one line.
"""

import errno
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from helpers import TINY_SETTINGS, convert_image, edit_config, run, write_config, write_dicom_series
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
    extra: list = field(default_factory=list)  # arguments a spoiler adds

    @property
    def config(self):
        return self.root / "experiment" / "tiny.json"

    def edit(self, change):
        edit_config(self.config, change)

    def nifti(self, name, array, affine=None):
        """Replace one file of the first case; its affine is kept unless given."""
        path = self.root / f"{CASE}_{name}.nii.gz"
        affine = nibabel.load(path).affine if affine is None else affine
        nibabel.save(nibabel.Nifti1Image(np.asarray(array), affine), path)

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


def tiny_weights(ws, name="model.pth", settings=None):
    """Weights of the tiny model (or of ``settings``) at ``ws.root/name``."""
    from unet3d.config.resolve import resolve

    torch.save(resolve("model", settings or TINY_SETTINGS["model"], "model").state_dict(), ws.root / name)
    return ws.root / name


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
    """One corpus entry: how to spoil the workspace, the command, and fragments of the one-line error."""

    name: str
    spoil: object
    fragments: tuple
    args: tuple = ()
    prog: str = "train"
    script: bool = False
    monkeypatch: object = None


def with_fold_dir(ws):
    (ws.root / "experiment" / "tiny").mkdir()


CONFIG = [
    Bad("malformed-json", lambda ws: ws.write_json('{\n  "model": {"name": "DynUNet",}\n}\n'),
        ("tiny.json:2:31: invalid JSON",), script=True),
    Bad("not-an-object", lambda ws: ws.write_json("[1, 2]"), ("expected a JSON object at the top level",)),
    Bad("nan-literal", lambda ws: ws.write_json(ws.config.read_text().replace('"lr": 0.01', '"lr": NaN')),
        ("tiny.json: NaN is not a JSON number",)),
    Bad("duplicate-key", lambda ws: ws.write_json(ws.config.read_text().replace('"lr": 0.01', '"lr": 0.01, "lr": 1')),
        ("tiny.json: key 'lr' is given twice in one object",)),
    Bad("deep-json", lambda ws: ws.write_json('{"model": ' + "[" * 100000 + "]" * 100000 + "}"),
        ("tiny.json: the JSON is nested too deeply",)),
    Bad("set-without-value", lambda ws: None, ("--set 'training.n_epochs': expected KEY.PATH=VALUE",),
        args=("--set", "training.n_epochs")),
    Bad("set-through-a-value", lambda ws: None, ("'training.n_epochs' holds", "not an object"),
        args=("--set", "training.n_epochs.x=1")),
    Bad("label-names-count", lambda ws: ws.edit(lambda c: c["dataset"].update(label_names=["WT"])),
        ("'dataset.label_names' must have one name per label",)),
    Bad("classes-without-background", lambda ws: ws.edit(lambda c: (c["dataset"].update(
        label_mode="classes", setup_label_hierarchy=False), c["loss"].update(sigmoid=False, softmax=True))),
        ("'model.out_channels' is 3", "background channel is missing")),
    Bad("regions-with-softmax", lambda ws: ws.edit(lambda c: c["loss"].update(sigmoid=False, softmax=True)),
        ("config key 'loss.softmax' is true but label_mode \"regions\" takes a sigmoid",)),
    Bad("freeze-nothing", lambda ws: ws.edit(lambda c: c["training"].update(freeze=["encoder"])),
        ("'training.freeze': 'encoder' starts no parameter name",)),
    Bad("bad-machine-config", lambda ws: (ws.root / "machine.json").write_text('{"n_gpu": 2}'),
        ("machine.json: unknown machine config key 'n_gpu'",), args=("--machine_config_filename", "{root}/machine.json")),
    Bad("empty-file", lambda ws: ws.write_json(""), ("tiny.json:1:1: invalid JSON",)),
    Bad("missing-config", lambda ws: ws.config.unlink(), ("tiny.json: config file not found",)),
    Bad("config-is-a-folder", lambda ws: (ws.config.unlink(), ws.config.mkdir()), ("cannot read config file",)),
    Bad("missing-model", lambda ws: ws.edit(lambda c: c.pop("model")), ("config key 'model' is missing",)),
    Bad("model-not-object", lambda ws: ws.edit(lambda c: c.update(model="DynUNet")),
        ("config key 'model' must be an object with a string 'name'",)),
    Bad("unknown-model", lambda ws: ws.edit(lambda c: c["model"].update(name="DynUNett")),
        ("config key 'model.name'", "closest matches: DynUNet")),
    Bad("bad-model-kwarg", lambda ws: ws.edit(lambda c: c["model"].update(filterz=[4, 8, 16])),
        ("config key 'model'", "'filterz'", "did you mean 'filters'")),
    Bad("missing-model-kwarg", lambda ws: ws.edit(lambda c: c["model"].pop("spatial_dims")),
        ("config key 'model': DynUNet needs 'spatial_dims'",)),
    Bad("model-wrong-kwarg-value", lambda ws: ws.edit(lambda c: c["model"].update(strides=[[1, 1, 1]])),
        ("config key 'model': DynUNet could not be built",)),
    Bad("loss-os-system", lambda ws: ws.edit(lambda c: c["loss"].update(name="os.system")),
        ("config key 'loss.name'", "not a valid loss name")),
    Bad("optimizer-kwarg", lambda ws: ws.edit(lambda c: c["optimizer"].update(learning_rate=0.1)),
        ("config key 'optimizer'", "'learning_rate'", "accepted: lr, betas")),
    Bad("nested-scheduler", lambda ws: ws.edit(lambda c: c.update(scheduler={
        "name": "SequentialLR", "milestones": [1], "schedulers": [{"name": "LinearLR"}, {"name": "subprocess.Popen"}]})),
        ("config key 'scheduler.schedulers[1].name'", "not a valid scheduler name")),
    Bad("misspelled-section", lambda ws: ws.edit(lambda c: c.update(trainig=c.pop("training"))),
        ("config key 'trainig' is not known", "did you mean 'training'")),
    Bad("misspelled-training-key", lambda ws: ws.edit(lambda c: c["training"].update(n_epoch=3)),
        ("config key 'training.n_epoch' is not known", "did you mean 'n_epochs'")),
    Bad("original-docs-spelling", lambda ws: ws.edit(lambda c: c["cross_validation"].update(fold=3)),
        ("config key 'cross_validation.fold' is not known", "did you mean 'folds'")),
    Bad("string-batch-size", lambda ws: ws.edit(lambda c: c["training"].update(batch_size="2")),
        ("config key 'training.batch_size' must be a positive integer, got \"2\"",)),
    Bad("zero-epochs", lambda ws: ws.edit(lambda c: c["training"].update(n_epochs=0)),
        ("config key 'training.n_epochs' must be a positive integer, got 0",)),
    Bad("negative-batch", lambda ws: ws.edit(lambda c: c["training"].update(batch_size=-1)),
        ("config key 'training.batch_size' must be a positive integer, got -1",)),
    Bad("zero-desired-shape", lambda ws: ws.edit(lambda c: c["dataset"].update(desired_shape=[16, 0, 16])),
        ("config key 'dataset.desired_shape' must be three positive integers",)),
    Bad("negative-patch", lambda ws: ws.edit(lambda c: c["dataset"].update(patch_size=-8)),
        ("config key 'dataset.patch_size' must be three positive integers",)),
    Bad("overlap-one", lambda ws: ws.edit(lambda c: c.update(prediction={"overlap": 1.0})),
        ("config key 'prediction.overlap' must be a number in [0, 1)",)),
    Bad("window-two-values", lambda ws: ws.edit(lambda c: c.update(prediction={"window": [8, 8]})),
        ("'prediction.window'", "three positive integers")),
    Bad("amp-fp8", lambda ws: ws.edit(lambda c: c["training"].update(amp="fp8")),
        ("config key 'training.amp' must be one of",)),
    Bad("unknown-tracker", lambda ws: ws.edit(lambda c: c["training"].update(trackers=["tensorboard", "wandb"])),
        ("config key 'training.trackers' holds 'wandb'; expected names among \"tensorboard\", \"mlflow\"",)),
    Bad("metric-mode", lambda ws: ws.edit(lambda c: c["training"].update(metric_mode="maximum")),
        ("config key 'training.metric_mode' must be one of \"min\", \"max\"",)),
    Bad("string-labels", lambda ws: ws.edit(lambda c: c["dataset"].update(labels=["1", "2"])),
        ("config key 'dataset.labels' must be a list of integers",)),
    Bad("normalization-name", lambda ws: ws.edit(lambda c: c["dataset"].update(normalization="NormaliseIntensityd")),
        ("config key 'dataset.normalization'", "NormalizeIntensityd")),
    Bad("augmentation-kwarg", lambda ws: ws.edit(lambda c: c["dataset"].update(
        spatial_augmentations=[{"name": "RandFlipd", "probability": 0.5}])),
        ("config key 'dataset.spatial_augmentations[0]'", "'probability' (did you mean 'prob'?)")),
    Bad("unknown-dataset", lambda ws: ws.edit(lambda c: c["dataset"].update(name="BratsDataset")),
        ("config key 'dataset.name': unknown dataset 'BratsDataset'",)),
    Bad("too-many-folds", lambda ws: ws.edit(lambda c: c["cross_validation"].update(n_folds=9)),
        ("cross_validation.n_folds", "9 folds need at least 9")),
    Bad("one-fold", lambda ws: ws.edit(lambda c: c["cross_validation"].update(n_folds=1)),
        ("config key 'cross_validation.n_folds' must be an integer of at least 2, got 1",)),
    Bad("group-by-missing", lambda ws: ws.edit(lambda c: c["cross_validation"].update(group_by="subject")),
        ("has no 'subject'", "cross_validation.group_by")),
    Bad("empty-training", lambda ws: ws.edit(lambda c: c.update(training_filenames=[])),
        ("config key 'training_filenames' must be a non-empty list",)),
    Bad("missing-training", lambda ws: ws.edit(lambda c: c.pop("training_filenames")),
        ("config key 'training_filenames' is missing",)),
    Bad("misspelled-group", lambda ws: ws.edit(lambda c: c.update(test_filename=c.pop("test_filenames"))),
        ("config key 'test_filename' is not known", "did you mean 'test_filenames'")),
    Bad("case-without-image", lambda ws: ws.edit(lambda c: c["test_filenames"][0].pop("image")),
        ("config key 'test_filenames'[0] must be an object with an 'image'",)),
    Bad("misspelled-label", lambda ws: ws.edit(lambda c: c["training_filenames"][1].update(
        lable=c["training_filenames"][1].pop("label"))),
        ("config key 'training_filenames[1].lable' is not known", "did you mean 'label'")),
    Bad("validation-and-folds", lambda ws: ws.edit(lambda c: c.update(validation_filenames=c["test_filenames"])),
        ("both 'cross_validation' and 'validation_filenames'",)),
    Bad("missing-decathlon", lambda ws: ws.edit(lambda c: (c.pop("training_filenames"), c.pop("test_filenames"),
                                                          c.update(decathlon_datalist="dataset.json"))),
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
    Bad("missing-image", lambda ws: ws.file("t1").unlink(), ("1 data file(s) named in the config do not exist",
                                                             "BraTS20_Training_001_t1.nii.gz")),
    Bad("missing-label", lambda ws: ws.edit(lambda c: c["training_filenames"][1].update(label="gone/seg.nii.gz")),
        ("1 data file(s) named in the config do not exist", "gone/seg.nii.gz")),
    Bad("empty-image", lambda ws: ws.file("t1").write_bytes(b""), ("BraTS20_Training_001_t1.nii.gz: cannot read",)),
    Bad("truncated-image", lambda ws: truncate(ws.file("t2")), ("BraTS20_Training_001_t2.nii.gz", "truncated")),
    Bad("truncated-label", lambda ws: truncate(ws.file("seg"), 0.3), ("BraTS20_Training_001_seg.nii.gz", "cannot read")),
    Bad("not-nifti", lambda ws: ws.file("flair").write_bytes(gzip.compress(b"hello, not an image")),
        ("BraTS20_Training_001_flair.nii.gz: cannot read as NIfTI",)),
    Bad("text-file", lambda ws: ws.file("flair").write_text("subject,age\n1,2\n"),
        ("BraTS20_Training_001_flair.nii.gz: cannot read as NIfTI",)),
    Bad("2d-image", lambda ws: ws.nifti("t1", np.zeros((24, 24), np.float32)), ("_t1.nii.gz is 2D", "expected a 3D volume")),
    Bad("4d-label", lambda ws: ws.nifti("seg", np.zeros((24, 24, 24, 2), np.uint8)), ("_seg.nii.gz is 4D",)),
    Bad("shape-mismatch", lambda ws: ws.nifti("t1ce", np.zeros((24, 24, 20), np.float32)), ("shapes differ",)),
    Bad("modality-elsewhere-of-another-shape", modality_elsewhere,
        ("case 'BraTS20_Training_001'", "shapes differ", "small_t2.nii.gz (10, 10, 10)")),
    Bad("affine-mismatch", lambda ws: ws.nifti("t2", ws.volume("t2"), np.diag([2.0, 1.0, 1.0, 1.0])),
        ("has another affine", "_t2.nii.gz")),
    Bad("nan-image", lambda ws: ws.nifti("flair", np.where(ws.volume("flair") > 0, np.nan, 0).astype(np.float32)),
        ("_flair.nii.gz contains NaN or infinite values",)),
    Bad("inf-image", lambda ws: ws.nifti("t1", np.full((24, 24, 24), np.inf, np.float32)),
        ("_t1.nii.gz contains NaN or infinite values",)),
    Bad("undeclared-label", lambda ws: ws.nifti("seg", np.where(ws.volume("seg") == 4, 3, ws.volume("seg")).astype(np.uint8)),
        ("_seg.nii.gz has label values 3 not in dataset.labels",)),
    Bad("no-foreground-anywhere", lambda ws: all_labels(ws, np.zeros_like),
        ("_seg.nii.gz has no foreground", "nor has any other label")),
    Bad("rgb-image", lambda ws: ws.nifti("t1", np.zeros((24, 24, 24), [("R", "u1"), ("G", "u1"), ("B", "u1")])),
        ("_t1.nii.gz holds rgb voxels; expected one number per voxel",)),
    Bad("corrupt-nrrd", corrupt_nrrd, ("_flair.nrrd: cannot read as NRRD", "parsed 2 values, but dimension is 3")),
    Bad("truncated-nrrd", lambda ws: truncate(ws.convert("flair", ".mha")), ("_flair.mha: cannot read its voxels",)),
    Bad("nan-geometry", nan_geometry, ("_t1.nrrd has a singular affine or one that is not finite",)),
    Bad("nrrd-of-another-grid", nrrd_of_another_grid, ("_t2.nrrd has another affine than BraTS20_Training_001_flair",)),
    Bad("dicom-two-series", dicom_series_of_two, ("flair_dicom: holds 2 DICOM series; expected one series per folder",)),
    Bad("dicom-no-slices", lambda ws: ws.swap("flair", "flair_dicom").mkdir(), ("flair_dicom: no DICOM slices",)),
    Bad("itk-missing", lambda ws: ws.convert("flair", ".nrrd"),
        ("_flair.nrrd: NRRD images need ITK, which is not installed: pip install \"unet3d-toolkit[formats]\"",),
        monkeypatch=lambda mp: mp.setitem(sys.modules, "itk", None)),
    Bad("duplicate-ids", lambda ws: ws.edit(lambda c: c["training_filenames"].append(c["training_filenames"][0])),
        ("two cases are both named 'BraTS20_Training_001'",)),
]

ENVIRONMENT = [
    Bad("output-under-a-file", lambda ws: (ws.root / "notes.txt").write_text("x"),
        ("notes.txt is a file, not a folder",), args=("--output_dir", "{root}/notes.txt/runs")),
    Bad("output-is-a-file", lambda ws: (ws.root / "runs").mkdir() or (ws.root / "runs" / "tiny").write_text("x"),
        ("runs/tiny is a file, not a folder",), args=("--output_dir", "{root}/runs")),
    Bad("output-unwritable", lambda ws: None, ("is not writable",),
        monkeypatch=lambda mp: mp.setattr(os, "access", lambda path, mode, **kw: False)),
    Bad("disk-full", lambda ws: (with_fold_dir(ws), (ws.root / "experiment" / "tiny" / "fold1.json").write_text("{}")),
        (": No space left on device",), monkeypatch=disk_error(errno.ENOSPC)),
    Bad("read-only-disk", lambda ws: None, ("cache/preflight/", "Read-only file system (nothing was replaced"),
        monkeypatch=disk_error(errno.EROFS)),
    Bad("quota-exceeded", lambda ws: None, ("cache/preflight/", "Disk quota exceeded (nothing was replaced"),
        monkeypatch=disk_error(errno.EDQUOT)),
    Bad("cache-is-a-file", lambda ws: (ws.root / "cache").write_text("x"), ("cache", "Not a directory"),
        args=("--cache_dir", "{root}/cache")),
    Bad("tracker-not-installed", lambda ws: None, ("training.trackers: tensorboard needs the tensorboard package: "
                                                   'pip install "unet3d-toolkit[tensorboard]"',),
        args=("--trackers", "tensorboard"), monkeypatch=lambda mp: mp.setitem(sys.modules, "tensorboard", None)),
]

CHECKPOINTS = [
    Bad("truncated-checkpoint", lambda ws: truncate(spoil_checkpoint(ws, {"model": {}, "epoch": 1, "rows": []})),
        ("fold1/checkpoint.pth: cannot read as a unet3d checkpoint", "--restart"), args=("--fold", "1")),
    Bad("checkpoint-of-another-config", lambda ws: spoil_checkpoint(ws, {"model": {}, "epoch": 1, "rows": [],
                                                                         "config_hash": {"model": "0"}}),
        ("checkpoint.pth: config key(s) model", "changed since this checkpoint"), args=("--fold", "1")),
    Bad("pickled-checkpoint", lambda ws: spoil_checkpoint(ws, {"model": {}, "hook": subprocess.Popen}),
        ("checkpoint.pth: cannot read as a unet3d checkpoint",), args=("--fold", "1")),
    Bad("weights-of-another-architecture", lambda ws: tiny_weights(ws, "other.pth", {
        "name": "UNet", "spatial_dims": 3, "in_channels": 4, "out_channels": 3, "channels": [4, 8], "strides": [2]}),
        ("other.pth: weights do not fit the config's model",), prog="predict", args=("--model_filename", "{root}/other.pth")),
    Bad("garbage-model-file", lambda ws: (ws.root / "model.pth").write_bytes(b"PK\x03\x04 not a zip"),
        ("model.pth: cannot read as a unet3d checkpoint",), prog="predict", args=("--model_filename", "{root}/model.pth")),
    Bad("text-model-file", lambda ws: (ws.root / "m.pth").write_bytes(b"not a checkpoint"),
        ("m.pth: cannot read as a unet3d checkpoint",), prog="predict", args=("--model_filename", "{root}/m.pth")),
    Bad("missing-model-file", lambda ws: None, ("gone.pth: model file not found",), prog="predict",
        args=("--model_filename", "{root}/gone.pth")),
]

CLI = [
    Bad("crossval-only-and-fold", lambda ws: None, ("--setup_crossval_only and --fold cannot be used together",),
        args=("--setup_crossval_only", "--fold", "1")),
    Bad("summarize-and-restart", lambda ws: None, ("--summarize and --restart cannot be used together",),
        args=("--summarize", "--restart")),
    Bad("check-and-restart", lambda ws: None, ("--check and --restart cannot be used together",), args=("--check", "--restart")),
    Bad("ngpus-zero", lambda ws: None, ("--ngpus must be 1 or more, got 0",), args=("--ngpus", "0"), script=True),
    Bad("negative-nthreads", lambda ws: None, ("--nthreads must be 0 or more",), args=("--nthreads", "-1")),
    Bad("fold-out-of-range", lambda ws: None, ("--fold 3: the config has folds 1 to 2",), args=("--fold", "3")),
    Bad("fold-without-folds", lambda ws: ws.edit(lambda c: c.pop("cross_validation")),
        ("--fold needs a 'cross_validation' section",), args=("--fold", "1")),
    Bad("slurm-without-setup", lambda ws: None, ("--slurm_time only applies",), args=("--slurm_time", "1:00:00")),
    Bad("trackers-flag", lambda ws: None, ("--trackers wandb: expected tensorboard or mlflow",),
        args=("--trackers", "wandb")),
    Bad("missing-plugin", lambda ws: None, ("--plugin lab_nets: cannot import it",), args=("--plugin", "lab_nets")),
    Bad("predict-overlap", lambda ws: tiny_weights(ws), ("--overlap 1.5: must be a number in [0, 1)",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--overlap", "1.5"), script=True),
    Bad("predict-activation", lambda ws: tiny_weights(ws), ("--activation softplus: must be one of \"sigmoid\", \"softmax\", \"none\"",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--activation", "softplus")),
    Bad("predict-output-format", lambda ws: tiny_weights(ws),
        ("--output_format dicom: must be one of \"nifti\", \"nrrd\", \"mha\"",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--output_format", "dicom")),
    Bad("predict-component-size", lambda ws: tiny_weights(ws), ("--min_component_size -1: must be an integer of at least 0",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--min_component_size", "-1")),
    Bad("predict-ngpus-zero", lambda ws: tiny_weights(ws), ("--ngpus must be 1 or more, got 0",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--ngpus", "0")),
    Bad("predict-ngpus-missing-model", lambda ws: None, ("gone.pth: model file not found",), prog="predict",
        args=("--model_filename", "{root}/gone.pth", "--ngpus", "2")),
    Bad("predict-unknown-group", lambda ws: tiny_weights(ws), ("no 'tset_filenames'", "training, test"), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--group", "tset")),
]

def earlier_export(ws):
    tiny_weights(ws)
    (ws.root / "export").mkdir()
    (ws.root / "export" / "manifest.json").write_text("{}")


EXPORT = [
    Bad("export-missing-weights", lambda ws: None, ("gone.pth: model file not found",), prog="export",
        args=("--model_filename", "{root}/gone.pth")),
    Bad("export-weights-of-another-architecture", lambda ws: tiny_weights(ws, "other.pth", {
        "name": "UNet", "spatial_dims": 3, "in_channels": 4, "out_channels": 3, "channels": [4, 8], "strides": [2]}),
        ("other.pth: weights do not fit the config's model",), prog="export", args=("--model_filename", "{root}/other.pth")),
    Bad("export-output-dir-is-a-file", lambda ws: (tiny_weights(ws), (ws.root / "export.txt").write_text("x")),
        ("export.txt: --output_dir is a file; expected a folder",), prog="export", args=("--output_dir", "{root}/export.txt")),
    Bad("export-over-an-earlier-export", earlier_export, ("export/manifest.json: exists", "--overwrite"), prog="export"),
    Bad("export-without-labels", lambda ws: (tiny_weights(ws), ws.edit(lambda c: c["dataset"].pop("labels"))),
        ("config key 'dataset.labels' is missing", "decode the network's outputs"), prog="export"),
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
        ("config key 'loss.name': PerceptualLoss", "'cache_dir'")),
    Bad("augmentation-saves-images", lambda ws: ws.edit(lambda c: c["dataset"].update(spatial_augmentations=[
        {"name": "SaveImaged", "output_dir": str(ws.root / "data" / "train"), "separate_folder": False}])),
        ("config key 'dataset.spatial_augmentations[0].name': SaveImaged", "'output_dir'")),
    Bad("augmentation-loads-images", lambda ws: ws.edit(lambda c: c["dataset"].update(intensity_augmentations=[
        {"name": "LoadImaged"}])), ("config key 'dataset.intensity_augmentations[0].name': LoadImaged", "'reader'")),
    Bad("normalization-writes-files", lambda ws: ws.edit(lambda c: c["dataset"].update(
        normalization="WriteFileMappingd", normalization_kwargs={"mapping_file_path": str(ws.config)})),
        ("config key 'dataset.normalization': WriteFileMappingd", "'mapping_file_path'")),
    Bad("model-downloads-weights", lambda ws: ws.edit(lambda c: c.update(model={
        "name": "FlexibleUNet", "in_channels": 4, "out_channels": 3, "backbone": "efficientnet-b0",
        "pretrained": True, "spatial_dims": 3})), ("config key 'model.name': FlexibleUNet", "'pretrained'")),
    Bad("case-id-into-the-data", lambda ws: set_test_case_id(ws, "../data/train/BraTS20_Training_002/x"),
        ("case id '../data/train/BraTS20_Training_002/x' cannot name an output file",)),
    Bad("case-id-dot-dot", lambda ws: set_test_case_id(ws, ".."), ("case id '..' cannot name an output file",)),
    Bad("case-id-empty", lambda ws: set_test_case_id(ws, ""), ("id must be a non-empty string",)),
    Bad("log-copy-over-the-config", lambda ws: None, ("--training_log_filename", "tiny.json: expected a new .csv file"),
        args=("--training_log_filename", "{root}/experiment/tiny.json", "--fold", "1")),
    Bad("predict-over-its-input", lambda ws: tiny_weights(ws), ("would overwrite an input file",), prog="predict",
        args=("--images", "{root}/" + CASE + "_flair.nii.gz", "{root}/" + CASE + "_t1.nii.gz", "{root}/" + CASE
              + "_t1ce.nii.gz", "{root}/" + CASE + "_t2.nii.gz", "--ids", "BraTS20_Training_001_seg", "--overwrite",
              "--output_dir", "{root}/" + CASE.rsplit("/", 1)[0])),
    Bad("evaluate-over-a-label", fresh_predictions, ("expected a new .csv file",), prog="evaluate",
        args=("--output_filename", "{root}/" + CASE + "_seg.nii.gz")),
    Bad("evaluate-over-the-config", fresh_predictions, ("expected a new .csv file",), prog="evaluate",
        args=("--output_filename", "{root}/experiment/tiny.json")),
    Bad("evaluate-against-itself", fresh_predictions, ("is its own reference label",), prog="evaluate",
        args=("--label_dir", "{root}/predicted")),
]

# Configs that --check passed but that stopped mid-run or trained on NaN.
DRY_RUN = [
    Bad("in-channels-of-another-count", lambda ws: ws.edit(lambda c: c["model"].update(in_channels=3)),
        ("model: DynUNet", "(1, 4, ")),
    Bad("model-of-2d", lambda ws: ws.edit(lambda c: c["model"].update(
        spatial_dims=2, strides=[[1, 1], [2, 2], [2, 2]], kernel_size=[[3, 3]] * 3, upsample_kernel_size=[[2, 2]] * 2)),
        ("model: DynUNet", "(1, 4, ")),
    Bad("optimizer-needs-closure", lambda ws: ws.edit(lambda c: c.update(optimizer={"name": "LBFGS"})),
        ("optimizer: LBFGS",)),
    Bad("loss-not-a-loss", lambda ws: ws.edit(lambda c: c.update(loss={"name": "ReLU"})), ("loss: ReLU",)),
    Bad("loss-not-a-number", lambda ws: ws.edit(lambda c: c.update(loss={"name": "BCEWithLogitsLoss",
                                                                         "reduction": "none"})),
        ("loss: BCEWithLogitsLoss", "not a single number")),
    Bad("loss-gives-nan", lambda ws: ws.edit(lambda c: c.update(loss={"name": "PoissonNLLLoss", "log_input": False})),
        ("loss: PoissonNLLLoss returned nan",)),
    Bad("weights-diverge", lambda ws: ws.edit(lambda c: (c.update(optimizer={"name": "SGD", "lr": 1e30}),
                                                         c["training"].update(batch_size=1))),
        ("epoch 1: the training loss is nan", "the weights diverged"), args=("--fold", "1")),
    Bad("scheduler-past-its-total", lambda ws: ws.edit(lambda c: c.update(scheduler={
        "name": "OneCycleLR", "max_lr": 0.01, "total_steps": 2, "step_per_batch": True})),
        ("scheduler: OneCycleLR", "step")),
    Bad("seed-beyond-64-bits", lambda ws: ws.edit(lambda c: c["training"].update(seed=2**70)),
        ("config key 'training.seed'",)),
    Bad("split-seed-beyond-64-bits", lambda ws: ws.edit(lambda c: c["cross_validation"].update(random_seed=-1)),
        ("config key 'cross_validation.random_seed'",)),
    Bad("shape-beyond-memory", lambda ws: ws.edit(lambda c: c["dataset"].update(desired_shape=[4096, 4096, 4096])),
        ("dataset.desired_shape", "GiB")),
]

VALUES = [
    Bad("all-zero-scan", lambda ws: ws.nifti("t1", np.zeros((24, 24, 24), np.float32)),
        ("_t1.nii.gz is all 0",)),
    Bad("singular-affine", singular_affine, ("_flair.nii.gz has a singular affine or one that is not finite",)),
    Bad("rgb-voxels", rgb, ("_t1.nii.gz", "rgb voxels", "one number per voxel")),
    Bad("beyond-float32", lambda ws: ws.nifti("t2", ws.volume("t2").astype(np.float64) * 1e300),
        ("_t2.nii.gz", "float32")),
    Bad("predict-negative-nthreads", lambda ws: tiny_weights(ws), ("--nthreads must be 0 or more",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--nthreads", "-1")),
    Bad("predict-threshold-above-one", lambda ws: tiny_weights(ws), ("--threshold 1.5",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--threshold", "1.5")),
    Bad("predict-threshold-zero", lambda ws: tiny_weights(ws), ("--threshold 0.0",), prog="predict",
        args=("--model_filename", "{root}/model.pth", "--threshold", "0")),
]


def nnunet(ws, change=None, n_cases=2):
    """A tiny nnU-Net raw dataset at ``ws.root/nn``, its dataset.json passed through ``change``."""
    root = write_synthetic_nnunet(ws.root / "nn", n_cases, shape=(16, 16, 8), n_test=0)
    if change:
        description = json.loads((root / "dataset.json").read_text())
        change(description)
        (root / "dataset.json").write_text(json.dumps(description))
    return root


NN = ("--input_dir", "{root}/nn")
PLAN = [
    Bad("plan-empty-folder", lambda ws: (ws.root / "empty").mkdir(), ("empty: no dataset found", "dataset.json"),
        prog="plan", args=("--input_dir", "{root}/empty"), script=True),
    Bad("plan-no-file-ending", lambda ws: nnunet(ws, lambda d: d.pop("file_ending")),
        ("nn/dataset.json: key 'file_ending' is missing",), prog="plan", args=NN),
    Bad("plan-no-labels", lambda ws: nnunet(ws, lambda d: d.pop("labels")),
        ("nn/dataset.json: key 'labels' is missing",), prog="plan", args=NN),
    Bad("plan-no-channel-names", lambda ws: nnunet(ws, lambda d: d.pop("channel_names")),
        ("nn/dataset.json: key 'channel_names' must be an object",), prog="plan", args=NN),
    Bad("plan-missing-channel-file", lambda ws: (nnunet(ws) / "imagesTr" / "case_001_0002.nii.gz").unlink(),
        ("case 'case_001' does not have one file per channel of dataset.json (4): missing case_001_0002.nii.gz",),
        prog="plan", args=NN),
    Bad("plan-more-channels-than-named", lambda ws: nnunet(ws, lambda d: d["channel_names"].pop("3")),
        ("does not have one file per channel of dataset.json (3): unexpected case_000_0003.nii.gz",),
        prog="plan", args=NN),
    Bad("plan-missing-label-file", lambda ws: (nnunet(ws) / "labelsTr" / "case_000.nii.gz").unlink(),
        ("labelsTr/case_000.nii.gz: label file missing for case 'case_000'",), prog="plan", args=NN),
    Bad("plan-unnamed-label-value", lambda ws: nnunet(ws, lambda d: d["labels"].pop("enhancing tumour")),
        ("the label maps hold value(s) [3] that the dataset's labels [1, 2] do not name",), prog="plan", args=NN),
    Bad("plan-regions-that-do-not-nest", lambda ws: nnunet(ws, lambda d: d.update(labels={
        "background": 0, "a": [1, 2], "b": [2, 3]})), ("regions 'a' [1, 2] and 'b' [2, 3] do not nest",),
        prog="plan", args=NN),
    Bad("plan-unreadable-image", lambda ws: truncate(nnunet(ws) / "imagesTr" / "case_000_0001.nii.gz"),
        ("case_000_0001.nii.gz: cannot read its voxels, the file may be truncated",), prog="plan", args=NN),
    Bad("plan-unsupported-file-ending", lambda ws: nnunet(ws, lambda d: d.update(file_ending=".tif")),
        ("nn/dataset.json: file_ending '.tif' is not supported (expected one of .nii.gz, .nii, .nrrd",),
        prog="plan", args=NN),
    Bad("plan-brats-missing-modality", lambda ws: ws.file("t1").unlink(),
        ("BraTS20_Training_001: no t1 image",), prog="plan"),
    Bad("plan-output-exists", lambda ws: (ws.root / "planned.json").write_text("{}"),
        ("planned.json exists; give --overwrite",), prog="plan"),
    Bad("plan-zero-budget", lambda ws: None, ("--budget_minutes must be above 0, got 0",), prog="plan",
        args=("--budget_minutes", "0")),
]

CORPUS = CONFIG + DATA + ENVIRONMENT + CHECKPOINTS + CLI + REACH + DRY_RUN + VALUES + EXPORT + PLAN
PROGRAMS = {"train": ("unet3d-train", train_main), "predict": ("unet3d-predict", predict_main),
            "evaluate": ("unet3d-evaluate", evaluate_main), "export": ("unet3d-export", export_main),
            "plan": ("unet3d-plan", plan_main)}


def command_line(bad, ws):
    if bad.prog == "plan":
        args = [a.format(root=ws.root) for a in bad.args]
        if "--input_dir" not in args:
            args += ["--input_dir", str(ws.root / "data" / "train")]
        return [*args, "--output_filename", str(ws.root / "planned.json"), "--device", "cpu"]
    args = ["--config_filename", str(ws.config), *(a.format(root=ws.root) for a in bad.args)]
    if bad.prog == "export":
        if "--model_filename" not in args:
            args += ["--model_filename", str(ws.root / "model.pth")]
        return args if "--output_dir" in args else [*args, "--output_dir", str(ws.root / "export")]
    if bad.prog == "evaluate":
        args += [] if "--label_dir" in args else ["--group", "training"]
        return [*args, "--prediction_dir", str(ws.root / "predicted"), "--no_hausdorff"]
    if "--device" not in args:
        args += ["--device", "cpu"]
    if bad.prog == "predict":
        if "--model_filename" not in args:
            args += ["--model_filename", str(ws.root / "model.pth")]
        if "--group" not in args and "--images" not in args:
            args += ["--group", "test"]
        if "--output_dir" not in args:
            args += ["--output_directory", str(ws.root / "predictions")]
    return args


def test_the_corpus_is_large_and_named_uniquely():
    assert len(CORPUS) >= 40 and len({bad.name for bad in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("bad", CORPUS, ids=lambda bad: bad.name)
def test_bad_input_stops_with_one_line_and_changes_nothing(bad, workspace, capsys, monkeypatch):
    bad.spoil(workspace)
    before = checksums(workspace.root)
    prog, main = PROGRAMS[bad.prog]
    args = command_line(bad, workspace)
    if bad.script:
        result = run(prog, *args, check=False)
        status, stderr = result.returncode, result.stderr
    else:
        if bad.monkeypatch:
            bad.monkeypatch(monkeypatch)
        with pytest.raises(SystemExit) as stop:
            main(args)
        monkeypatch.undo()
        status, stderr = stop.value.code, capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), stderr
    for fragment in bad.fragments:
        assert fragment in lines[0], lines[0]
    after = checksums(workspace.root)
    assert {path: after.get(path) for path in before} == before  # nothing the user had changed or went away
    data = workspace.root / "data"
    assert {p for p in after if data in p.parents} == {p for p in before if data in p.parents}  # nor was added to the data
    if bad.prog == "predict":
        assert not (workspace.root / "predictions").exists()  # no output folder either
    if bad.prog == "export":
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
