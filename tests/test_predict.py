"""unet3d-predict: original-space round trips, label decoding, ensembles, TTA and output safety."""

import json

import nibabel
import numpy as np
import pytest
import torch
from monai.transforms import Compose, DivisiblePadd, EnsureTyped, Invertd, LoadImaged, Orientationd, Spacingd

from helpers import assert_same_grid, random_weights, run, tiny_settings
from unet3d.config.experiment import experiment_from_dict, load_experiment, make_case
from unet3d.config.labels import LabelScheme
from unet3d.config.resolve import Component
from unet3d.data.synthetic import write_synthetic_brats
from unet3d.errors import UserError
from unet3d.models.inferer import Inferer, capped_window, model_divisor
from unet3d.predict.inference import predict, predict_cases, predict_on_input_grid
from unet3d.predict.inputs import model_filenames, select_cases
from unet3d.predict.postprocess import clean_label_map
from unet3d.predict.write import output_paths

CPU = torch.device("cpu")
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ANISOTROPIC = np.diag([0.8, 1.0, 2.5, 1.0])
# Axes permuted (array x runs along S, z along R) with a shift: an unusual but valid scanner grid.
PERMUTED = np.array([[0, 0, -1.2, 30], [0, 1.0, 0, -20], [0.9, 0, 0, 10], [0, 0, 0, 1]])

GRIDS = {
    "lps": ((24, 24, 24), LPS),
    "anisotropic": ((24, 24, 24), ANISOTROPIC),
    "odd_shape": ((19, 23, 17), np.eye(4)),
    "permuted": ((21, 18, 20), PERMUTED),
}


def threshold_model():
    """A 1x1x1 convolution: logits 4 * intensity - 8, the same in all three channels (flip-equivariant)."""
    model = torch.nn.Conv3d(1, 3, kernel_size=1)
    with torch.no_grad():
        model.weight.fill_(4.0)
        model.bias.fill_(-8.0)
    return model.eval()


def write_scan(path, shape, affine):
    """A scan with a brain box of intensity 1 and an off-centre bright cube of 3; returns the cube mask."""
    image = np.zeros(shape, np.float32)
    image[2:-2, 2:-2, 2:-2] = 1
    cube = np.zeros(shape, bool)
    cube[4:11, 5:13, 3:9] = True
    image[cube] = 3
    nibabel.save(nibabel.Nifti1Image(image, affine), path)
    return cube


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


DATASET = {"name": "SegmentationDataset", "labels": [2, 1, 4], "setup_label_hierarchy": True,
           "crop_foreground": True, "resample": True, "desired_shape": [16, 16, 16]}
BRATS = LabelScheme.brats()


def experiment(dataset=DATASET, **sections):
    """An Experiment of the tiny settings with this dataset section (its cases are not read)."""
    return experiment_from_dict(tiny_settings(dataset=dataset, **sections))


def scan_case(path):
    return make_case({"id": "scan", "image": [str(path)]})


@pytest.mark.parametrize("grid", GRIDS)
def test_current_preprocessing_is_undone_on_any_grid(tmp_path, grid):
    shape, affine = GRIDS[grid]
    cube = write_scan(tmp_path / "scan.nii.gz", shape, affine)
    [written] = predict_cases(experiment(), threshold_model(), [scan_case(tmp_path / "scan.nii.gz")], tmp_path / "out", CPU)
    assert_same_grid(written, tmp_path / "scan.nii.gz", atol=1e-5)
    label_map = np.asarray(nibabel.load(written).dataobj)
    assert set(np.unique(label_map)) == {0, 4}
    assert dice(label_map == 4, cube) > 0.85  # resized to 16^3 and back: edges blur, orientation must not flip


@pytest.mark.parametrize("grid", GRIDS)
def test_reorientation_spacing_and_padding_are_undone(tmp_path, grid):
    shape, affine = GRIDS[grid]
    cube = write_scan(tmp_path / "scan.nii.gz", shape, affine)
    preprocessing = Compose([
        LoadImaged("image", ensure_channel_first=True, image_only=True),
        EnsureTyped("image", dtype="float32", track_meta=True),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
        DivisiblePadd("image", k=16),
    ])
    item = preprocessing({"image": str(tmp_path / "scan.nii.gz")})
    assert nibabel.aff2axcodes(item["image"].affine.numpy()) == ("R", "A", "S")
    invert = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)
    inferer = Inferer(BRATS, window=(16, 16, 16), overlap=0.25)
    inverted = predict_on_input_grid(inferer, [threshold_model()], item, invert, CPU)
    assert tuple(inverted.shape) == (3, *shape)
    np.testing.assert_allclose(inverted.affine.numpy(), affine, atol=1e-4)
    label_map = inferer.decode(inverted.as_tensor()).numpy()
    assert dice(label_map == 4, cube) > 0.85


