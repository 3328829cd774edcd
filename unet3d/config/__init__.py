"""Config: load and validate JSON, resolve names to objects."""

from unet3d.config.load import load_config, write_json
from unet3d.config.resolve import list_names, resolve

__all__ = ["load_config", "write_json", "list_names", "resolve"]
