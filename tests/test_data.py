"""Case ids, label channels, preprocessing and fold splits."""

import numpy as np
import pytest
import torch

from unet3d.config.experiment import case_id, make_case
from unet3d.config.labels import LabelScheme
from unet3d.config.settings import DatasetSettings
from unet3d.data.brats import brats_cases
from unet3d.data.patches import LabelTargetsd
from unet3d.data.stored import compact, expand
from unet3d.data.transforms import preprocessing
from unet3d.runs.folds import split_folds

BRATS = LabelScheme.brats()


def test_case_ids_come_from_the_shared_modality_prefix():
    assert case_id(["/d/BraTS20_Training_001/BraTS20_Training_001_flair.nii",
                    "/d/BraTS20_Training_001/BraTS20_Training_001_t1ce.nii"]) == "BraTS20_Training_001"
    assert case_id(["/d/imagesTr/liver_7_0000.nii.gz"]) == "liver_7_0000"


def test_case_ids_drop_image_suffixes_only():
    assert case_id(["/d/case.nii.gz"]) == "case" and case_id(["/d/case.NRRD"]) == "case"
    assert case_id(["/d/case.mhd"]) == "case" and case_id(["/d/case.nii"]) == "case"
    assert case_id(["/d/notes.tar.gz"]) == "notes.tar.gz"


def test_brats_hierarchy_round_trips():
    label = np.array([0, 2, 1, 4, 2, 0])
    masks = BRATS.masks(label)
    assert masks.astype(int).tolist() == [[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0]]
    assert BRATS.decode(masks.astype(float)).tolist() == label.tolist()
    assert BRATS.masks(torch.as_tensor(label)).tolist() == masks.tolist()
    assert BRATS.names == ["WT", "TC", "ET"]
    assert LabelScheme((1, 3)).names == ["label1", "label3"]


def test_inner_regions_are_decoded_only_inside_outer_ones():
    # WT, TC, ET channels: TC and ET fire outside WT at voxels 0 and 1, ET outside TC at voxel 2.
    probabilities = np.array([[0.1, 0.2, 0.9, 0.9, 0.9], [0.9, 0.1, 0.2, 0.9, 0.8], [0.1, 0.9, 0.9, 0.1, 0.7]])
    assert BRATS.decode(probabilities).tolist() == [0, 0, 2, 1, 4]


def test_plain_labels_decode_to_the_most_probable_label_above_threshold():
    probabilities = np.array([[0.9, 0.2, 0.3], [0.6, 0.7, 0.1]])
    assert LabelScheme((1, 3)).decode(probabilities).tolist() == [1, 3, 0]


def test_labels_stay_binary_after_crop_and_resize(brats_data):
    case = brats_cases(brats_data / "train")[0]
    settings = DatasetSettings.parse({"normalization": "NormalizeIntensityD", "crop_foreground": True,
                                      "resample": True, "desired_shape": [19, 13, 17]}, "dataset")
    item = preprocessing(settings)(case)
    assert item["image"].shape == (4, 19, 13, 17) and item["label"].shape == (1, 19, 13, 17)
    assert set(torch.unique(item["label"]).tolist()) <= {0.0, 1.0, 2.0, 4.0}  # label values, resized by nearest
    targets = expand(compact(item, BRATS.values), BRATS)["label"]
    assert targets.shape == (3, 19, 13, 17) and set(torch.unique(targets).tolist()) == {0.0, 1.0}
    wt, tc, et = targets
    assert torch.all(tc <= wt) and torch.all(et <= tc)


def test_label_targets_keep_the_affine():
    from monai.data import MetaTensor

    label = MetaTensor(torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]]), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = LabelTargetsd(BRATS)({"label": label})["label"]
    assert out.shape == (3, 1, 2, 2) and torch.equal(out.affine, label.affine)
    assert out.tolist() == BRATS.targets(label.as_tensor()[0]).tolist()


@pytest.mark.parametrize("n_cases, n_folds", [(10, 2), (11, 3), (5, 5)])
def test_folds_cover_every_case_once_with_even_sizes(n_cases, n_folds):
    entries = [make_case({"image": [f"/d/case{i:02d}_t1.nii"]}) for i in range(n_cases)]
    folds = split_folds(entries, n_folds, seed=25)
    flat = sorted(i for fold in folds for i in fold)
    assert flat == list(range(n_cases))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert split_folds(entries, n_folds, seed=25) == folds


def test_wrapped_monai_transforms_draw_apart_from_the_one_that_decides_to_fire():
    # RandScaleIntensityd hands its seed to RandScaleIntensity: the draw below prob 0.5 that fires it would also be
    # the factor's, which then was never above 1.
    from monai.transforms import Compose, RandScaleIntensityd
    from unet3d.data.transforms import seed_transforms

    scale = RandScaleIntensityd("image", factors=0.1, prob=0.5)
    factors = []
    for seed in range(400):
        seed_transforms(Compose([scale]), seed)
        scale.randomize(None)
        if scale._do_transform:
            scale.scaler.randomize(None)
            factors.append(scale.scaler.factor)
    assert min(factors) < -0.05 and max(factors) > 0.05
