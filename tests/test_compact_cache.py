"""The compact cache (float16 image, one label channel, foreground locations) and patches read from it."""

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms.utils import generate_pos_neg_label_crop_centers, map_binary_to_indices

from unet3d.config.labels import LabelScheme
from unet3d.data.cache import CACHE_VERSION, PreprocessingCache
from unet3d.data.patches import RandForegroundPatchd
from unet3d.data.stored import FLOAT16_LIMIT, compact, expand, image_dtype

BRATS = LabelScheme.brats()


def labelled_volume(shape=(30, 28, 24), seed=0):
    """A preprocessed-looking item: normalised image, nested BraTS labels in a ball, an off-centre affine."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    distance = np.sqrt(((grid - np.array([10, 12, 9])[:, None, None, None]) ** 2).sum(0))
    label = np.zeros(shape, np.float32)
    label[distance < 7] = 2
    label[distance < 4] = 1
    label[distance < 2] = 4
    affine = torch.tensor([[1.5, 0, 0, -20.0], [0, 1.5, 0, 7.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]], dtype=torch.float64)
    image = rng.normal(size=(4, *shape)).astype(np.float32)
    return {"id": "case", "image": MetaTensor(torch.from_numpy(image), affine=affine),
            "label": MetaTensor(torch.from_numpy(label[None]), affine=affine)}


def test_float16_only_where_values_fit():
    assert image_dtype(np.array([-4.5, 0.0, 12.25]))[0] == np.float16
    dtype, reason = image_dtype(np.array([0.0, 3000.0]), "scan.nii.gz")
    assert dtype == np.float32 and "scan.nii.gz" in reason and "3000" in reason
    assert image_dtype(np.array([0.0, np.inf]))[0] == np.float32
    raw = compact({"image": torch.full((1, 4, 4, 4), FLOAT16_LIMIT + 1)})
    assert raw["image"].dtype == np.float32 and "label" not in raw


def test_cache_entry_is_compact_and_reads_back_what_was_stored(tmp_path):
    item = labelled_volume()
    stored = compact(item, BRATS.values)
    assert stored["image"].dtype == np.float16 and stored["label"].dtype == np.uint8 and stored["label"].ndim == 3
    assert {value: count for value, (_, count) in stored["locations"].items()} == {
        value: int((item["label"] == value).sum()) for value in (2, 1, 4)}

    class Case:
        id, files, images = "case", (), ("scan.nii.gz",)

        def as_dict(self):
            return item

    calls = []
    cache = PreprocessingCache(tmp_path, lambda case: calls.append(1) or compact(case, BRATS.values), {"k": 1})
    first, second = cache.load(Case()), cache.load(Case())
    assert len(calls) == 1
    (entry,) = tmp_path.iterdir()
    assert json.loads((entry / "meta.json").read_text())["image_dtype"] == "float16"
    float32_crop = item["image"].numel() * 4
    assert sum(f.stat().st_size for f in entry.iterdir()) < 0.8 * float32_crop  # random noise: compression's worst case
    for got in (first, second):
        np.testing.assert_array_equal(got["image"][:], stored["image"])
        np.testing.assert_array_equal(got["label"][:], stored["label"])
        for value, (points, count) in stored["locations"].items():
            np.testing.assert_array_equal(got["locations"][value][0], points)
            assert got["locations"][value][1] == count
    assert CACHE_VERSION >= 2  # entries of the float32 format live under other keys and are never read


def test_patches_are_the_stored_volume_cut_with_its_affine_and_targets():
    item = labelled_volume()
    stored = compact(item, BRATS.values)
    whole = expand(stored, BRATS)
    assert torch.equal(whole["label"].as_tensor(), BRATS.targets(item["label"][0]).as_tensor())
    assert torch.equal(whole["image"].as_tensor(), item["image"].as_tensor().half().float())
    sampler = RandForegroundPatchd(BRATS, (8, 10, 6), foreground_share=0.5, num_samples=3)
    sampler.set_random_state(5)
    for patch in sampler(stored):
        assert patch["image"].shape == (4, 8, 10, 6) and patch["label"].shape == (3, 8, 10, 6)
        # The patch's affine places it where it was cut: find its start by matching the image.
        start = torch.linalg.solve(item["image"].affine, patch["image"].affine[:, 3])[:3].round().int().tolist()
        box = tuple(slice(s, s + n) for s, n in zip(start, (8, 10, 6)))
        assert torch.equal(patch["image"].as_tensor(), whole["image"].as_tensor()[(slice(None), *box)])
        assert torch.equal(patch["label"].as_tensor(), whole["label"].as_tensor()[(slice(None), *box)])


@pytest.mark.parametrize("share", [0.33, 1.0])
def test_patch_centres_are_drawn_as_monai_draws_them(share):
    """Foreground share and where centres land match RandCropByPosNegLabeld's, from the stored index alone."""
    item = labelled_volume()
    stored = compact(item, BRATS.values)
    label = item["label"][0].numpy()
    size, shape, draws = (8, 8, 8), label.shape, 3000
    foreground, background = map_binary_to_indices(torch.as_tensor(label[None] > 0))
    theirs = generate_pos_neg_label_crop_centers(size, draws, share, shape, foreground, background,
                                                 np.random.RandomState(0), allow_smaller=True)
    sampler = RandForegroundPatchd(BRATS, size, share)
    sampler.set_random_state(0)
    ours = [sampler.centre(stored) for _ in range(draws)]
    expected = {0: 1 - share, **{value: share * np.mean(label[label > 0] == value) for value in (2, 1, 4)}}
    for centres in (theirs, ours):
        landed = np.array([label[tuple(int(c) for c in centre)] for centre in centres])
        for value, probability in expected.items():
            assert abs(np.mean(landed == value) - probability) < 0.03, (value, centres is ours)
    # Corrected centres keep patches inside the volume, as MONAI's do.
    from monai.transforms.utils import correct_crop_centers

    corrected = np.array([correct_crop_centers(list(c), size, shape, True) for c in ours])
    assert (corrected - 4 >= 0).all() and (corrected + 4 <= np.array(shape)).all()
    assert np.abs(np.mean(np.array(theirs, float), 0) - np.mean(corrected, 0)).max() < 1.0


