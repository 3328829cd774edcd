"""The package's shape: imports point down the pipeline, modules stay short, label keys are read in config/ only."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unet3d"
# Each layer may import the layers listed before it (and itself), never one after it.
LAYERS = [
    {"errors", "atomic", "image_suffixes"},
    {"config", "device", "distributed"},
    {"data", "models", "losses"},
    {"train", "predict", "evaluate", "export"},
    {"runs", "plan"},  # the planner times the training step as the loop takes it (precision, deep supervision)
    {"scripts", "api"},
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}
MAX_LINES = 400


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def stage(path):
    """``unet3d/train/loop.py`` -> ``train``; ``unet3d/atomic.py`` -> ``atomic``."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_stages(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "unet3d" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_every_stage_has_a_layer():
    assert {stage(p) for p in modules()} - {"__init__"} <= set(LAYER)


def test_imports_point_down_the_pipeline():
    wrong = []
    for path in modules():
        own = stage(path)
        for line, other in imported_stages(path):
            if other == own or own == "__init__":
                continue
            # Stages of one layer are independent: train, predict, evaluate and export never import each other.
            if LAYER[other] >= LAYER[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports unet3d.{other}")
    assert not wrong, "\n".join(wrong)


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
