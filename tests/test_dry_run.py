"""The dry run: what it feeds each component, that it leaves no trace, and the memory estimate."""

import random

import numpy as np
import pytest
import torch

from helpers import edit_config
from unet3d.config.experiment import load_experiment
from unet3d.errors import UserError
from unet3d.losses.deep_supervision import DeepSupervisedLoss
from unet3d.train import dry_run as dry
from unet3d.train.parts import random_batch


def random_states():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state()


def test_the_dry_run_leaves_the_random_states_as_they_were(tiny_config):
    experiment = load_experiment(tiny_config)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    before = random_states()
    dry.dry_run(experiment)
    after = random_states()
    assert before[0] == after[0] and before[1] == after[1] and torch.equal(before[2], after[2])


def test_the_smallest_size_the_network_accepts_is_used(tiny_config):
    experiment = load_experiment(tiny_config)
    fed = []
    model = experiment.model.build()
    model.register_forward_pre_hook(lambda module, inputs: fed.append(tuple(inputs[0].shape)))
    loss = DeepSupervisedLoss(experiment.loss.build())
    image, target = dry.smallest_step(experiment, model.train(), loss, 4, (16, 16, 16))
    # DynUNet's strides halve 4 voxels twice, to 1, where instance norm has no variance: 8 are the least it takes.
    assert fed == [(1, 4, 4, 4, 4), (1, 4, 8, 8, 8)] and tuple(image.shape) == (1, 4, 8, 8, 8)
    assert tuple(target.shape) == (1, 3, 8, 8, 8)


def test_a_step_that_cannot_fit_is_refused_with_the_figures(tiny_config, monkeypatch):
    edit_config(tiny_config, lambda c: c["dataset"].update(desired_shape=[64, 64, 64]))
    monkeypatch.setattr(dry, "available_memory", lambda device: 2**20)
    with pytest.raises(UserError) as error:
        dry.dry_run(load_experiment(tiny_config))
    message = str(error.value)
    assert message.startswith("config key 'dataset.desired_shape': a training step on (64, 64, 64) voxels")
    assert "with batch size 2 needs about" in message and "but cpu has 0.000977 GiB free" in message


def test_activations_scaled_from_the_small_size_match_those_counted_at_the_real_size(tiny_config):
    experiment = load_experiment(tiny_config)
    model = experiment.model.build().train()
    loss = DeepSupervisedLoss(experiment.loss.build())
    counted = {}
    for side in (8, 32):
        image, target = random_batch(experiment, 4, (side,) * 3)
        counted[side] = dry.activation_bytes(model, lambda: dry.forward_and_loss(experiment, model, loss, image, target))
    estimate = counted[8] * (32 / 8) ** 3
    assert 0.8 < estimate / counted[32] < 1.25, (estimate, counted[32])
