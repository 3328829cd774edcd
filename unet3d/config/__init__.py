"""Config: read and check a JSON config into an ``Experiment`` of typed settings; resolve names to objects."""

from unet3d.config.experiment import Case, Experiment, experiment_from_dict, load_experiment
from unet3d.config.labels import LabelScheme
from unet3d.config.load import write_json
from unet3d.config.resolve import Component, list_names, resolve

__all__ = ["Case", "Component", "Experiment", "LabelScheme", "experiment_from_dict", "list_names", "load_experiment",
           "resolve", "write_json"]
