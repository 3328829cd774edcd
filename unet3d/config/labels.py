"""The label scheme: what the label values are, what the output channels mean, and the way between them.

Three modes (``dataset.label_mode``):

- ``regions``: one sigmoid channel per region, a region being a set of label values.
  Nested regions are given by ``labels`` alone, outermost first. BraTS
  (``labels = [2, 1, 4]``): channel ``i`` is the union of ``labels[i:]``, so whole tumour
  {1, 2, 4}, tumour core {1, 4}, enhancing tumour {4}; a voxel takes the label of the
  innermost region that fires inside all the ones around it. Regions that overlap without
  nesting are given as ``regions`` (one list of label values each) with
  ``regions_class_order`` (the value painted per region), as nnU-Net's dataset.json gives
  them: each region is painted in turn where its probability passes the threshold, later
  regions over earlier ones.
- ``labels``: one sigmoid channel per label, ``label == labels[i]``.
- ``classes``: mutually exclusive classes, a softmax over background and the labels;
  training targets are class indices (0 background, ``i`` for ``labels[i - 1]``).

Training targets, validation Dice, prediction decoding, evaluation and summaries all ask
this one object.
"""

import dataclasses
import json
import re

import numpy as np
import torch

from unet3d.errors import UserError

BRATS_LABELS = (2, 1, 4)
BRATS_2023_LABELS = (2, 1, 3)  # edema 2, necrosis 1, enhancing tumour 3
BRATS_REGIONS = ("WT", "TC", "ET")
MODES = ("regions", "labels", "classes")


