"""The label scheme: what the label values are, what the output channels mean, and the way between them.

Three modes (``dataset.label_mode``):

- ``regions``: nested regions, outermost first, one sigmoid channel each. BraTS
  (``labels = [2, 1, 4]``): channel ``i`` is the union of ``labels[i:]``, so whole tumour
  {1, 2, 4}, tumour core {1, 4}, enhancing tumour {4}.
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
        values: the label values, outermost first for regions (empty: none configured).
        mode: "regions", "labels" or "classes" (see the module's docstring).
        label_names: a name per value (None: WT/TC/ET for BraTS regions, ``region<value>`` for other regions,
            else ``label<value>``).
    """

    values: tuple = ()
    mode: str = "labels"
    label_names: tuple = None

    @classmethod
    def brats(cls):
        """The BraTS 2020 regions: WT {1, 2, 4}, TC {1, 4}, ET {4}."""
        return cls(BRATS_LABELS, "regions")

    @property
    def hierarchy(self):
        """Whether the channels are nested regions."""
        return self.mode == "regions"

    @property
    def names(self):
        """A name per label, region or class (background aside), for CSV columns, plots and evaluation."""
        if self.label_names:
            return list(self.label_names)
        if self.hierarchy and self.values in (BRATS_LABELS, BRATS_2023_LABELS):
            return list(BRATS_REGIONS)
        prefix = "region" if self.hierarchy else "label"
        return [f"{prefix}{value}" for value in self.values]

    @property
    def n_channels(self):
        """Output channels of a network trained on this scheme: one per label, plus background for classes."""
        return len(self.values) + (self.mode == "classes")

    @property
    def activation(self):
        """How logits become probabilities: a softmax over classes, else a sigmoid per channel."""
        return "softmax" if self.mode == "classes" else "sigmoid"

    def require(self, why):
        """Raise a UserError when no labels are configured; ``why`` says what needs them."""
        if not self.values:
            raise UserError(f"config key 'dataset.labels' is missing (expected the label values, e.g. [2, 1, 4]); {why}")
        return self

    def masks(self, label):
        """One boolean mask per label or region, stacked first, from an integer ``label`` array (NumPy or torch)."""
        module = torch if isinstance(label, torch.Tensor) else np
        masks = []
        for index in range(len(self.values)):
            members = self.values[index:] if self.hierarchy else self.values[index: index + 1]
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

    def paint(self, masks):
        """Label or region masks (labels, ...) -> integer label map: regions painted outer to inner."""
        masks = torch.as_tensor(masks).bool()
        dtype = torch.uint8 if max(self.values) < 256 else torch.int32
        label_map = torch.zeros(masks.shape[1:], dtype=dtype, device=masks.device)
        inside = torch.ones_like(label_map, dtype=torch.bool)
        for mask, value in zip(masks, self.values):
            inside = inside & mask if self.hierarchy else mask
            label_map[inside] = value
        return label_map

    def decode(self, probabilities, threshold=0.5):
        """Per-channel probabilities (C, ...) -> integer label map (...), on the tensor's device.

        Regions are painted outer to inner, each only inside the ones before it (BraTS:
        edema 2 in the whole tumour, core 1 inside it, enhancing 4 inside the core): regions
        are nested by definition, so an inner channel firing outside its outer one is dropped
        rather than allowed to spill a label over the scan. Labels take the most probable
        channel where it passes ``threshold``; classes the most probable class, background
        included.
        """
        probabilities = torch.as_tensor(probabilities)
        dtype = torch.uint8 if max(self.values) < 256 else torch.int32
        values = torch.as_tensor(self.values, dtype=dtype, device=probabilities.device)
        label_map = torch.zeros(probabilities.shape[1:], dtype=dtype, device=probabilities.device)
        if self.hierarchy:
            inside = torch.ones(label_map.shape, dtype=torch.bool, device=probabilities.device)
            for index, value in enumerate(self.values):
                inside &= probabilities[index] > threshold
                label_map[inside] = value
            return label_map
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
    return LabelScheme(tuple(settings.labels or ()), settings.mode, names)


def safe_label_names(names, values):
    """``names`` made fit for CSV columns (letters, digits, ``_``, ``-``; ``label<value>`` for an empty one), or
    None when two of them then clash."""
    safe = [re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or f"label{value}" for name, value in zip(names, values)]
    return safe if len(set(safe)) == len(safe) else None


def dataset_json_scheme(table, order, where):
    """The ``LabelScheme`` of a dataset.json's ``labels``: nnU-Net's ``{"name": value}`` (exclusive classes) or
    ``{"name": [values]}`` (nested regions, with ``regions_class_order`` ``order``), or the Decathlon's
    ``{"value": "name"}``; errors name ``where``."""
    if not isinstance(table, dict) or not table:
        raise UserError(f"{where}: key 'labels' must be an object {{\"background\": 0, \"<name>\": 1, ...}}")
    if all(isinstance(key, str) and key.isdigit() for key in table):  # Decathlon / nnU-Net v1: {"1": "name"}
        table = {name: int(value) for value, name in table.items()}
    exclusive, regions = {}, []
    for name, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise UserError(f"{where}: label '{name}' must be a label value (0 or more) or a list of them, "
                            f"got {json.dumps(value)}")
        if values == [0]:
            continue
        if len(values) > 1:
            regions.append((name, sorted(values)))
        else:
            exclusive[values[0]] = name
    if not regions:
        if not exclusive:
            raise UserError(f"{where}: key 'labels' names no foreground label")
        values = sorted(exclusive)
        names = safe_label_names([exclusive[v] for v in values], values)
        return LabelScheme(tuple(values), "classes", tuple(names) if names else None)
    regions.extend((name, [value]) for value, name in exclusive.items())
    regions = _nested(regions, order, where)
    values = [sorted(set(outer) - set(inner))[0] for (_, outer), (_, inner) in zip(regions, regions[1:])]
    values.append(regions[-1][1][0])
    names = safe_label_names([name for name, _ in regions], values)
    return LabelScheme(tuple(values), "regions", tuple(names) if names else None)


def _nested(regions, order, where):
    """Regions ``[(name, values)]`` outermost first, checked to nest as label_mode "regions" does: each region
    is the next one plus one label value."""
    regions = sorted(regions, key=lambda region: -len(region[1]))
    for (outer, outer_values), (inner, inner_values) in zip(regions, regions[1:]):
        if not set(inner_values) < set(outer_values) or len(set(outer_values) - set(inner_values)) != 1:
            raise UserError(f"{where}: regions '{outer}' {outer_values} and '{inner}' {inner_values} do not "
                            "nest with one label value between them, which label_mode \"regions\" needs")
    if len(regions[-1][1]) != 1:
        raise UserError(f"{where}: the innermost region '{regions[-1][0]}' must hold one label value")
    if order is not None and len(order) != len(regions):
        raise UserError(f"{where}: regions_class_order has {len(order)} entries for {len(regions)} regions")
    return regions
