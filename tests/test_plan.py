"""unet3d-plan: a dataset folder in each layout becomes a config that loads, explains itself and trains."""

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from helpers import REPO, convert_image, read_log, run
from unet3d.config.experiment import load_experiment
from unet3d.data.synthetic import synthetic_case, write_synthetic_brats, write_synthetic_nnunet
from unet3d.plan import prediction, sections, speed, topology
from unet3d.plan.run import plan_target
from unet3d.scripts.plan import main as plan_main


def plan(input_dir, output, *extra, budget=60):
    """Run unet3d-plan in this process (torch is already imported); returns the config it wrote."""
    plan_main(["--input_dir", str(input_dir), "--output_filename", str(output), "--device", "cpu",
               "--budget_minutes", str(budget), *map(str, extra)])
    return json.loads(Path(output).read_text())


@pytest.fixture(scope="module")
def nnunet_data(tmp_path_factory):
    """An nnU-Net raw dataset: 0.9 x 0.9 x 2.5 mm, 4 channels, 3 exclusive classes, 6 training and 2 test cases."""
    return write_synthetic_nnunet(tmp_path_factory.mktemp("nnunet") / "Dataset001_Tiny", 6, shape=(32, 32, 12))


def test_nnunet_raw_anisotropic_dataset_gives_a_classes_config(nnunet_data, tmp_path):
    config = plan(nnunet_data, tmp_path / "plans" / "task.json")
    dataset, model = config["dataset"], config["model"]
    assert dataset["spacing"] == [0.9, 0.9, 2.5]  # the slice axis stays coarse
    assert dataset["label_mode"] == "classes" and dataset["labels"] == [1, 2, 3]
    assert dataset["label_names"] == ["edema", "necrosis", "enhancing_tumour"]
    assert model["in_channels"] == 4 and model["out_channels"] == 4
    assert config["loss"]["softmax"] and config["loss"]["to_onehot_y"]
    # Thick slices: no 3-voxel kernel and no halving along them at the first level.
    assert model["kernel_size"][0][2] == 1 and model["strides"][1][2] == 1
    assert all(p % np.prod([s[axis] for s in model["strides"]]) == 0 for axis, p in enumerate(dataset["patch_size"]))
    assert [case["id"] for case in config["training_filenames"]] == [f"case_{i:03d}" for i in range(6)]
    assert [case["id"] for case in config["test_filenames"]] == ["case_006", "case_007"]
    first = config["training_filenames"][0]
    assert not Path(first["label"]).is_absolute() and first["image"][3].endswith("case_000_0003.nii.gz")
    experiment = load_experiment(tmp_path / "plans" / "task.json")  # as unet3d-train reads it
    assert experiment.cross_validation.n_folds >= 2 and experiment.groups["test"][0].images[0].endswith("_0000.nii.gz")
    explained = (tmp_path / "plans" / "task_plan.md").read_text()
    for topic in ("| spacing |", "| patch |", "| network |", "| length |", "| normalization |", "0.9 x 0.9 x 2.5"):
        assert topic in explained
    fingerprint = json.loads((tmp_path / "plans" / "task_fingerprint.json").read_text())
    assert fingerprint["n_cases"] == 6 and fingerprint["median_spacing"] == pytest.approx([0.9, 0.9, 2.5])
    assert fingerprint["cases"][0]["shape"] == [32, 32, 12] and set(fingerprint["label_stats"]) == {"1", "2", "3"}
    assert [c["name"] for c in fingerprint["channels"]] == ["FLAIR", "T1", "T1ce", "T2"]