@dataclasses.dataclass(frozen=True)
class LabelScheme:
    """Label values and how they map to output channels and back.

    Args:
        values: the label values, outermost first for nested regions (empty: none configured).
        mode: "regions", "labels" or "classes" (see the module's docstring).
        label_names: a name per channel's region, label or class (None: WT/TC/ET for BraTS regions,
            ``region<value>`` for other nested regions, ``region<v1>_<v2>...`` for general regions,
            else ``label<value>``).
        regions: general regions, one tuple of label values per channel (None: nested regions of
            ``values``); set with ``regions_class_order``, the label value painted per region.
    """

    values: tuple = ()
    mode: str = "labels"
    label_names: tuple = None
    regions: tuple = None
    regions_class_order: tuple = None

    @classmethod
    def brats(cls):
        """The BraTS 2020 regions: WT {1, 2, 4}, TC {1, 4}, ET {4}."""
        return cls(BRATS_LABELS, "regions")

    @classmethod
    def of_regions(cls, regions, regions_class_order, label_names=None, values=None):
        """General (possibly overlapping) regions, nnU-Net's way: one tuple of label values per channel and the
        value painted per region; ``values`` defaults to every value the regions and the order name, sorted."""
        regions = tuple(tuple(region) for region in regions)
        if values is None:
            values = sorted(set().union(*regions, regions_class_order))
        return cls(tuple(values), "regions", tuple(label_names) if label_names else None, regions,
                   tuple(regions_class_order))

    @property
    def hierarchy(self):
        """Whether the channels are regions (nested or general), one sigmoid each."""
        return self.mode == "regions"

    @property
    def nested(self):
        """Whether the channels are nested regions of ``values``, outermost first (BraTS)."""
        return self.mode == "regions" and self.regions is None

    @property
    def region_sets(self):
        """The label values each channel's region or label holds (background aside), one tuple per channel."""
        if self.regions is not None:
            return self.regions
        if self.nested:
            return tuple(tuple(self.values[index:]) for index in range(len(self.values)))
        return tuple((value,) for value in self.values)

    @property
    def paint_values(self):
        """The label value each channel's region or label paints: ``regions_class_order`` for general regions."""
        return self.regions_class_order if self.regions is not None else tuple(self.values)

    @property
    def names(self):
        """A name per label, region or class (background aside), for CSV columns, plots and evaluation."""
        if self.label_names:
            return list(self.label_names)
        if self.regions is not None:
            return ["region" + "_".join(map(str, region)) for region in self.regions]
        if self.nested and self.values in (BRATS_LABELS, BRATS_2023_LABELS):
            return list(BRATS_REGIONS)
        prefix = "region" if self.nested else "label"
        return [f"{prefix}{value}" for value in self.values]

    @property
    def n_channels(self):
        """Output channels of a network trained on this scheme: one per region or label, plus background for
        classes."""
        return len(self.region_sets) + (self.mode == "classes")

    @property
    def activation(self):
        """How logits become probabilities: a softmax over classes, else a sigmoid per channel."""
        return "softmax" if self.mode == "classes" else "sigmoid"

    def config_keys(self):
        """The ``dataset`` keys of general regions (``regions``, ``regions_class_order``), else none."""
        if self.regions is None:
            return {}
        return {"regions": [list(region) for region in self.regions],
                "regions_class_order": list(self.regions_class_order)}

    def cache_key(self):
        """The scheme as a JSON-able dict for cache keys; without general regions, the same as before they
        existed, so caches stay valid."""
        key = dataclasses.asdict(self)
        if self.regions is None:
            del key["regions"], key["regions_class_order"]
        return key

    def require(self, why):
        """Raise a UserError when no labels are configured; ``why`` says what needs them."""
        if not self.values:
            raise UserError(f"config key 'dataset.labels' is missing (expected the label values, e.g. [2, 1, 4]); {why}")
        return self

    def masks(self, label):
        """One boolean mask per label or region, stacked first, from an integer ``label`` array (NumPy or torch)."""
        module = torch if isinstance(label, torch.Tensor) else np
        masks = []
        for members in self.region_sets:
            mask = module.zeros_like(label, dtype=module.bool)
            for value in members:
                mask = mask | (label == value)
            masks.append(mask)
        return module.stack(masks)

    def targets(self, label):
        """Training targets from a label map (torch, any shape): the region or label masks as floats, or for
        classes one channel of class indices."""
        if self.mode != "classes":
            return self.masks(label).float()
        indices = torch.zeros_like(label, dtype=torch.float32)
        for index, value in enumerate(self.values, start=1):
            indices[label == value] = index
        return indices[None]

    def target_masks(self, targets):
        """The label or region masks (B, labels, ...) of a batch of ``targets`` (B, target channels, ...)."""
        if self.mode != "classes":
            return targets.bool()
        if targets.shape[1] == 1:  # class indices
            return torch.stack([targets[:, 0] == index for index in range(1, len(self.values) + 1)], dim=1)
        return targets[:, 1:].bool()  # one-hot, background first

    def _empty_map(self, shape, device):
        dtype = torch.uint8 if max(self.values) < 256 else torch.int32
        return torch.zeros(shape, dtype=dtype, device=device)

    def paint(self, masks):
        """Label or region masks (channels, ...) -> integer label map: nested regions painted outer to inner,
        each only inside the ones before it; other masks in channel order, later ones over earlier ones."""
        masks = torch.as_tensor(masks).bool()
        label_map = self._empty_map(masks.shape[1:], masks.device)
        inside = torch.ones_like(label_map, dtype=torch.bool)
        for mask, value in zip(masks, self.paint_values):
            inside = inside & mask if self.nested else mask
            label_map[inside] = value
        return label_map

    def decode(self, probabilities, threshold=0.5):
        """Per-channel probabilities (C, ...) -> integer label map (...), on the tensor's device.

        Nested regions are painted outer to inner, each only inside the ones before it (BraTS:
        edema 2 in the whole tumour, core 1 inside it, enhancing 4 inside the core): regions
        are nested by definition, so an inner channel firing outside its outer one is dropped
        rather than allowed to spill a label over the scan. General regions are painted as
        nnU-Net does: each region's ``regions_class_order`` value where its probability passes
        ``threshold``, in channel order, later regions over earlier ones. Labels take the most
        probable channel where it passes ``threshold``; classes the most probable class,
        background included.
        """
        probabilities = torch.as_tensor(probabilities)
        label_map = self._empty_map(probabilities.shape[1:], probabilities.device)
        if self.mode == "regions":
            return self.paint(probabilities > threshold)
        values = torch.as_tensor(self.values, dtype=label_map.dtype, device=probabilities.device)
        if self.mode == "classes":
            index = probabilities.argmax(dim=0)
            foreground = index > 0
            label_map[foreground] = values[index[foreground] - 1]
            return label_map
        best, index = probabilities.max(dim=0)
        confident = best > threshold
        label_map[confident] = values[index[confident]]
        return label_map


def label_scheme(settings):
    """The scheme of a config's ``dataset`` label keys (``LabelSettings``)."""
    names = tuple(settings.label_names) if settings.label_names else None
    if settings.regions:
        return LabelScheme.of_regions(settings.regions, settings.regions_class_order, names, settings.labels)
    return LabelScheme(tuple(settings.labels or ()), settings.mode, names)


