"""Realistic synthetic BraTS-style cases, made from the MNI ICBM152 brain template inside nilearn.

Each case is the template's brain (grey and white matter probability maps, CSF the rest of
the brain, ventricles included) under a random smooth deformation, with one to three tumours
grown from seeds in the white matter. A tumour is a diffusion from its seed that spreads
faster along white matter than grey, cut at random volumes into the whole tumour and the
core, with irregular boundaries; it pushes the tissue around it aside (a radial
displacement decaying with distance). Edema prefers white matter; cores are ring-enhancing
around necrosis, enhancing only, or patchy, from a few dozen voxels (at 2 mm) to tens of
cm³; every ``no_enhancing_every``-th case has no enhancing tumour. Four modalities are
mixtures of tissue intensities by their partial volumes (CSF, grey and white matter,
edema, necrosis, solid and enhancing tumour, and distractors that are not tumour: choroid
plexus and vessels enhancing on T1ce, small T2/FLAIR-bright white matter spots), with a
per-case gain per tissue, a gamma and gain per modality, smooth bias fields and Rician
noise. Labels are BraTS's: 1 necrosis (or non-enhancing core), 2 edema, 4 enhancing.
"""

import functools
import importlib.util
from pathlib import Path

import nibabel
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from unet3d.data.synthetic import BRATS_SHAPE, MODALITIES, smooth_noise
from unet3d.errors import UserError, install_hint

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
CLASSES = ("csf", "gm", "wm", "edema", "necrosis", "solid", "enhancing", "plexus", "vessel", "spot")
# Mean intensity of each class (in CLASSES order) per modality, white matter on T1 about 0.8.
# T1: WM > GM > CSF; T2: CSF brightest; FLAIR: CSF dark, edema bright; T1ce: enhancing
# tumour, choroid plexus and vessels bright; necrosis dark on T1 and T1ce, bright on T2.
CONTRAST = {
    "flair": (0.08, 0.58, 0.45, 0.95, 0.42, 0.80, 0.75, 0.55, 0.30, 0.90),
    "t1": (0.20, 0.55, 0.80, 0.48, 0.16, 0.45, 0.55, 0.45, 0.45, 0.62),
    "t1ce": (0.20, 0.55, 0.76, 0.48, 0.16, 0.48, 1.15, 1.00, 1.05, 0.60),
    "t2": (1.00, 0.62, 0.42, 0.85, 1.00, 0.70, 0.65, 0.70, 0.15, 0.85),
}
LABEL = {"edema": 2, "necrosis": 1, "solid": 1, "enhancing": 4}


def template_folder():
    """The folder of nilearn's bundled MNI template; a UserError naming the extra if nilearn is missing."""
    spec = importlib.util.find_spec("nilearn")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" if spec else None
    if folder is None or not all((folder / TEMPLATE.format(k)).exists() for k in ("gm", "wm")):
        raise UserError(f"realistic synthetic cases are made from nilearn's MNI template: {install_hint('examples')}")
    return folder


