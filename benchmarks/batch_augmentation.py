"""Batched spatial augmentation side by side: plain ``affine_grid``/``grid_sample`` (unet3d), MONAI's layers and kornia.

For a batch of BraTS-size patches (``--batch`` x 4 x ``--size``³ image, one channel of label values)
every element rotated and scaled, this times (median of ``--repeats`` rounds, each variant once a round,
wall seconds):

- unet3d (``unet3d.data.batch_augmentation.resample``): one grid per element from MONAI's
  ``create_rotate``/``create_scale``, an affine grid (``unet3d.data.resample.affine_grid``), one
  ``grid_sample`` for the image (linear) and an index for the label (``resample.sample_nearest``,
  what ``grid_sample``'s nearest mode gives); then with an elastic displacement field added to the
  same grid;
- MONAI's batched layers: ``monai.networks.layers.AffineTransform`` (image, then label), then with
  ``monai.networks.blocks.Warp`` for the displacement field (a second resampling of each);
- kornia's ``RandomAffine3D`` (image, then label with the same parameters), when kornia imports
  (it is not a dependency of unet3d: put it on ``PYTHONPATH`` for this run);
- the whole ``"nnunet"`` preset with every augmentation firing (``BatchAugmentation.augment``).

It checks that MONAI's ``AffineTransform`` gives unet3d's output for the same matrices. Not a test.
Run from the repository root:

    .venv/bin/python benchmarks/batch_augmentation.py [--batch 2] [--size 96] [--threads 2] [--device cpu]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp
from monai.networks.layers import AffineTransform
from monai.transforms.utils import create_rotate, create_scale

from unet3d.config.batch_augmentation import parse_batch_augmentation
from unet3d.data.batch_augmentation import BatchAugmentation, draw_parameters, resample

ALL_ON = {name: {"prob": 1.0} for name in ("rotation", "scaling", "noise", "blur", "brightness", "shift", "contrast",
                                           "low_resolution", "inverted_gamma", "gamma")}


def seconds(function, device):
    """Wall seconds of one call of ``function`` (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(functions, repeats, device):
    """Median wall seconds of each of ``functions`` over ``repeats`` rounds, one call of each per round (so that load
    on the machine hits them alike), after a warm-up round."""
    times = [[] for _ in functions]
    for round_ in range(repeats + 1):
        for function, measured in zip(functions, times):
            elapsed = seconds(function, device)
            if round_:
                measured.append(elapsed)
    return [statistics.median(measured) for measured in times]


def voxel_matrices(parameters):
    """The (B, 3, 4) voxel-space matrices (rotation @ scaling, no translation) of drawn parameters."""
    matrices = torch.stack([torch.as_tensor(create_rotate(3, a.tolist()) @ create_scale(3, z.tolist()))[:3]
                            for a, z in zip(parameters["angles"], parameters["zoom"])])
    return matrices.float()


def cases(batch, size, device):
    """A batch of images, label values, and parameters that move every element (elastic off, then on)."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 4, size, size, size, generator=generator).to(device)
    label = torch.randint(0, 4, (batch, 1, size, size, size), generator=generator).float().to(device)
    recipe = parse_batch_augmentation({"preset": "nnunet", "rotation": {"prob": 1.0}, "scaling": {"prob": 1.0}}, "b")
    affine = draw_parameters(recipe, batch, 4, generator)
    recipe["elastic"].update(prob=1.0, range=[2.0, 4.0])
    elastic = draw_parameters(recipe, batch, 4, generator)
    elastic.update(angles=affine["angles"], zoom=affine["zoom"])
    return image, label, affine, elastic


def monai_layers(image, label, parameters, size, elastic):
    """MONAI's AffineTransform for image and label, then Warp with the upsampled displacement field."""
    theta = voxel_matrices(parameters).to(image.device)
    image = AffineTransform(normalized=False, zero_centered=True, mode="bilinear")(image, theta, (size,) * 3)
    label = AffineTransform(normalized=False, zero_centered=True, mode="nearest")(label, theta, (size,) * 3)
    if elastic:
        ddf = F.interpolate(parameters["field"].float().to(image.device), size=(size,) * 3, mode="trilinear",
                            align_corners=True)
        image, label = Warp("bilinear", "zeros")(image, ddf), Warp("nearest", "zeros")(label, ddf)
    return image, label


def kornia_affine(image, label):
    """kornia's RandomAffine3D on the image, then on the label with the same parameters (None without kornia)."""
    try:
        from kornia.augmentation import RandomAffine3D
    except ImportError:
        return None
    augment = RandomAffine3D(degrees=30.0, scale=(0.7, 1.4), p=1.0, resample="bilinear")
    nearest = RandomAffine3D(degrees=30.0, scale=(0.7, 1.4), p=1.0, resample="nearest")

    def run():
        """The image and the label moved with the same parameters."""
        moved = augment(image)
        return moved, nearest(label, params=augment._params)

    return run


def main():
    """Print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, size = torch.device(args.device), (args.size,) * 3
    image, label, affine, elastic = cases(args.batch, args.size, device)
    ours = resample(image, label, affine, size)[0]
    theirs = monai_layers(image, label, affine, args.size, elastic=False)[0]
    print(f"{args.batch} x 4 x {args.size}³ on {device} ({args.threads} threads); MONAI AffineTransform vs unet3d: "
          f"max |difference| {float((ours - theirs).abs().max()):.2e}")
    rows = [("unet3d: affine_grid + grid_sample (image, label)", lambda: resample(image, label, affine, size)),
            ("unet3d: affine + elastic field, one grid_sample each", lambda: resample(image, label, elastic, size)),
            ("MONAI AffineTransform (image, label)", lambda: monai_layers(image, label, affine, args.size, False)),
            ("MONAI AffineTransform + Warp (two resamplings each)",
             lambda: monai_layers(image, label, elastic, args.size, True))]
    run = kornia_affine(image, label)
    rows.append(("kornia RandomAffine3D (image, label)", run) if run else ("kornia: not importable", None))
    strong = BatchAugmentation(parse_batch_augmentation({"preset": "nnunet", **ALL_ON}, "b"), None, size)
    generator = torch.Generator().manual_seed(1)
    rows.append(("unet3d: the whole \"nnunet\" preset, everything firing",
                 lambda: strong.augment(image, label, generator)))
    for name in [name for name, function in rows if function is None]:
        print(name)
    rows = [(name, function) for name, function in rows if function is not None]
    for (name, _), median in zip(rows, interleaved_medians([f for _, f in rows], args.repeats, device)):
        print(f"{name}: {1000 * median:.0f} ms per batch, {1000 * median / args.batch:.0f} ms per item")

if __name__ == "__main__":
    main()
