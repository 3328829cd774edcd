"""TensorBoard and MLflow trackers, read back with their own readers: TensorBoard's event accumulator and MLflow's client."""

import pytest

import unet3d
from helpers import edit_config, read_log, run
from unet3d.config.experiment import load_experiment
from unet3d.train.trackers import MLflowTracker, TensorBoardTracker, Trackers, mid_slice, overlay, store_folder

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
mlflow_tracking = pytest.importorskip("mlflow.tracking")


def tensorboard_scalars(folder):
    """The accumulator of the event files in ``folder`` and ``{tag: [(step, value), ...]}``, as TensorBoard shows
    them (purged steps left out)."""
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events, {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def the_run(client, name):
    """The one MLflow run of experiment ``name``."""
    (found,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return found


def test_both_trackers_log_the_csv_per_epoch_and_a_resumed_run_appends(single_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store: quick to create, for tests
    edit_config(single_config, lambda c: c["training"].update(n_epochs=1, tracker_image_interval=1))
    work = single_config.parent / single_config.stem
    store = (tmp_path / "mlruns").as_uri()
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_ALLOW_FILE_STORE": "true"}
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--trackers", "tensorboard", "mlflow",
        env=env)
    client = mlflow_tracking.MlflowClient(store)
    first = the_run(client, "tiny")
    assert first.info.status == "FINISHED" and first.info.run_name == "tiny"
    assert [a.path for a in client.list_artifacts(first.info.run_id)] == ["model_best.pth"]

    # Resumed for a second epoch (from Python, the config key naming the trackers): the same run and log folder,
    # every step once.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    unet3d.run_training(single_config, device="cpu", overrides=["training.n_epochs=2",
                                                         'training.trackers=["tensorboard", "mlflow"]'])
    rows = read_log(work / "training_log.csv")
    steps_per_epoch = 2  # 4 training cases in batches of 2
    events, scalars = tensorboard_scalars(work / "tensorboard")
    for column in rows[0]:  # every CSV column, at each epoch's last step
        assert scalars[column] == [(int(row["epoch"]) * steps_per_epoch, pytest.approx(float(row[column])))
                                   for row in rows], column
    assert scalars["lr_step"] == [(step, pytest.approx(0.01)) for step in (1, 2, 3, 4)]
    images = events.Images("validation_overlay")
    assert [image.step for image in images] == [2, 4]
    assert (images[0].width, images[0].height) == (32, 16)  # prediction | reference, 16x16 each

    resumed = the_run(client, "tiny")
    assert resumed.info.run_id == first.info.run_id and resumed.info.status == "FINISHED"
    params = resumed.data.params
    assert params["training.batch_size"] == "2" and params["model.name"] == "DynUNet"
    assert params["validation_cases"] == "2" and params["model.filters"] == "[4, 8, 16]"
    assert params["training.n_epochs"] == "1"  # a parameter keeps its first value
    for column in ("loss", "val_dice_mean", "lr"):
        assert [(m.step, m.value) for m in client.get_metric_history(resumed.info.run_id, column)] == [
            (int(row["epoch"]) * steps_per_epoch, pytest.approx(float(row[column]))) for row in rows]
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "lr_step")] == [1, 2, 3, 4]


def rows_of(epochs):
    return [{"epoch": epoch, "loss": 1.0 / epoch, "lr": 0.01, "val_dice_mean": 0.1 * epoch} for epoch in epochs]


def test_trackers_named_mid_run_get_the_earlier_epochs_and_a_replayed_epoch_once(single_config, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment = load_experiment(single_config)
    work = tmp_path / "tiny"
    work.mkdir()
    # Two epochs trained before MLflow was named: the new run gets them from the CSV's rows.
    mlflow = MLflowTracker(experiment, work, rows_of([1, 2]), 3)
    mlflow.log_epoch(rows_of([3])[0], 9, [(7, 0.01), (8, 0.01), (9, 0.01)])
    mlflow.close("KILLED")  # killed before the checkpoint of epoch 3: the epoch is replayed
    mlflow = MLflowTracker(experiment, work, rows_of([1, 2]), 3, mlflow.state())
    mlflow.log_epoch({**rows_of([3])[0], "epoch_time": 1.0}, 9, [(7, 0.01), (8, 0.01), (9, 0.01)])
    mlflow.close("FINISHED")
    client = mlflow_tracking.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")  # the default store, in the work folder
    logged = the_run(client, "tiny")
    assert [(m.step, m.value) for m in client.get_metric_history(logged.info.run_id, "loss")] == [
        (3, 1.0), (6, 0.5), (9, pytest.approx(1 / 3))]
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "lr_step")] == [7, 8, 9]
    assert logged.info.artifact_uri.startswith((work / "mlartifacts").as_uri())

    tensorboard = TensorBoardTracker(experiment, work, rows_of([1, 2]), 3)
    tensorboard.log_epoch(rows_of([3])[0], 9, [(7, 0.01)])
    tensorboard.close("KILLED")
    tensorboard = TensorBoardTracker(experiment, work, rows_of([1, 2]), 3)
    tensorboard.log_epoch({**rows_of([3])[0], "loss": 0.25}, 9, [(7, 0.02)])
    tensorboard.close("FINISHED")
    _, scalars = tensorboard_scalars(work / "tensorboard")
    assert scalars["loss"] == [(3, 1.0), (6, 0.5), (9, 0.25)] and scalars["lr_step"] == [(7, pytest.approx(0.02))]


def test_only_the_main_process_tracks_and_the_overlay_shows_the_masks(single_config, tmp_path):
    import torch

    experiment = load_experiment(single_config, overrides=['training.trackers=["tensorboard"]'])
    assert experiment.config_hashes() == load_experiment(single_config).config_hashes()  # a run may add trackers
    others = Trackers(experiment, tmp_path, enabled=False)
    others.start([], 2)
    others.record_lr(0.01)
    others.log_epoch({"epoch": 1, "loss": 1.0})
    assert not (tmp_path / "tensorboard").exists() and others.state_dict() == {}
    # The folds of a config share its MLflow store.
    assert store_folder(tmp_path / "tiny" / "fold2") == store_folder(tmp_path / "tiny") == (tmp_path / "tiny").resolve()

    image = torch.zeros(1, 4, 4, 3)
    predicted = torch.zeros(3, 4, 4, 3, dtype=torch.bool)
    predicted[0, 0, 0, 1] = True
    picture = overlay(mid_slice(image, predicted, torch.zeros_like(predicted)))
    assert picture.shape == (3, 4, 8)
    assert picture[:, 0, 0].tolist() == pytest.approx([0.5, 0.1, 0.1]) and picture[:, 0, 4].sum() == 0
