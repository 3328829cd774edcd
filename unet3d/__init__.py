"""unet3d: config-driven 3D medical image segmentation training."""

__version__ = "0.1.0"