def test_hierarchy_and_plain_labels_decode_to_label_values():
    wt, tc, et = np.zeros((3, 4, 1, 1))
    wt[:] = 0.9  # the whole tumour covers all four voxels
    tc[1:] = 0.8
    et[2:] = 0.7
    et[3] = 0.4  # below the threshold: stays core
    assert BRATS.decode(np.stack([wt, tc, et])).ravel().tolist() == [2, 1, 4, 1]
    assert BRATS.decode(np.stack([wt, tc, et]), threshold=0.3).ravel().tolist() == [2, 1, 4, 4]
    plain = np.array([[0.2, 0.6, 0.1], [0.7, 0.3, 0.1], [0.1, 0.1, 0.3]])[..., None, None]  # (3 labels, 3 voxels)
    assert LabelScheme((1, 2, 3)).decode(plain).ravel().tolist() == [2, 1, 0]


def test_component_clean_up_per_region():
    label_map = np.zeros((12, 12, 12), np.uint8)
    label_map[1:6, 1:6, 1:6] = 2  # large tumour with a core (27 voxels) and enhancing part (18)
    label_map[2:5, 2:5, 2:5] = 1
    label_map[2:5, 2:5, 3:5] = 4
    label_map[9:11, 9:11, 9:11] = 2  # small distant tumour of 8 voxels with a 1-voxel core
    label_map[10, 10, 10] = 1
    label_map = torch.as_tensor(label_map)
    cleaned = clean_label_map(label_map, BRATS, min_component_size=10)
    assert not cleaned[9:, 9:, 9:].any()  # the small tumour goes, with its core
    np.testing.assert_array_equal(cleaned[:8, :8, :8], label_map[:8, :8, :8])
    largest = clean_label_map(label_map, BRATS, keep_largest=True)
    np.testing.assert_array_equal(largest, cleaned)
    # Each region counts its own voxels: 20 would keep the enhancing part if its voxels in the
    # whole tumour and core were counted with it (18 + 18 + 18), but it has only 18, so it
    # goes and becomes core.
    strict = clean_label_map(label_map, BRATS, min_component_size=20)
    assert not (strict == 4).any() and (strict == 1).sum() == 27
    label_map[2:5, 2:5, 3:5] = 1
    label_map[3, 3, 3] = 4
    plain = clean_label_map(label_map, LabelScheme((1, 2, 4)), min_component_size=2)
    assert plain[3, 3, 3] == 0 and plain[10, 10, 10] == 0 and plain[9, 9, 9] == 2  # single voxels of 4 and 1 go


def test_config_min_component_size_cleans_predictions_unless_the_caller_overrides_it(tmp_path):
    cube = write_scan(tmp_path / "scan.nii.gz", (20, 20, 20), np.eye(4))
    image = nibabel.load(tmp_path / "scan.nii.gz")
    data = np.asarray(image.dataobj)
    data[15:17, 15:17, 15:17] = 3  # a speck of 8 voxels far from the cube
    nibabel.save(nibabel.Nifti1Image(data, image.affine), tmp_path / "scan.nii.gz")
    case = scan_case(tmp_path / "scan.nii.gz")
    cleaning = experiment({"name": "SegmentationDataset", "labels": [2, 1, 4], "setup_label_hierarchy": True},
                          prediction={"min_component_size": 20})
    [cleaned] = predict_cases(cleaning, threshold_model(), [case], tmp_path / "cleaned", CPU)
    np.testing.assert_array_equal(np.asarray(nibabel.load(cleaned).dataobj) == 4, cube)
    [raw] = predict_cases(cleaning, threshold_model(), [case], tmp_path / "raw", CPU,
                          prediction=cleaning.prediction.override(min_component_size=0))
    assert (np.asarray(nibabel.load(raw).dataobj)[15:17, 15:17, 15:17] == 4).all()


def test_tta_changes_nothing_for_a_flip_equivariant_model():
    image = torch.rand(1, 1, 24, 20, 18) * 3
    model = threshold_model()
    plain = Inferer(BRATS, window=(16, 16, 16), overlap=0.5).probabilities([model], image)
    mirrored = Inferer(BRATS, window=(16, 16, 16), overlap=0.5, tta=True).probabilities([model], image)
    torch.testing.assert_close(mirrored, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, torch.sigmoid(model(image)).detach(), atol=1e-5, rtol=1e-5)


def test_a_window_larger_than_the_volume_is_capped_at_it_not_padded():
    # Instance normalisation over zero padding changed what the network saw: a 112³ window over an 80³ brain
    # lost most of its Dice. Capped, a window over the whole volume gives what the network gives on it.
    image = torch.rand(1, 1, 16, 24, 16) * 3
    model = torch.nn.Sequential(torch.nn.InstanceNorm3d(1), threshold_model())
    probabilities = Inferer(BRATS, window=(32, 32, 32)).probabilities([model], image)
    torch.testing.assert_close(probabilities, torch.sigmoid(model(image)).detach(), atol=1e-5, rtol=1e-5)


