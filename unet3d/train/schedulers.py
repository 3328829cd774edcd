"""Learning-rate schedulers from the config's ``scheduler`` section, nested ones included."""

import torch


def build_scheduler(spec, optimizer, mode="min"):
    """The scheduler a ``SchedulerSpec`` describes, nested ones included, or None without one.

    ``ReduceLROnPlateau`` gets the monitored metric's ``mode`` unless the config sets it.
    """
    if spec is None:
        return None
    if spec.schedulers:
        inner = [build_scheduler(s, optimizer, mode) for s in spec.schedulers]
        return spec.component.build(optimizer=optimizer, schedulers=inner)
    if spec.component.name == "ReduceLROnPlateau" and "mode" not in spec.component.options:
        return spec.component.build(optimizer, mode=mode)
    return spec.component.build(optimizer)


def step_scheduler(scheduler, metric):
    """One scheduler step; ReduceLROnPlateau is fed the monitored metric."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()