def check_region_keys(regions, order, labels, label_mode):
    """Raise a UserError naming the key unless ``dataset.regions`` and ``dataset.regions_class_order`` come
    together, as distinct regions of positive label values, one painted label value per region."""
    if regions is None:
        if order is not None:
            raise UserError("config key 'dataset.regions_class_order' goes with 'dataset.regions', which is missing")
        return
    regions = [list(region) for region in regions]
    if not regions or len({tuple(sorted(r)) for r in regions}) != len(regions) or not all(
            region and len(set(region)) == len(region) and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in region) for region in regions):
        raise UserError(f"config key 'dataset.regions' must be distinct regions, each a list of distinct positive "
                        f"label values, e.g. [[1, 2], [2, 3], [3]], got {regions}")
    if label_mode not in (None, "regions"):
        raise UserError(f"config key 'dataset.label_mode' is \"{label_mode}\" but 'dataset.regions' are regions "
                        "(label_mode \"regions\"); keep one")
    if order is None:
        raise UserError("config key 'dataset.regions_class_order' is missing (the label value each region of "
                        "'dataset.regions' paints, e.g. [1, 2, 3])")
    if len(order) != len(regions):
        raise UserError(f"config key 'dataset.regions_class_order' must have one label value per region of "
                        f"'dataset.regions' ({len(regions)}), got {len(order)}")
    known, among = (sorted(labels), "'dataset.labels'") if labels else (sorted(set().union(*regions)), "the regions")
    for key, values in (("regions", [v for region in regions for v in region]), ("regions_class_order", order)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise UserError(f"config key 'dataset.{key}' holds {unknown[0]}, which is not a label value of "
                            f"{among} {known}")


def safe_label_names(names, values):
    """``names`` made fit for CSV columns (letters, digits, ``_``, ``-``; ``label<value>`` for an empty one), or
    None when two of them then clash."""
    safe = [re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or f"label{value}" for name, value in zip(names, values)]
    return safe if len(set(safe)) == len(safe) else None


def dataset_json_scheme(table, order, where):
    """The ``LabelScheme`` of a dataset.json's ``labels``: nnU-Net's ``{"name": value}`` (exclusive classes) or
    ``{"name": [values]}`` (regions, with ``regions_class_order`` ``order``), or the Decathlon's
    ``{"value": "name"}``; errors name ``where``.

    Regions that nest (BraTS's) become nested regions, outermost first; others become general
    regions in the table's order, painted by ``regions_class_order`` as nnU-Net paints them.
    """
    if not isinstance(table, dict) or not table:
        raise UserError(f"{where}: key 'labels' must be an object {{\"background\": 0, \"<name>\": 1, ...}}")
    if all(isinstance(key, str) and key.isdigit() for key in table):  # Decathlon / nnU-Net v1: {"1": "name"}
        table = {name: int(value) for value, name in table.items()}
    entries = []
    for name, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise UserError(f"{where}: label '{name}' must be a label value (0 or more) or a list of them, "
                            f"got {json.dumps(value)}")
        if values != [0]:
            entries.append((name, sorted(set(values))))
    if not any(len(values) > 1 for _, values in entries):
        if not entries:
            raise UserError(f"{where}: key 'labels' names no foreground label")
        exclusive = {values[0]: name for name, values in entries}
        values = sorted(exclusive)
        names = safe_label_names([exclusive[v] for v in values], values)
        return LabelScheme(tuple(values), "classes", tuple(names) if names else None)
    nested, why = _nested(entries)
    if nested is None:
        return _general_regions(entries, order, why, where)
    if order is not None and len(order) != len(nested):
        raise UserError(f"{where}: regions_class_order has {len(order)} entries for {len(nested)} regions")
    values = [sorted(set(outer) - set(inner))[0] for (_, outer), (_, inner) in zip(nested, nested[1:])]
    values.append(nested[-1][1][0])
    names = safe_label_names([name for name, _ in nested], values)
    return LabelScheme(tuple(values), "regions", tuple(names) if names else None)


def _nested(regions):
    """``(regions outermost first, None)`` when ``[(name, values)]`` nest as nested regions need (each region
    the next one plus one label value, the innermost one value), else ``(None, why not)``."""
    regions = sorted(regions, key=lambda region: -len(region[1]))
    for (outer, outer_values), (inner, inner_values) in zip(regions, regions[1:]):
        if not set(inner_values) < set(outer_values) or len(set(outer_values) - set(inner_values)) != 1:
            return None, f"regions '{outer}' {outer_values} and '{inner}' {inner_values} do not nest"
    if len(regions[-1][1]) != 1:
        return None, f"the innermost region '{regions[-1][0]}' {regions[-1][1]} holds more than one label value"
    return regions, None


def _general_regions(entries, order, why, where):
    """General regions ``[(name, values)]`` in the table's order, painted by ``order`` (dataset.json's
    ``regions_class_order``, checked here); ``why`` says why they are not nested."""
    if order is None:
        raise UserError(f"{where}: {why}, so key 'regions_class_order' is needed (the label value to paint for "
                        "each region, in the order of 'labels', as nnU-Net takes it)")
    for name, region in entries:
        if 0 in region:
            raise UserError(f"{where}: region '{name}' {region} holds the background 0; a region is foreground "
                            "label values")
    values = sorted(set().union(*(set(region) for _, region in entries)))
    if (not isinstance(order, list) or len(order) != len(entries)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v in values for v in order)):
        raise UserError(f"{where}: key 'regions_class_order' must list one label value of the regions {values} "
                        f"per region ({len(entries)}), got {json.dumps(order)}")
    names = safe_label_names([name for name, _ in entries], range(1, len(entries) + 1))
    return LabelScheme.of_regions([region for _, region in entries], order, names)