@functools.lru_cache(maxsize=2)
def reference(spacing):
    """The template averaged over blocks for ``spacing``: a (gm, wm, brain) tensor, its affine, places, the centre."""
    images = [nibabel.load(template_folder() / TEMPLATE.format(k)) for k in ("gm", "wm")]
    gm, wm = (np.asarray(image.dataobj, dtype=np.float32) / 255 for image in images)
    closing = 3  # mm: bridges the sulci of the envelope; padded so the brain stem is not eroded
    union = np.pad(gm + wm > 0.1, closing)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(union, iterations=closing)[(slice(3, -3),) * 3])
    affine = images[0].affine
    world = lambda voxels: (affine[:3, :3] @ (3 * voxels).T + affine[:3, 3:]).T  # noqa: E731
    # Candidate places (mm, on a 3 mm grid): deep white matter for tumours and spots, ventricles for the plexus.
    coarse = brain[::3, ::3, ::3]
    depth = ndimage.distance_transform_edt(coarse, sampling=3)
    points = {"white": world(np.argwhere((wm[::3, ::3, ::3] > 0.8) & (depth > 15))),
              "ventricle": world(np.argwhere((gm[::3, ::3, ::3] + wm[::3, ::3, ::3] < 0.15) & coarse & (depth > 25)))}
    # Gliomas in adults grow mostly above the tentorium: no seeds in the cerebellum or brain stem.
    x, y, z = points["white"].T
    points["white"] = points["white"][~((z < -12) & (y < -30)) & ~((np.abs(x) < 15) & (z < -5))]
    inside = np.argwhere(coarse)
    centre = world((inside.min(0) + inside.max(0))[None] / 2)[0]
    # Anti-aliasing: the mean over blocks of k³ voxels, k the output voxel size rounded down.
    k = max(1, int(min(spacing)))
    blocks = [n // k for n in brain.shape]
    maps = np.stack([m[:blocks[0] * k, :blocks[1] * k, :blocks[2] * k] for m in (gm * brain, wm * brain, brain)])
    maps = maps.reshape(3, blocks[0], k, blocks[1], k, blocks[2], k).mean(axis=(2, 4, 6), dtype=np.float32)
    affine = affine @ np.array([[k, 0, 0, (k - 1) / 2], [0, k, 0, (k - 1) / 2], [0, 0, k, (k - 1) / 2], [0, 0, 0, 1]])
    return torch.from_numpy(maps), affine, points, centre


def output_grid(spacing, centre):
    """Shape and affine of BraTS's 240 x 240 x 155 mm field of view at ``spacing``, centred on ``centre`` (RAS)."""
    shape = tuple(int(np.ceil(n / s)) for n, s in zip(BRATS_SHAPE, spacing))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = centre - np.array(spacing) * (np.array(shape) - 1) / 2
    return shape, affine


def sample(maps, affine, points):
    """Trilinear values of the (C, X, Y, Z) ``maps`` at world ``points`` (3, N) mm: (C, N) numpy."""
    inverse = np.linalg.inv(affine)
    voxels = inverse[:3, :3] @ points + inverse[:3, 3:]
    size = np.array(maps.shape[1:])[:, None]
    normalised = torch.from_numpy((2 * voxels / (size - 1) - 1)[::-1].T.astype(np.float32).copy())
    grid = normalised.view(1, 1, 1, -1, 3)
    values = torch.nn.functional.grid_sample(maps[None], grid, mode="bilinear", align_corners=True)
    return values[0, :, 0, 0].numpy()


def push(points, centre, radius, strength):
    """Where tissue at ``points`` (3, N) mm was before a tumour at ``centre`` pushed it outwards."""
    offset = points - centre[:, None]
    distance2 = np.sum(offset ** 2, axis=0)
    # r_source = r (1 - k exp(-r²/2σ²)): monotonic for k < 1, so the tissue is displaced, not folded.
    return centre[:, None] + offset * (1 - strength * np.exp(-distance2 / (2 * radius ** 2)))


def lesion_plan(rng, n_tumours):
    """Per tumour: core and whole tumour volume (mm³) and its kind (ring, enhancing, patchy)."""
    plans = []
    for number in range(n_tumours):
        small = number > 0 or rng.random() < 0.2  # satellites, and some small primaries
        low, high = (200, 4000) if small else (5e3, 6e4)
        core = np.exp(rng.uniform(np.log(low), np.log(high)))
        whole = min(core * np.exp(rng.uniform(np.log(1.5), np.log(6))), 2e5)
        kind = rng.choice(["ring", "enhancing", "patchy"], p=[0.25, 0.6, 0.15] if small else [0.6, 0.15, 0.25])
        plans.append({"core": core, "whole": whole, "kind": kind})
    return plans


def tissue(rng, spacing, plans, mass_effect=(0.4, 0.8)):
    """The deformed, tumour-displaced brain: ``(gm, wm, brain)`` on the output grid, its affine and tumour centres."""
    maps, template_affine, points, centre = reference(spacing)
    shape, affine = output_grid(spacing, centre)
    world = (affine[:3, :3] @ np.indices(shape, dtype=np.float32).reshape(3, -1) + affine[:3, 3:]).astype(np.float32)
    # Anatomy varies: a small rotation and scaling about the brain's centre, and a smooth displacement of a few mm.
    rotation = Rotation.from_euler("xyz", rng.uniform(-4, 4, 3), degrees=True).as_matrix()
    matrix = rotation @ np.diag(rng.uniform(0.94, 1.06, 3))
    amplitude = rng.uniform(2, 4)
    displacement = np.stack([smooth_noise(rng, shape, cells=6).ravel() for _ in range(3)]) * amplitude
    centres = []
    for plan in plans:
        seed = points["white"][rng.integers(len(points["white"]))]
        # The tumour's centre in the output, ignoring the (small, smooth) displacement there.
        centres.append(np.linalg.solve(matrix, seed - centre) + centre)
        plan["radius"] = (3 * (plan["core"] + plan["whole"]) / 8 / np.pi) ** (1 / 3)
    pushed = world
    for plan, tumour_centre in zip(plans, centres):
        pushed = push(pushed, tumour_centre, plan["radius"] + 3, rng.uniform(*mass_effect))
    source = matrix @ (pushed - centre[:, None]) + centre[:, None] + displacement
    gm, wm, brain = (m.reshape(shape) for m in sample(maps, template_affine, source))
    return (gm, wm, brain), affine, centres, (points, matrix, centre)


def laplacian(u, spacing):
    """The discrete Laplacian of ``u`` with per-axis ``spacing``, in units of the smallest spacing squared."""
    step = min(spacing)
    return sum(ndimage.correlate1d(u, [1.0, -2.0, 1.0], axis=a, mode="constant") * (step / s) ** 2
               for a, s in enumerate(spacing))


def spread(gm, wm, allowed, start, spacing, reach):
    """A WM-biased distance-like score from voxel ``start``: sqrt(-log) of a diffusion, faster in WM than GM."""
    diffusivity = np.where(allowed, 0.01 + 0.15 * wm + 0.015 * gm, 0).astype(np.float32)
    u = np.zeros(gm.shape, np.float32)
    u[start] = 1
    for _ in range(int(reach / min(spacing) * 1.3) + 4):  # the stencil reaches one voxel further per step
        u = u + diffusivity * laplacian(u, spacing)
    return np.sqrt(-np.log(np.maximum(u, 1e-35)) + np.log(u.max()))


def smallest(score, allowed, volume):
    """The ``volume`` voxels of ``allowed`` with the smallest ``score``."""
    count = int(round(volume))
    values = score[allowed]
    if count >= values.size:
        return allowed.copy()
    return allowed & (score <= np.partition(values, max(count - 1, 0))[max(count - 1, 0)])


def connected(mask, start):
    """The part of ``mask`` connected to voxel ``start``, or its largest connected part if ``start`` is outside."""
    parts, count = ndimage.label(mask)
    if count <= 1:
        return mask
    keep = parts[start] or np.argmax(np.bincount(parts.ravel())[1:]) + 1
    return parts == keep


def rough(rng, shape, cells):
    """Smooth noise at two scales, ``cells`` and three times finer: an irregular boundary's perturbation."""
    return 0.7 * smooth_noise(rng, shape, cells) + 0.3 * smooth_noise(rng, shape, 3 * cells)


def regions(rng, tissues, allowed, start, spacing, plan):
    """A tumour's core, whole tumour and the core's inner part (crop masks), and the edema's score."""
    gm, wm, _ = tissues
    distance = spread(gm, wm, allowed, start, spacing, plan["reach"])
    cells = max(2, int(plan["reach"] / 6))
    voxel = float(np.prod(spacing))
    # Irregular boundaries: each region's score is the distance perturbed by its own smooth noise;
    # the edema's also grows with the grey matter fraction, so that edema stays in white matter.
    core_score = distance * (1 + 0.45 * rough(rng, gm.shape, cells))
    edema_score = distance * (1 + 0.45 * rough(rng, gm.shape, cells)) * (1 + 1.2 * gm / (gm + wm + 1e-3))
    core = connected(smallest(core_score, allowed, plan["core"] / voxel), start)
    whole = connected(smallest(edema_score, allowed, plan["whole"] / voxel) | core, start)
    # Necrosis: off the core's centre, towards a random side.
    offset = np.indices(gm.shape, dtype=np.float32) - np.reshape(start, (3, 1, 1, 1))
    direction = rng.normal(size=3) / np.sqrt(3)
    side = np.tensordot(direction * np.array(spacing), offset, axes=1) / plan["radius"]
    scale = distance[core].max() if core.any() else 1.0
    inner_score = distance / scale * (1 + 0.35 * rough(rng, gm.shape, cells)) + 0.4 * side
    inner = smallest(inner_score, core, core.sum() * rng.uniform(0.15, 0.6))
    return core, whole, inner, edema_score


def grow(rng, tissues, affine, spacing, centre, plan, enhancing, classes, strength):
    """Grow one tumour around ``centre`` (mm) into ``classes`` (CLASSES indices) and ``strength`` (edema)."""
    plan["reach"] = plan["radius"] * 1.8 + 6
    index = np.round(np.linalg.solve(affine[:3, :3], centre - affine[:3, 3])).astype(int)
    half = np.ceil(plan["reach"] / np.array(spacing)).astype(int)
    lo, hi = np.maximum(index - half, 0), np.minimum(index + half + 1, classes.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    gm, wm, brain = (t[box] for t in tissues)
    allowed = (brain > 0.5) & (gm + wm > 0.45 * brain)  # brain tissue, not CSF
    start = tuple(np.clip(index - lo, 0, np.array(gm.shape) - 1))
    core, whole, inner, edema_score = regions(rng, (gm, wm, brain), allowed, start, spacing, plan)
    if not core.any():  # no brain tissue around the seed
        return
    kind = plan["kind"] if enhancing else "none"
    if kind == "ring":
        parts = {"necrosis": inner, "enhancing": core & ~inner}
    elif kind == "enhancing":
        parts = {"enhancing": core}
    elif kind == "patchy":
        patches = smooth_noise(rng, gm.shape, max(4, int(plan["reach"] / 3))) > rng.uniform(-0.3, 0.2)
        parts = {"necrosis": inner & ~patches, "solid": core & ~inner & ~patches, "enhancing": core & patches}
    else:
        parts = {"necrosis": inner, "solid": core & ~inner}
    view = classes[box]
    edema = whole & ~core & (view == 0)
    view[edema] = CLASSES.index("edema")
    # Edema is strongest next to the core and fades towards its edge.
    limit = edema_score[whole].max() + 1e-6
    fade = np.clip((limit - edema_score) / (limit - edema_score[core].min() + 1e-6), 0, 1)
    strength[box][edema] = (rng.uniform(0.7, 1.0) * (0.55 + 0.45 * fade))[edema]
    for name, mask in parts.items():
        view[mask] = CLASSES.index(name)


def blobs(rng, shape, affine, points, count, size_mm):
    """Soft blobs in [0, 1] around ``count`` of ``points`` (N, 3 mm), each about ``size_mm`` across."""
    volume = np.zeros(shape, np.float32)
    if count == 0 or len(points) == 0:
        return volume
    chosen = points[rng.integers(len(points), size=count)] + rng.normal(0, 1, (count, 3))
    voxels = np.round(np.linalg.solve(affine[:3, :3], (chosen - affine[:3, 3]).T)).astype(int)
    inside = np.all((voxels >= 0) & (voxels < np.array(shape)[:, None]), axis=0)
    volume[tuple(voxels[:, inside])] = 1
    sigma = size_mm / 2.355 / np.linalg.norm(affine[:3, :3], axis=0)
    peak = ndimage.gaussian_filter(np.pad([[[1.0]]], int(4 * sigma.max()) + 1), sigma).max()
    return np.clip(ndimage.gaussian_filter(volume, sigma) / peak, 0, 1)


def vessels(rng, shape, spacing, count):
    """Soft vessel-like curves: ``count`` smooth random walks through the volume, a voxel or two thick."""
    volume = np.zeros(shape, np.float32)
    for _ in range(count):
        steps = rng.integers(60, 160)  # mm
        turns = np.cumsum(rng.normal(0, 0.15, (steps, 3)), axis=0) + rng.normal(0, 1, 3)
        start = np.array(shape) * spacing * rng.uniform(0.2, 0.8, 3)
        path = start + np.cumsum(turns / np.linalg.norm(turns, axis=1)[:, None], axis=0)
        voxels = np.round(path / np.array(spacing)).astype(int)
        voxels = voxels[np.all((voxels >= 0) & (voxels < np.array(shape)), axis=1)]
        volume[tuple(voxels.T)] = 1
    return np.clip(ndimage.gaussian_filter(volume, 0.6) * 3, 0, 1)


def fractions(rng, tissues, affine, spacing, classes, strength, extras):
    """Partial volumes (len(CLASSES), X, Y, Z) of every class, summing to the brain's."""
    gm, wm, brain = tissues
    points, matrix, centre = extras
    shape = gm.shape
    csf = np.clip(brain - gm - wm, 0, 1)
    # Where the template's points are in the output (the displacement ignored): plexus and white matter spots.
    moved = {k: (np.linalg.solve(matrix, (v - centre).T).T + centre) for k, v in points.items()}
    plexus = blobs(rng, shape, affine, moved["ventricle"], rng.integers(2, 6), rng.uniform(6, 10)) * csf
    spots = blobs(rng, shape, affine, moved["white"], rng.integers(0, 11), rng.uniform(3, 7)) * wm
    vessel = vessels(rng, shape, spacing, rng.integers(4, 13)) * (csf + gm)
    sigma = 0.5 * min(spacing) / np.array(spacing)
    tumour = [ndimage.gaussian_filter((classes == CLASSES.index(name)) * (strength if name == "edema" else 1.0), sigma)
              for name in ("edema", "necrosis", "solid", "enhancing")]
    others = np.clip(sum(tumour) + plexus + spots + vessel, 0, 1)
    healthy = [m * (1 - others) for m in (csf, gm, wm)]
    return np.stack(healthy + [m * brain for m in tumour] + [plexus, vessel, spots]).astype(np.float32)


def modalities(rng, parts, brain):
    """The four images (float32, about 0-1000) mixed from the partial volumes ``parts``, zero outside ``brain``."""
    shape = parts.shape[1:]
    texture = 1 + 0.04 * smooth_noise(rng, shape, cells=24)  # anatomy's fine texture, shared by the modalities
    tumour = parts[[CLASSES.index(k) for k in ("edema", "necrosis", "solid", "enhancing")]].sum(axis=0)
    images = {}
    for modality in MODALITIES:
        # Per case: each tissue's mean varies by +-10 %, each modality gets a gamma, a gain and a bias field.
        means = np.asarray(CONTRAST[modality], np.float32) * rng.uniform(0.9, 1.1, len(CLASSES)).astype(np.float32)
        # Tumours are heterogeneous, differently in each modality.
        heterogeneity = 1 + rng.uniform(0.08, 0.2) * tumour * smooth_noise(rng, shape, cells=32)
        clean = np.tensordot(means, parts, axes=1) * texture * heterogeneity
        bias = np.exp(rng.uniform(0.05, 0.25) * smooth_noise(rng, shape, cells=3))
        clean = rng.uniform(0.7, 1.3) * np.maximum(clean, 0) ** np.exp(rng.uniform(-0.25, 0.25)) * bias
        sigma = rng.uniform(0.015, 0.035)
        real, imaginary = (sigma * rng.standard_normal(shape, np.float32) for _ in range(2))
        noisy = np.hypot(clean + real, imaginary)  # Rician: the magnitude of a complex signal with noise
        images[modality] = (np.where(brain, noisy, 0) * 1000).astype(np.float32)
    return images


def realistic_case(spacing, seed, index, enhancing=True, mass_effect=(0.4, 0.8)):
    """Case ``index`` of ``seed``: four images, the BraTS label map (uint8), their affine, the partial volumes.

    ``mass_effect``: the range of how far tumours push tissue aside (0: not at all, below 1).
    """
    rng = np.random.default_rng([seed, index])
    plans = lesion_plan(rng, int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12])))
    tissues, affine, centres, extras = tissue(rng, spacing, plans, mass_effect)
    classes = np.zeros(tissues[0].shape, np.uint8)
    strength = np.zeros(tissues[0].shape, np.float32)
    for plan, centre in zip(plans, centres):
        grow(rng, tissues, affine, spacing, centre, plan, enhancing, classes, strength)
    brain = tissues[2] > 0.5
    label = np.zeros(classes.shape, np.uint8)
    for name, value in LABEL.items():
        label[(classes == CLASSES.index(name)) & brain] = value
    parts = fractions(rng, tissues, affine, spacing, classes, strength, extras)
    return modalities(rng, parts, brain), label, affine, parts


