"""Write synthetic brain tissue subjects (a T1 and a CSF / grey matter / white matter label map).

Subjects are made from the MNI ICBM152 2009 template that ships inside nilearn. The
reference label map is made once: the brain is the closed, filled union of the grey and
white matter probability maps above 0.1 (within the template T1's own brain mask), and
each of its voxels takes its most probable tissue, CSF being 1 - GM - WM: labels 1 (CSF),
2 (GM) and 3 (WM), 0 outside. Each subject is the template under a random smooth
deformation and a small random affine (T1 linear, labels nearest), resampled to
--spacing mm, with a smooth bias field, a gamma change and noise on the T1, which is zero
outside the brain. Subject i is a pure function of (--seed, i); train/ holds subjects
0 .. n_train - 1 and test/ (labelled too, for evaluation) the next n_test. Writes
<output_dir>/{train,test}/subject_XXX/subject_XXX_{t1,seg}.nii.gz.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import nibabel
import numpy as np
from scipy import ndimage

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
BRAIN_THRESHOLD = 0.1  # GM + WM probability that starts the brain envelope
CLOSING = 3  # voxels (1 mm) of closing: bridges the sulci of the envelope


def template_folder():
    """The folder of nilearn's bundled template; exits with status 2 and one line if missing."""
    spec = importlib.util.find_spec("nilearn")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" if spec else None
    if folder is None or not all((folder / TEMPLATE.format(k)).exists() for k in ("t1", "gm", "wm")):
        print('make_data.py: error: the brain tissue example needs nilearn: pip install "unet3d-toolkit[examples]"',
              file=sys.stderr)
        sys.exit(2)
    return folder


def reference(folder, spacing):
    """The template: T1 in [0, 1] (skull-stripped, blurred for --spacing), label map, affine, brain centre."""
    images = [nibabel.load(folder / TEMPLATE.format(k)) for k in ("t1", "gm", "wm")]
    t1, gm, wm = (np.asarray(image.dataobj, dtype=np.float32) / 255 for image in images)
    # Padded so that closing does not erode the brain stem where it leaves the field of view.
    union = np.pad(gm + wm > BRAIN_THRESHOLD, CLOSING)
    closed = ndimage.binary_closing(union, iterations=CLOSING)[(slice(CLOSING, -CLOSING),) * 3]
    brain = ndimage.binary_fill_holes(closed) & (t1 > 0)
    csf = 1 - gm - wm  # the most probable tissue, the first on ties: 1 CSF, 2 GM, 3 WM
    labels = np.where(wm > np.maximum(csf, gm), 3, np.where(gm > csf, 2, 1)).astype(np.uint8) * brain
    zooms = np.array(images[0].header.get_zooms()[:3])
    # Anti-aliasing: a Gaussian whose FWHM makes up the difference to the output voxel size.
    sigma = np.sqrt(np.maximum(spacing ** 2 - zooms ** 2, 0)) / 2.355 / zooms
    t1 = ndimage.gaussian_filter(t1 * brain, sigma)
    affine = images[0].affine
    centre = affine[:3, :3] @ np.array(ndimage.center_of_mass(brain)) + affine[:3, 3]
    return t1, labels, affine, centre


def smooth_field(rng, coarse_shape, shape, components=1):
    """A smooth random field of ``components`` x ``shape``: coarse noise, smoothed, upsampled; max |value| 1."""
    noise = ndimage.gaussian_filter(rng.standard_normal((components, *coarse_shape)), (0, 1, 1, 1), mode="nearest")
    field = np.stack([ndimage.zoom(c, np.divide(shape, coarse_shape), order=3, mode="nearest") for c in noise])
    return field / np.abs(field).max()


def rotation(angles):
    """The rotation matrix about the three axes by ``angles`` (radians)."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[[i, i, j, j], [i, j, i, j]] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
        matrix = turn @ matrix
    return matrix


def subject(template, spacing, seed, index):
    """Subject ``index``: its T1 (float32), label map (uint8) and their affine."""
    t1, labels, affine, centre = template
    rng = np.random.default_rng([seed, index])
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    shape = tuple(int(np.ceil(n * z / spacing)) for n, z in zip(t1.shape, zooms))
    out_affine = affine @ np.diag([*(spacing / zooms), 1])  # same origin, spacing mm voxels
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = out_affine[:3, :3] @ grid + out_affine[:3, 3:]
    # Where each output voxel comes from in the template: a small affine about the brain's
    # centre (rotation up to 5 degrees, scaling up to 5 % per axis), plus a smooth
    # displacement of up to 2-5 mm varying over about 40 mm.
    matrix = rotation(np.radians(rng.uniform(-5, 5, 3))) @ np.diag(rng.uniform(0.95, 1.05, 3))
    coarse = tuple(int(np.ceil(n * spacing / 40)) + 1 for n in shape)
    displacement = rng.uniform(2, 5) * smooth_field(rng, coarse, shape, 3).reshape(3, -1)
    source = matrix @ (world - centre[:, None]) + centre[:, None] + displacement
    inverse = np.linalg.inv(affine)
    voxels = inverse[:3, :3] @ source + inverse[:3, 3:]
    image = ndimage.map_coordinates(t1, voxels, order=1, cval=0).reshape(shape)
    label = ndimage.map_coordinates(labels, voxels, order=0, cval=0).reshape(shape)
    # The scanner: a smooth bias field (up to about +-20 %), a gamma change, a gain, noise.
    bias = np.exp(rng.uniform(0.1, 0.2) * smooth_field(rng, (3, 3, 3), shape)[0])
    image = rng.uniform(0.8, 1.25) * (image * bias) ** np.exp(rng.uniform(-0.3, 0.3))
    image = image + rng.uniform(0.01, 0.04) * rng.standard_normal(shape)
    image = np.where(label > 0, np.maximum(image, 0.01), 0).astype(np.float32)
    return image, label.astype(np.uint8), out_affine


def write(path, array, affine):
    """Write ``array`` as a NIfTI file in mm with ``affine``."""
    image = nibabel.Nifti1Image(array, affine)
    image.set_qform(affine, code="aligned")
    image.header.set_xyzt_units("mm")
    image.header.set_data_dtype(array.dtype)
    nibabel.save(image, path)


def arguments(argv=None):
    """The command line's settings (``argv``: default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, type=Path, help="folder to write train/ and test/ into")
    parser.add_argument("--n_train", type=int, default=16, help="training subjects (default: 16)")
    parser.add_argument("--n_test", type=int, default=4, help="held-out subjects, labelled (default: 4)")
    parser.add_argument("--spacing", type=float, default=3.0, help="voxel size in mm (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n_train < 0 or args.n_test < 0 or args.spacing <= 0:
        parser.error("--n_train and --n_test must be at least 0 and --spacing above 0")
    return args


def main():
    """Write the subjects the command line asks for."""
    args = arguments()
    template = reference(template_folder(), args.spacing)
    for index in range(args.n_train + args.n_test):
        name = f"subject_{index:03d}"
        folder = args.output_dir / ("train" if index < args.n_train else "test") / name
        folder.mkdir(parents=True, exist_ok=True)
        image, label, affine = subject(template, args.spacing, args.seed, index)
        write(folder / f"{name}_t1.nii.gz", image, affine)
        write(folder / f"{name}_seg.nii.gz", label, affine)
    print(f"wrote {args.n_train} training and {args.n_test} test subjects at {args.spacing:g} mm "
          f"to {args.output_dir}")


if __name__ == "__main__":
    main()
