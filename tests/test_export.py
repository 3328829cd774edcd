"""unet3d-export: TorchScript and ONNX agree with PyTorch, the MONAI bundle parses and predicts like unet3d-predict."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from helpers import edit_config, random_weights, run, write_config
from unet3d.config.experiment import load_experiment
from unet3d.config.labels import LabelScheme
from unet3d.config.settings import DatasetSettings
from unet3d.data.transforms import preprocessing
from unet3d.errors import UserError
from unet3d.export import bundle, model_export
from unet3d.export.networks import check_agreement, example_input
from unet3d.predict.inference import predict
from unet3d.scripts.export import main as export_main

CPU = torch.device("cpu")
# MONAI's metadata schema (the one METADATA_SCHEMA names), so that verify_metadata needs no download.
SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"
# The keys the MONAI bundle specification asks of every tensor of network_data_format.
TENSOR_KEYS = {"type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
               "channel_def"}


@pytest.fixture(scope="module")
def exported(brats_data, tmp_path_factory):
    """The tiny BraTS config, its weights and everything ``unet3d-export`` wrote for them (run in-process)."""
    root = tmp_path_factory.mktemp("export")
    config = write_config(root / "experiment" / "tiny.json", brats_data / "train", [("test", brats_data / "test")])
    edit_config(config, lambda settings: settings.update(prediction={"min_component_size": 30}))
    weights = random_weights(root / "model.pth", config, seed=1)
    export_main(["--config_filename", str(config), "--model_filename", str(weights), "--output_dir", str(root / "export")])
    return config, weights, root / "export"


def bundle_predictions(bundle_dir, cases, output_dir):
    """Run the bundle's inference.json on a folder of cases with ``monai.bundle.run``, as a user would in Python."""
    import monai.bundle

    monai.bundle.run(config_file=str(bundle_dir / "configs" / "inference.json"),
                     meta_file=str(bundle_dir / "configs" / "metadata.json"), bundle_root=str(bundle_dir),
                     dataset_dir=str(cases), output_dir=str(output_dir))
    return sorted(output_dir.glob("*.nii.gz"))


def assert_same_label_maps(ours, theirs):
    """Both folders hold the same files with the same label maps on the same grids, voxel for voxel."""
    assert [p.name for p in ours] == [p.name for p in theirs] and ours
    for mine, other in zip(ours, theirs):
        first, second = nibabel.load(mine), nibabel.load(other)
        np.testing.assert_allclose(first.affine, second.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(first.dataobj), np.asarray(second.dataobj))


def test_torchscript_and_onnx_agree_with_pytorch_and_the_manifest_says_so(exported):
    import onnxruntime

    config, weights, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["check"]["input_shape"] == [1, 4, 16, 16, 16]  # the inference window: dataset.desired_shape
    for name in ("torchscript", "onnx"):
        assert 0 <= manifest["exports"][name]["max_abs_diff"] <= 1e-4
    assert manifest["exports"]["onnx"]["dynamic_axes"] == ["batch", "x", "y", "z"]
    assert manifest["labels"] == {"mode": "regions", "values": [2, 1, 4], "names": ["WT", "TC", "ET"],
                                  "decoding": manifest["labels"]["decoding"], "dtype": "uint8"}
    assert manifest["input"]["channel_order"] == ["flair", "t1", "t1ce", "t2"]
    assert manifest["preprocessing"]["normalization_kwargs"] == {"channel_wise": True, "nonzero": True}
    assert manifest["inference"]["window"] == [16, 16, 16] and manifest["versions"]["onnxruntime"]

    network = load_experiment(config).model.build()
    network.load_state_dict(torch.load(weights, weights_only=True))
    network.eval()
    # Another batch size and window than the check's: the axes are dynamic.
    image = example_input(4, (24, 16, 32), batch=3, seed=7)
    with torch.no_grad():
        expected = network(image)
        traced = torch.jit.load(str(folder / "model.ts"))(image)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    [logits] = session.run(None, {"image": image.numpy()})
    assert expected.shape == (3, 3, 24, 16, 32)
    assert float((traced - expected).abs().max()) <= 1e-4
    assert float(np.abs(logits - expected.numpy()).max()) <= 1e-4


