"""``docs/configuration.md``, written from the schema's declarations (``python -m unet3d.config``)."""

import json

from unet3d.config.batch_augmentation import PRESETS, describe
from unet3d.config.keys import REQUIRED
from unet3d.config.schema import ENTRY_KEYS, GROUPS, OTHER_KEYS, SECTIONS


def markdown():
    """``docs/configuration.md``: every section and key with its type, default and description."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from unet3d/config/settings.py and schema.py by `python -m unet3d.config > "
        "docs/configuration.md`; do not edit. -->",
        "",
        "A config is one JSON object. Unknown keys are errors that name the closest known key",
        "(`--allow_unknown_keys` turns them into warnings, for plug-ins that read keys of their own).",
        "`unet3d-train --config_filename C --check` validates a config and its data and prints",
        "the resolved settings, defaults filled in, without training.",
        "",
        "Sections `{\"name\": ..., **kwargs}` are built by the resolver: the other keys are the",
        "class's keyword arguments, checked against its signature (see",
        "[config_guide.md](config_guide.md#names-the-resolver) for where names are looked up, and",
        "`--plugin` for classes of your own).",
        "",
    ]
    for name, spec in SECTIONS.items():
        lines += [f"## `{name}`", "", spec.description[0].upper() + spec.description[1:] + ".", ""]
        if spec.kind:
            lines += ["`name` (string, required): the class." + (
                f" With `{spec.keys_for}`, its keys are:" if spec.keys_for else
                (" unet3d also reads:" if spec.keys else "")), ""]
        if spec.aliases:
            lines += ["Also accepted: " + ", ".join(f"`{a}` for `{c}`" for a, c in spec.aliases.items()) + ".", ""]
        if spec.keys:
            lines += _key_table(spec.keys)
        if name == "dataset":
            lines += _batch_augmentation()
    lines += ["## `<group>_filenames`", "", "Lists of cases, one object per case:", ""]
    lines += [f"- `{group}`: {text}" for group, text in GROUPS.items()]
    lines += [""] + _key_table(ENTRY_KEYS)
    lines += ["Other keys of a case are case metadata (e.g. `\"subject\"` for `cross_validation.group_by`);",
              "a key close to `image`, `label` or `id` (`lable`, `images`) is taken for a misspelling.", ""]
    lines += ["## Other keys", ""] + _key_table(OTHER_KEYS)
    return "\n".join(lines)


def _batch_augmentation():
    lines = ["### `dataset.batch_augmentation`", "",
             "A preset's name, or an object `{\"preset\": ..., <augmentation>: {<field>: value}}` that changes some "
             "fields of the preset's augmentations (`prob` 0 turns one off). Presets: "
             + ", ".join(f"`{json.dumps(name)}`" for name in PRESETS) + ". The augmentations, in the order they run "
             "(after the spatial ones, which share one resampling), and their fields (ranges are `[low, high]`, drawn "
             "uniformly):", ""]
    return lines + describe() + [""]


def _key_table(keys):
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, key in keys.items():
        default = "required" if key.default is REQUIRED else json.dumps(key.default)
        rows.append(f"| `{name}` | {key.expected()} | {default} | {key.description} |")
    return rows + [""]