def test_nnunet_dataset_of_nrrd_files_plans_as_its_nifti_copy(nnunet_data, tmp_path):
    copy = tmp_path / "nrrd"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (copy / folder).mkdir(parents=True)
        for path in (nnunet_data / folder).iterdir():
            convert_image(path, copy / folder / path.name.replace(".nii.gz", ".nrrd"))
    description = json.loads((nnunet_data / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps({**description, "file_ending": ".nrrd"}))
    plan(copy, tmp_path / "nrrd.json")
    plan(nnunet_data, tmp_path / "nifti.json")
    nrrd, nifti = (json.loads((tmp_path / f"{name}_fingerprint.json").read_text()) for name in ("nrrd", "nifti"))
    for key in ("median_spacing", "median_shape", "nonzero_share"):
        assert nrrd[key] == pytest.approx(nifti[key]), key
    assert nrrd["orientations"] == nifti["orientations"]
    for value, stats in nifti["label_stats"].items():
        assert nrrd["label_stats"][value] == pytest.approx(stats)
    for a, b in zip(nrrd["channels"], nifti["channels"]):
        assert a == pytest.approx(b)
    assert json.loads((tmp_path / "nrrd.json").read_text())["training_filenames"][0]["image"][0].endswith("_0000.nrrd")


@pytest.mark.slow
def test_planned_config_trains_within_its_budget_and_predicts_the_test_images(nnunet_data, tmp_path):
    budget_minutes, start_up = 3, 30
    plan(nnunet_data, tmp_path / "task.json", budget=budget_minutes)
    start = time.perf_counter()
    run("unet3d-train", "--config_filename", tmp_path / "task.json", "--device", "cpu")
    seconds = time.perf_counter() - start
    assert len(read_log(tmp_path / "task" / "fold1" / "training_log.csv")) >= 1
    for case in ("case_006", "case_007"):
        predicted = nibabel.load(tmp_path / "task" / "fold1" / "predictions" / "test" / f"{case}.nii.gz")
        source = nibabel.load(nnunet_data / "imagesTs" / f"{case}_0000.nii.gz")
        assert predicted.shape == source.shape
        np.testing.assert_allclose(predicted.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1, 2, 3}
    # The plan is for the machine's own speed: other jobs on it slow the run down.
    assert seconds < budget_minutes * 60 + start_up, f"{seconds:.0f} s"


@pytest.mark.parametrize("naming, labels", [("2020", [2, 1, 4]), ("2023", [2, 1, 3])])
def test_brats_folders_give_regions(tmp_path, naming, labels):
    write_synthetic_brats(tmp_path / "brats", 3, shape=(24, 24, 24), seed=1, naming=naming)
    if naming == "2023":  # BraTS 2023 labels the enhancing tumour 3
        for path in (tmp_path / "brats").rglob("*-seg.nii.gz"):
            image = nibabel.load(path)
            data = np.asarray(image.dataobj).copy()
            data[data == 4] = 3
            nibabel.save(nibabel.Nifti1Image(data, image.affine), path)
    config = plan(tmp_path / "brats", tmp_path / "brats.json")
    dataset = config["dataset"]
    assert (dataset["label_mode"], dataset["labels"], dataset["label_names"]) == ("regions", labels, ["WT", "TC", "ET"])
    assert config["loss"]["sigmoid"] and config["model"]["out_channels"] == 3
    assert dataset["crop_foreground"] and dataset["normalization_kwargs"] == {"channel_wise": True, "nonzero": True}
    assert config["prediction"]["mask_to_nonzero"] and len(config["training_filenames"]) == 3


def test_brats_folders_of_nrrd_files_plan_as_their_nifti_copy(tmp_path):
    write_synthetic_brats(tmp_path / "nifti", 3, shape=(24, 24, 24), seed=1)
    for path in (tmp_path / "nifti").rglob("*.nii.gz"):
        target = tmp_path / "nrrd" / path.parent.name / path.name.replace(".nii.gz", ".nrrd")
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_image(path, target)
    nrrd, nifti = (plan(tmp_path / name, tmp_path / f"{name}.json") for name in ("nrrd", "nifti"))
    assert nrrd["dataset"]["label_mode"] == "regions" and nrrd["dataset"] == nifti["dataset"]
    assert nrrd["training_filenames"][0]["image"][0].endswith("_flair.nrrd")


def test_nnunet_region_labels_give_regions(nnunet_data, tmp_path):
    description = json.loads((nnunet_data / "dataset.json").read_text())
    description["labels"] = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing": 3}
    description["regions_class_order"] = [1, 2, 3]
    copy = tmp_path / "regions"
    for folder in ("imagesTr", "labelsTr"):
        (copy / folder).mkdir(parents=True)
        for path in (nnunet_data / folder).iterdir():
            (copy / folder / path.name).symlink_to(path)
    (copy / "dataset.json").write_text(json.dumps(description))
    dataset = plan(copy, tmp_path / "regions.json")["dataset"]
    assert dataset["label_mode"] == "regions" and dataset["labels"] == [1, 2, 3]
    assert dataset["label_names"] == ["whole_tumour", "tumour_core", "enhancing"]


def write_ct_decathlon(root, n_cases=4, shape=(20, 20, 20)):
    """A Decathlon task of 4D images (two CT-like channels) with two exclusive labels."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for index in range(n_cases):
        images, label = synthetic_case(shape, np.random.default_rng(index))
        volume = np.stack([images["t1ce"] - 1000, images["t2"] - 1000], axis=-1).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(volume, np.diag([1.5, 1.5, 1.5, 1])), root / "imagesTr" / f"ct_{index}.nii.gz")
        classes = np.select([label == 2, label > 0], [1, 2], 0).astype(np.uint8)
        nibabel.save(nibabel.Nifti1Image(classes, np.diag([1.5, 1.5, 1.5, 1])), root / "labelsTr" / f"ct_{index}.nii.gz")
        training.append({"image": f"./imagesTr/ct_{index}.nii.gz", "label": f"./labelsTr/ct_{index}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": {"0": "CT", "1": "CT"}, "labels": {"0": "background", "1": "oedema", "2": "core"},
        "numTraining": n_cases, "training": training, "test": []}))
    return root


def test_decathlon_4d_ct_task(tmp_path):
    from unet3d.data.transforms import normalizations

    write_ct_decathlon(tmp_path / "Task01_Tiny")
    config = plan(tmp_path / "Task01_Tiny", tmp_path / "ct.json")
    dataset = config["dataset"]
    assert config["model"]["in_channels"] == 2 and dataset["label_names"] == ["oedema", "core"]
    assert dataset["label_mode"] == "classes" and dataset["spacing"] == [1.5, 1.5, 1.5]
    assert not dataset["crop_foreground"] and config["training_filenames"][0]["image"] == ["Task01_Tiny/imagesTr/ct_0.nii.gz"]
    # CT: clipped to the dataset's foreground percentiles, then z-scored with its statistics, per channel.
    fingerprint = json.loads((tmp_path / "ct_fingerprint.json").read_text())
    low = min(c["percentile_0.5"] for c in fingerprint["channels"])
    high = max(c["percentile_99.5"] for c in fingerprint["channels"])
    image = torch.tensor([[-5000.0, 0.0, 5000.0], [-5000.0, 0.0, 5000.0]])
    for transform in normalizations(dataset["normalization"], dataset["normalization_kwargs"]):
        image = transform({"image": image})["image"]
    for channel, stats in enumerate(fingerprint["channels"]):
        expected = (torch.tensor([low, 0.0, high]).clamp(low, high) - stats["mean"]) / stats["std"]
        torch.testing.assert_close(torch.as_tensor(image[channel]).float(), expected, rtol=1e-4, atol=1e-4)
    load_experiment(tmp_path / "ct.json")


def test_folder_of_image_label_pairs(tmp_path):
    write_synthetic_brats(tmp_path / "raw", 3, shape=(20, 20, 20), seed=2)
    for folder in ("images", "labels", "imagesTs"):
        (tmp_path / "pairs" / folder).mkdir(parents=True)
    for index, case in enumerate(sorted((tmp_path / "raw").iterdir())):
        target = "imagesTs" if index == 2 else "images"
        (tmp_path / "pairs" / target / f"s{index}.nii.gz").symlink_to(case / f"{case.name}_t2.nii.gz")
        if index < 2:
            (tmp_path / "pairs" / "labels" / f"s{index}.nii.gz").symlink_to(case / f"{case.name}_seg.nii.gz")
    config = plan(tmp_path / "pairs", tmp_path / "pairs.json")
    assert config["dataset"]["label_mode"] == "classes" and config["dataset"]["labels"] == [1, 2, 4]
    assert config["dataset"]["label_names"] == ["label1", "label2", "label4"] and config["model"]["out_channels"] == 4
    assert [c["id"] for c in config["training_filenames"]] == ["s0", "s1"] and len(config["test_filenames"]) == 1
    assert config["dataset"]["normalization"] == "NormalizeIntensityd"


def structure(config):
    """What a plan's data, memory and speed table fix: everything but the length."""
    training = {key: value for key, value in config["training"].items()
                if key not in ("n_epochs", "samples_per_epoch", "validation_interval")}
    return {**{key: config[key] for key in ("model", "loss", "dataset", "cross_validation", "prediction")},
            "training": training}


def length(config):
    """The steps of a fold of a planned config."""
    return config["training"]["n_epochs"] * config["training"]["samples_per_epoch"]


def plan_beside_a_busy_core(input_dir, output, budget):
    """``plan`` while another process keeps a core busy."""
    busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return plan(input_dir, output, budget=budget)
    finally:
        busy_process.kill()
        busy_process.wait()


def test_the_same_folder_plans_the_same_structure_on_a_busy_machine_and_replays_exactly(nnunet_data, tmp_path):
    quiet = plan(nnunet_data, tmp_path / "quiet.json", budget=10)
    busy = plan_beside_a_busy_core(nnunet_data, tmp_path / "busy.json", budget=10)
    assert structure(busy) == structure(quiet)  # from the fingerprint, memory and speed table: no timing
    cost = json.loads((tmp_path / "quiet_plan.json").read_text())["cost"]
    assert cost["device_present"] and "measured" in cost["source"]
    replayed = plan(nnunet_data, tmp_path / "replayed.json", "--step_seconds", repr(cost["step_seconds"]), budget=10)
    assert replayed == {**quiet, "training_filenames": replayed["training_filenames"],
                        "test_filenames": replayed["test_filenames"]}
    assert json.loads((tmp_path / "replayed_plan.json").read_text())["cost"]["window_seconds"] == pytest.approx(
        cost["window_seconds"])


def test_augmentation_and_mirroring_follow_the_speed_table_not_the_measured_step(nnunet_data, tmp_path):
    """A step measured 20 times faster (a quiet machine against a busy one) changes the length, not the plan's
    augmentation, even where the measured steps fall either side of ``SHORT_SCHEDULE_STEPS``."""
    fast = plan(nnunet_data, tmp_path / "fast.json", "--step_seconds", 0.01, budget=2)
    slow = plan(nnunet_data, tmp_path / "slow.json", "--step_seconds", 0.2, budget=2)
    batch = fast["training"]["batch_size"]
    assert length(fast) / batch > sections.SHORT_SCHEDULE_STEPS >= length(slow) / batch
    assert structure(fast) == structure(slow)
    assert "steps a fold by the speed table (" in (tmp_path / "fast_plan.md").read_text()


@pytest.mark.slow
def test_a_plan_beside_a_busy_core_has_the_same_length_within_ten_percent(nnunet_data, tmp_path):
    """The length follows one thread's measured CPU seconds; run alone (the suite's other workers share the
    cores' caches, which slows every step)."""
    lengths = [length(plan(nnunet_data, tmp_path / "quiet.json", budget=10)),
               length(plan_beside_a_busy_core(nnunet_data, tmp_path / "busy.json", budget=10))]
    assert max(lengths) <= 1.1 * min(lengths), lengths


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans for a GPU that this machine lacks")
def test_a_gpu_is_planned_for_on_a_machine_without_one(nnunet_data, tmp_path):
    plan_main(["--input_dir", str(nnunet_data), "--output_filename", str(tmp_path / "gpu.json"), "--device", "cuda",
               "--gpu_memory_gb", "8", "--budget_minutes", "60"])
    config = json.loads((tmp_path / "gpu.json").read_text())
    assert config["training"]["amp"] == "fp16" and config["model"]["filters"][0] == 32
    cost = json.loads((tmp_path / "gpu_plan.json").read_text())["cost"]
    assert cost["device"] == "cuda" and not cost["device_present"] and cost["memory_gb"] == 8
    assert "H200" in cost["source"] and "docs/performance.md" in cost["source"]
    assert "not on the machine that planned" in (tmp_path / "gpu_plan.md").read_text()
    # Thousands of GPU steps a fold: the richer augmentation, half of the patches on the label.
    dataset = config["dataset"]
    assert config["training"]["n_epochs"] * config["training"]["samples_per_epoch"] > 2000 * config["training"][
        "batch_size"]
    assert [a["name"] for a in dataset["spatial_augmentations"]] == ["RandAffined", "RandFlipd"]
    assert dataset["intensity_augmentations"] and dataset["foreground_oversampling"] == 0.5


def test_on_a_cpu_validation_and_prediction_see_the_median_volume_whole():
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert topology.whole_volume_window((73, 91, 78), (48, 48, 48), strides) == [80, 96, 80]
    # At least the patch, at most twice it, a multiple of what the strides divide.
    assert topology.whole_volume_window((200, 30, 78), (48, 48, 48), strides) == [96, 48, 80]
    assert topology.whole_volume_window((200, 30, 9), (40, 40, 8), [[1, 1, 1], [2, 2, 1], [2, 2, 1]]) == [80, 40, 9]
    found = ((48, 48, 48), None, strides)
    cpu, gpu = plan_target("cpu", None, 60), plan_target("cuda", 8, 60)
    assert prediction.prediction_window(cpu, (73, 91, 78), found) == [80, 96, 80]
    assert prediction.prediction_window(gpu, (73, 91, 78), found) is None  # nnU-Net's: the patch
    assert prediction.prediction_window(cpu, (40, 48, 30), found) is None  # the patch holds the volume
    assert prediction.prediction_window(cpu, (73, 91, 78), ((48, 48, 1), None, strides)) is None  # 2d


def test_the_budget_counts_a_whole_volume_window_by_its_voxels():
    # One 72 x 96 x 80 window over the case is five 48³ patches of voxels, not the 18 overlapping patch windows.
    assert prediction.window_cost((72, 92, 78), (48, 48, 48)) == 18
    assert prediction.window_cost((72, 92, 78), (48, 48, 48), [72, 96, 80]) == 5.0
    assert prediction.window_cost((150, 92, 78), (48, 48, 48), [96, 96, 80]) == 3 * 96 * 96 * 80 / 48 ** 3
    cost = speed.StepCost(step_seconds=1.0, window_seconds=0.1, source="test")
    fingerprint = {"n_cases": 10, "n_test_cases": 0, "median_shape": [72, 92, 78], "channels": ["t1"]}
    patch, window = (48, 48, 48), [72, 96, 80]
    assert prediction.run_costs(cost, fingerprint, 2, (72, 92, 78), patch, window).predictions < \
        prediction.run_costs(cost, fingerprint, 2, (72, 92, 78), patch).predictions


def test_a_cpu_plan_of_volumes_larger_than_its_patch_predicts_them_whole(tmp_path):
    write_synthetic_brats(tmp_path / "brats", 3, shape=(64, 64, 64), seed=1)
    config = plan(tmp_path / "brats", tmp_path / "brats.json", budget=5)
    patch, window = config["dataset"]["patch_size"], config["prediction"]["window"]
    assert all(w >= p for w, p in zip(window, patch)) and window != patch, (patch, window)
    assert "prediction window" in (tmp_path / "brats_plan.md").read_text()
    assert load_experiment(tmp_path / "brats.json").window == tuple(window)
    # Mirrored predictions of these small volumes take a sliver of the 5 minutes.
    assert config["prediction"]["tta"] is True and "test-time mirroring" in (tmp_path / "brats_plan.md").read_text()
    # A few hundred steps a fold, as the CPU recipe's: flips only, two thirds of the patches on the label.
    dataset = config["dataset"]
    assert dataset["spatial_augmentations"] == [{"name": "RandFlipd", "prob": 0.5, "spatial_axis": [0, 1, 2]}]
    assert dataset["intensity_augmentations"] == [] and dataset["foreground_oversampling"] == 0.67
    assert "flips only" in (tmp_path / "brats_plan.md").read_text()


def test_short_schedules_train_on_flips_and_tumour_as_the_cpu_recipe_and_long_ones_augment_more():
    recipe = json.loads((REPO / "examples" / "brats2020" / "cpu_recipe_config.json").read_text())["dataset"]
    short = sections.augmentations([2.0, 2.0, 2.0], sections.SHORT_SCHEDULE_STEPS)
    assert short == {key: recipe[key] for key in short}
    long = sections.augmentations([0.8, 0.8, 4.0], sections.SHORT_SCHEDULE_STEPS + 1)
    assert long["spatial_augmentations"][0]["rotate_range"] == [0.0, 0.0, 0.26]  # only in the fine plane
    assert long["foreground_oversampling"] == 0.5 and len(long["intensity_augmentations"]) == 3


def test_a_cpu_plan_mirrors_its_predictions_where_the_budget_holds_them():
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    structure = (2, (72, 92, 78), ((48, 48, 48), None, strides))
    cost = speed.StepCost(step_seconds=1.0, window_seconds=0.1, source="test")
    fingerprint = {"n_cases": 10, "n_test_cases": 0, "median_shape": [72, 92, 78], "channels": ["t1"]}
    # 2 folds x 5 cases x 8 mirrorings x 5 patches of voxels x 0.1 s, and reading each case
    tta, seconds, measured = prediction.mirrored(plan_target("cpu", None, 60), cost, cost, fingerprint, structure,
                                                 [72, 96, 80])
    assert tta and 40 < seconds < 41 and measured == seconds
    window = [72, 96, 80]
    assert prediction.mirrored(plan_target("cpu", None, 6), cost, cost, fingerprint, structure, window)[0] is False
    assert prediction.mirrored(plan_target("cuda", 8, 60), cost, cost, fingerprint, structure, None) == (
        False, None, None)
    # The table decides (a busy machine plans the same), unless the step measured makes the mirrored predictions take
    # over twice the share: 7 minutes hold 42 s, and the table's 40 s; 1.9 times slower holds, 2.6 times does not.
    slower = [speed.StepCost(step_seconds=factor, window_seconds=0.1 * factor, source="measured")
              for factor in (1.9, 2.6)]
    tta, _, measured = prediction.mirrored(plan_target("cpu", None, 7), cost, slower[0], fingerprint, structure, window)
    assert tta and 76 < measured < 78
    assert prediction.mirrored(plan_target("cpu", None, 7), cost, slower[1], fingerprint, structure, window)[0] is False


@pytest.mark.parametrize("budget_seconds", [40, 300, 3600, 36000])
@pytest.mark.parametrize("validation_pass", [0.0, 2.0, 30.0])
def test_every_fold_validates_at_least_five_epochs_and_the_run_fits_the_budget(budget_seconds, validation_pass):
    from unet3d.plan import budget
    from unet3d.plan.speed import StepCost

    costs = budget.RunCosts(preprocessing=5.0, validation_pass=validation_pass, predictions=3.0)
    steps, n_epochs, per_epoch, interval = budget.fold_schedule(budget_seconds, StepCost(0.2, 0.01, "test"), costs, 2)
    validated = [epoch for epoch in range(1, n_epochs + 1) if epoch % interval == 0 or epoch == n_epochs]
    if steps:
        assert len(validated) >= budget.MIN_VALIDATIONS and steps == n_epochs * per_epoch
        # Every epoch's overhead and validation counted: the run's estimate stays within the budget.
        cost = StepCost(0.2, 0.01, "test")
        assert budget.run_seconds(cost, costs, 2, n_epochs, per_epoch, interval) <= budget_seconds
    else:  # no room for five validated epochs of a step each: unet3d-plan refuses the budget (test_bad_input)
        fold = (budget_seconds - 5.0) / 2 - 3.0 - budget.FOLD_OVERHEAD
        assert fold < budget.MIN_VALIDATIONS * (validation_pass + budget.EPOCH_OVERHEAD + 0.2)


def test_the_fingerprint_keeps_foreground_statistics_and_the_smallest_structure(nnunet_data, tmp_path):
    plan(nnunet_data, tmp_path / "task.json")
    fingerprint = json.loads((tmp_path / "task_fingerprint.json").read_text())
    for channel in fingerprint["channels"]:  # the images' background is 0; the foreground's minimum is not
        assert channel["image_min"] == 0 and channel["min"] > 0 and channel["min"] <= channel["percentile_0.5"]
        assert channel["max"] >= channel["percentile_99.5"]
    for stats in fingerprint["label_stats"].values():
        assert 0 < stats["min_volume_mm3"] <= stats["median_volume_mm3"]
    explained = (tmp_path / "task_plan.md").read_text()
    assert "| smallest structure |" in explained and "no fixed clean-up" in explained
    assert "min_component_size" not in json.loads((tmp_path / "task.json").read_text())["prediction"]


def test_every_case_weighs_the_same_in_the_intensity_statistics(tmp_path):
    from unet3d.plan.fingerprint import SAMPLES_PER_CASE, case_fingerprint

    cases = []
    for index, (size, value) in enumerate([(2, 100.0), (12, 200.0)]):  # 8 and 1,728 foreground voxels
        image, label = np.zeros((16, 16, 16), np.float32), np.zeros((16, 16, 16), np.uint8)
        image[:size, :size, :size], label[:size, :size, :size] = value, 1
        for name, data in (("image", image), ("label", label)):
            nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}{index}.nii.gz")
        cases.append(case_fingerprint({"id": str(index), "image": [str(tmp_path / f"image{index}.nii.gz")],
                                       "label": str(tmp_path / f"label{index}.nii.gz")}, seed=index))
    pooled = np.concatenate([case["samples"] for case in cases], axis=1)
    assert [case["samples"].shape[1] for case in cases] == [SAMPLES_PER_CASE] * 2  # as nnU-Net draws them
    assert pooled.mean() == pytest.approx(150.0)
