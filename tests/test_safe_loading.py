"""Safe loading: weights-only checkpoints, a resolver that reaches only its namespaces, plug-ins only by --plugin."""

import importlib
import json
import re
import subprocess
import types

import pytest
import torch

from helpers import REPO, edit_config, run
from unet3d.config.settings import parse_augmentations
from unet3d.data.transforms import augmentations, normalizations
from unet3d.errors import UserError
from unet3d.scripts.train import main as train
from unet3d.config.schema import parse_scheduler
from unet3d.train.schedulers import build_scheduler

resolver = importlib.import_module("unet3d.config.resolve")  # the package exports a function of the same name
DANGEROUS = ["os.system", "builtins.eval", "subprocess.Popen", "__import__", "eval", "exec", "getattr", "system",
             "Popen", "torch.load", "pickle.loads", "importlib.import_module", "unet3d.config.resolve.importlib",
             "monai.transforms.Compose", "..os", "os", "sys.modules", "Path"]


def test_every_torch_load_is_weights_only():
    unsafe = []
    for path in sorted(REPO.rglob("*.py")):
        if ".venv" in path.parts:
            continue
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call, depth = "", 0
            for char in text[match.end() - 1:]:
                call += char
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    break
            if "weights_only=True" not in call:
                unsafe.append(f"{path.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    from unet3d.models.weights import load

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": subprocess.Popen}, path)
    with pytest.raises(UserError, match="cannot read as a unet3d checkpoint"):
        load(path)


@pytest.fixture
def imported(monkeypatch):
    """The modules the resolver imports while a test runs."""
    names = []
    real = importlib.import_module

    def recording(name, *args, **kwargs):
        names.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(resolver, "importlib", types.SimpleNamespace(import_module=recording))
    return names


@pytest.mark.parametrize("name", DANGEROUS)
def test_no_name_reaches_outside_the_namespaces(name, imported):
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    attempts = [
        lambda: augmentations(parse_augmentations([{"name": name}], "dataset.spatial_augmentations"), ["image", "label"]),
        lambda: augmentations(parse_augmentations([{"name": "RandFlipd"}, {"name": name}],
                                                  "dataset.intensity_augmentations"), "image"),
        lambda: normalizations(name, None),
        lambda: normalizations(["NormalizeIntensityd", name], [{}, {}]),
        lambda: build_scheduler(parse_scheduler({"name": name}, "scheduler"), optimizer),
        lambda: build_scheduler(parse_scheduler({"name": "SequentialLR", "milestones": [1], "schedulers": [
            {"name": "LinearLR"}, {"name": "ChainedScheduler", "schedulers": [{"name": name}]}]}, "scheduler"), optimizer),
        lambda: resolver.resolve("model", {"name": name}, "model"),
        lambda: resolver.resolve("dataset", {"name": name}, "dataset"),
    ]
    for attempt in attempts:
        with pytest.raises(UserError, match="config key '"):
            attempt()
    searched = {module for kind in resolver.NAMESPACES for module in resolver.namespaces(kind)}
    assert set(imported) <= searched


PLUGIN = '''
import os  # a plug-in may import anything; only its own classes become nameable
import torch


class TinyNet(torch.nn.Module):
    """A lab's own model."""

    def __init__(self, in_channels, out_channels, width=4):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv3d(in_channels, width, 3, padding=1), torch.nn.ReLU(),
                                          torch.nn.Conv3d(width, out_channels, 1))

    def forward(self, image):
        return self.layers(image)
'''


def test_plugin_models_are_named_only_with_the_flag(tiny_config, tmp_path, capsys, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "lab_models.py").write_text(PLUGIN)
    edit_config(tiny_config, lambda c: c.update(model={"name": "TinyNet", "in_channels": 4, "out_channels": 3}))
    with pytest.raises(SystemExit) as stop:
        train(["--config_filename", str(tiny_config), "--check"])
    assert stop.value.code == 2
    assert "config key 'model.name': unknown model 'TinyNet'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        train(["--config_filename", str(tiny_config), "--check", "--plugin", "lab_models_missing"])
    assert "--plugin lab_models_missing: cannot import it" in capsys.readouterr().err

    result = run("unet3d-train", "--config_filename", tiny_config, "--check", "--plugin", "lab_models", check=False,
                 env={"PYTHONPATH": str(tmp_path / "plugins")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == {"name": "TinyNet", "width": 4, "in_channels": 4, "out_channels": 3}
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setattr(resolver, "PLUGINS", dict(resolver.PLUGINS))
    resolver.load_plugins(["lab_models"])
    assert resolver.namespaces("model")[0] == "lab_models" and "lab_models" not in resolver.namespaces("optimizer")
    with pytest.raises(UserError, match="unknown model 'os'|not a valid model name"):
        resolver.lookup("model", "os", "model.name")
