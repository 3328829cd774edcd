"""Pictures of one case: three orthogonal slices through its largest error (or, without a reference, its largest
predicted region), the image windowed at its 0.5-99.5 percentiles, contours of the reference and the prediction,
false positives and false negatives filled in two colours. Drawn with NumPy at display resolution."""

import base64
import dataclasses
import io
from pathlib import Path

import nibabel
import numpy as np
from scipy import ndimage

from unet3d.data.formats import read_array
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import read_label_map
from unet3d.evaluate.metrics import voxel_spacing

PANEL = 180  # pixels of the longest side of a panel
GAP = 4
WINDOW = (0.5, 99.5)
# Grey levels of the image: 48 are smooth to the eye and leave room in a 256-colour palette for the overlays.
GREY_LEVELS = 48
ALPHA = 0.45
# Colours that stay apart for the common colour-vision deficiencies (Okabe and Ito's palette).
REFERENCE, PREDICTION = (0, 158, 115), (240, 228, 66)
FALSE_POSITIVE, FALSE_NEGATIVE = (213, 94, 0), (86, 180, 233)
REGION_COLOURS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                  (204, 121, 167))
# Each plane: its name and the array axis it cuts (arrays in RAS order); rows run superior (or anterior) first.
PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))


@dataclasses.dataclass(frozen=True)
class Picture:
    """A case's picture: the PNG as a ``data:`` URI, what it shows (one line) and the voxel it cuts through."""

    uri: str
    caption: str
    centre: tuple


def require_file(path):
    """``path`` as a Path, or a UserError when the file is gone."""
    if not Path(path).exists():
        raise UserError(f"{path}: not found (the report reads it)")
    return Path(path)


def canonical(array, affine):
    """``(array in RAS axis order, spacing per axis)``, so that every case is drawn the same way up."""
    orientation = nibabel.orientations.io_orientation(affine)
    spacing = np.empty(3)
    spacing[orientation[:, 0].astype(int)] = voxel_spacing(affine)
    return nibabel.orientations.apply_orientation(array, orientation), spacing


def image_channel(images, channel, shape):
    """Channel ``channel`` of a case's images (one file per channel, or one 4D file), or None when not on ``shape``."""
    if not images:
        return None
    if len(images) > 1:
        if channel >= len(images):
            raise UserError(f"--channel {channel}: the images have channels 0 to {len(images) - 1}")
        array = np.asarray(read_array(require_file(images[channel])))
    else:
        array = np.asarray(read_array(require_file(images[0])))
        if array.ndim == 4:
            if channel >= array.shape[3]:
                raise UserError(f"--channel {channel}: {images[0]} has channels 0 to {array.shape[3] - 1}")
            array = array[..., channel]
        elif channel:
            raise UserError(f"--channel {channel}: {images[0]} has one channel (0)")
    return array.astype(np.float32) if array.shape == tuple(shape) else None


def window(image):
    """The 0.5th and 99.5th percentiles of ``image`` (of every other voxel: the same to the eye)."""
    low, high = np.percentile(image[::2, ::2, ::2], WINDOW)
    return float(low), float(high if high > low else low + 1)


def largest_component_centre(mask):
    """The voxel at the centre of mass of ``mask``'s largest connected component, or None for an empty mask."""
    if not mask.any():
        return None
    # Label only the box around the mask: errors are small beside the volume.
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    box = tuple(box)
    components, _ = ndimage.label(mask[box])
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    centre = ndimage.center_of_mass(components == largest)
    return tuple(int(round(c)) + b.start for c, b in zip(centre, box))


def plane(volume, axis, index):
    """The slice of ``volume`` at ``index`` along ``axis``, as rows (superior or anterior first) by columns."""
    return np.moveaxis(volume, axis, 0)[index].T[::-1]  # a view: np.take would copy the whole volume


def display_indices(length, spacing, mm_per_pixel):
    """Source row (or column) of each display pixel, nearest neighbour, so that a pixel is ``mm_per_pixel`` wide."""
    count = max(1, int(round(length * spacing / mm_per_pixel)))
    return np.minimum(((np.arange(count) + 0.5) * mm_per_pixel / spacing).astype(int), length - 1)


def outline(mask):
    """The pixels of ``mask`` on its border: a contour one pixel wide."""
    return mask & ~ndimage.binary_erosion(mask)


