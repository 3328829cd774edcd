"""The setting ``dataset.batch_augmentation``: presets of batched augmentation, and a config's changes to them.

A value is null (no batched augmentation), a preset's name, or ``{"preset": name, <augmentation>:
{<field>: value}}``, which changes some fields of some of the preset's augmentations. Parsing gives the
whole recipe as one JSON-able object, ``{"preset": name, <augmentation>: {<field>: value}, ...}``,
listing every augmentation (``prob`` 0 is off); ``unet3d.data.batch_augmentation`` runs it.
"""

import math

from unet3d.config.keys import unknown_key
from unet3d.errors import UserError

# Every augmentation with the meaning of each field; a preset gives every field a value.
FIELDS = {
    "rotation": {"prob": "probability per element", "range": "angle in radians, drawn for each axis"},
    "scaling": {"prob": "probability per element", "range": "zoom factor (above 1 shows more of the volume)",
                "per_axis": "a factor per axis, else one for all three",
                "with_rotation": "drawn when the rotation is (MONAI's RandAffine: one probability for both); "
                                 "then `prob` is not used"},
    "elastic": {"prob": "probability per element", "range": "displacement in voxels (standard deviation of a "
                                                            "smooth random field)",
                "control_points": "control points per axis of the field"},
    "flip": {"prob": "probability per axis (`per_axis`), else of flipping all three axes at once",
             "per_axis": "flip each axis on its own"},
    "noise": {"prob": "probability per element", "range": "standard deviation of the Gaussian noise"},
    "blur": {"prob": "probability per element", "range": "Gaussian sigma in voxels, per channel and axis",
             "channel_prob": "probability per channel of a chosen element"},
    "brightness": {"prob": "probability per element", "range": "intensity factor",
                   "per_channel": "a factor per channel", "split_at_one": "half the draws below 1, half above "
                                                                          "(nnU-Net's BGContrast)"},
    "shift": {"prob": "probability per element", "range": "intensity offset", "per_channel": "an offset per channel"},
    "contrast": {"prob": "probability per element", "range": "contrast factor around the channel's mean, the "
                                                             "channel's range kept",
                 "per_channel": "a factor per channel", "split_at_one": "as for brightness"},
    "low_resolution": {"prob": "probability per element", "range": "zoom of the downsampled copy (nearest down, "
                                                                   "trilinear up)",
                       "channel_prob": "probability per channel of a chosen element"},
    "inverted_gamma": {"prob": "probability per element", "range": "gamma of the inverted image, mean and "
                                                                   "standard deviation kept",
                       "per_channel": "a gamma per channel", "split_at_one": "as for brightness"},
    "gamma": {"prob": "probability per element", "range": "gamma, mean and standard deviation kept",
              "per_channel": "a gamma per channel", "split_at_one": "as for brightness"},
}

OFF = {
    "rotation": {"prob": 0.0, "range": [0.0, 0.0]},
    "scaling": {"prob": 0.0, "range": [1.0, 1.0], "per_axis": False, "with_rotation": False},
    "elastic": {"prob": 0.0, "range": [0.0, 0.0], "control_points": 5},
    "flip": {"prob": 0.0, "per_axis": True},
    "noise": {"prob": 0.0, "range": [0.0, 0.0]},
    "blur": {"prob": 0.0, "range": [0.5, 1.0], "channel_prob": 1.0},
    "brightness": {"prob": 0.0, "range": [1.0, 1.0], "per_channel": False, "split_at_one": False},
    "shift": {"prob": 0.0, "range": [0.0, 0.0], "per_channel": False},
    "contrast": {"prob": 0.0, "range": [1.0, 1.0], "per_channel": False, "split_at_one": False},
    "low_resolution": {"prob": 0.0, "range": [0.5, 1.0], "channel_prob": 1.0},
    "inverted_gamma": {"prob": 0.0, "range": [1.0, 1.0], "per_channel": False, "split_at_one": False},
    "gamma": {"prob": 0.0, "range": [1.0, 1.0], "per_channel": False, "split_at_one": False},
}


LARGER_PATCH = ("workers read a patch large enough that the rotated and scaled patch stays inside it (nnU-Net's "
                "initial patch size), instead of padding with zeros what rotation and scaling pull in")


def preset(changes, larger_patch):
    """``OFF`` with ``{augmentation: {field: value}}`` on top."""
    return {"larger_patch": larger_patch, **{name: {**fields, **changes.get(name, {})} for name, fields in OFF.items()}}


