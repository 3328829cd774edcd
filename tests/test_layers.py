"""The package's shape: imports point down the pipeline, modules stay short, label keys are read in config/ only."""

import ast
import re
from pathlib import Path

from unet3d.config.resolve import NAMESPACES

PACKAGE = Path(__file__).resolve().parents[1] / "unet3d"
# Each layer may import the layers listed before it (and itself), never one after it.
LAYERS = [
    {"errors", "atomic", "image_suffixes"},
    {"config", "device", "distributed"},
    {"data", "models", "losses"},
    {"train", "predict", "evaluate", "export"},
    {"report"},  # a run's page reads the training logs, the evaluations and the label maps
    {"runs", "plan"},  # the planner times the training step as the loop takes it (precision, deep supervision)
    {"scripts", "api"},
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}
MAX_LINES = 400
# A string naming a unet3d module (``import_module("unet3d.models")``, a table of module names) is an import too.
MODULE_NAME = re.compile(r"^unet3d\.([a-z_]+)")
# The one table that may name packages above its layer: the resolver's namespaces (``config/resolve.py``'s
# NAMESPACES), where the classes a config names are looked up. One resolver in config/ turns every
# ``{"name": ...}`` into a class and answers a wrong name with its closest matches (``--check`` and every
# stage that builds a part), so it must reach unet3d's own models, losses, datasets and transforms; it
# does so by name, importing a package only when a config names a class of its kind, and each package
# stays free to import config. Registering classes from the packages instead would need them imported
# (MONAI's transforms take seconds) before any name is checked; moving the table above them would leave
# config unable to check a name. Any other string that names a module above its file's layer fails.
RESOLVER_TABLE = ("config/resolve.py", "NAMESPACES")
COMPONENT_NAMESPACES = {
    "unet3d.models": "the models a config's `model` names",
    "unet3d.losses": "the losses a config's `loss` names",
    "unet3d.data": "the datasets and transforms a config's `dataset` and its transform lists name",
}


COMPUTED = "<computed>"


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def stage(path):
    """``unet3d/train/loop.py`` -> ``train``; ``unet3d/atomic.py`` -> ``atomic``."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_stages(path):
    """``(line, stage, how)`` for each import of a unet3d stage and each string naming one (docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node.value) for node in ast.walk(tree)  # docstrings: prose, not a name the code uses
               if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    skipped |= {id(node) for node in resolver_table(path, tree) if node.value in COMPONENT_NAMESPACES}
    for node in ast.walk(tree):
        names, how = [], "imports"
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            match = MODULE_NAME.match(node.value)
            # Other strings that start so (an MLflow tag "unet3d.work_dir") name no stage.
            names, how = ([match.group(0)] if match and match.group(1) in LAYER else []), "names"
        elif (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
              and node.values[0].value == "unet3d."):
            # f"unet3d.{name}": a stage chosen at run time, which no rule can check.
            yield node.lineno, COMPUTED, "names a stage computed at run time:"
        for name in names:
            parts = name.split(".")
            if parts[0] == "unet3d" and len(parts) > 1:
                yield node.lineno, parts[1], how


def resolver_table(path, tree):
    """The string constants of the resolver's namespace table, when ``path`` holds it."""
    if path.relative_to(PACKAGE).as_posix() != RESOLVER_TABLE[0]:
        return []
    return [constant for node in tree.body if isinstance(node, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == RESOLVER_TABLE[1] for target in node.targets)
            for constant in ast.walk(node.value) if isinstance(constant, ast.Constant)]


def test_every_stage_has_a_layer():
    assert {stage(p) for p in modules()} - {"__init__"} <= set(LAYER)


def test_imports_point_down_the_pipeline():
    wrong = []
    for path in modules():
        own = stage(path)
        for line, other, how in imported_stages(path):
            if other == COMPUTED:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {how} unet3d.{{...}}")
                continue
            if other == own or own == "__init__":
                continue
            # Stages of one layer are independent: train, predict, evaluate and export never import each other.
            if LAYER[other] >= LAYER[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {how} unet3d.{other}")
    assert not wrong, "\n".join(wrong)


def test_the_resolver_table_names_exactly_the_component_packages_allowed():
    named = {module for modules in NAMESPACES.values() for module in modules if MODULE_NAME.match(module)}
    assert named == set(COMPONENT_NAMESPACES)


def test_no_module_is_over_400_lines():
    long = [f"{p.relative_to(PACKAGE.parent)}: {n}" for p in modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, long


LABEL_KEYS = {"labels", "label_mode", "label_names", "setup_label_hierarchy"}


def test_label_keys_are_read_in_config_only():
    """No code outside config/ reads a label key from a mapping (``x["labels"]``, ``x.get("label_mode")``)."""
    readers = []
    for path in modules():
        if stage(path) == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("get", "pop", "setdefault") and node.args
                  and isinstance(node.args[0], ast.Constant)):
                key = node.args[0].value
            if key in LABEL_KEYS:
                readers.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not readers, readers


# What is written once: the training step (backward and optimizer step) in train/step.py, and the building of a
# run's optimizer and loss in train/parts.py. The loop, the dry run, the planner and the benchmarks call them, so a
# timing or a check runs the step training runs, not a copy of it.
def called(node):
    """``(attribute or name called, what it is called on, its positional arguments)`` of a call, as text."""
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr, ast.unparse(func.value), " ".join(map(ast.unparse, node.args))
    return getattr(func, "id", ""), "", " ".join(map(ast.unparse, node.args))


WRITTEN_ONCE = {  # what: (the one file, whether a call is it)
    "backward": ("unet3d/train/step.py", lambda name, on, args: name == "backward"),
    "optimizer step": ("unet3d/train/step.py", lambda name, on, args: name == "step" and "optimizer" in on + args),
    "optimizer build": ("unet3d/train/parts.py", lambda name, on, args: name == "build" and "optimizer" in on),
    "deep-supervised loss": ("unet3d/train/parts.py", lambda name, on, args: name == "DeepSupervisedLoss"),
}


def code_files():
    """The package's and the benchmarks' Python files (tests build parts of their own on purpose)."""
    return [*modules(), *sorted((PACKAGE.parent / "benchmarks").glob("*.py"))]


def test_the_training_step_and_the_parts_of_a_run_are_written_once():
    places = {what: set() for what in WRITTEN_ONCE}
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for what, (_, matches) in WRITTEN_ONCE.items():
                    if matches(*called(node)):
                        places[what].add(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    wrong = {what: sorted(found) for what, found in places.items()
             if {place.split(":")[0] for place in found} != {WRITTEN_ONCE[what][0]}}
    assert not wrong, wrong
