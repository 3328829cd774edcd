"""Regions that overlap without nesting, as nnU-Net's dataset.json gives them: targets, decoding in
regions_class_order, config keys, the MONAI bundle's decoding, and a dataset that plans, trains and is
evaluated per region."""

import json

import nibabel
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from helpers import TINY_SETTINGS, edit_config, read_log, run, tiny_settings
from unet3d.config.experiment import experiment_from_dict
from unet3d.config.labels import LabelScheme, dataset_json_scheme
from unet3d.config.settings import LabelSettings
from unet3d.data.synthetic import write_synthetic_nnunet
from unet3d.errors import UserError
from unet3d.export import bundle
from unet3d.predict.postprocess import clean_label_map
from unet3d.scripts.plan import main as plan_main

TABLE = {"background": 0, "a": [1, 2], "b": [2, 3], "c": [3]}
SCHEME = LabelScheme.of_regions([(1, 2), (2, 3), (3,)], (1, 2, 3), ("a", "b", "c"))
# Probabilities of regions a, b, c at six voxels, and the label nnU-Net paints at each.
PROBABILITIES = torch.tensor([[0.9, 0.9, 0.1, 0.9, 0.1, 0.1, 0.5],
                              [0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1],
                              [0.1, 0.1, 0.9, 0.9, 0.1, 0.9, 0.1]])
PAINTED = [1, 2, 3, 3, 0, 3, 0]  # c paints over a without b; 0.5 does not pass the threshold


def test_targets_masks_and_names_of_overlapping_regions():
    label = torch.tensor([0, 1, 2, 3])
    assert SCHEME.targets(label).tolist() == [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]]
    assert SCHEME.masks(label.numpy()).tolist() == [[False, True, True, False], [False, False, True, True],
                                                    [False, False, False, True]]
    assert SCHEME.values == (1, 2, 3) and SCHEME.n_channels == 3 and SCHEME.activation == "sigmoid"
    assert SCHEME.hierarchy and not SCHEME.nested and SCHEME.names == ["a", "b", "c"]
    assert LabelScheme.of_regions([(1, 2), (2, 3), (3,)], (1, 2, 3)).names == ["region1_2", "region2_3", "region3"]
    assert SCHEME.paint(SCHEME.masks(label)).tolist() == [0, 1, 2, 3]


