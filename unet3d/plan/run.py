"""``unet3d-plan`` as a function: read the folder, fingerprint it, plan, check the config and write the three files."""

import json
import logging
import os
from pathlib import Path

from unet3d.atomic import write_text
from unet3d.config.experiment import experiment_from_dict
from unet3d.config.load import write_json
from unet3d.device import choose_device
from unet3d.errors import UserError
from unet3d.plan.fingerprint import dataset_fingerprint
from unet3d.plan.layouts import read_layout
from unet3d.plan.planner import device_memory, plan_experiment
from unet3d.plan.report import plan_markdown

log = logging.getLogger("unet3d")


def output_paths(output_filename):
    """``(config, plan.md, fingerprint.json)`` paths of a plan written as ``output_filename``."""
    config = Path(output_filename)
    return config, config.with_name(f"{config.stem}_plan.md"), config.with_name(f"{config.stem}_fingerprint.json")


def plan_dataset(input_dir, output_filename, device="auto", gpu_memory_gb=None, budget_minutes=60.0, workers=None,
                 overwrite=False):
    """Plan the dataset in ``input_dir`` and write the config ``output_filename`` with its plan and fingerprint;
    returns the config."""
    if not budget_minutes > 0:
        raise UserError(f"--budget_minutes must be above 0, got {budget_minutes:g}")
    if gpu_memory_gb is not None and not gpu_memory_gb > 0:
        raise UserError(f"--gpu_memory_gb must be above 0, got {gpu_memory_gb:g}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be 1 or more, got {workers}")
    paths = output_paths(output_filename)
    if Path(output_filename).suffix != ".json":
        raise UserError(f"--output_filename {output_filename}: expected a .json file name")
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists; give --overwrite to replace it, or another --output_filename")
    device = choose_device(device)
    layout = read_layout(input_dir)
    log.info("%s: %d labelled and %d test cases (%s layout); reading them", input_dir, len(layout.cases),
             len(layout.test_cases), layout.kind)
    fingerprint = dataset_fingerprint(layout, workers)
    log.info("fingerprint read in %.1f s; timing training steps on %s", fingerprint["read_seconds"]["total"], device)
    plan = plan_experiment(layout, fingerprint, device, budget_minutes, device_memory(device, gpu_memory_gb))
    base = paths[0].resolve().parent
    config = dict(plan.config)
    config["training_filenames"] = [_relative(case, base) for case in layout.cases]
    if layout.test_cases:
        config["test_filenames"] = [_relative(case, base) for case in layout.test_cases]
    experiment_from_dict(json.loads(json.dumps(config)), paths[0])  # the config must load as unet3d-train reads it
    base.mkdir(parents=True, exist_ok=True)
    write_json(fingerprint, paths[2])
    write_text(paths[1], plan_markdown(plan, fingerprint, paths[0].name, device, budget_minutes))
    write_json(config, paths[0])
    for topic, choice, _ in plan.reasons:
        print(f"{topic}: {choice}")
    print(f"wrote {paths[0]} (estimated run: {plan.estimate_minutes:.1f} of {budget_minutes:.4g} minutes), "
          f"{paths[1].name}, {paths[2].name}")
    return config


def _relative(case, base):
    entry = {"id": case["id"], "image": [os.path.relpath(path, base) for path in case["image"]]}
    if case.get("label"):
        entry["label"] = os.path.relpath(case["label"], base)
    return entry
