"""Synthetic BraTS-style cases: four MRI modalities and a nested tumour label map.

Each case is written in a BraTS layout: 2020 and 2021 name files
``<root>/<id>/<id>_{flair,t1,t1ce,t2,seg}.nii.gz``, 2023 ``<id>-{t2f,t1n,t1c,t2w,seg}.nii.gz``;
with labels 1 (necrosis), 2 (edema) and 4 (enhancing tumour) on a zero background, so
that WT ⊇ TC ⊇ ET. Tumours are irregular blobs whose core is off the whole tumour's
centre, and the necrosis inside the core is off the core's centre in turn; some cases
have no enhancing tumour. Each case scales every tissue's mean intensity by its own random
factor, so the intensity ranges of regions overlap across cases; volumes carry tissue
texture, a smooth bias field and noise, so a model has to combine the modalities and look
at shape, not threshold one image.
"""

import json
from pathlib import Path

import nibabel
import numpy as np
import torch

MODALITIES = ("flair", "t1", "t1ce", "t2")
BRATS_SHAPE = (240, 240, 155)  # BraTS's 1 mm grid, in voxels
# File name of each modality, and the separator after the case id, per BraTS release.
NAMING = {
    "2020": ("_", dict(zip(MODALITIES, MODALITIES))),
    "2021": ("_", dict(zip(MODALITIES, MODALITIES))),
    "2023": ("-", dict(zip(MODALITIES, ("t2f", "t1n", "t1c", "t2w")))),
}

# Mean intensity of (background brain, edema, necrosis, enhancing) per modality.
CONTRAST = {
    "flair": (0.45, 0.95, 0.70, 0.80),
    "t1": (0.55, 0.45, 0.20, 0.50),
    "t1ce": (0.50, 0.50, 0.25, 1.10),
    "t2": (0.40, 0.90, 1.05, 0.75),
}


def smooth_noise(rng, shape, cells=4):
    """Smooth random field in [-1, 1]: random values on a coarse grid, upsampled trilinearly."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, size=(1, 1, cells, cells, cells)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)
    return field[0, 0].numpy()


def blob(rng, grid, centre, radii, roughness=0.25):
    """A boolean ellipsoid around ``centre`` whose surface is perturbed by smooth noise."""
    distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return distance < 1 + roughness * smooth_noise(rng, distance.shape, cells=5)


def synthetic_case(shape, rng, enhancing=True):
    """Return ``(images, label)``: a dict of four float32 volumes and a uint8 label map."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    size = np.array(shape, dtype=np.float32)
    brain = blob(rng, grid, size / 2, size * 0.42, roughness=0.1)
    tumour_centre = size / 2 + rng.uniform(-0.12, 0.12, 3) * size
    whole = blob(rng, grid, tumour_centre, size * rng.uniform(0.13, 0.22, 3), roughness=0.4) & brain
    core_centre = tumour_centre + rng.uniform(-0.07, 0.07, 3) * size
    core = blob(rng, grid, core_centre, size * rng.uniform(0.07, 0.12, 3), roughness=0.35) & whole
    label = np.zeros(shape, dtype=np.uint8)
    label[whole] = 2
    label[core] = 1
    if enhancing:
        necrosis_centre = core_centre + rng.uniform(-0.025, 0.025, 3) * size
        inner = blob(rng, grid, necrosis_centre, size * rng.uniform(0.035, 0.06, 3), roughness=0.35) & core
        label[core & ~inner] = 4

    bias = 1 + 0.3 * smooth_noise(rng, shape, cells=3)
    images = {}
    for modality in MODALITIES:
        # A per-case gain for each tissue: one case's edema can be as bright as another's enhancing tumour.
        means = np.asarray(CONTRAST[modality], dtype=np.float32) * rng.uniform(0.85, 1.15, 4).astype(np.float32)
        volume = np.full(shape, means[0], dtype=np.float32)
        for value, mean in ((2, means[1]), (1, means[2]), (4, means[3])):
            volume[label == value] = mean
        volume += 0.1 * smooth_noise(rng, shape, cells=8)  # tissue texture
        volume = volume * bias + rng.normal(0, 0.08, shape).astype(np.float32)
        volume[~brain] = 0
        images[modality] = np.clip(volume, 0, None) * 1000
    return images, label


