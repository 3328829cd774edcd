"""Per-region metrics of one case, with the BraTS conventions for empty masks.

- Dice: 1 when prediction and reference are both empty, 0 when exactly one is.
- HD95: the symmetric 95th percentile Hausdorff distance in millimetres (voxel spacing
  from the affine); 0 when both masks are empty, ``BRATS_MAX_HD95`` = 373.13 mm when
  exactly one is (BraTS's value: the diagonal of its 240 x 240 x 155 1-mm grid).
- Sensitivity: NaN when the reference is empty (there is nothing to find); specificity:
  NaN when the reference fills the image. Summaries skip NaN.
- Volumes of prediction and reference in millilitres.
"""

import warnings

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_dice, compute_hausdorff_distance, get_confusion_matrix

BRATS_MAX_HD95 = 373.13
METRICS = ("dice", "hd95", "sensitivity", "specificity", "predicted_volume_ml", "reference_volume_ml")


def voxel_spacing(affine):
    """Voxel size in millimetres along each array axis: the lengths of the affine's columns."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def hausdorff95(predicted, reference, spacing):
    """HD95 in millimetres of two boolean masks (X, Y, Z), with the BraTS values for empty masks."""
    if not predicted.any() and not reference.any():
        return 0.0
    if not predicted.any() or not reference.any():
        return BRATS_MAX_HD95
    with warnings.catch_warnings():
        # MONAI passes one of its own deprecated arguments internally; nothing for users to act on.
        warnings.simplefilter("ignore", FutureWarning)
        distance = compute_hausdorff_distance(predicted[None, None], reference[None, None], include_background=True,
                                              percentile=95, spacing=[float(s) for s in spacing])
    return float(distance)


def region_metrics(predicted, reference, affine, names, hausdorff=True):
    """One dict per region of boolean masks (C, X, Y, Z): ``region`` and ``METRICS`` (hd95 NaN without ``hausdorff``)."""
    predicted = torch.as_tensor(np.asarray(predicted, dtype=bool))
    reference = torch.as_tensor(np.asarray(reference, dtype=bool))
    batch = predicted[None].float(), reference[None].float()
    dice = compute_dice(*batch, include_background=True, ignore_empty=False)[0]
    confusion = get_confusion_matrix(*batch, include_background=True)
    sensitivity = compute_confusion_matrix_metric("sensitivity", confusion)[0]
    specificity = compute_confusion_matrix_metric("specificity", confusion)[0]
    voxel_ml = abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000
    spacing = voxel_spacing(affine)
    rows = []
    for index, name in enumerate(names):
        rows.append({
            "region": name,
            "dice": float(dice[index]),
            "hd95": hausdorff95(predicted[index], reference[index], spacing) if hausdorff else float("nan"),
            "sensitivity": float(sensitivity[index]),
            "specificity": float(specificity[index]),
            "predicted_volume_ml": float(predicted[index].sum()) * voxel_ml,
            "reference_volume_ml": float(reference[index].sum()) * voxel_ml,
        })
    return rows
