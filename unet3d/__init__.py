"""unet3d: config-driven 3D medical image segmentation training.

``unet3d.train(config, ...)``, ``unet3d.predict(...)`` and ``unet3d.evaluate(...)`` do from
Python what the commands do (see ``unet3d.api``).
"""

import importlib
import inspect
import sys
import types

__version__ = "0.1.0"
# The releases the test suite passed on (the lower bounds of setup.cfg's requirements); --version prints them.
TESTED_WITH = {"torch": ("2.13.0",), "MONAI": ("1.6.1",)}
__all__ = ["train", "predict", "evaluate"]


class _Stage:
    # ``unet3d.train`` and its two siblings: calling one runs the API function of that name; any other
    # attribute is the stage package's (``unet3d.train.loop``, ...), which shares the name.

    __doc__ = property(lambda self: self._function().__doc__)

    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def _function(self):
        return getattr(importlib.import_module("unet3d.api"), self._name)

    def __call__(self, *args, **kwargs):
        return self._function()(*args, **kwargs)

    def __getattr__(self, attribute):
        if attribute in ("__signature__", "__wrapped__"):
            function = self._function()
            return inspect.signature(function) if attribute == "__signature__" else function
        return getattr(importlib.import_module(f"unet3d.{self._name}"), attribute)

    def __setattr__(self, attribute, value):
        setattr(importlib.import_module(f"unet3d.{self._name}"), attribute, value)

    def __delattr__(self, attribute):
        delattr(importlib.import_module(f"unet3d.{self._name}"), attribute)

    def __repr__(self):
        return f"<unet3d.{self._name}: the API function, and the stage package of that name>"


class _Package(types.ModuleType):
    """The package, whose ``train``, ``predict`` and ``evaluate`` are ``_Stage`` objects whatever Python
    binds there on importing the stage packages. The API is imported on first call: the command
    lines import this package, and torch takes seconds to load."""

    def __getattribute__(self, name):
        if name in __all__:
            return _STAGES[name]
        return super().__getattribute__(name)


_STAGES = {name: _Stage(name) for name in __all__}
sys.modules[__name__].__class__ = _Package
