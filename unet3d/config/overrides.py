"""``--set key.path=value``: change one config value from the command line, before the config is checked."""

import copy
import json

from unet3d.errors import UserError


def parse_assignment(assignment):
    """``"training.n_epochs=40"`` -> ``(["training", "n_epochs"], 40)``.

    The value is JSON (``40``, ``false``, ``[1, 2]``, ``{"name": "DiceLoss"}``, ``null``);
    anything else is taken as a string (``model.name=UNet``).
    """
    key, sep, text = assignment.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise UserError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. training.n_epochs=40")
    try:
        value = json.loads(text)
    except ValueError:
        if text.lstrip()[:1] in ("{", "["):
            raise UserError(f"--set {assignment!r}: the value is not valid JSON") from None
        value = text
    return path, value


def apply_overrides(config, assignments):
    """A copy of ``config`` with each ``--set`` assignment applied in order; ``null`` removes the key.

    Missing objects along the path are created; a path through a value that is not an
    object (or a list index) is an error naming it. Whether the result is a valid config
    is checked afterwards, like any config.
    """
    config = copy.deepcopy(config)
    for assignment in assignments or ():
        path, value = parse_assignment(assignment)
        target = config
        for depth, name in enumerate(path[:-1]):
            target = _step(target, name, assignment, ".".join(path[: depth + 1]))
        last = path[-1]
        if isinstance(target, list):
            target[_index(target, last, assignment, ".".join(path))] = value
        elif value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return config


def _step(target, name, assignment, where):
    if isinstance(target, list):
        return target[_index(target, name, assignment, where)]
    if not isinstance(target, dict):
        raise UserError(f"--set {assignment!r}: '{where}' is not an object")
    if target.get(name) is None:  # absent, or null (the default): an object to fill
        target[name] = {}
    child = target[name]
    if not isinstance(child, (dict, list)):
        raise UserError(f"--set {assignment!r}: '{where}' holds {json.dumps(child)}, not an object")
    return child


def _index(target, name, assignment, where):
    try:
        index = int(name)
    except ValueError:
        index = None
    if index is None or not -len(target) <= index < len(target):
        raise UserError(f"--set {assignment!r}: '{where}' is not an index of a list of {len(target)}")
    return index
