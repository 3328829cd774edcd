"""The config's ``training`` section with its defaults, checked."""

from unet3d.errors import UserError
from unet3d.train.monitor import metric_mode
from unet3d.train.precision import amp_dtype

TRAINING_DEFAULTS = {
    "n_epochs": 1,
    "batch_size": 1,
    "validation_batch_size": 1,
    "samples_per_epoch": None,
    "amp": False,
    "compile": False,
    "clip_grad_norm": None,
    "metric_to_monitor": "val_loss",
    "metric_mode": None,
    "save_best": True,
    "save_every_n_epochs": None,
    "save_last_n_models": None,
    "early_stopping_patience": None,
    "seed": 0,
    "deterministic": False,
}
POSITIVE = ("n_epochs", "batch_size", "validation_batch_size")
POSITIVE_OR_NONE = ("samples_per_epoch", "save_every_n_epochs", "save_last_n_models", "early_stopping_patience")


def training_settings(config):
    """``config["training"]`` with defaults filled in."""
    settings = dict(TRAINING_DEFAULTS)
    settings.update({k: v for k, v in config.get("training", {}).items() if v is not None or k not in settings})
    for key in POSITIVE + POSITIVE_OR_NONE:
        value = settings[key]
        if (value is not None or key in POSITIVE) and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"config key 'training.{key}' must be a positive integer, got {value!r}")
    if not isinstance(settings["seed"], int):
        raise UserError(f"config key 'training.seed' must be an integer, got {settings['seed']!r}")
    clip = settings["clip_grad_norm"]
    if clip is not None and (not isinstance(clip, (int, float)) or clip <= 0):
        raise UserError(f"config key 'training.clip_grad_norm' must be a positive number, got {clip!r}")
    amp_dtype(settings["amp"])
    metric_mode(settings["metric_to_monitor"], settings["metric_mode"])
    return settings
