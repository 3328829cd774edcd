"""The resolver: names to objects, only from unet3d's declared namespaces."""

import importlib
import inspect
import re

import pytest
import torch

from helpers import REPO
from unet3d.config import list_names, resolve
from unet3d.config.resolve import NAMESPACES, SUPPLIED, _base_types, lookup, namespaces
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


# Broader than the resolver's rule on purpose: any parameter name that may name a file, folder, URL, hub or
# download. The parameters it catches that do none of that are listed with what they do.
LOOKS_LIKE_IO = re.compile(r"file|path|dir|folder|url|uri|hub|download|pretrain|cache|read|writ|save|load|repo|checkpoint")
NOT_IO = {
    "bidirectional": "an RNN's direction",
    "cache_grid": "keeps a sampling grid in memory",
    "dropout_path_rate": "stochastic depth",
    "hyena_l_cache": "an in-memory cache length",
    "overwrite": "replaces a dictionary key",
    "save_attn": "keeps attention weights in memory",
    "save_theta": "keeps an affine in memory",
    "use_checkpoint": "gradient checkpointing",
    "use_checkpointing": "gradient checkpointing",
}
IO_CLASS_NAME = re.compile(r"^(Load|Save|Write|Read)")


def every_class():
    """``(kind, name, class)`` of every class of the right kind in every namespace the resolver searches."""
    for kind in NAMESPACES:
        for module_name in namespaces(kind):
            module = importlib.import_module(module_name)
            for name in dir(module):
                obj = getattr(module, name)
                if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, _base_types(kind)):
                    yield kind, name, obj


def test_no_class_that_reads_writes_or_downloads_is_reachable():
    refused, checked = [], 0
    reachable = {kind: set(list_names(kind)) for kind in NAMESPACES}
    for kind, name, cls in every_class():
        checked += 1
        try:
            parameters = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            parameters = {}
        io_like = [p for p in parameters if LOOKS_LIKE_IO.search(p) and p not in NOT_IO
                   and p not in SUPPLIED.get(kind, ())]
        if not io_like and not IO_CLASS_NAME.match(name):
            continue
        with pytest.raises(UserError) as error:
            resolve(kind, {"name": name}, kind)
        message = str(error.value)
        assert "\n" not in message and f"config key '{kind}.name': {name} cannot be named in a config" in message
        assert name not in reachable[kind]
        refused.append(name)
    assert checked > 900 and {"PerceptualLoss", "SaveImaged", "LoadImaged", "WriteFileMappingd",
                              "FlexibleUNet", "DenseNet121"} <= set(refused)


def documented_names():
    """The component names the README, docs and example configs use."""
    texts = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("examples/**/*.json")]
    return sorted({name for path in texts for name in re.findall(r'"name": *"(\w+)"', path.read_text())})


@pytest.mark.parametrize("name", documented_names())
def test_what_the_docs_and_examples_name_is_reachable(name):
    if name == "TinyNet":
        pytest.skip("the plug-in example of docs/config_guide.md: reachable only with --plugin")
    found = []
    for kind in NAMESPACES:
        try:
            found.append(lookup(kind, name, kind))
        except UserError as error:
            assert "cannot be named in a config" not in str(error)
    assert found, name
