"""One config key: its JSON types, default, bounds and description, and the checks made from them.

Settings classes (``unet3d.config.settings``) declare each field with ``setting(...)``;
validation, defaults, ``--check``'s resolved view and ``docs/configuration.md`` all read
the ``Key`` kept in the field's metadata.
"""

import dataclasses
import difflib
import json
import logging

from unet3d.errors import UserError

log = logging.getLogger("unet3d")

REQUIRED = object()

TYPE_CHECKS = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
TYPE_NOUNS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
              "list": "a list", "object": "an object", "null": "null"}


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: JSON types, default (``REQUIRED`` when none), allowed values and a description.

    ``triple`` (``int`` or ``float``) makes the key three positive numbers, one number
    standing for all three; its value is then kept as a tuple of three. ``entries`` (a function
    ``(list, where) -> tuple``) makes a list's items typed objects.
    """

    types: tuple
    default: object = REQUIRED
    description: str = ""
    choices: tuple = ()
    minimum: float = None
    maximum: float = None
    below: float = None  # exclusive upper bound
    above: float = None  # exclusive lower bound
    items: str = None  # JSON type of a list's items
    triple: type = None
    entries: object = None

    def expected(self):
        """What the key must hold, in words: ``a positive integer``, ``a number in [0, 1)``, ..."""
        if self.choices:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        if self.triple is not None:
            noun = "integers (one integer" if self.triple is int else "numbers (one number"
            return f"three positive {noun} is repeated)" + (" or null" if "null" in self.types else "")
        words = []
        for kind in self.types:
            if kind == "integer" and self.minimum is not None and self.maximum is not None:
                words.append(f"an integer from {self.minimum} to {self.maximum}")
            elif kind == "integer" and self.minimum == 1:
                words.append("a positive integer")
            elif kind == "integer" and self.minimum is not None:
                words.append(f"an integer of at least {self.minimum}")
            elif kind == "number" and self.above == 0 and self.below is not None:
                words.append(f"a number in (0, {self.below})")
            elif kind == "number" and self.above == 0:
                words.append("a positive number")
            elif kind == "number" and self.minimum is not None and self.below is not None:
                words.append(f"a number in [{self.minimum}, {self.below})")
            elif kind == "number" and self.minimum is not None and self.maximum is not None:
                words.append(f"a number from {self.minimum} to {self.maximum}")
            elif kind == "list" and self.items:
                words.append(f"a list of {TYPE_NOUNS[self.items].split()[-1]}s")
            else:
                words.append(TYPE_NOUNS[kind])
        return " or ".join(words)

    def accepts(self, value):
        """Whether ``value`` has one of the types and lies in the allowed range or choices."""
        if value is None and self.default is not REQUIRED:
            return True  # null means the default
        if self.triple is not None:
            return _as_triple(value, self.triple) is not None
        if not any(TYPE_CHECKS[kind](value) for kind in self.types):
            return False
        if self.choices and not any(value == c and type(value) is type(c) for c in self.choices):
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return False
            if self.below is not None and value >= self.below:
                return False
            if self.above is not None and value <= self.above:
                return False
            if self.maximum is not None and value > self.maximum:
                return False
        if isinstance(value, list) and self.items:
            return all(TYPE_CHECKS[self.items](item) for item in value)
        return True

    def parse(self, value, where):
        """``value`` checked, null replaced by the default and triples expanded; a UserError names ``where``."""
        if not self.accepts(value):
            raise UserError(f"config key '{where}' must be {self.expected()}, got {json.dumps(value)}")
        if value is None:
            return self.default
        if self.triple is not None:
            return _as_triple(value, self.triple)
        if self.entries is not None:
            return self.entries(value, where)
        return value


def _as_triple(value, kind):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    valid = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and (kind is float or isinstance(v, int))
        for v in value)
    return tuple(kind(v) for v in value) if valid else None


def setting(types, default=REQUIRED, description="", **bounds):
    """A dataclass field of a settings class, with its ``Key`` in the field's metadata."""
    key = Key(tuple(types), default, description, **bounds)
    if default is REQUIRED:
        return dataclasses.field(metadata={"key": key})
    return dataclasses.field(default=default, metadata={"key": key})


def keys_of(settings_class):
    """``{name: Key}`` of a settings class, in declaration order."""
    return {f.name: f.metadata["key"] for f in dataclasses.fields(settings_class) if "key" in f.metadata}


def unknown_key(where, name, known, allow_unknown_keys):
    """Raise (or with ``allow_unknown_keys`` log) that ``name`` at ``where`` is not a known key."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    message = f"config key '{where}' is not known{hint}; expected one of {', '.join(known)}"
    if not allow_unknown_keys:
        raise UserError(message)
    log.warning("%s (ignored: --allow_unknown_keys)", message)
