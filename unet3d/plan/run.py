"""``unet3d-plan`` as a function: read the folder, fingerprint it, plan each configuration, check each config and
write it with its plan, and the fingerprint."""

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
from unet3d.plan.configurations import configurations_of, plan_configurations
from unet3d.plan.planner import Target, device_memory, spacing_of
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


def planned_filenames(output_filename, configurations):
    """``{configuration: config path}`` a plan may write: ``output_filename`` for one configuration, and for
    ``all`` ``<name>_3d.json`` and ``<name>_2d.json`` beside it."""
    config = Path(output_filename)
    if configurations != "all":
        return {configurations: config}
    return {name: config.with_name(f"{config.stem}_{name}{config.suffix}") for name in ("3d", "2d")}


def plan_dataset(input_dir, output_filename, device="auto", gpu_memory_gb=None, budget_minutes=60.0, workers=None,
                 overwrite=False, step_seconds=None, configurations="3d"):
    """Plan the dataset in ``input_dir`` in ``configurations`` ("3d", "2d" or "all": both where the slices are
    thick) and write each config with its plan, and the fingerprint; returns ``{configuration: config}``.
    ``step_seconds`` replaces the measured seconds of a training step (a plan's replay)."""
    if not budget_minutes > 0:
        raise UserError(f"--budget_minutes must be above 0, got {budget_minutes:g}")
    if gpu_memory_gb is not None and not gpu_memory_gb > 0:
        raise UserError(f"--gpu_memory_gb must be above 0, got {gpu_memory_gb:g}")
    if step_seconds is not None and not step_seconds > 0:
        raise UserError(f"--step_seconds must be above 0, got {step_seconds:g}")
    if step_seconds is not None and configurations == "all":
        raise UserError("--step_seconds replays one configuration's plan: give --configurations 3d or 2d with it")
    if workers is not None and workers < 1:
        raise UserError(f"--nthreads must be 1 or more, got {workers}")
    if Path(output_filename).suffix != ".json":
        raise UserError(f"--output_filename {output_filename}: expected a .json file name")
    configurations_of(configurations, [1, 1, 1])  # an unknown name stops before the data is read
    filenames = planned_filenames(output_filename, configurations)
    fingerprint_path = output_paths(output_filename)[2]
    written = [path for config in filenames.values() for index, path in enumerate(output_paths(config)) if index != 2]
    existing = [str(path) for path in (*written, fingerprint_path) if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists; give --overwrite to replace it, or another --output_filename")
    require_writable(Path(output_filename), "--output_filename")
    target = plan_target(device, gpu_memory_gb, budget_minutes)
    layout = read_layout(input_dir)
    inputs = [path for case in layout.cases + layout.test_cases for path in [*case["image"], case.get("label")] if path]
    for path in (*written, fingerprint_path):  # with --overwrite too: no plan replaces the data it read
        check_new_output(path, [*inputs, Path(input_dir) / "dataset.json"], "--output_filename")
    log.info("%s: %d labelled and %d test cases (%s layout); reading them", input_dir, len(layout.cases),
             len(layout.test_cases), layout.kind)
    fingerprint = dataset_fingerprint(layout, workers)
    log.info("fingerprint read in %.1f s; planning for %s", fingerprint["read_seconds"]["total"], target.device)
    names, why = configurations_of(configurations, spacing_of(fingerprint)[0])
    plans = plan_configurations(names, layout, fingerprint, target, step_seconds)
    fingerprint_path.resolve().parent.mkdir(parents=True, exist_ok=True)
    write_json(fingerprint, fingerprint_path)
    configs = {}
    for name, plan in plans.items():
        topic, choice, reason = why
        plan.reasons.insert(0, (topic, f"{choice} (this config: {name})" if len(plans) > 1 else choice, reason))
        configs[name] = write_plan(plan, layout, fingerprint, filenames[name], budget_minutes)
    return configs


def write_plan(plan, layout, fingerprint, config_path, budget_minutes):
    """Write a ``Plan``'s config (with the layout's cases, checked as unet3d-train reads it), plan.md and plan.json,
    and print its choices; returns the config."""
    config_path, plan_path, _, plan_json = output_paths(config_path)
    base = config_path.resolve().parent
    config = dict(plan.config)
    config["training_filenames"] = [_relative(case, base) for case in layout.cases]
    if layout.test_cases:
        config["test_filenames"] = [_relative(case, base) for case in layout.test_cases]
    experiment_from_dict(json.loads(json.dumps(config)), config_path)  # the config must load as unet3d-train reads it
    write_text(plan_path, plan_markdown(plan, fingerprint, config_path.name))
    write_json({"config": config_path.name, "estimate_minutes": round(plan.estimate_minutes, 3), "cost": plan.cost,
                "reasons": [{"topic": topic, "choice": choice, "why": why} for topic, choice, why in plan.reasons]},
               plan_json)
    write_json(config, config_path)
    for topic, choice, _ in plan.reasons:
        print(f"{topic}: {choice}")
    print(f"wrote {config_path} (estimated run: {plan.estimate_minutes:.1f} of {budget_minutes:.4g} minutes), "
          f"{plan_path.name}, {plan_json.name}")
    return config


def _relative(case, base):
    entry = {"id": case["id"], "image": [os.path.relpath(path, base) for path in case["image"]]}
    if case.get("label"):
        entry["label"] = os.path.relpath(case["label"], base)
    return entry