def test_decoding_paints_each_region_in_regions_class_order_later_over_earlier():
    assert SCHEME.decode(PROBABILITIES).tolist() == PAINTED
    assert SCHEME.decode(PROBABILITIES, threshold=0.4).tolist() == [1, 2, 3, 3, 0, 3, 1]
    # The same regions listed b, a: where both fire, a (painted last) wins.
    swapped = LabelScheme.of_regions([(2, 3), (1, 2)], (2, 1))
    assert swapped.decode(PROBABILITIES[[1, 0]]).tolist() == [1, 1, 2, 1, 0, 0, 0]
    # Nested BraTS regions keep their own rule: an inner region counts only inside the outer ones.
    brats = LabelScheme.brats()
    assert brats.decode(torch.tensor([[0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])).tolist() == [1, 0]
    assert brats.region_sets == ((2, 1, 4), (1, 4), (4,)) and brats.config_keys() == {}


def test_dataset_json_regions_that_do_not_nest_take_regions_class_order():
    scheme = dataset_json_scheme(TABLE, [1, 2, 3], "ds/dataset.json")
    assert scheme == SCHEME
    nested = dataset_json_scheme({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}, [1, 2, 3], "x")
    assert nested == LabelScheme((1, 2, 3), "regions", ("whole", "core", "enhancing")) and nested.nested
    with pytest.raises(UserError, match=r"^ds/dataset.json: regions 'a' \[1, 2\] and 'b' \[2, 3\] do not nest, so "
                                        r"key 'regions_class_order' is needed"):
        dataset_json_scheme(TABLE, None, "ds/dataset.json")
    with pytest.raises(UserError, match=r"^ds/dataset.json: region 'b' \[0, 3\] holds the background 0"):
        dataset_json_scheme({**TABLE, "b": [0, 3]}, [1, 2, 3], "ds/dataset.json")
    for order in ([1, 2], [1, 2, 7], "123"):
        with pytest.raises(UserError, match=r"^ds/dataset.json: key 'regions_class_order' must list one label value"):
            dataset_json_scheme(TABLE, order, "ds/dataset.json")


def config_of(**dataset):
    """The tiny config with ``dataset``'s label keys instead of BraTS's."""
    config = tiny_settings()
    for key in ("labels", "setup_label_hierarchy"):
        config["dataset"].pop(key)
    config["dataset"].update(dataset)
    return config


def test_config_keys_give_the_scheme():
    experiment = experiment_from_dict(config_of(regions=[[1, 2], [2, 3], [3]], regions_class_order=[1, 2, 3],
                                                label_names=["a", "b", "c"]))
    assert experiment.labels == SCHEME
    with_labels = experiment_from_dict(config_of(labels=[3, 2, 1], regions=[[1, 2], [2, 3], [3]],
                                                 regions_class_order=[1, 2, 3]))
    assert with_labels.labels.values == (3, 2, 1) and with_labels.labels.regions == SCHEME.regions


@pytest.mark.parametrize("dataset, message", [
    ({"regions": [[1, 2], [2, 3], [3]]}, "config key 'dataset.regions_class_order' is missing"),
    ({"regions_class_order": [1, 2]}, "config key 'dataset.regions_class_order' goes with 'dataset.regions'"),
    ({"regions": [[1, 2], [2, 3], [3]], "regions_class_order": [1, 2]},
     r"'dataset.regions_class_order' must have one label value per region of 'dataset.regions' \(3\), got 2"),
    ({"regions": [[1, 2], [2, 3], [3]], "regions_class_order": [1, 2, 4]},
     r"'dataset.regions_class_order' holds 4, which is not a label value of the regions \[1, 2, 3\]"),
    ({"labels": [1, 2], "regions": [[1, 2], [2, 3], [3]], "regions_class_order": [1, 2, 3]},
     r"'dataset.regions' holds 3, which is not a label value of 'dataset.labels' \[1, 2\]"),
    ({"regions": [[1, 2], [0, 3], [3]], "regions_class_order": [1, 2, 3]}, "'dataset.regions' must be distinct"),
    ({"regions": [[1, 2], [2, 1], [3]], "regions_class_order": [1, 2, 3]}, "'dataset.regions' must be distinct"),
    ({"regions": [[1, 2], [2, 3], [3]], "regions_class_order": [1, 2, 3], "label_mode": "classes"},
     "'dataset.label_mode' is \"classes\" but 'dataset.regions' are regions"),
    ({"regions": [[1, 2], [2, 3], [3]], "regions_class_order": [1, 2, 3], "label_names": ["a", "b"]},
     r"'dataset.label_names' must have one name per region of 'dataset.regions' \(3\), got 2"),
])
def test_region_keys_that_cannot_work_are_refused_with_one_line(dataset, message):
    with pytest.raises(UserError, match=message) as error:
        LabelSettings.parse(dataset, "dataset")
    assert "\n" not in str(error.value)


def test_out_channels_must_be_one_per_region():
    config = config_of(regions=[[1, 2], [2, 3]], regions_class_order=[1, 3])
    with pytest.raises(UserError, match="'model.out_channels' is 3 but label_mode \"regions\" .* needs 2"):
        experiment_from_dict(config)


def test_the_bundle_decodes_and_cleans_up_overlapping_regions_as_the_scheme():
    parser = ConfigParser({"imports": ["$import torch"], "decode": bundle.decoding(SCHEME, 0.5),
                           "paint": bundle.component_clean_up(SCHEME)[2]["func"]})
    probabilities = PROBABILITIES[:, :, None, None]
    assert parser.get_parsed_content("decode")(probabilities)[0, :, 0, 0].tolist() == PAINTED
    masks = probabilities > 0.5
    assert torch.equal(parser.get_parsed_content("paint")(masks)[0], SCHEME.paint(masks))
    label_map = torch.zeros((12, 12, 12), dtype=torch.uint8)
    label_map[1:6, 1:6, 1:6], label_map[3:8, 3:8, 3:8], label_map[10, 10, 10] = 1, 2, 3
    cleaned = clean_label_map(label_map, SCHEME, min_component_size=2)
    assert cleaned[10, 10, 10] == 0 and torch.equal(cleaned[:9, :9, :9], label_map[:9, :9, :9])


def dice(predicted, reference):
    """Dice of two boolean masks, 1 when both are empty (the evaluation's convention)."""
    total = predicted.sum() + reference.sum()
    return 1.0 if total == 0 else 2 * (predicted & reference).sum() / total


def test_nnunet_dataset_with_overlapping_regions_plans_trains_and_is_evaluated_per_region(tmp_path):
    root = write_synthetic_nnunet(tmp_path / "Dataset002_Overlap", 4, shape=(16, 16, 16), spacing=(1, 1, 1),
                                  n_test=0)
    description = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**description, "labels": TABLE, "regions_class_order": [1, 2, 3]}))
    config_file = tmp_path / "overlap.json"
    # A step time given, the planner plans without timing steps on this machine.
    plan_main(["--input_dir", str(root), "--output_filename", str(config_file), "--device", "cpu",
               "--budget_minutes", "1", "--step_seconds", "0.5"])
    planned = json.loads(config_file.read_text())
    dataset = planned["dataset"]
    assert (dataset["label_mode"], dataset["labels"], dataset["label_names"]) == ("regions", [1, 2, 3], ["a", "b", "c"])
    assert dataset["regions"] == [[1, 2], [2, 3], [3]] and dataset["regions_class_order"] == [1, 2, 3]
    assert planned["model"]["out_channels"] == 3 and planned["loss"]["sigmoid"]

    def tiny(config):
        # The planned schedule is sized for the planned length; a one-epoch run takes the tiny one.
        config.update(model=TINY_SETTINGS["model"], scheduler=TINY_SETTINGS["scheduler"])
        config["dataset"]["patch_size"] = [16, 16, 16]
        config["training"].update(n_epochs=1, batch_size=2, samples_per_epoch=2, validation_interval=1, amp=False)
    edit_config(config_file, tiny)
    run("unet3d-train", "--config_filename", config_file, "--fold", 1, "--device", "cpu")
    fold = tmp_path / "overlap" / "fold1"
    [row] = read_log(fold / "training_log.csv")
    assert {"val_dice_a", "val_dice_b", "val_dice_c"} <= set(row)
    evaluated = read_log(fold / "predictions" / "validation" / "evaluation.csv")
    cases = sorted({row["case"] for row in evaluated})
    assert cases and [row["region"] for row in evaluated] == ["a", "b", "c"] * len(cases)
    for row in evaluated:
        predicted = np.asarray(nibabel.load(fold / "predictions" / "validation" / f"{row['case']}.nii.gz").dataobj)
        reference = np.asarray(nibabel.load(root / "labelsTr" / f"{row['case']}.nii.gz").dataobj)
        assert set(np.unique(predicted)) <= {0, 1, 2, 3}
        members = dict(zip("abc", SCHEME.regions))[row["region"]]
        expected = dice(np.isin(predicted, members), np.isin(reference, members))
        assert float(row["dice"]) == pytest.approx(expected, abs=1e-6)
