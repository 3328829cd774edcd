"""The monitored metric: which epoch is best, and when to stop early."""

import math

from unet3d.errors import UserError


class MetricMonitor:
    """Best value of one CSV column, its epoch, and the epochs since it last improved.

    Args:
        metric: the column, e.g. ``val_loss`` or ``val_dice_mean``.
        mode: ``"min"`` or ``"max"``.
        patience: stop after this many epochs in a row without improvement (None: never).
    """

    def __init__(self, metric, mode, patience=None):
        self.metric, self.mode, self.patience = metric, mode, patience
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.epochs_without_improvement = 0

    def update(self, row):
        """Record an epoch's row; returns whether it is the best so far. An epoch without the metric (not
        validated) is not counted."""
        if self.metric not in row:
            return False
        value = row[self.metric]
        improved = value < self.best_value if self.mode == "min" else value > self.best_value
        if improved:
            self.best_value, self.best_epoch, self.epochs_without_improvement = value, row["epoch"], 0
        else:
            self.epochs_without_improvement += 1
        return improved

    @property
    def should_stop(self):
        """Whether ``patience`` epochs in a row went by without improvement."""
        return bool(self.patience) and self.epochs_without_improvement >= self.patience

    def state_dict(self):
        """The values a checkpoint keeps."""
        return {"metric": self.metric, "mode": self.mode, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state):
        """Continue from a checkpoint's values."""
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.epochs_without_improvement = state["epochs_without_improvement"]


def monitor_from_settings(settings, columns):
    """The ``MetricMonitor`` that ``training.metric_to_monitor`` asks for, among the CSV's ``columns``.

    ``settings`` are the ``TrainingSettings``; without validation cases ``val_loss`` falls back to ``loss``.
    """
    metric = settings.metric_to_monitor
    if metric == "val_loss" and metric not in columns:
        metric = "loss"
    if metric not in columns:
        raise UserError(f"config key 'training.metric_to_monitor': {metric!r} is not logged; one of {', '.join(columns)}")
    return MetricMonitor(metric, settings.monitor_mode, settings.early_stopping_patience)
