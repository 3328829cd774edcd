"""Training items as the network sees them, written as NIfTI for a look (3DUnetCNN's ``--n_examples``)."""

import logging
from pathlib import Path

import nibabel
import numpy as np
from monai.data import decollate_batch

from unet3d.atomic import atomic_path
from unet3d.data.dataset import build_dataset
from unet3d.data.loaders import batches, make_loader, start_epoch

log = logging.getLogger("unet3d")
FOLDER = "data_loader_testing"


def write_examples(experiment, work_dir, n, cache_dir=None):
    """Write ``n`` training items after preprocessing, patches and augmentation to ``<work_dir>/data_loader_testing/``:
    ``<k>_<case id>_input.nii.gz`` (channels last) and ``..._target.nii.gz``; returns the folder."""
    dataset = build_dataset(experiment.dataset, experiment.labels, experiment.labelled_cases("training"), "training",
                            cache_dir)
    loader = make_loader(dataset, 1, shuffle=True, num_workers=0, seed=experiment.training.seed)
    folder, written, epoch = Path(work_dir) / FOLDER, 0, 1
    while written < n:
        start_epoch(loader, experiment.training.seed, epoch)
        with batches(loader) as iterator:
            for batch in iterator:
                for item in decollate_batch(batch):
                    stem = f"{written + 1:03d}_{item['id']}"
                    _save(item["image"], folder / f"{stem}_input.nii.gz")
                    _save(item["label"], folder / f"{stem}_target.nii.gz")
                    written += 1
                    if written == n:
                        break
                if written == n:
                    break
        epoch += 1
    log.info("wrote %d input/target examples to %s", n, folder)
    return folder


def _save(tensor, path):
    """A (C, X, Y, Z) MetaTensor as NIfTI with its affine: channels last, one channel as a 3D volume."""
    array = tensor.detach().cpu().numpy().astype(np.float32)
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    with atomic_path(path) as tmp:
        nibabel.save(nibabel.Nifti1Image(array, np.asarray(tensor.affine, dtype=np.float64)), tmp)
