"""The config's ``training`` section with its defaults, checked."""

from unet3d.config.schema import settings
from unet3d.train.monitor import metric_mode
from unet3d.train.precision import amp_dtype


def training_settings(config):
    """``config["training"]`` with the schema's defaults filled in, checked."""
    result = settings(config, "training")
    amp_dtype(result["amp"])
    metric_mode(result["metric_to_monitor"], result["metric_mode"])
    return result
