"""Connected-component clean-up of label maps, one region (or label, or class) at a time.

The clean-up is either the user's (``prediction.min_component_size``, ``--keep_largest``:
the same step for every region) or the one a cross-validation run chose per region and
stored as ``postprocessing.json`` in its folder (see ``unet3d.runs.postprocessing``).
"""

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from skimage.measure import label as label_components

from unet3d.data.formats import read_array
from unet3d.errors import UserError
from unet3d.predict.write import write_prediction

log = logging.getLogger("unet3d")

POSTPROCESSING_FILE = "postprocessing.json"
AUTO = "auto"  # the post-processing of the run the models come from, if it chose one
# Components touch by a face when small ones are removed, by a corner when the largest is kept (the
# defaults of MONAI's RemoveSmallObjects and KeepLargestConnectedComponent, which unet3d used before).
SMALL_COMPONENT_CONNECTIVITY = 1
LARGEST_COMPONENT_CONNECTIVITY = 3
FOLD_FOLDER = re.compile(r"fold\d+")


def components(mask, connectivity):
    """``(labels, sizes)``: each voxel's component in a boolean mask (0: outside) and each component's voxel count
    (``sizes[0]``: the voxels outside)."""
    labels = label_components(np.asarray(mask), connectivity=connectivity)
    return labels, np.bincount(labels.ravel())


@dataclasses.dataclass(frozen=True)
class ComponentStep:
    """The clean-up of one region: drop components under ``min_component_size`` voxels, then, with
    ``keep_largest``, all but the largest, then, with ``min_region_size``, the whole region where fewer
    than that many voxels of it are left in the case (none of them: nothing), and with
    ``min_region_share`` where what is left is under that share of the region around it (nested
    regions: enhancing tumour within the tumour core; the whole tumour has none around it).

    The last is the clean-up BraTS entries apply to enhancing tumour (one found too small is
    taken for a false alarm in a tumour that enhances nowhere, and becomes necrosis): a case
    without the structure then scores 1 instead of 0. A share tells a speck in a large core
    from a tiny lesion that is most of a tiny core, which a size cannot. Written with scikit-image's labelling
    rather than MONAI's ``RemoveSmallObjects``, whose threshold moved from "under N" to "at most
    N" voxels with scikit-image 0.26; the choice made by cross-validation counts on exactly this
    rule (``kept``).
    """

    min_component_size: int = 0
    keep_largest: bool = False
    min_region_size: int = 0
    min_region_share: float = 0.0

    FIELDS: ClassVar[tuple] = ("min_component_size", "keep_largest", "min_region_size", "min_region_share")

    def __bool__(self):
        return bool(self.min_component_size or self.keep_largest or self.min_region_size or self.min_region_share)

    def stages(self):
        """The step as steps of one kind each, in the order they are applied."""
        return ([ComponentStep(self.min_component_size)] if self.min_component_size else []) + (
            [ComponentStep(keep_largest=True)] if self.keep_largest else []) + (
            [ComponentStep(min_region_size=self.min_region_size)] if self.min_region_size else []) + (
            [ComponentStep(min_region_share=self.min_region_share)] if self.min_region_share else [])

    @property
    def connectivity(self):
        """How components touch for a step of one kind."""
        return LARGEST_COMPONENT_CONNECTIVITY if self.keep_largest else SMALL_COMPONENT_CONNECTIVITY

    def kept(self, sizes, around=None):
        """Which components (``components``' sizes) a step of one kind keeps; never the outside (0). ``around``:
        the voxels of the region around this one (None: there is none, and a share removes nothing)."""
        sizes = np.asarray(sizes)
        keep = sizes >= self.min_component_size
        if self.keep_largest and len(sizes) > 1:
            keep = np.zeros(len(sizes), bool)
            keep[1 + np.argmax(sizes[1:])] = True
        if self.min_region_size and sizes[1:].sum() < self.min_region_size:
            keep = np.zeros(len(sizes), bool)
        if self.min_region_share and around is not None and sizes[1:].sum() < self.min_region_share * around:
            keep = np.zeros(len(sizes), bool)
        keep[0] = False
        return keep

    def apply(self, mask, around=None):
        """The boolean ``mask`` (X, Y, Z; torch or NumPy) cleaned, as a torch tensor; ``around``: the mask of the
        region around it, if any."""
        mask = np.asarray(mask)
        around = None if around is None else int(np.asarray(around).sum())
        for stage in self.stages():
            labels, sizes = components(mask, stage.connectivity)
            mask = stage.kept(sizes, around)[labels]
        return torch.as_tensor(mask)

    def as_json(self):
        """The fields that are set (``{"min_component_size": N, "keep_largest": true, "min_region_size": M,
        "min_region_share": F}``), or None for no step."""
        return {name: getattr(self, name) for name in self.FIELDS if getattr(self, name)} or None

    @classmethod
    def from_json(cls, value, where):
        """The step ``as_json`` wrote; errors name ``where``."""
        if value is None:
            return cls()
        fields = value if isinstance(value, dict) else {}
        counts = [fields.get(name, 0) for name in ("min_component_size", "min_region_size")]
        largest, share = fields.get("keep_largest", False), fields.get("min_region_share", 0.0)
        if (not isinstance(value, dict) or set(value) - set(cls.FIELDS) or not isinstance(largest, bool)
                or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in counts)
                or not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1):
            raise UserError(f"{where}: expected null or an object of {{\"min_component_size\": N}}, "
                            f"{{\"keep_largest\": true}}, {{\"min_region_size\": N}} and "
                            f"{{\"min_region_share\": F}} (F from 0 to 1), got {json.dumps(value)}")
        return cls(counts[0], largest, counts[1], float(share))

    def describe(self):
        """The step in words, for logs and tables."""
        parts = ([f"remove components under {self.min_component_size} voxels"] if self.min_component_size else []) + (
            ["keep the largest component"] if self.keep_largest else []) + (
            [f"remove the region where under {self.min_region_size} voxels of it are left"]
            if self.min_region_size else []) + (
            [f"remove the region where it is under {self.min_region_share:.2%} of the region around it"]
            if self.min_region_share else [])
        return ", then ".join(parts) or "none"


