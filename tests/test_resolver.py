"""The resolver: names to objects, only from unet3d's declared namespaces."""

import pytest
import torch

from unet3d.config import list_names, resolve
from unet3d.errors import UserError


def test_components_are_found_in_their_namespaces():
    assert type(resolve("loss", {"name": "BCEWithLogitsLoss"}, "loss")).__module__.startswith("torch.nn")
    assert type(resolve("loss", {"name": "DiceLoss", "sigmoid": True}, "loss")).__module__.startswith("monai.losses")
    model = resolve("model", {"name": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                              "channels": [4, 8], "strides": [2]}, "model")
    optimizer = resolve("optimizer", {"name": "SGD", "lr": 0.1, "momentum": 0.9}, "optimizer", model.parameters())
    scheduler = resolve("scheduler", {"name": "PolynomialLR", "total_iters": 10}, "scheduler", optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.PolynomialLR)
    assert "DynUNet" in list_names("model") and "SegmentationDataset" in list_names("dataset")


def test_unknown_name_lists_namespaces_and_closest_matches():
    with pytest.raises(UserError) as error:
        resolve("model", {"name": "DynUNett"}, "model")
    message = str(error.value)
    assert "config key 'model.name'" in message
    assert "unet3d.models, monai.networks.nets" in message
    assert "closest matches: DynUNet" in message


def test_bad_keyword_names_section_keyword_and_accepted_parameters():
    with pytest.raises(UserError) as error:
        resolve("optimizer", {"name": "Adam", "learning_rate": 0.1}, "optimizer", [torch.nn.Parameter(torch.zeros(1))])
    message = str(error.value)
    assert "config key 'optimizer'" in message and "'learning_rate'" in message
    assert "accepted: lr, betas, eps, weight_decay" in message


def test_missing_required_argument_is_named():
    with pytest.raises(UserError, match=r"config key 'model': DynUNet needs 'spatial_dims'"):
        resolve("model", {"name": "DynUNet", "in_channels": 1}, "model")


@pytest.mark.parametrize("name", ["system", "os.system", "eval", "builtins.eval", "Popen", "subprocess.Popen",
                                  "__import__", "functional", "init", "Tensor", "load", "_Loss"])
def test_only_classes_of_the_right_kind_are_reachable(name):
    for kind in ("model", "loss", "optimizer", "scheduler", "dataset", "transform"):
        with pytest.raises(UserError):
            resolve(kind, {"name": name}, kind)
