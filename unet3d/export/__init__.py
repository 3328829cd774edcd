"""Export: a trained model as TorchScript, ONNX and a MONAI bundle, with a manifest of how to apply it."""

from unet3d.export.model_export import FORMATS, export_model

__all__ = ["FORMATS", "export_model"]
