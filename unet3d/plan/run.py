"""``unet3d-plan`` as a function: read the folder, fingerprint it, plan, check the config and write the three files."""

import json
import logging
import os
from pathlib import Path

import torch

from unet3d.atomic import write_text
from unet3d.config.experiment import check_new_output, experiment_from_dict, require_writable
from unet3d.config.load import write_json
from unet3d.device import choose_device
from unet3d.errors import UserError
from unet3d.plan.fingerprint import dataset_fingerprint
from unet3d.plan.layouts import read_layout
from unet3d.plan.planner import Target, device_memory, plan_experiment
from unet3d.plan.report import plan_markdown
from unet3d.plan.speed import training_threads

log = logging.getLogger("unet3d")


def output_paths(output_filename):
    """``(config, plan.md, fingerprint.json, plan.json)`` paths of a plan written as ``output_filename``."""
    config = Path(output_filename)
    return (config, config.with_name(f"{config.stem}_plan.md"), config.with_name(f"{config.stem}_fingerprint.json"),
            config.with_name(f"{config.stem}_plan.json"))


def plan_target(device, gpu_memory_gb, budget_minutes):
    """The ``Target`` of ``--device``: a CUDA device that this machine lacks is planned for by the speed table."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        try:
            chosen, present = torch.device(device), False
        except RuntimeError:
            raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:<index>") from None
    else:
        chosen, present = choose_device(device), True
    threads = training_threads() if chosen.type == "cpu" else 1
    return Target(chosen, device_memory(chosen, gpu_memory_gb, present), budget_minutes * 60, threads, present)


def plan_dataset(input_dir, output_filename, device="auto", gpu_memory_gb=None, budget_minutes=60.0, workers=None,
                 overwrite=False, step_seconds=None):
    """Plan the dataset in ``input_dir`` and write the config ``output_filename`` with its plan and fingerprint;
    returns the config. ``step_seconds`` replaces the measured seconds of a training step (a plan's replay)."""
    if not budget_minutes > 0:
        raise UserError(f"--budget_minutes must be above 0, got {budget_minutes:g}")
    if gpu_memory_gb is not None and not gpu_memory_gb > 0:
        raise UserError(f"--gpu_memory_gb must be above 0, got {gpu_memory_gb:g}")
    if step_seconds is not None and not step_seconds > 0:
        raise UserError(f"--step_seconds must be above 0, got {step_seconds:g}")
    if workers is not None and workers < 1:
        raise UserError(f"--nthreads must be 1 or more, got {workers}")
    paths = output_paths(output_filename)
    if Path(output_filename).suffix != ".json":
        raise UserError(f"--output_filename {output_filename}: expected a .json file name")
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists; give --overwrite to replace it, or another --output_filename")
    require_writable(paths[0], "--output_filename")
    target = plan_target(device, gpu_memory_gb, budget_minutes)
    layout = read_layout(input_dir)
    inputs = [path for case in layout.cases + layout.test_cases for path in [*case["image"], case.get("label")] if path]
    for path in paths:  # with --overwrite too: no plan replaces the data it read
        check_new_output(path, [*inputs, Path(input_dir) / "dataset.json"], "--output_filename")
    log.info("%s: %d labelled and %d test cases (%s layout); reading them", input_dir, len(layout.cases),
             len(layout.test_cases), layout.kind)
    fingerprint = dataset_fingerprint(layout, workers)
    log.info("fingerprint read in %.1f s; planning for %s", fingerprint["read_seconds"]["total"], target.device)
    plan = plan_experiment(layout, fingerprint, target, step_seconds)
    base = paths[0].resolve().parent
    config = dict(plan.config)
    config["training_filenames"] = [_relative(case, base) for case in layout.cases]
    if layout.test_cases:
        config["test_filenames"] = [_relative(case, base) for case in layout.test_cases]
    experiment_from_dict(json.loads(json.dumps(config)), paths[0])  # the config must load as unet3d-train reads it
    base.mkdir(parents=True, exist_ok=True)
    write_json(fingerprint, paths[2])
    write_text(paths[1], plan_markdown(plan, fingerprint, paths[0].name))
    write_json({"config": paths[0].name, "estimate_minutes": round(plan.estimate_minutes, 3), "cost": plan.cost,
                "reasons": [{"topic": topic, "choice": choice, "why": why} for topic, choice, why in plan.reasons]},
               paths[3])
    write_json(config, paths[0])
    for topic, choice, _ in plan.reasons:
        print(f"{topic}: {choice}")
    print(f"wrote {paths[0]} (estimated run: {plan.estimate_minutes:.1f} of {budget_minutes:.4g} minutes), "
          f"{paths[1].name}, {paths[3].name}, {paths[2].name}")
    return config


def _relative(case, base):
    entry = {"id": case["id"], "image": [os.path.relpath(path, base) for path in case["image"]]}
    if case.get("label"):
        entry["label"] = os.path.relpath(case["label"], base)
    return entry
