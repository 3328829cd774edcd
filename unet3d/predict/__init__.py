"""Predict: apply trained models to cases and write NIfTI predictions."""

from unet3d.predict.inference import build_model, predict, predict_cases, predict_probabilities
from unet3d.predict.write import write_prediction

__all__ = ["build_model", "predict", "predict_cases", "predict_probabilities", "write_prediction"]