def clean_regions(label_map, scheme, steps):
    """``label_map`` (torch or NumPy label values) with ``steps[i]`` (a ``ComponentStep``) applied to region ``i``
    of ``scheme`` (a ``LabelScheme``); returns a torch label map.

    Nested regions (BraTS: WT, TC, ET) are cleaned first to last, each as it stands after the
    regions before it: an inner region is cut to what is left of the outer one, so a tumour
    removed from the whole tumour takes its core with it, and a removed inner speck becomes
    the region around it. Other regions, labels and classes are each cleaned on the same
    map and painted back once (overlapping regions in their ``regions_class_order``).
    """
    label_map = torch.as_tensor(label_map)
    if not scheme.nested:
        if not any(steps):
            return label_map
        masks = scheme.masks(label_map)
        for index, step in enumerate(steps):
            if step:
                masks[index] = step.apply(masks[index])
        return scheme.paint(masks)
    for index, step in enumerate(steps):
        if step:
            masks = scheme.masks(label_map)
            masks[index] = step.apply(masks[index], masks[index - 1] if index else None)
            label_map = scheme.paint(masks)
    return label_map


def clean_label_map(label_map, scheme, min_component_size=0, keep_largest=False):
    """Drop components under ``min_component_size`` voxels and, with ``keep_largest``, all but the largest, of
    every region (see ``clean_regions``)."""
    step = ComponentStep(min_component_size or 0, keep_largest)
    return clean_regions(label_map, scheme, [step] * len(scheme.region_sets)) if step else label_map