def compose(gray, fills=(), contours=()):
    """An RGB uint8 picture: ``gray`` (0..1, in ``GREY_LEVELS`` steps) with ``fills`` (mask, colour) blended in and
    ``contours`` drawn over."""
    rgb = np.repeat(np.round(gray[..., None] * (GREY_LEVELS - 1)) * (255 / (GREY_LEVELS - 1)), 3, axis=2)
    for mask, colour in fills:
        rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * np.asarray(colour)
    for mask, colour in contours:
        rgb[outline(mask)] = colour
    return np.round(rgb).astype(np.uint8)


def panels(image, layers, spacing, centre):
    """The three planes through ``centre`` side by side: ``image`` as ``(volume, (low, high))`` in grey, and
    ``layers(take)`` giving the ``(fills, contours)`` of a slice."""
    gray, (low, high) = image
    mm_per_pixel = max(np.asarray(gray.shape) * spacing) / PANEL
    pictures = []
    for _, axis in PLANES:
        columns_axis, rows_axis = [a for a in range(3) if a != axis]
        rows = display_indices(gray.shape[rows_axis], spacing[rows_axis], mm_per_pixel)
        columns = display_indices(gray.shape[columns_axis], spacing[columns_axis], mm_per_pixel)

        def take(volume, axis=axis, rows=rows, columns=columns):
            return plane(volume, axis, centre[axis])[np.ix_(rows, columns)]

        pictures.append(compose(np.clip((take(gray) - low) / (high - low), 0, 1), *layers(take)))
    height = max(p.shape[0] for p in pictures)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, GAP), (0, 0))) for p in pictures]
    return np.concatenate(padded, axis=1)[:, :-GAP]


def png_uri(rgb):
    """An RGB array as a ``data:image/png;base64,...`` URI: a palette PNG when it has at most 256 colours (a third
    of the size), else RGB."""
    from PIL import Image

    codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours, indices = np.unique(codes.ravel(), return_inverse=True)  # on one number per pixel: 10 times faster
    if len(colours) <= 256:
        picture = Image.frombytes("P", rgb.shape[1::-1], indices.astype(np.uint8).tobytes())
        picture.putpalette(np.stack([colours >> 16, colours >> 8, colours], axis=1).astype(np.uint8).ravel().tolist())
    else:
        picture = Image.fromarray(rgb)
    stream = io.BytesIO()
    picture.save(stream, format="png")
    return "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode("ascii")


def case_picture(case, scheme, region, channel=0):
    """The ``Picture`` of a case (a ``CaseFiles``) for one region's index in ``scheme``: errors against the
    reference, or the prediction of every region for quality control when the case has no reference."""
    predicted, affine = read_label_map(require_file(case.prediction))
    image = image_channel(case.images, channel, predicted.shape)
    predicted, spacing = canonical(predicted, affine)
    gray = canonical(image, affine)[0] if image is not None else np.zeros(predicted.shape, np.float32)
    gray = (gray, window(gray))
    what = f"channel {channel}" if image is not None else "no image"
    if case.reference is None:
        masks = scheme.masks(predicted)
        centre = largest_component_centre(masks.any(axis=0)) or tuple(s // 2 for s in predicted.shape)

        def qc_layers(take):
            slices = [take(mask) for mask in masks]
            colours = [REGION_COLOURS[i % len(REGION_COLOURS)] for i in range(len(slices))]
            return list(zip(slices, colours)), list(zip(slices, colours))

        return Picture(png_uri(panels(gray, qc_layers, spacing, centre)), f"prediction over {what}", centre)
    reference = canonical(read_label_map(require_file(case.reference))[0], affine)[0]
    ours, theirs = scheme.masks(predicted)[region], scheme.masks(reference)[region]
    error = ours ^ theirs
    centre = (largest_component_centre(error) or largest_component_centre(theirs)
              or tuple(s // 2 for s in predicted.shape))

    def error_layers(take):
        p, r = take(ours), take(theirs)
        return [(p & ~r, FALSE_POSITIVE), (r & ~p, FALSE_NEGATIVE)], [(r, REFERENCE), (p, PREDICTION)]

    name = scheme.names[region]
    return Picture(png_uri(panels(gray, error_layers, spacing, centre)), f"{name} over {what}", centre)
