"""Learning-rate schedulers from the config's ``scheduler`` section, nested ones included."""

import torch

from unet3d.config.resolve import resolve
from unet3d.errors import UserError


def build_scheduler(spec, optimizer, mode="min", key="scheduler"):
    """``(scheduler, step_per_batch)`` for ``spec``, or ``(None, False)`` when there is none.

    ``spec`` is ``{"name": ..., **kwargs}`` from ``torch.optim.lr_scheduler``, plus
    ``step_per_batch`` (for OneCycleLR and the like; default: step once per epoch) and,
    for SequentialLR and ChainedScheduler, a ``schedulers`` list built the same way.
    ``ReduceLROnPlateau`` gets the monitored metric's ``mode`` unless the config sets it.
    """
    if not spec:
        return None, False
    if not isinstance(spec, dict):
        raise UserError(f"config key '{key}' must be an object with a 'name'")
    spec = dict(spec)
    step_per_batch = spec.pop("step_per_batch", False)
    if not isinstance(step_per_batch, bool):
        raise UserError(f"config key '{key}.step_per_batch' must be true or false, got {step_per_batch!r}")
    if "schedulers" in spec:
        inner = spec.pop("schedulers")
        if not isinstance(inner, list) or not inner:
            raise UserError(f"config key '{key}.schedulers' must be a non-empty list of schedulers")
        schedulers = [build_scheduler(s, optimizer, mode, f"{key}.schedulers[{i}]")[0] for i, s in enumerate(inner)]
        return resolve("scheduler", spec, key, optimizer=optimizer, schedulers=schedulers), step_per_batch
    if spec.get("name") == "ReduceLROnPlateau":
        if spec.setdefault("mode", mode) != mode:
            raise UserError(
                f"config key '{key}.mode' is {spec['mode']!r} but the monitored metric is to be "
                f"{'maximized' if mode == 'max' else 'minimized'}; remove it or set training.metric_mode"
            )
        if step_per_batch:
            raise UserError(f"config key '{key}.step_per_batch': ReduceLROnPlateau steps once per epoch")
    return resolve("scheduler", spec, key, optimizer), step_per_batch


def step_scheduler(scheduler, metric):
    """One scheduler step; ReduceLROnPlateau is fed the monitored metric."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()