def clean_up_steps(scheme, min_component_size, keep_largest, postprocessing):
    """The steps, one per region, that prediction applies: the user's (``min_component_size`` not None, 0 included,
    or ``keep_largest``), else ``postprocessing`` (chosen by cross-validation), else none."""
    if min_component_size is not None or keep_largest:
        return [ComponentStep(min_component_size or 0, keep_largest)] * len(scheme.region_sets)
    return list(postprocessing) if postprocessing else [ComponentStep()] * len(scheme.region_sets)


def scheme_json(scheme):
    """The label scheme a decision was made for, as ``postprocessing.json`` records it."""
    return {"mode": scheme.mode, "values": list(scheme.values)}


def read_postprocessing(path, scheme):
    """The steps of a ``postprocessing.json``, one per region of ``scheme``, checked against it."""
    try:
        decision = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--postprocessing {path}: no such file") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable JSON file ({error})") from None
    regions = decision.get("regions") if isinstance(decision, dict) else None
    if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
        raise UserError(f"{path}: expected an object with a list 'regions' (as unet3d-train writes)")
    chosen_for = decision.get("label_scheme"), [r.get("region") for r in regions]
    if chosen_for != (scheme_json(scheme), scheme.names):
        raise UserError(f"{path}: chosen for the labels {json.dumps(chosen_for[0])} (regions {chosen_for[1]}), but "
                        f"the config's are {json.dumps(scheme_json(scheme))} ({scheme.names})")
    return [ComponentStep.from_json(r.get("step"), f"{path}: region '{r['region']}' step") for r in regions]


def find_postprocessing(model_files):
    """The ``postprocessing.json`` of the run whose fold folders (``<run>/fold<k>/model_best.pth``) hold the
    models, or None; a UserError when models of several runs would bring different ones."""
    runs = {Path(f).resolve().parent.parent if FOLD_FOLDER.fullmatch(Path(f).resolve().parent.name) else None
            for f in model_files}
    found = sorted(str(run / POSTPROCESSING_FILE) for run in runs if run and (run / POSTPROCESSING_FILE).is_file())
    if found and len(runs) > 1:
        raise UserError(f"the models come from several folders, and {found[0]} holds post-processing chosen for "
                        "one of them: name it with --postprocessing, or give --no_postprocessing")
    return Path(found[0]) if found else None


def cross_validation_steps(postprocessing, model_files, scheme, own_clean_up=None):
    """The steps of a ``postprocessing.json`` to apply, or None; logs which, and why not.

    ``postprocessing`` is a file, ``AUTO`` (the file of the run whose fold folders hold
    ``model_files``, if any) or None. ``own_clean_up`` names the clean-up the user chose
    (``--keep_largest``, ``prediction.min_component_size``), which is applied instead.
    """
    path = find_postprocessing(model_files) if postprocessing == AUTO else postprocessing
    if path is None:
        return None
    if own_clean_up and postprocessing != AUTO:
        raise UserError(f"--postprocessing {path}: {own_clean_up} chooses the clean-up already; give one of the two "
                        "(null in the config: --set prediction.min_component_size=null)")
    steps = read_postprocessing(path, scheme)
    if own_clean_up:
        log.info("the post-processing chosen by cross-validation (%s) is not applied: %s chooses the clean-up",
                 path, own_clean_up)
        return None
    log.info("post-processing chosen by cross-validation (%s): %s", path, describe_steps(scheme, steps))
    return steps


def describe_steps(scheme, steps):
    """``"WT: none; TC: keep the largest component; ..."``."""
    return "; ".join(f"{name}: {step.describe()}" for name, step in zip(scheme.names, steps))


def clean_prediction_files(files, output_dir, scheme, steps):
    """Write each label map of ``files`` (``{case id: path}``) cleaned by ``steps`` into ``output_dir``, under its
    own name; returns the written paths."""
    written = []
    for path in files.values():
        array = np.asarray(read_array(path)).round().astype(np.int32)
        target = Path(output_dir) / Path(path).name
        write_prediction(clean_regions(array, scheme, steps).numpy(), path, target)
        written.append(target)
    return written