def test_the_bundle_metadata_names_the_channels_modality_and_labels(exported):
    config, _, folder = exported
    meta = json.loads((folder / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["schema"] == bundle.METADATA_SCHEMA and meta["schema"].endswith("/" + SCHEMA.name)
    formats = meta["network_data_format"]
    tensors = [formats["inputs"]["image"], formats["outputs"]["pred"], formats["post_processed_outputs"]["pred"]]
    assert all(set(tensor) == TENSOR_KEYS for tensor in tensors)
    image, logits, label_map = tensors
    assert (image["modality"], image["format"], image["num_channels"]) == ("MR", "magnitude", 4)
    assert image["channel_def"] == {"0": "flair", "1": "t1", "2": "t1ce", "3": "t2"}
    assert image["spatial_shape"] == [16, 16, 16] and image["is_patch_data"] is True
    assert (logits["format"], logits["num_channels"]) == ("classes", 3)  # sigmoid regions need not be one-hot
    assert logits["channel_def"] == {"0": "WT", "1": "TC", "2": "ET"}
    assert label_map["channel_def"] == {"0": "background", "2": "WT", "1": "TC", "4": "ET"}
    assert (label_map["format"], label_map["dtype"], label_map["value_range"]) == ("segmentation", "uint8", [0, 4])


@pytest.mark.filterwarnings("ignore:No hash value")  # the schema is ours: nothing to check it against
def test_the_bundle_metadata_passes_monai_verify_metadata(exported, tmp_path):
    pytest.importorskip("jsonschema", reason="monai.bundle.verify_metadata needs jsonschema (the test extra)")
    from monai.bundle import verify_metadata

    meta_file = exported[2] / "bundle" / "configs" / "metadata.json"
    schema = shutil.copy(SCHEMA, tmp_path / SCHEMA.name)  # where verify_metadata finds it, nothing is downloaded
    verify_metadata(meta_file=str(meta_file), filepath=str(schema))
    meta = json.loads(meta_file.read_text())
    del meta["required_packages_version"]  # the check can fail
    (tmp_path / "incomplete.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="required_packages_version"):
        verify_metadata(meta_file=str(tmp_path / "incomplete.json"), filepath=str(schema))


@pytest.mark.parametrize("channels, expected", [(["CT"], "CT"), (["flair", "t1", "t1ce", "t2"], "MR"),
                                                (["T2", "ADC"], "MR"), (["CT", "T2"], "n/a"), (["image"], "n/a")])
def test_the_modality_comes_from_the_channel_names(channels, expected):
    assert bundle.modality(channels) == expected


def test_the_bundle_builds_its_network_with_monai_and_predicts_like_unet3d_predict(exported, brats_data, tmp_path):
    config, weights, folder = exported
    parser = ConfigParser()
    parser.read_config(str(folder / "bundle" / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    assert type(network).__module__.startswith("monai.networks.nets")
    network.load_state_dict(torch.load(folder / "bundle" / "models" / "model.pt", weights_only=True))
    parser.read_meta(str(folder / "bundle" / "configs" / "metadata.json"))

    theirs = bundle_predictions(folder / "bundle", brats_data / "test", tmp_path / "bundle")
    experiment = load_experiment(config)
    ours = predict(experiment, [weights], tmp_path / "unet3d", CPU, input_dir=str(brats_data / "test"))
    assert_same_label_maps(sorted(ours), theirs)
    assert set(np.unique(np.asarray(nibabel.load(theirs[0]).dataobj))) == {0, 1, 2, 4}  # every region decoded
    assert_cleaned(experiment, weights, brats_data / "test", tmp_path / "raw", theirs)


def assert_cleaned(experiment, weights, cases, output_dir, cleaned):
    """Predictions without prediction.min_component_size differ from ``cleaned``: the clean-up was tested."""
    raw = predict(experiment, [weights], output_dir, CPU, input_dir=str(cases),
                  prediction=experiment.prediction.override(min_component_size=0))
    assert any((np.asarray(nibabel.load(a).dataobj) != np.asarray(nibabel.load(b).dataobj)).any()
               for a, b in zip(sorted(raw), cleaned))


def test_classes_with_the_brain_mask_predict_alike(brats_data, tmp_path):
    """Softmax (and the background of cropped voxels), patches at a spacing, mask_to_nonzero, label clean-up, a
    window larger than the cropped volumes (capped at each, as unet3d-predict does)."""
    def classes(settings):
        settings["model"]["out_channels"] = 4
        settings["loss"] = {"name": "DiceCELoss", "softmax": True, "to_onehot_y": True}
        settings["dataset"].update(label_mode="classes", setup_label_hierarchy=False, resample=False,
                                   patch_size=[16, 16, 16], spacing=[1.5, 1.5, 1.5])
        settings["prediction"] = {"mask_to_nonzero": True, "overlap": 0.25, "min_component_size": 10,
                                  "window": [48, 48, 48]}

    config = write_config(tmp_path / "classes.json", brats_data / "train", [("test", brats_data / "test")])
    edit_config(config, classes)
    experiment = load_experiment(config)
    weights = random_weights(tmp_path / "model.pth", config, seed=2)
    model_export.export_model(experiment, weights, tmp_path / "export", formats=["bundle"])
    theirs = bundle_predictions(tmp_path / "export" / "bundle", brats_data / "test", tmp_path / "bundle")
    ours = predict(experiment, [weights], tmp_path / "unet3d", CPU, input_dir=str(brats_data / "test"))
    assert_same_label_maps(sorted(ours), theirs)
    assert_cleaned(experiment, weights, brats_data / "test", tmp_path / "raw", theirs)
    logits = json.loads((tmp_path / "export" / "bundle" / "configs" / "metadata.json").read_text())[
        "network_data_format"]["outputs"]["pred"]
    assert logits["format"] == "labels" and list(logits["channel_def"].values())[0] == "background"  # softmax
    assert logits["num_channels"] == len(logits["channel_def"]) == 4


def test_overlapping_regions_predict_alike_and_the_manifest_gives_their_order(brats_data, tmp_path):
    """Regions that overlap without nesting ({1, 2} and {1, 4}), painted in regions_class_order, and cleaned up."""
    def overlapping(settings):
        settings["dataset"].pop("setup_label_hierarchy")
        settings["dataset"].update(labels=[1, 2, 4], regions=[[1, 2], [1, 4], [4]], regions_class_order=[2, 1, 4])
        settings["prediction"] = {"threshold": 0.45, "min_component_size": 10}

    config = write_config(tmp_path / "overlapping.json", brats_data / "train", [("test", brats_data / "test")])
    edit_config(config, overlapping)
    experiment = load_experiment(config)
    weights = random_weights(tmp_path / "model.pth", config, seed=3)
    model_export.export_model(experiment, weights, tmp_path / "export", formats=["bundle"])
    labels = json.loads((tmp_path / "export" / "manifest.json").read_text())["labels"]
    assert labels["regions"] == [[1, 2], [1, 4], [4]] and labels["regions_class_order"] == [2, 1, 4]
    assert "later regions over earlier ones" in labels["decoding"]
    theirs = bundle_predictions(tmp_path / "export" / "bundle", brats_data / "test", tmp_path / "bundle")
    ours = predict(experiment, [weights], tmp_path / "unet3d", CPU, input_dir=str(brats_data / "test"))
    assert_same_label_maps(sorted(ours), theirs)
    assert {1, 4} <= set(np.unique(np.asarray(nibabel.load(theirs[0]).dataobj))) <= {0, 1, 2, 4}
    assert_cleaned(experiment, weights, brats_data / "test", tmp_path / "raw", theirs)


@pytest.mark.parametrize("mode, values", [("regions", (2, 1, 4)), ("labels", (1, 2, 4)), ("classes", (3, 1)),
                                          ("labels", (300, 7))])
def test_the_bundle_decodes_as_the_label_scheme(mode, values):
    scheme = LabelScheme(values, mode)
    parser = ConfigParser({"imports": ["$import torch"], "decode": bundle.decoding(scheme, 0.4)})
    decode = parser.get_parsed_content("decode")
    probabilities = torch.rand(scheme.n_channels, 7, 6, 5, generator=torch.Generator().manual_seed(0))
    if mode == "classes":
        probabilities = probabilities.softmax(0)
    decoded = decode(probabilities)
    assert decoded.shape == (1, 7, 6, 5)
    assert torch.equal(decoded[0], scheme.decode(probabilities, 0.4))


def test_the_bundle_preprocesses_with_the_transforms_of_prediction():
    settings = DatasetSettings(spacing=(1.5, 1.5, 2.0), crop_foreground=True, normalization=["NormalizeIntensityd",
                               "ScaleIntensityd"], normalization_kwargs=[{"nonzero": True}, {}],
                               patch_size=(16, 16, 16), divisible_by=(8, 8, 8))
    parser = ConfigParser({"preprocessing": {"_target_": "monai.transforms.Compose",
                                             "transforms": bundle.preprocessing(settings)}})
    built = parser.get_parsed_content("preprocessing").transforms
    expected = preprocessing(settings, with_label=False).transforms
    assert [type(t) for t in built] == [type(t) for t in expected]
    assert built[5].normalizer.nonzero and built[3].spacing_transform.pixdim.tolist() == [1.5, 1.5, 2.0]


def test_a_disagreeing_export_is_refused_and_writes_nothing(tiny_config, tmp_path, monkeypatch, capsys):
    weights = random_weights(tmp_path / "model.pth", tiny_config, seed=1)
    monkeypatch.setattr(model_export, "max_abs_diffs", lambda *args: {"torchscript": 3e-4})
    with pytest.raises(SystemExit) as stop:
        export_main(["--config_filename", str(tiny_config), "--model_filename", str(weights), "--output_dir",
                     str(tmp_path / "export"), "--formats", "torchscript"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1
    assert "torchscript export's logits differ from PyTorch's by 0.0003" in lines[0]
    assert not (tmp_path / "export").exists()
    with pytest.raises(UserError, match="differ"):
        check_agreement({"onnx": float("nan")})


def test_a_missing_onnx_extra_names_the_pip_command(tiny_config, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(UserError, match=r'needs onnxscript: pip install "unet3d-toolkit\[export\]"'):
        model_export.export_model(load_experiment(tiny_config), tmp_path / "model.pth", tmp_path / "out",
                                  formats=["onnx"])


@pytest.mark.slow
def test_the_console_scripts_export_and_monai_runs_the_bundle(tiny_config, brats_data, tmp_path):
    weights = random_weights(tmp_path / "model.pth", tiny_config, seed=1)
    result = run("unet3d-export", "--config_filename", tiny_config, "--model_filename", weights, "--output_dir",
                 tmp_path / "export")
    assert f"onnx: {tmp_path / 'export' / 'model.onnx'}, max abs difference from PyTorch" in result.stdout
    bundle_dir = tmp_path / "export" / "bundle"
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                    bundle_dir / "configs" / "inference.json", "--meta_file", bundle_dir / "configs" / "metadata.json",
                    "--bundle_root", bundle_dir, "--dataset_dir", brats_data / "test", "--output_dir",
                    tmp_path / "bundle"], check=True, capture_output=True)
    run("unet3d-predict", "--config_filename", tiny_config, "--model_filename", weights, "--input_dir",
        brats_data / "test", "--output_dir", tmp_path / "unet3d", "--device", "cpu")
    assert_same_label_maps(sorted((tmp_path / "unet3d").glob("*.nii.gz")),
                           sorted((tmp_path / "bundle").glob("*.nii.gz")))
    again = run("unet3d-export", "--config_filename", tiny_config, "--model_filename", weights, "--output_dir",
                tmp_path / "export", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
