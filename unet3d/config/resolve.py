"""Turn ``{"name": X, **kwargs}`` from a config into an object.

Each kind of component is looked up in a fixed list of namespaces, and only classes of
the kind's base type are accepted, so a config can never reach an arbitrary importable
function (``os.system``, ``builtins.eval``, ...). A new model, loss or transform is
added by defining it in the matching unet3d module and naming it in a config, or in a
module of one's own loaded with ``--plugin`` (``load_plugins``).

Nor can a config reach a class that reads or writes files, downloads, or loads code
(``io_role``): one whose constructor takes a file, folder, URL, hub, download or
pretrained-weights parameter, or that comes from an I/O module (MONAI's ``LoadImage``,
``SaveImage``). unet3d reads and writes every file itself, where it checks them.
"""

import copy
import dataclasses
import difflib
import importlib
import inspect

from unet3d.errors import UserError

# unet3d's component packages are named, not imported: they sit above config, and are imported only when a
# config names a class of their kind. tests/test_layers.py allows these names and no other upward one.
NAMESPACES = {
    "model": ("unet3d.models", "monai.networks.nets"),
    "loss": ("unet3d.losses", "monai.losses", "torch.nn"),
    "optimizer": ("torch.optim",),
    "scheduler": ("torch.optim.lr_scheduler",),
    "dataset": ("unet3d.data",),
    "transform": ("unet3d.data", "monai.transforms"),
}
# Words of a constructor parameter's name (split at "_") that make it name files, a download or code to load.
IO_WORDS = frozenset({"file", "filename", "filenames", "path", "paths", "dir", "directory", "folder", "url", "uri",
                      "hub", "download", "repo", "pretrained", "reader", "writer", "saver", "loader"})
# Words of a module's dotted name that make its classes loaders or savers (monai.transforms.io.array).
IO_MODULE_WORDS = frozenset({"io", "hub"})
# I/O parameters unet3d fills in itself for a kind (a plug-in dataset's cache folder): a config cannot set them.
SUPPLIED = {"dataset": frozenset({"cache_dir"})}
# Modules given with --plugin, searched first for the kinds of classes they define.
PLUGINS = {kind: () for kind in NAMESPACES}


def namespaces(kind):
    """The modules searched for ``kind``, in order: plug-ins, then unet3d's and its libraries'."""
    return PLUGINS[kind] + NAMESPACES[kind]


def load_plugins(module_names):
    """Import each module of ``--plugin`` and search it for every kind of class it defines.

    A plug-in is trusted code the user chose to run, unlike a config, which can only name classes.
    """
    for module_name in module_names or ():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise UserError(f"--plugin {module_name}: cannot import it ({error}); is its folder on PYTHONPATH?") from None
        kinds = [kind for kind in NAMESPACES if any(
            _accepts(getattr(module, name), kind) and getattr(module, name).__module__ == module_name
            for name in dir(module) if not name.startswith("_"))]
        if not kinds:
            raise UserError(f"--plugin {module_name}: defines no model, loss, optimizer, scheduler, dataset or transform class")
        for kind in kinds:
            if module_name not in PLUGINS[kind]:
                PLUGINS[kind] = (module_name, *PLUGINS[kind])