def write_synthetic_brats(root, n_cases, shape=(48, 48, 48), seed=0, prefix="BraTS20_Training",
                          with_label=True, spacing=(1.0, 1.0, 1.0), dtype="float32", no_enhancing_every=4,
                          orientation="RAS", naming="2020", suffix=".nii.gz"):
    """Write ``n_cases`` synthetic cases under ``root``; returns their folders.

    Args:
        root: output folder (created).
        n_cases: number of cases, named ``<prefix>_001`` onwards (2021: ``BraTS2021_00001``,
            2023: ``BraTS-GLI-00001-000``).
        shape: volume shape in voxels (BraTS: 240, 240, 155).
        seed: cases are a pure function of the seed and their index.
        with_label: also write the ``seg`` label map.
        spacing: voxel size in millimetres, e.g. anisotropic (1, 1, 3).
        dtype: on-disk type of the images, e.g. ``float32`` or ``int16``.
        no_enhancing_every: every n-th case has no enhancing tumour (0: never).
        orientation: ``RAS`` or ``LPS`` (BraTS's own): the direction of the voxel axes in the affine.
        naming: BraTS release whose file names to use: ``2020``, ``2021`` or ``2023``.
        suffix: ``.nii.gz`` or ``.nii``.
    """
    if orientation not in ("RAS", "LPS") or naming not in NAMING:
        raise ValueError(f"unsupported orientation {orientation!r} or naming {naming!r}")
    root = Path(root)
    signs = [1.0, 1.0, 1.0] if orientation == "RAS" else [-1.0, -1.0, 1.0]
    affine = np.diag([s * v for s, v in zip(signs, spacing)] + [1.0])
    affine[:3, 3] = [-s * v * (n - 1) / 2 for s, v, n in zip(signs, spacing, shape)]  # centred on the origin
    separator, file_names = NAMING[naming]
    folders = []
    for index in range(1, n_cases + 1):
        rng = np.random.default_rng([seed, index])
        enhancing = not (no_enhancing_every and index % no_enhancing_every == 0)
        images, label = synthetic_case(tuple(shape), rng, enhancing=enhancing)
        case_id = {"2020": f"{prefix}_{index:03d}", "2021": f"BraTS2021_{index:05d}",
                   "2023": f"BraTS-GLI-{index:05d}-000"}[naming]
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        for modality, volume in images.items():
            path = folder / f"{case_id}{separator}{file_names[modality]}{suffix}"
            nibabel.save(nibabel.Nifti1Image(volume.astype(dtype), affine), path)
        if with_label:
            nibabel.save(nibabel.Nifti1Image(label, affine), folder / f"{case_id}{separator}seg{suffix}")
        folders.append(folder)
    return folders


def brats_shape(spacing):
    """The shape of BraTS's 240 x 240 x 155 mm field of view at ``spacing`` mm (2: 120 x 120 x 78)."""
    return tuple(int(np.ceil(n / spacing)) for n in BRATS_SHAPE)


NNUNET_CLASSES = {2: 1, 1: 2, 4: 3}  # BraTS label -> exclusive class: edema 1, necrosis 2, enhancing tumour 3


def write_synthetic_nnunet(root, n_cases, shape=(32, 32, 12), spacing=(0.9, 0.9, 2.5), n_test=2, seed=0):
    """Write an nnU-Net v2 raw dataset of synthetic cases under ``root``; returns ``root``.

    ``imagesTr/case_<i>_000<c>.nii.gz`` for the four modalities, ``labelsTr/case_<i>.nii.gz``
    with three exclusive classes (edema 1, necrosis 2, enhancing tumour 3), ``n_test`` cases
    in ``imagesTs/`` and ``dataset.json``.
    """
    root = Path(root)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    for index in range(n_cases + n_test):
        images, label = synthetic_case(tuple(shape), np.random.default_rng([seed, index]))
        test = index >= n_cases
        case = f"case_{index:03d}"
        for channel, volume in enumerate(images.values()):
            nibabel.save(nibabel.Nifti1Image(volume, affine),
                         root / ("imagesTs" if test else "imagesTr") / f"{case}_{channel:04d}.nii.gz")
        if not test:
            classes = np.zeros(label.shape, np.uint8)
            for value, target in NNUNET_CLASSES.items():
                classes[label == value] = target
            nibabel.save(nibabel.Nifti1Image(classes, affine), root / "labelsTr" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
        "labels": {"background": 0, "edema": 1, "necrosis": 2, "enhancing tumour": 3},
        "numTraining": n_cases, "file_ending": ".nii.gz"}, indent=2))
    return root