def write_realistic_brats(root, n_cases, spacing=2.0, seed=0, prefix="BraTS20_Training", with_label=True,
                          no_enhancing_every=4, first_index=1):
    """Write ``n_cases`` realistic synthetic cases in the BraTS 2020 layout under ``root``; returns their folders.

    Args:
        root: output folder (created).
        n_cases: number of cases, named ``<prefix>_001`` onwards (from ``first_index``).
        spacing: voxel size in mm, a number or three; the volumes cover BraTS's 240 x 240 x 155 mm
            (2 mm: 120 x 120 x 78 voxels) around the template's brain.
        seed: cases are a pure function of the seed and their index.
        with_label: also write the ``seg`` label map (1 necrosis, 2 edema, 4 enhancing tumour).
        no_enhancing_every: every n-th case has no enhancing tumour (0: never).
        first_index: index of the first case.
    """
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    root = Path(root)
    folders = []
    for index in range(first_index, first_index + n_cases):
        enhancing = not (no_enhancing_every and index % no_enhancing_every == 0)
        images, label, affine, _ = realistic_case(spacing, seed, index, enhancing)
        case_id = f"{prefix}_{index:03d}"
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        for modality, volume in images.items():
            nibabel.save(nibabel.Nifti1Image(volume, affine), folder / f"{case_id}_{modality}.nii.gz")
        if with_label:
            nibabel.save(nibabel.Nifti1Image(label, affine), folder / f"{case_id}_seg.nii.gz")
        folders.append(folder)
    return folders