def test_a_capped_window_stays_a_multiple_of_what_the_network_needs():
    seen = []

    class Recording(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return x.repeat(1, 3, 1, 1, 1)

    image = torch.rand(1, 1, 20, 40, 12)
    Inferer(BRATS, window=(32, 32, 32), divisor=(8, 8, 8), sw_batch_size=1).probabilities([Recording()], image)
    # x: 24 covers 20, y: as asked (40 is longer), z: 16 covers 12; one window along x and z, two along y
    assert seen == [(24, 32, 16)] * 2
    assert capped_window((96, 96, 96), (72, 92, 78), (8, 8, 8)) == (72, 96, 80)  # one window for the volume
    assert capped_window((80, 80, 80), (72, 92, 78), (8, 8, 8)) == (72, 80, 80)
    assert capped_window((32, 32, 32), (20, 4, 12)) == (20, 4, 12)
    assert capped_window((32, 32, 32), (20, 4, 12), (16, 8, 8)) == (32, 8, 16)  # padded by under a multiple


def test_the_networks_divisor_comes_from_its_strides_else_from_the_window():
    dynunet = Component("model", "model", "DynUNet", {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 1], [2, 2, 1]]})
    assert model_divisor(dynunet, (48, 48, 48)) == (8, 8, 2)
    assert model_divisor(Component("model", "model", "UNet", {"strides": [2, 2, 2, 2]}), (48, 48, 48)) == (16, 16, 16)
    assert model_divisor(Component("model", "model", "SegResNet"), (80, 48, 96)) == (16, 16, 32)
    assert model_divisor(Component("model", "model", "SegResNet"), None) is None


def test_ensemble_averages_the_probabilities_of_its_models():
    image = torch.rand(1, 1, 20, 20, 20) * 3
    first, second = threshold_model(), threshold_model()
    with torch.no_grad():
        second.bias.fill_(-4.0)
    # Inference-mode tensors as inputs must not trip in-place updates (nnU-Net's CPU ensemble bug).
    with torch.inference_mode():
        frozen = image.clone()
    both = Inferer(BRATS, window=(16, 16, 16), tta=True).probabilities([first, second], frozen)
    alone = [Inferer(BRATS, window=(16, 16, 16)).probabilities([m], image) for m in (first, second)]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2, atol=1e-5, rtol=1e-5)


def test_outputs_never_replace_inputs_or_existing_files(tmp_path):
    write_scan(tmp_path / "scan.nii.gz", (8, 8, 8), np.eye(4))
    case = scan_case(tmp_path / "scan.nii.gz")
    with pytest.raises(UserError, match="would overwrite an input"):
        output_paths([case], tmp_path, overwrite=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scan.nii.gz").write_bytes(b"old")
    with pytest.raises(UserError, match="--overwrite"):
        output_paths([case], tmp_path / "out")
    assert output_paths([case], tmp_path / "out", overwrite=True) == {"scan": tmp_path / "out" / "scan.nii.gz"}


def test_input_dir_cases_keep_the_folder_name_as_id_for_brats_2023_names(tmp_path):
    folders = write_synthetic_brats(tmp_path, 2, shape=(12, 12, 8), naming="2023", with_label=False)
    found = select_cases(experiment(), input_dir=str(tmp_path))
    assert [case.id for case in found] == [folder.name for folder in folders]


def test_model_globs_expand_in_order_and_unmatched_globs_are_errors(tmp_path):
    for fold in ("fold2", "fold1"):
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "model_best.pth").write_bytes(b"")
    found = model_filenames([str(tmp_path / "fold*" / "model_best.pth"), str(tmp_path / "fold1" / "model_best.pth")])
    assert found == [str(tmp_path / f / "model_best.pth") for f in ("fold1", "fold2")]
    with pytest.raises(UserError, match="no files match"):
        model_filenames([str(tmp_path / "nope*" / "model.pth")])


