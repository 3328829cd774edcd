"""Evaluate: compare predicted label maps with reference labels, per case and region."""

from unet3d.evaluate.evaluation import evaluate_folder, group_label_files, label_files, summarize
from unet3d.evaluate.metrics import BRATS_MAX_HD95, region_metrics

__all__ = ["BRATS_MAX_HD95", "evaluate_folder", "group_label_files", "label_files", "region_metrics", "summarize"]
