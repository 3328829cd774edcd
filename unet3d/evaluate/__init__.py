"""Evaluate: compare predicted label maps with reference labels, per case and region."""

from unet3d.evaluate.evaluation import evaluate_folder, evaluate_predictions, summarize
from unet3d.evaluate.metrics import BRATS_MAX_HD95, region_metrics

__all__ = ["BRATS_MAX_HD95", "evaluate_folder", "evaluate_predictions", "region_metrics", "summarize"]