PRESETS = {
    # The MONAI augmentation of planned configs with long schedules (unet3d.plan.sections.augmentations; the CPU
    # recipe's until 2026-12): RandAffined (prob 0.2, rotate_range 0.26, scale_range 0.1), RandFlipd (prob 0.5, all
    # axes at once), RandScaleIntensityd (factors 0.1, prob 0.5), RandShiftIntensityd (offsets 0.1, prob 0.5),
    # RandGaussianNoised (std 0.05, prob 0.1).
    "default": preset({
        "rotation": {"prob": 0.2, "range": [-0.26, 0.26]},
        "scaling": {"range": [0.9, 1.1], "per_axis": True, "with_rotation": True},
        "flip": {"prob": 0.5, "per_axis": False},
        "brightness": {"prob": 0.5, "range": [0.9, 1.1]},
        "shift": {"prob": 0.5, "range": [-0.1, 0.1]},
        "noise": {"prob": 0.1, "range": [0.0, 0.05]},
    }, larger_patch=False),
    # nnU-Net v2's nnUNetTrainer.get_training_transforms (3D): rotation +-30 degrees and isotropic scaling
    # 0.7-1.4 with p 0.2 each, no elastic deformation, noise p 0.1, blur p 0.2 (half the channels), brightness and
    # contrast 0.75-1.25 p 0.15, low resolution 0.5-1 p 0.25 (half the channels), gamma 0.7-1.5 inverted p 0.1
    # and plain p 0.3, mirroring of each axis p 0.5. batchgenerators draws noise_variance=(0, 0.1) and uses the
    # draw as the noise's standard deviation; so does this range.
    "nnunet": preset({
        "rotation": {"prob": 0.2, "range": [-math.pi / 6, math.pi / 6]},
        "scaling": {"prob": 0.2, "range": [0.7, 1.4]},
        "flip": {"prob": 0.5, "per_axis": True},
        "noise": {"prob": 0.1, "range": [0.0, 0.1]},
        "blur": {"prob": 0.2, "range": [0.5, 1.0], "channel_prob": 0.5},
        "brightness": {"prob": 0.15, "range": [0.75, 1.25], "per_channel": True, "split_at_one": True},
        "contrast": {"prob": 0.15, "range": [0.75, 1.25], "per_channel": True, "split_at_one": True},
        "low_resolution": {"prob": 0.25, "range": [0.5, 1.0], "channel_prob": 0.5},
        "inverted_gamma": {"prob": 0.1, "range": [0.7, 1.5], "per_channel": True, "split_at_one": True},
        "gamma": {"prob": 0.3, "range": [0.7, 1.5], "per_channel": True, "split_at_one": True},
    }, larger_patch=True),
}


def parse_batch_augmentation(value, where):
    """The whole recipe ``{"preset": name, <augmentation>: {<field>: value}}`` of a config's value (a preset's name
    or an object of changes); errors name ``where`` and the key."""
    if isinstance(value, str):
        value = {"preset": value}
    if "preset" not in value:
        raise UserError(f"config key '{where}.preset' is missing (expected one of {', '.join(PRESETS)})")
    name = value["preset"]
    if name not in PRESETS:
        raise UserError(f"config key '{where}' names the preset {name!r}; expected one of {', '.join(PRESETS)}")
    recipe = {key: dict(fields) if isinstance(fields, dict) else fields for key, fields in PRESETS[name].items()}
    for augmentation, changes in value.items():
        if augmentation == "preset":
            continue
        if augmentation == "larger_patch":
            recipe[augmentation] = checked(changes, False, f"{where}.{augmentation}")
            continue
        if augmentation not in FIELDS:
            unknown_key(f"{where}.{augmentation}", augmentation, ["preset", "larger_patch", *FIELDS], False)
        if not isinstance(changes, dict):
            raise UserError(f"config key '{where}.{augmentation}' must be an object of "
                            + ", ".join(FIELDS[augmentation]))
        for field, given in changes.items():
            if field not in FIELDS[augmentation]:
                unknown_key(f"{where}.{augmentation}.{field}", field, list(FIELDS[augmentation]), False)
            recipe[augmentation][field] = checked(given, recipe[augmentation][field], f"{where}.{augmentation}.{field}")
    return {"preset": name, **recipe}


def checked(value, like, where):
    """``value`` if it has the kind of the preset's ``like`` (probability, [low, high], flag or count)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(like, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(like, list):
        ok = isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value[0] <= value[1]
        expected = "a range [low, high] of two numbers"
    elif isinstance(like, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool) and value >= 2, "an integer of at least 2"
    else:
        ok, expected = number and 0 <= value <= 1, "a probability from 0 to 1"
    if not ok:
        raise UserError(f"config key '{where}' must be {expected}, got {value!r}")
    return [float(v) for v in value] if isinstance(like, list) else value


def describe():
    """The fields of every augmentation, for ``docs/configuration.md``: one line each."""
    lines = [f"- `larger_patch` (true or false): {LARGER_PATCH}"]
    for augmentation, fields in FIELDS.items():
        values = ", ".join(f"`{field}` ({meaning})" for field, meaning in fields.items())
        lines.append(f"- `{augmentation}`: {values}")
    return lines
