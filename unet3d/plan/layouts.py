"""Read a dataset folder into cases, channel names and labels, whatever its layout.

Four layouts are recognised, in this order:

- nnU-Net v2 raw: ``dataset.json`` with ``channel_names``, ``labels`` and ``file_ending``;
  ``imagesTr/<case>_0000<file_ending>`` ... one file per channel, ``labelsTr/<case><file_ending>``
  and optionally ``imagesTs/``. Labels are ``{"name": value}``; a region is ``{"name": [values]}``
  (with ``regions_class_order``).
- Medical Segmentation Decathlon: ``dataset.json`` with ``training`` (and ``test``) lists of
  4D images, ``modality`` and ``labels`` (``{"value": "name"}``); read by the config loader.
- BraTS 2020/2021/2023: one folder per case (``unet3d.data.brats``).
- A folder of pairs: ``images/`` and ``labels/`` with the same file names (and optionally ``imagesTs/``).

Images may be NIfTI, NRRD or MetaImage (``unet3d.data.formats``; the last two need the
``formats`` extra).
"""

import dataclasses
import json
import re
from pathlib import Path

from unet3d.config.labels import LabelScheme, dataset_json_scheme
from unet3d.config.load import expand_decathlon_datalist
from unet3d.data.brats import MODALITIES as BRATS_MODALITIES, brats_cases, case_images
from unet3d.errors import UserError, listing
from unet3d.image_suffixes import SUFFIXES, image_stem

# The image files a dataset may hold: NIfTI, NRRD and MetaImage (the last two read through ITK).
ENDINGS = tuple(SUFFIXES)


@dataclasses.dataclass
class DatasetLayout:
    """What a dataset folder holds.

    Args:
        kind: "nnunet", "decathlon", "brats" or "pairs".
        root: the folder.
        channel_names: a name per input channel (e.g. "CT", "T2", "flair").
        cases: labelled cases ``{"id", "image": [paths], "label": path}``.
        test_cases: unlabelled cases ``{"id", "image": [paths]}``.
        scheme: the ``LabelScheme`` dataset.json describes, or None where the label maps decide.
    """

    kind: str
    root: Path
    channel_names: list
    cases: list
    test_cases: list = dataclasses.field(default_factory=list)
    scheme: LabelScheme = None

    @property
    def four_dimensional(self):
        """Whether each case is one file holding every channel (the Decathlon's 4D images)."""
        return self.kind == "decathlon"


