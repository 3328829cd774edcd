"""Cheaper equivalents of ``F.affine_grid`` and of ``F.grid_sample``'s nearest mode, for batched augmentation.

On a CPU, ``F.affine_grid`` multiplies a grid of homogeneous coordinates by each matrix (a batched
product with an inner size of 4, slow), and ``F.grid_sample``'s 3D kernel is a scalar loop that
takes float input only. An affine grid is the sum of three outer products, one per axis; a nearest
sample is an index into the flattened volume, which also keeps the volume's own type (uint8 label
values). Both give the library's results: the grid to float rounding, the nearest sample exactly
(the same coordinates, rounded half to even as the kernel's ``nearbyint``).
"""

import math

import torch
import torch.nn.functional as F


def affine_grid(theta, size):
    """``F.affine_grid(theta, (N, C, *size), align_corners=True)`` for ``theta`` (N, 3, 4): the grid (N, *size, 3)
    as the sum of each axis's normalised coordinates times its column of ``theta``, plus the last column."""
    depth, height, width = size
    axes = [torch.linspace(-1, 1, n, dtype=theta.dtype, device=theta.device) if n > 1 else
            torch.zeros(1, dtype=theta.dtype, device=theta.device) for n in (width, height, depth)]
    x, y, z = (axis[None, :, None] * theta[:, None, :, column] for column, axis in enumerate(axes))
    plane = z[:, :, None, :] + y[:, None, :, :] + theta[:, None, None, :, 3]  # (N, D, H, 3): small
    return plane[:, :, :, None, :] + x[:, None, None, :, :]


def voxel_coordinates(grid, size):
    """The voxel coordinate along one axis of ``size`` voxels of normalised ``grid`` values, as ``grid_sample``
    computes it with ``align_corners`` (in the grid's precision)."""
    return (grid + 1) / 2 * (size - 1)


def sample_nearest(volume, grid):
    """``F.grid_sample(volume, grid, mode="nearest", padding_mode="zeros", align_corners=True)`` of ``volume``
    (N, C, D, H, W, any type, kept) by indexing: each grid point takes the voxel its coordinates round to, or
    zero outside the volume (a border of zeros, which coordinates outside are clamped onto)."""
    count, channels = volume.shape[:2]
    padded = F.pad(volume, (1, 1) * 3)
    spatial = padded.shape[2:]
    # The flat index is exact in float32 below 2**24 voxels: a few in-place passes instead of integer ones.
    dtype = torch.float32 if math.prod(spatial) < 2**24 else torch.float64
    index = None
    for axis, size in enumerate(volume.shape[2:]):  # the grid's x, y, z are the last, middle and first axes
        voxel = voxel_coordinates(grid[..., 2 - axis], size).round_().clamp_(-1, size).add_(1).to(dtype)
        index = voxel if index is None else index.mul_(spatial[axis]).add_(voxel)
    index = index.to(torch.int64).view(count, 1, -1).expand(count, channels, -1)
    sampled = torch.gather(padded.reshape(count, channels, -1), 2, index)
    return sampled.view(count, channels, *grid.shape[1:-1])
