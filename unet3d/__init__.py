"""unet3d: config-driven 3D medical image segmentation training.

From Python, ``unet3d.api`` does what the commands do: ``train``, ``predict`` and ``evaluate``.
They are also here as ``unet3d.run_training``, ``unet3d.run_prediction`` and
``unet3d.run_evaluation``; ``unet3d.train``, ``unet3d.predict`` and ``unet3d.evaluate`` are the
stage packages.
"""

__version__ = "0.1.0"
# The releases the test suite passed on (the lower bounds of setup.cfg's requirements); --version prints them.
TESTED_WITH = {"torch": ("2.13.0",), "MONAI": ("1.6.1",)}
# The API functions under their top-level names. Imported on first use: the command lines import this
# package, and torch takes seconds to load.
_API = {"run_training": "train", "run_prediction": "predict", "run_evaluation": "evaluate"}
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        from unet3d import api

        return getattr(api, _API[name])
    raise AttributeError(f"module 'unet3d' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