def read_layout(folder):
    """The ``DatasetLayout`` of ``folder``, or a UserError naming what was expected."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--input_dir {folder}: not a folder")
    description = folder / "dataset.json"
    if description.is_file():
        meta = _read_json(description)
        if "training" in meta and "file_ending" not in meta:
            return _decathlon(folder, description, meta)
        return _nnunet(folder, description, meta)
    if any(case_images(case_dir) for case_dir in folder.iterdir() if case_dir.is_dir()):
        return _brats(folder)
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return _pairs(folder)
    raise UserError(f"{folder}: no dataset found (expected dataset.json (nnU-Net or Decathlon), BraTS case folders "
                    "<id>/<id>_flair.nii.gz ..., or images/ and labels/ folders of image files)")


def _read_json(path):
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path}: cannot read as JSON ({error})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object")
    return meta


def _required(meta, key, path, expected):
    if key not in meta:
        raise UserError(f"{path}: key '{key}' is missing (expected {expected})")
    return meta[key]


def _channel_list(names, path, key):
    """``{"0": "CT", "1": "ADC"}`` -> ``["CT", "ADC"]``, checked to number the channels from 0."""
    if not isinstance(names, dict) or not names:
        raise UserError(f"{path}: key '{key}' must be an object {{\"0\": \"CT\", ...}} naming each channel")
    try:
        indices = sorted(int(index) for index in names)
    except ValueError:
        raise UserError(f"{path}: key '{key}' must be numbered \"0\", \"1\", ...; got {listing(list(names))}") from None
    if indices != list(range(len(indices))):
        raise UserError(f"{path}: key '{key}' must number the channels 0 to {len(indices) - 1}, got {indices}")
    return [str(names[str(index)]) for index in indices]


def _nnunet(folder, description, meta):
    channels = _channel_list(meta.get("channel_names", meta.get("modality")), description,
                             "channel_names" if "channel_names" in meta or "modality" not in meta else "modality")
    ending = _required(meta, "file_ending", description, 'the files\' ending, e.g. ".nii.gz"')
    if ending not in ENDINGS:
        raise UserError(f"{description}: file_ending {ending!r} is not supported (expected one of "
                        f"{', '.join(ENDINGS)})")
    scheme = dataset_json_scheme(_required(meta, "labels", description, '{"background": 0, "<name>": 1, ...}'),
                                 meta.get("regions_class_order"), description)
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    for needed in (images_dir, labels_dir):
        if not needed.is_dir():
            raise UserError(f"{needed}: folder missing (an nnU-Net dataset has imagesTr/ and labelsTr/)")
    cases = []
    for case in _channel_cases(images_dir, ending, len(channels)):
        label = labels_dir / f"{case['id']}{ending}"
        if not label.is_file():
            raise UserError(f"{label}: label file missing for case '{case['id']}' of {images_dir}")
        cases.append({**case, "label": str(label)})
    expected = meta.get("numTraining")
    if isinstance(expected, int) and expected != len(cases):
        raise UserError(f"{description}: numTraining is {expected} but {images_dir} holds {len(cases)} cases")
    test_dir = folder / "imagesTs"
    tests = _channel_cases(test_dir, ending, len(channels), required=False) if test_dir.is_dir() else []
    return DatasetLayout("nnunet", folder, channels, cases, tests, scheme)


def _channel_cases(images_dir, ending, n_channels, required=True):
    """Cases of an nnU-Net images folder: ``<case>_<channel:04d><ending>``, every channel present."""
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    found = {}
    for path in sorted(images_dir.iterdir()):
        match = pattern.match(path.name)
        if match:
            found.setdefault(match.group(1), {})[int(match.group(2))] = str(path)
    if not found and required:
        raise UserError(f"{images_dir}: no images named <case>_0000{ending}")
    cases = []
    for case_id, channels in found.items():
        if sorted(channels) != list(range(n_channels)):
            missing = [f"{case_id}_{index:04d}{ending}" for index in range(n_channels) if index not in channels]
            extra = [f"{case_id}_{index:04d}{ending}" for index in channels if index >= n_channels]
            raise UserError(f"{images_dir}: case '{case_id}' does not have one file per channel of dataset.json "
                            f"({n_channels}): {'missing ' + listing(missing) if missing else 'unexpected ' + listing(extra)}")
        cases.append({"id": case_id, "image": [channels[index] for index in range(n_channels)]})
    return cases


def _decathlon(folder, description, meta):
    channels = _channel_list(_required(meta, "modality", description, '{"0": "<channel name>", ...}'),
                             description, "modality")
    scheme = dataset_json_scheme(_required(meta, "labels", description, '{"0": "background", "1": "<name>", ...}'),
                                 None, description)
    config = expand_decathlon_datalist({"decathlon_datalist": str(description)}, folder)

    def with_ids(entries):
        return [{"id": image_stem(entry["image"]), "image": [entry["image"]],
                 **({"label": entry["label"]} if "label" in entry else {})} for entry in entries]

    cases = with_ids(config["training_filenames"])
    if not cases:
        raise UserError(f"{description}: key 'training' lists no cases")
    for case in cases:
        for path in (*case["image"], case.get("label")):
            if path is None or not Path(path).is_file():
                raise UserError(f"{description}: case '{case['id']}': file {path} not found")
    return DatasetLayout("decathlon", folder, channels, cases, with_ids(config.get("test_filenames", [])), scheme)


def _brats(folder):
    cases = [{"id": case.get("id") or Path(case["image"][0]).parent.name, **case} for case in brats_cases(folder)]
    # The regions' values (2020/2021: 2, 1, 4; 2023: 2, 1, 3) are read from the label maps.
    return DatasetLayout("brats", folder, list(BRATS_MODALITIES), cases)


def _pairs(folder):
    images = {image_stem(p): p for p in sorted((folder / "images").iterdir()) if image_stem(p)}
    labels = {image_stem(p): p for p in sorted((folder / "labels").iterdir()) if image_stem(p)}
    if not images:
        raise UserError(f"{folder / 'images'}: no images ({', '.join(ENDINGS)})")
    missing = sorted(set(images) - set(labels))
    if missing:
        raise UserError(f"{folder / 'labels'}: no label file for {listing(missing)} (expected the image's file name)")
    cases = [{"id": name, "image": [str(path)], "label": str(labels[name])} for name, path in images.items()]
    test_dir = folder / "imagesTs"
    tests = ([{"id": image_stem(p), "image": [str(p)]} for p in sorted(test_dir.iterdir()) if image_stem(p)]
             if test_dir.is_dir() else [])
    return DatasetLayout("pairs", folder, ["image"], cases, tests)
