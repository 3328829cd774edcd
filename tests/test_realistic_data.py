"""Realistic synthetic BraTS cases (unet3d.data.realistic): brains from nilearn's MNI template with tumours."""

import importlib.util

import nibabel
import numpy as np
import pytest
from scipy import ndimage

from unet3d.data.realistic import CLASSES, MODALITIES, realistic_case, template_folder, write_realistic_brats
from unet3d.errors import UserError

needs_nilearn = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                reason="the realistic cases are made from nilearn's MNI template")
SPACING = 4.0


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two cases at 4 mm, the second without enhancing tumour, as ``{case id: {kind: array}}``."""
    root = tmp_path_factory.mktemp("realistic")
    folders = write_realistic_brats(root, 2, spacing=SPACING, seed=3, no_enhancing_every=2)
    assert [f.name for f in folders] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    read = {}
    for folder in folders:
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted(f"{folder.name}_{k}.nii.gz" for k in (*MODALITIES, "seg"))
        read[folder.name] = {k: nibabel.load(folder / f"{folder.name}_{k}.nii.gz") for k in (*MODALITIES, "seg")}
    return read


@needs_nilearn
def test_cases_are_brats_label_maps_of_tumours_inside_the_brain(cases):
    for name, images in cases.items():
        label = np.asarray(images["seg"].dataobj)
        assert label.dtype == np.uint8 and label.shape == (60, 60, 39)
        assert images["seg"].header.get_zooms() == (SPACING,) * 3
        assert set(np.unique(label)) <= {0, 1, 2, 4} and (label == 2).sum() > 0
        flair = np.asarray(images["flair"].dataobj)
        brain = flair > 0  # skull-stripped: zero outside the brain
        assert 0.1 < brain.mean() < 0.6
        assert brain[label > 0].all()
        for modality in MODALITIES:
            assert np.array_equal(np.asarray(images[modality].dataobj) > 0, brain)
    assert (np.asarray(cases["BraTS20_Training_001"]["seg"].dataobj) == 4).any()
    no_enhancing = np.asarray(cases["BraTS20_Training_002"]["seg"].dataobj)
    assert not (no_enhancing == 4).any() and (no_enhancing == 1).any()


@needs_nilearn
def test_modalities_follow_the_tissue_classes_and_cases_are_seeded():
    images, label, affine, parts = realistic_case((SPACING,) * 3, 3, 1)
    pure = {name: parts[CLASSES.index(name)] > 0.8 for name in ("csf", "gm", "wm")}
    mean = {m: {name: images[m][mask].mean() for name, mask in pure.items()} for m in MODALITIES}
    assert mean["t1"]["wm"] > mean["t1"]["gm"] > mean["t1"]["csf"]
    assert mean["t2"]["csf"] > mean["t2"]["gm"] > mean["t2"]["wm"]
    assert mean["flair"]["csf"] < mean["flair"]["wm"]
    edema = label == 2
    for modality in ("t2", "flair"):
        assert images[modality][edema].mean() > mean[modality]["wm"] * 1.2
    assert images["t1ce"][label == 4].mean() > 1.2 * mean["t1ce"]["wm"]
    again = realistic_case((SPACING,) * 3, 3, 1)
    assert np.array_equal(again[1], label) and all(np.array_equal(again[0][m], images[m]) for m in MODALITIES)
    other = realistic_case((SPACING,) * 3, 4, 1)
    assert not np.array_equal(other[1], label)


@needs_nilearn
def test_tumours_push_the_tissue_around_them_aside():
    _, label, _, pushed = realistic_case((SPACING,) * 3, 3, 1)
    _, _, _, unpushed = realistic_case((SPACING,) * 3, 3, 1, mass_effect=(0, 0))
    distance = ndimage.distance_transform_edt(label == 0) * SPACING  # mm to the nearest tumour voxel
    healthy = slice(0, 3)  # CSF, grey and white matter
    change = np.abs(pushed[healthy] - unpushed[healthy]).sum(axis=0)
    near, far = change[(distance > 0) & (distance < 12)].mean(), change[distance > 60].mean()
    assert near > 0.05 and near > 4 * far


def test_without_nilearn_the_error_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'pip install "unet3d-toolkit\[examples\]"'):
        template_folder()