def test_fold_ensemble_from_a_glob_on_a_brats_folder(tiny_config, brats_data, tmp_path):
    runs = tmp_path / "runs"
    for fold, seed in (("fold1", 1), ("fold2", 2)):
        random_weights(runs / fold / "model_best.pth", tiny_config, seed=seed)
    output = tmp_path / "ensemble"
    run("unet3d-predict", "--config_filename", tiny_config, "--model_filename", runs / "fold*" / "model_best.pth",
        "--input_dir", brats_data / "test", "--output_directory", output, "--save_probabilities", "--tta",
        "--device", "cpu")
    case_id = "BraTS20_Validation_001"
    flair = brats_data / "test" / case_id / f"{case_id}_flair.nii.gz"
    assert_same_grid(output / f"{case_id}.nii.gz", flair, atol=1e-5)
    images = [[str(brats_data / "test" / case_id / f"{case_id}_{m}.nii.gz") for m in ("flair", "t1", "t1ce", "t2")]]
    alone = []
    for fold in ("fold1", "fold2"):
        [path] = predict(load_experiment(tiny_config), [runs / fold / "model_best.pth"], tmp_path / fold, CPU,
                         images=images, save_probabilities=True, tta=True)
        alone.append(np.asarray(nibabel.load(path).dataobj))
    ensemble = np.asarray(nibabel.load(output / f"{case_id}.nii.gz").dataobj)
    np.testing.assert_allclose(ensemble, (alone[0] + alone[1]) / 2, atol=1e-5)
    assert json.loads(tiny_config.read_text())["dataset"]["labels"] == [2, 1, 4]


def test_the_configs_tta_mirrors_predictions_but_not_validation(tiny_config, brats_data, tmp_path):
    from helpers import edit_config
    random_weights(tmp_path / "m.pth", tiny_config, seed=0)
    case_id = "BraTS20_Validation_001"
    images = [[str(brats_data / "test" / case_id / f"{case_id}_{m}.nii.gz") for m in ("flair", "t1", "t1ce", "t2")]]

    def probabilities(folder, **options):
        [path] = predict(load_experiment(tiny_config), [tmp_path / "m.pth"], tmp_path / folder, CPU, images=images,
                         save_probabilities=True, **options)
        return np.asarray(nibabel.load(path).dataobj)

    plain, flag = probabilities("plain"), probabilities("flag", tta=True)
    edit_config(tiny_config, lambda c: c.setdefault("prediction", {}).update(tta=True))
    np.testing.assert_array_equal(probabilities("config"), flag)
    assert np.abs(flag - plain).max() > 1e-4
    assert not Inferer.from_experiment(load_experiment(tiny_config)).tta  # the training loop's validation


# Two torchrun processes and one more for the reference: half a minute, so it runs with the slow tests.
@pytest.mark.slow
def test_two_processes_share_the_cases_and_write_what_one_process_writes(tiny_config, brats_data, tmp_path):
    random_weights(tmp_path / "m.pth", tiny_config, seed=0)
    args = ["--config_filename", tiny_config, "--model_filename", tmp_path / "m.pth", "--input_dir", brats_data / "test",
            "--device", "cpu", "--set", "prediction.min_component_size=0"]
    threads = {"OMP_NUM_THREADS": "1"}  # torchrun's default for several processes; one process alike
    run("unet3d-predict", *args, "--output_dir", tmp_path / "one", env=threads)
    result = run("unet3d-predict", *args, "--output_dir", tmp_path / "two", "--ngpus", "2", env=threads)
    assert "in 2 processes" in result.stderr
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 3  # 2 cases + config
    for name in names:
        if name.endswith(".nii.gz"):
            one, two = (nibabel.load(tmp_path / folder / name) for folder in ("one", "two"))
            assert np.asarray(one.dataobj).tobytes() == np.asarray(two.dataobj).tobytes()
            assert np.array_equal(one.affine, two.affine)
    assert (tmp_path / "one" / "predict_config.json").read_text() == (tmp_path / "two" / "predict_config.json").read_text()


def test_predict_rejects_a_wrong_number_of_images(tiny_config, brats_data, tmp_path):
    one = brats_data / "test" / "BraTS20_Validation_001" / "BraTS20_Validation_001_t1.nii.gz"
    result = run("unet3d-predict", "--config_filename", tiny_config, "--model_filename", tmp_path / "m.pth",
                 "--images", one, "--output_directory", tmp_path / "out", check=False)
    assert result.returncode == 2 and "has 1 image(s) but the model takes 4" in result.stderr


def test_cpu_prediction_runs_in_bfloat16_for_models_trained_in_it(monkeypatch):
    from unet3d.predict import inference

    bf16 = experiment_from_dict(tiny_settings(training={"amp": "bf16", "n_epochs": 1}))
    fp32 = experiment_from_dict(tiny_settings(training={"n_epochs": 1}))
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    with inference.prediction_autocast(bf16, "cpu")():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with inference.prediction_autocast(fp32, "cpu")():
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)  # emulated bfloat16 is slower
    with inference.prediction_autocast(bf16, "cpu")():
        assert not torch.is_autocast_enabled("cpu")
    image = torch.rand(1, 1, 20, 20, 20) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the threshold model's probabilities barely move
        low = Inferer(BRATS, window=(16, 16, 16)).probabilities([threshold_model()], image)
    plain = Inferer(BRATS, window=(16, 16, 16)).probabilities([threshold_model()], image)
    torch.testing.assert_close(low.float(), plain, atol=2e-2, rtol=0)