@pytest.mark.parametrize("values", [(2, 1, 4), (2, 1)])
def test_patch_centres_by_class_give_each_label_value_in_the_case_an_equal_share(values):
    """``dataset.foreground_sampling: "classes"``: the small enhancing core (33 voxels of 1,400) is centred on as
    often as the edema around it, as nnU-Net samples; a value not in the case takes no share."""
    item = labelled_volume()
    label = item["label"][0].numpy()
    if 4 not in values:
        label[label == 4] = 1
    stored = compact(item, BRATS.values)
    sampler = RandForegroundPatchd(BRATS, (8, 8, 8), 0.6, by_class=True)
    sampler.set_random_state(0)
    landed = np.array([label[sampler.centre(stored)] for _ in range(3000)])
    assert abs(np.mean(landed == 0) - 0.4) < 0.03
    for value in values:
        assert abs(np.mean(landed == value) - 0.6 / len(values)) < 0.03, value
    assert np.mean(label[label > 0] == 4) < 0.03 or 4 not in values


def test_a_case_without_foreground_gets_background_patches():
    item = labelled_volume()
    item["label"] = item["label"] * 0
    sampler = RandForegroundPatchd(BRATS, (8, 8, 8), foreground_share=1.0, num_samples=4)
    sampler.set_random_state(1)
    patches = sampler(compact(item, BRATS.values))
    assert len(patches) == 4 and all(patch["label"].sum() == 0 for patch in patches)


@pytest.mark.parametrize("mode", ["regions", "labels", "classes"])
def test_patch_targets_are_the_label_schemes(mode):
    scheme = LabelScheme((2, 1, 4), mode)
    item = labelled_volume()
    item["label"][0, :3] = 3  # a value outside the scheme is background
    targets = expand(compact(item, scheme.values), scheme)["label"].as_tensor()
    expected = scheme.targets(torch.where(item["label"][0] == 3, 0, item["label"][0]).as_tensor())
    assert targets.dtype == torch.uint8 and torch.equal(targets.float(), expected)


@pytest.mark.parametrize("scheme", [BRATS, LabelScheme((2, 1, 4), "classes")], ids=["regions", "classes"])
def test_targets_made_after_spatial_augmentation_are_those_made_before(scheme):
    """Patches keep label values through nearest-neighbour augmentation and make their targets after it: the
    items equal those of the pipeline that moved every target channel, for every seed (affines included)."""
    from monai.transforms import Compose

    from unet3d.config.settings import DatasetSettings
    from unet3d.data.transforms import augmentations, sampling

    spatial = [{"name": "RandAffined", "prob": 0.5, "rotate_range": [0.3] * 3, "scale_range": [0.1] * 3},
               {"name": "RandFlipd", "prob": 0.5, "spatial_axis": [0, 1, 2]},
               {"name": "RandZoomd", "prob": 0.5, "min_zoom": 0.9, "max_zoom": 1.1}]
    intensity = [{"name": "RandGaussianNoised", "prob": 0.5, "std": 0.1}]
    settings = DatasetSettings.parse({"patch_size": [12, 12, 10], "foreground_oversampling": 0.5,
                                      "spatial_augmentations": spatial, "intensity_augmentations": intensity},
                                     "dataset").for_split("training")
    stored = compact(labelled_volume(), scheme.values)
    later = sampling(settings, scheme)
    assert [type(t).__name__ for t in later.transforms] == [
        "RandForegroundPatchd", "RandAffined", "RandFlipd", "RandZoomd", "LabelTargetsd", "RandGaussianNoised"]
    before = Compose([RandForegroundPatchd(scheme, settings.patch_size, 0.5),
                      *augmentations(settings.spatial_augmentations, ["image", "label"]),
                      *augmentations(settings.intensity_augmentations, "image")])
    for seed in range(24):
        (a,), (b,) = later.set_random_state(seed)(stored), before.set_random_state(seed)(stored)
        assert a["label"].dtype == torch.uint8 and a["label"].shape[0] == (1 if scheme.mode == "classes" else 3)
        torch.testing.assert_close(a["image"].as_tensor(), b["image"].as_tensor(), rtol=0, atol=0)
        torch.testing.assert_close(a["label"].as_tensor().float(), b["label"].as_tensor().float(), rtol=0, atol=0)
        torch.testing.assert_close(a["label"].affine, b["label"].affine)
    # A spec that interpolates labels keeps the targets first: moving label values would mix them.
    smooth = DatasetSettings.parse({"patch_size": [12, 12, 10], "spatial_augmentations": [
        {"name": "RandZoomd", "prob": 0.5, "mode": ["trilinear", "trilinear"]}]}, "dataset").for_split("training")
    assert [type(t).__name__ for t in sampling(smooth, scheme).transforms] == ["RandForegroundPatchd", "RandZoomd"]
