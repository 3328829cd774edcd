"""Augmentation of a whole training batch at once, in torch, on the device the batch is on.

The recipe is ``dataset.batch_augmentation`` parsed (``unet3d.config.batch_augmentation``). Per batch
element, the rotation, scaling and elastic field make one sampling grid and one ``grid_sample`` each for
the image (linear) and for the label values (nearest); elements without a spatial change are only cut
to the patch size. Flips, then the intensity augmentations, follow in nnU-Net's order (noise, blur,
brightness, shift, contrast, low resolution, inverted gamma, gamma); the label's target channels are
made last, from the moved label values (``LabelScheme.targets``).

Every parameter is drawn on the CPU from a ``torch.Generator`` seeded by ``batch_seed`` (run seed,
epoch, batch index, rank), so a batch's parameters are the same on every device, after a resume, and
with any number of loader workers. The noise image itself is drawn on the batch's device from a seed
drawn with the parameters (reproducible on each device; a GPU's values differ from a CPU's).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import create_rotate, create_scale

from unet3d.data.resample import affine_grid, sample_nearest
from unet3d.data.stored import label_dtype, lookup_targets

INTENSITY = ("noise", "blur", "brightness", "shift", "contrast", "low_resolution", "inverted_gamma", "gamma")


def batch_seed(seed, epoch, index, rank=0):
    """The generator seed of batch ``index`` of ``epoch`` in process ``rank`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, index, rank]).generate_state(1, np.uint64)[0] >> 1)


def larger_patch(patch_size, recipe):
    """The patch a worker reads so that the rotated and scaled patch stays inside it (nnU-Net's
    ``get_patch_size``: the bounding box of the patch rotated by the largest angle about each axis in turn,
    divided by the smallest zoom), or ``patch_size`` when the recipe neither rotates nor scales or does not
    ask for ``larger_patch``."""
    if not recipe.get("larger_patch") or not any(moves(recipe, name) for name in ("rotation", "scaling")):
        return tuple(patch_size)
    angle = min(max(abs(a) for a in recipe["rotation"]["range"]), math.pi / 2) if moves(recipe, "rotation") else 0
    zoom = min(recipe["scaling"]["range"][0], 1.0) if moves(recipe, "scaling") else 1.0
    size = np.array(patch_size, dtype=float)
    box = size.copy()
    for axis in range(3):
        first, second = [a for a in range(3) if a != axis]
        box[first] = max(box[first], size[first] * math.cos(angle) + size[second] * math.sin(angle))
        box[second] = max(box[second], size[second] * math.cos(angle) + size[first] * math.sin(angle))
    box /= zoom
    return tuple(int(p + 2 * math.ceil((b - p) / 2 - 1e-9)) for p, b in zip(patch_size, box))


def moves(recipe, name):
    """Whether the recipe's spatial augmentation ``name`` can change an element."""
    step = recipe[name]
    if name == "scaling" and step["with_rotation"]:
        return recipe["rotation"]["prob"] > 0 and step["range"] != [1.0, 1.0]
    return step["prob"] > 0 and step["range"] != ([1.0, 1.0] if name == "scaling" else [0.0, 0.0])


def uniform(generator, bounds, shape):
    """Uniform draws in ``[low, high]`` (float64, CPU)."""
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def chosen(generator, prob, shape):
    """Booleans that are true with probability ``prob``."""
    return torch.rand(shape, generator=generator, dtype=torch.float64) < prob


def factors(generator, step, shape):
    """Factors of ``step``'s range; with ``split_at_one`` half below 1 and half above (nnU-Net's BGContrast)."""
    low, high = step["range"]
    drawn = uniform(generator, (low, high), shape)
    if step.get("split_at_one"):
        below = chosen(generator, 0.5, shape) & (low < 1)
        drawn = torch.where(below, uniform(generator, (low, min(high, 1.0)), shape),
                            uniform(generator, (max(low, 1.0), high), shape))
    return drawn


def offsets(generator, step, shape):
    """Offsets uniform in ``step``'s range."""
    return uniform(generator, step["range"], shape)


def per_channel(generator, step, batch, channels, draw=factors):
    """One draw per element (broadcast over channels), or one per channel with ``per_channel``."""
    return draw(generator, step, (batch, channels if step.get("per_channel") else 1)).expand(batch, channels)


def draw_parameters(recipe, batch, channels, generator):
    """Every random parameter of a batch of ``batch`` elements of ``channels`` channels, as CPU tensors; an
    augmentation that does not fire for an element gets its identity parameter."""
    rotated = chosen(generator, recipe["rotation"]["prob"], (batch,))
    angles = uniform(generator, recipe["rotation"]["range"], (batch, 3)) * rotated[:, None]
    step = recipe["scaling"]
    scaled = rotated if step["with_rotation"] else chosen(generator, step["prob"], (batch,))
    zoom = uniform(generator, step["range"], (batch, 3 if step["per_axis"] else 1)).expand(batch, 3)
    zoom = torch.where(scaled[:, None], zoom, torch.ones_like(zoom))
    step = recipe["elastic"]
    deformed = chosen(generator, step["prob"], (batch,))
    points = (batch, 3, *(step["control_points"],) * 3)
    field = torch.randn(points, generator=generator, dtype=torch.float64) * uniform(generator, step["range"], (batch,)
                                                                                   ).view(-1, 1, 1, 1, 1)
    step = recipe["flip"]
    flips = chosen(generator, step["prob"], (batch, 3 if step["per_axis"] else 1)).expand(batch, 3)
    parameters = {"angles": angles, "zoom": zoom, "field": field * deformed.view(-1, 1, 1, 1, 1), "flips": flips,
                  "moved": rotated | scaled | deformed}
    parameters["moved"] &= (angles != 0).any(1) | (zoom != 1).any(1) | (parameters["field"] != 0).flatten(1).any(1)
    for name in INTENSITY:
        step = recipe[name]
        drawn = {"on": chosen(generator, step["prob"], (batch,))}
        if name == "noise":
            drawn.update(std=uniform(generator, step["range"], (batch,)),
                         seed=torch.randint(2**62, (batch,), generator=generator))
        elif name in ("blur", "low_resolution"):
            drawn.update(channels=chosen(generator, step["channel_prob"], (batch, channels)),
                         value=uniform(generator, step["range"], (batch, channels, 3) if name == "blur"
                                       else (batch, channels)))
        elif name == "shift":
            drawn["value"] = per_channel(generator, step, batch, channels, offsets)
        else:
            drawn["value"] = per_channel(generator, step, batch, channels)
        parameters[name] = drawn
    return parameters


def sampling_grid(angles, zoom, field, size_in, size_out, device):
    """``grid_sample``'s grid (align_corners, as ``F.affine_grid`` makes it) that maps each output voxel, centred,
    through rotation @ scaling (MONAI's ``create_rotate`` and ``create_scale``, voxel units) plus the displacement
    ``field`` (upsampled trilinearly) to the input."""
    matrices = torch.stack([torch.as_tensor(create_rotate(3, a.tolist()) @ create_scale(3, z.tolist()))[:3, :3]
                            for a, z in zip(angles, zoom)])
    half_in = (torch.tensor(size_in, dtype=torch.float64) - 1).clamp(min=1) / 2
    half_out = (torch.tensor(size_out, dtype=torch.float64) - 1).clamp(min=1) / 2
    theta = matrices * half_out[None, None, :] / half_in[None, :, None]
    theta = theta.flip(1).flip(2)  # the grid's (x, y, z) are the last, middle and first axes
    theta = torch.cat([theta, torch.zeros(len(theta), 3, 1, dtype=theta.dtype)], dim=2)
    grid = affine_grid(theta.float().to(device), tuple(size_out))
    if field.any():
        moved = F.interpolate(field.float().to(device), size=tuple(size_out), mode="trilinear", align_corners=True)
        moved = moved / half_in.float().to(device).view(1, 3, 1, 1, 1)
        grid = grid + moved.flip(1).permute(0, 2, 3, 4, 1)
    return grid


def centre_crop(tensor, size):
    """The centre ``size`` of a batch ``(B, C, *spatial)``."""
    starts = [(n - s) // 2 for n, s in zip(tensor.shape[2:], size)]
    return tensor[(slice(None), slice(None), *(slice(b, b + s) for b, s in zip(starts, size)))]


def resample(image, label, parameters, size, values_dtype=None):
    """The spatial augmentation: one grid per moved element, sampled linearly for the image and by nearest
    neighbour for the label values; the other elements are cut to ``size``. The label comes back as a new tensor
    of ``values_dtype`` (default: its own); the image may be the given one, changed in place."""
    moved = parameters["moved"].nonzero()[:, 0]
    cut_image = centre_crop(image, size)
    cut_label = centre_crop(label, size).to(values_dtype or label.dtype, copy=True)
    if len(moved) == 0:
        return cut_image, cut_label
    grid = sampling_grid(parameters["angles"][moved], parameters["zoom"][moved], parameters["field"][moved],
                         image.shape[2:], size, image.device)
    if len(moved) == len(image):
        return sample_linear(image, grid), sample_nearest(label, grid).to(cut_label.dtype)
    for row, element in enumerate(moved.tolist()):  # slices of the batch: no copy of the moved elements
        cut_image[element] = sample_linear(image[element:element + 1], grid[row:row + 1])[0]
        cut_label[element] = sample_nearest(label[element:element + 1], grid[row:row + 1])[0]
    return cut_image, cut_label


def sample_linear(image, grid):
    """``image`` sampled trilinearly at ``grid`` (align_corners, zeros outside): PyTorch's 3D ``grid_sample``, which
    on one CPU thread beat the alternatives measured (docs/performance.md)."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def flip_in_place(tensor, flips):
    """Each element of ``tensor`` flipped, in place, along the axes its row of ``flips`` marks."""
    for element, row in enumerate(flips.tolist()):
        dims = [axis + 1 for axis, flip in enumerate(row) if flip]
        if dims:
            tensor[element] = tensor[element].flip(dims)
    return tensor


def label_targets(labels, label):
    """The ``LabelScheme``'s float targets (B, channels, ...) of a batch of label values (B, 1, ...); uint8 values on
    the CPU by table lookup (``stored.lookup_targets``, a fifth of the comparisons' time)."""
    if label.dtype != torch.uint8 or label.device.type != "cpu":
        values = torch.round(label[:, 0]) if label.dtype.is_floating_point else label[:, 0]
        return labels.targets(values.long()).movedim(0, 1).float()
    return torch.stack([torch.from_numpy(lookup_targets(labels, element.numpy())) for element in label[:, 0]]).float()


def gaussian_blur(volumes, sigma):
    """Separable Gaussian blur of each of ``volumes`` (K, X, Y, Z) with its own ``sigma`` per axis (K, 3, on the
    CPU); edges replicated."""
    count = len(volumes)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    flat = volumes[None]
    for axis in range(3):
        spread = sigma[:, axis].reshape(-1, 1).clamp(min=1e-6)
        kernel = torch.exp(-offsets**2 / (2 * spread**2))
        shape = [count, 1, 1, 1, 1]
        shape[2 + axis] = len(offsets)
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        weights = (kernel / kernel.sum(1, keepdim=True)).view(shape).to(volumes)
        flat = F.conv3d(F.pad(flat, pad, mode="replicate"), weights, groups=count)
    return flat[0]


def low_resolution(volume, zoom):
    """nnU-Net's SimulateLowResolution of one ``volume`` (X, Y, Z): downsampled by ``zoom`` (nearest) and back
    (trilinear)."""
    small = [max(1, round(n * zoom)) for n in volume.shape]
    down = F.interpolate(volume[None, None], size=small, mode="nearest-exact")
    return F.interpolate(down, size=tuple(volume.shape), mode="trilinear", align_corners=False)[0, 0]


def mean_and_std(image):
    """Mean and (unbiased) standard deviation of each channel of ``image`` (n, C, ...), shaped (n, C, 1, 1, 1)
    (``torch.std_mean`` is four times slower on a CPU)."""
    flat = image.flatten(2)
    mean = flat.mean(-1, keepdim=True)
    std = torch.linalg.vector_norm(flat - mean, dim=-1, keepdim=True) / math.sqrt(max(flat.shape[-1] - 1, 1))
    return mean[..., None, None], std[..., None, None]


def channel_statistics(image):
    """Mean, standard deviation, minimum and maximum of each channel of ``image`` (n, C, ...), each (n, C, 1, 1, 1)."""
    low, high = torch.aminmax(image.flatten(2), dim=-1, keepdim=True)
    return (*mean_and_std(image), low[..., None, None], high[..., None, None])


def gamma(image, value, inverted):
    """nnU-Net's GammaTransform with retained statistics: each channel rescaled to [0, 1], raised to its gamma,
    scaled back, then given its former mean and standard deviation (of the inverted image with ``inverted``)."""
    image = -image if inverted else image
    mean, std, low, high = channel_statistics(image)
    spread = high - low
    image = ((image - low) / spread.clamp(min=1e-7)).pow_(value).mul_(spread).add_(low)
    new_mean, new_std = mean_and_std(image)
    image = (image - new_mean).mul_(std / new_std.clamp(min=1e-7)).add_(mean)
    return -image if inverted else image


def contrast(image, value):
    """nnU-Net's ContrastTransform with ``preserve_range``: each channel scaled around its mean, then clipped to its
    former range."""
    mean, _, low, high = channel_statistics(image)
    return torch.maximum(torch.minimum((image - mean).mul_(value).add_(mean), high), low)


def add_noise(element, std, seed):
    """Gaussian noise of standard deviation ``std`` added to ``element`` in place, drawn on its device from ``seed``."""
    generator = torch.Generator(device=element.device).manual_seed(seed)
    element.add_(torch.randn(element.shape, generator=generator, device=element.device, dtype=element.dtype), alpha=std)


def apply_intensity(name, image, elements, drawn):
    """Augmentation ``name`` of the ``elements`` of ``image``, in place, with their parameters ``drawn``: noise, a
    factor or an offset element by element (one pass over the voxels), blur and low resolution on the chosen
    channels only (the kernels are made on the CPU), contrast and gamma on the chosen elements together."""
    if name == "noise":
        for element, std, seed in zip(elements.tolist(), drawn["std"].tolist(), drawn["seed"].tolist()):
            add_noise(image[element], std, seed)
        return
    if name in ("blur", "low_resolution"):  # the chosen channels of the chosen elements
        pairs = drawn["channels"].nonzero()
        chosen, channels = elements[pairs[:, 0]].tolist(), pairs[:, 1].tolist()
        values = drawn["value"][pairs[:, 0], pairs[:, 1]]
        if name == "blur" and chosen:
            image[chosen, channels] = gaussian_blur(image[chosen, channels], values)
        for element, channel, zoom in zip(chosen, channels, values.tolist() if name == "low_resolution" else ()):
            image[element, channel] = low_resolution(image[element, channel], zoom)
        return
    if name in ("brightness", "shift"):
        for element, value in zip(elements.tolist(), drawn["value"]):
            value = value.to(image.device, image.dtype).view(-1, 1, 1, 1)
            image[element].mul_(value) if name == "brightness" else image[element].add_(value)
        return
    on = elements.to(image.device)
    image[on] = intensity(name, image[on], drawn)


def intensity(name, image, drawn):
    """Contrast or gamma of the elements ``image`` with their parameters ``drawn``."""
    value = drawn["value"].to(image.device, image.dtype)
    value = value.view(*value.shape, 1, 1, 1)
    if name == "contrast":
        return contrast(image, value)
    return gamma(image, value, inverted=name == "inverted_gamma")


class BatchAugmentation:
    """``dataset.batch_augmentation`` for a run: ``augmentation(image, label, epoch, index, rank)`` on a batch of
    images (B, C, *spatial) and label values (B, 1, *spatial) gives the augmented images, of the patch size, and
    their target channels; without a recipe it gives the batch back as it is. The images given may be changed in
    place (the training loop has no other use for them).

    Args:
        recipe: the parsed setting (None: no batched augmentation).
        labels: the ``LabelScheme`` that makes the targets (None: the label values are returned).
        patch_size: the output's spatial size (None: the input's).
        seed: the run seed.
    """

    def __init__(self, recipe=None, labels=None, patch_size=None, seed=0):
        self.recipe, self.labels, self.patch_size, self.seed = recipe, labels, patch_size, seed
        # The label values are moved and flipped as uint8 when they fit it: a quarter of float32's bytes.
        self.label_dtype = torch.uint8 if labels is not None and label_dtype(labels.values) == np.uint8 else None

    def __bool__(self):
        return self.recipe is not None

    def __call__(self, image, label, epoch, index, rank=0):
        if self.recipe is None:
            return image, label
        generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, index, rank))
        return self.augment(image, label, generator)

    def augment(self, image, label, generator):
        """The batch augmented with parameters drawn from ``generator`` (``image`` may be changed in place)."""
        parameters = draw_parameters(self.recipe, len(image), image.shape[1], generator)
        size = tuple(self.patch_size or image.shape[2:])
        image, label = resample(image, label, parameters, size, self.label_dtype)
        image, label = flip_in_place(image, parameters["flips"]), flip_in_place(label, parameters["flips"])
        for name in INTENSITY:
            drawn = parameters[name]
            elements = drawn["on"].nonzero()[:, 0]
            if len(elements):
                apply_intensity(name, image, elements, {key: v[elements] for key, v in drawn.items() if key != "on"})
        if self.labels is None:
            return image, label
        return image, label_targets(self.labels, label)