def _base_types(kind):
    # Imported lazily: MONAI's transforms take seconds to import.
    import torch

    if kind in ("model", "loss"):
        return (torch.nn.Module,)
    if kind == "optimizer":
        return (torch.optim.Optimizer,)
    if kind == "scheduler":
        return (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if kind == "dataset":
        return (torch.utils.data.Dataset,)
    if kind == "transform":
        from monai.transforms import Transform

        return (Transform,)
    raise ValueError(f"unknown component kind {kind!r}")


def _accepts(obj, kind):
    return inspect.isclass(obj) and issubclass(obj, _base_types(kind))


def io_role(cls, kind):
    """Why a config may not name ``cls`` as a ``kind``: the parameter or module through which it
    reads or writes files, downloads, or loads code; None when it does none of that."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        parameters = {}
    for name, parameter in parameters.items():
        # A number (a rate such as dropout_path_rate) names no file; a flag (pretrained) may start a download.
        numeric = isinstance(parameter.default, (int, float)) and not isinstance(parameter.default, bool)
        if name not in SUPPLIED.get(kind, ()) and IO_WORDS & set(name.lower().split("_")) and not numeric:
            return f"its parameter '{name}' names files, a download or code to load"
    for base in cls.__mro__:
        if IO_MODULE_WORDS & set(base.__module__.split(".")):
            return f"it loads or saves data ({base.__module__}.{base.__name__})"
    return None


def _candidates(kind):
    """``{name: class}`` of everything a config may name for ``kind``."""
    found = {}
    for module_name in namespaces(kind):
        module = importlib.import_module(module_name)
        for name in dir(module):
            obj = getattr(module, name)
            if not name.startswith("_") and name not in found and _accepts(obj, kind) and not io_role(obj, kind):
                found[name] = obj
    return found


def list_names(kind):
    """All names a config may use for ``kind``, sorted."""
    return sorted(_candidates(kind))


def lookup(kind, name, key):
    """The class called ``name`` for ``kind``; ``key`` is the config key of the name, for errors."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise UserError(
            f"config key '{key}': {name!r} is not a valid {kind} name "
            f"(expected a class name from {', '.join(namespaces(kind))})"
        )
    for module_name in namespaces(kind):
        obj = getattr(importlib.import_module(module_name), name, None)
        if obj is not None and _accepts(obj, kind):
            reason = io_role(obj, kind)
            if reason:
                raise UserError(f"config key '{key}': {name} cannot be named in a config: {reason}, and a config "
                                "reaches no files but the data it lists")
            return obj
    # Suggest each class once, by its own name rather than an alias (MONAI's Dynunet, DynUnet).
    by_lower = {}
    for candidate, cls in sorted(_candidates(kind).items(), key=lambda item: item[0] != item[1].__name__):
        by_lower.setdefault(candidate.lower(), candidate)
    close = []
    for match in difflib.get_close_matches(name.lower(), list(by_lower), n=10, cutoff=0.6):
        if by_lower[match] not in close and len(close) < 3:
            close.append(by_lower[match])
    hint = f"; closest matches: {', '.join(close)}" if close else ""
    raise UserError(
        f"config key '{key}': unknown {kind} {name!r}; searched {', '.join(namespaces(kind))}{hint}"
    )


def resolve(kind, spec, key, *args, name_key=None, **fixed):
    """Build the object ``spec`` names.

    Args:
        kind: one of ``NAMESPACES``' keys.
        spec: ``{"name": ..., **kwargs}`` from the config; it is never modified.
        key: the config key ``spec`` came from, named in errors.
        name_key: the config key of the name, when not ``<key>.name``.
        args, fixed: arguments supplied by unet3d rather than the config
            (the parameters of an optimizer, the optimizer of a scheduler, ...).
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"config key '{key}' must be an object with a 'name'")
    cls = lookup(kind, spec["name"], name_key or f"{key}.name")
    kwargs = copy.deepcopy({k: v for k, v in spec.items() if k != "name"})
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise UserError(f"config key '{key}': {', '.join(clash)} is set by unet3d and cannot be given in the config")
    check_keywords(cls, kwargs, key, n_positional=len(args), fixed=fixed)
    try:
        return cls(*args, **kwargs, **fixed)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError, NotImplementedError) as error:
        raise UserError(f"config key '{key}': {cls.__name__} could not be built from its settings: {error}") from error


def check_keywords(cls, kwargs, key, n_positional=0, fixed=()):
    """Raise a UserError naming ``key`` when ``kwargs`` do not fit ``cls``'s signature."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = [n for n in named[n_positional:] if n not in fixed]
    for keyword in kwargs:
        if keyword not in named:
            close = difflib.get_close_matches(keyword, accepted, n=1) or [
                name for name in accepted if len(name) > 2 and (keyword.startswith(name) or name.startswith(keyword))]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(
                f"config key '{key}': {cls.__name__} has no parameter '{keyword}'{hint}; "
                f"accepted: {', '.join(accepted)}"
            )
    missing = [
        n for n in accepted
        if params[n].default is params[n].empty and n not in kwargs
    ]
    if missing:
        raise UserError(f"config key '{key}': {cls.__name__} needs {', '.join(repr(m) for m in missing)}")


@dataclasses.dataclass(frozen=True)
class Component:
    """A named section of the config, ``{"name": ..., **options}``, ready to be built.

    Args:
        kind: one of ``NAMESPACES``' keys.
        key: the config key it came from (``model``, ``scheduler.schedulers[0]``), named in errors.
        name: the class name.
        options: the keyword arguments from the config.
    """

    kind: str
    key: str
    name: str
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def spec(self):
        """The config's ``{"name": ..., **options}``."""
        return {"name": self.name, **self.options}

    def lookup(self):
        """The class the name refers to."""
        return lookup(self.kind, self.name, f"{self.key}.name")

    def build(self, *args, **fixed):
        """An instance, with unet3d's own ``args`` and ``fixed`` keyword arguments added to the config's."""
        return resolve(self.kind, self.spec, self.key, *args, **fixed)
