"""Learning-rate schedulers from the config's ``scheduler`` section, nested ones included.

A length given as ``"auto"`` (``total_iters``, OneCycleLR's ``total_steps``,
CosineAnnealingLR's ``T_max``) is the run's: its optimizer steps (or epochs, for a
scheduler stepped per epoch), less the SequentialLR milestones before it. Changing
``n_epochs`` then changes nothing else, and a resumed run with more or fewer epochs takes
the new length.
"""

import torch

from unet3d.config.schema import AUTO_LENGTH_KEYS as LENGTH_KEYS
# State that a scheduler derives from its length at construction (OneCycleLR's phases).
DERIVED_FROM_LENGTH = ("_schedule_phases",)


def build_scheduler(spec, optimizer, mode="min", length=None):
    """The scheduler a ``SchedulerSpec`` describes, nested ones included, or None without one.

    ``length`` is the run's number of scheduler steps, which replaces ``"auto"`` lengths.
    ``ReduceLROnPlateau`` gets the monitored metric's ``mode`` unless the config sets it.
    """
    if spec is None:
        return None
    fixed = {key: length for key in spec.auto_lengths}
    component = spec.component
    if spec.schedulers:
        inner = [build_scheduler(s, optimizer, mode, part) for s, part in zip(spec.schedulers, parts(spec, length))]
        return component.build(optimizer=optimizer, schedulers=inner, **fixed)
    if component.name == "ReduceLROnPlateau" and spec.plateau_mode is None:
        fixed["mode"] = mode
    return component.build(optimizer, **fixed)


def parts(spec, length):
    """The lengths of a SequentialLR's schedulers (between its milestones) or a ChainedScheduler's (all of it)."""
    milestones = spec.milestones
    if not milestones or length is None:
        return [length] * len(spec.schedulers)
    bounds = [0, *milestones, max(length, milestones[-1])]
    # A run shorter than its milestones still gives each scheduler a length (a length of 0 divides by 0).
    return [max(1, bounds[index + 1] - bounds[index]) for index in range(len(spec.schedulers))]


def schedule_length(spec, n_epochs, steps_per_epoch):
    """The run's number of scheduler steps: optimizer steps for a scheduler stepped per batch, else epochs."""
    return n_epochs * steps_per_epoch if spec is not None and spec.step_per_batch else n_epochs


class ScheduleState:
    """The scheduler's ``state_dict`` for checkpoints; on loading, ``"auto"`` lengths keep this run's value."""

    def __init__(self, scheduler, spec):
        self.scheduler, self.spec = scheduler, spec

    def state_dict(self):
        """The scheduler's state."""
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        """Continue from ``state``, without the lengths ``"auto"`` derives from this run."""
        self.scheduler.load_state_dict(_without_auto_lengths(state, self.spec))


def _without_auto_lengths(state, spec):
    state = dict(state)
    if spec.auto_lengths:
        for key in (*LENGTH_KEYS, *DERIVED_FROM_LENGTH):
            state.pop(key, None)
    if spec.schedulers and "_schedulers" in state:
        state["_schedulers"] = [_without_auto_lengths(inner, inner_spec)
                                for inner, inner_spec in zip(state["_schedulers"], spec.schedulers)]
    return state


def step_scheduler(scheduler, row, metric):
    """One per-epoch step; ReduceLROnPlateau is fed the monitored ``metric`` of ``row`` and waits for an
    epoch that has it (validation every k epochs)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if metric in row:
            scheduler.step(row[metric])
    else:
        scheduler.step()
