"""Predict: apply trained models to cases and write NIfTI predictions."""

from unet3d.predict.inference import predict, predict_cases
from unet3d.predict.write import write_prediction

__all__ = ["predict", "predict_cases", "write_prediction"]
