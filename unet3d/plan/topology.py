"""Target spacing, patch size and the DynUNet's kernels and strides, by nnU-Net's rules.

- Spacing: the median of the cases'. When one axis is much coarser (over ``ANISOTROPY`` times
  the others) and has few voxels, it takes the 10th percentile of that axis's spacings instead,
  as nnU-Net does: resampling thick slices to thin ones invents data.
- Topology: each level halves the axes that are still at least twice ``MIN_FEATURE_MAP`` voxels
  and whose spacing is under twice the finest; an axis gets 3-voxel kernels once its spacing is
  within twice the finest (1 before: thick slices are not mixed early).
- Patch: starts as a cube of physical size (256 voxels of the finest spacing, shaped by the
  spacing) clipped to the median shape, and shrinks, axis with the largest share of the median
  shape first, until the caller's test of memory and time passes.
"""

import math

import numpy as np

ANISOTROPY = 3.0
MIN_FEATURE_MAP = 4
MAX_LEVELS = 6
# DynUNet needs three levels: two halvings above the minimum feature map.
MIN_LEVELS = 3
MIN_PATCH = 4 * MIN_FEATURE_MAP
INITIAL_PATCH_VOXELS = 256 ** 3


def target_spacing(spacings, shapes):
    """``(spacing, anisotropic)``: the target spacing of cases with ``spacings`` and ``shapes`` (n x 3, RAS order),
    and whether nnU-Net's rule for a coarse axis applied."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.median(spacings, axis=0)
    size = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(3) if axis != worst]
    coarse = target[worst] > ANISOTROPY * max(target[others])
    few_voxels = size[worst] * ANISOTROPY < min(size[others])
    if coarse and few_voxels:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
        return [float(s) for s in target], True
    return [float(s) for s in target], False


def network_topology(patch, spacing, max_levels=MAX_LEVELS):
    """``(kernels, strides, divisor)``: DynUNet kernel sizes and strides per level for ``patch`` at ``spacing``,
    and what each patch axis must be a multiple of."""
    spacing, size = list(spacing), list(patch)
    kernel = [1, 1, 1]
    kernels, strides = [], [[1, 1, 1]]
    while len(strides) < max_levels:
        valid = [axis for axis in range(3) if size[axis] >= 2 * MIN_FEATURE_MAP]
        if not valid:
            break
        finest = min(spacing[axis] for axis in valid)
        valid = [axis for axis in valid if spacing[axis] / finest < 2]
        kernel = [3 if kernel[axis] == 3 or spacing[axis] / min(spacing) < 2 else 1 for axis in range(3)]
        kernels.append(list(kernel))
        strides.append([2 if axis in valid else 1 for axis in range(3)])
        for axis in valid:
            spacing[axis] *= 2
            size[axis] = math.ceil(size[axis] / 2)
    kernels.append([3, 3, 3])  # the bottleneck
    divisor = [int(np.prod([stride[axis] for stride in strides])) for axis in range(3)]
    return kernels, strides, divisor


def initial_patch(spacing, median_shape):
    """nnU-Net's first patch: the volume of a 256-voxel cube, shaped inversely to the spacing, clipped to the median
    shape."""
    inverse = 1 / np.asarray(spacing, float)
    patch = inverse * (INITIAL_PATCH_VOXELS / np.prod(inverse)) ** (1 / 3)
    patch = [int(max(MIN_FEATURE_MAP, min(round(p), round(m)))) for p, m in zip(patch, median_shape)]
    if len(network_topology(patch, spacing)[1]) < MIN_LEVELS:  # volumes too small for the network: padded
        patch = [max(p, MIN_PATCH) if s < 2 * min(spacing) else p for p, s in zip(patch, spacing)]
    return patch


def fitted(patch, spacing):
    """``patch`` rounded down to what its own topology divides (at least that), with the topology."""
    for _ in range(4):  # rounding can lower a level's count; it settles within a few rounds
        kernels, strides, divisor = network_topology(patch, spacing)
        rounded = [max(d, p // d * d) for p, d in zip(patch, divisor)]
        if rounded == list(patch):
            break
        patch = rounded
    return list(patch), kernels, strides, divisor


def search_patch(spacing, median_shape, fits, floor=0):
    """The largest patch (with its topology) that ``fits(patch, kernels, strides)`` accepts, shrinking from
    ``initial_patch`` by the largest share of ``median_shape``; None when none of at least ``floor`` voxels does."""
    patch, kernels, strides, divisor = fitted(initial_patch(spacing, median_shape), spacing)
    while not fits(patch, kernels, strides):
        shares = [p / m for p, m in zip(patch, median_shape)]
        for axis in np.argsort(shares)[::-1]:
            smaller = list(patch)
            smaller[axis] -= divisor[axis]
            if (smaller[axis] >= MIN_FEATURE_MAP and np.prod(smaller) >= floor
                    and len(network_topology(smaller, spacing)[1]) >= MIN_LEVELS):
                patch = smaller
                break
        else:
            return None
        patch, kernels, strides, divisor = fitted(patch, spacing)
    return patch, kernels, strides


def windows(shape, patch, overlap=0.5):
    """How many sliding windows of ``patch`` with ``overlap`` cover a volume of ``shape``."""
    return int(np.prod([1 if s <= p else math.ceil((s - p) / max(1, round(p * (1 - overlap)))) + 1
                        for s, p in zip(shape, patch)]))
