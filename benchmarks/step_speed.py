"""Measure the speed table's CPU line (``unet3d/plan/speed.py: SPEEDS["cpu"]``) on this machine.

    .venv/bin/python benchmarks/step_speed.py [--device cpu|cuda] [--repeats 3]

Builds planned configs (BraTS regions, 4 channels, the planner's DynUNet) at several patch
sizes, times each one's training step as the planner measures it (``speed.measure_step``: one
thread's CPU seconds on a CPU, wall-clock on CUDA) and one inference window, and fits
``seconds = fixed + multiply-accumulates / rate`` for both. Prints each point beside the
table's prediction, then the fitted line to put in the table. On a CPU, one thread's CPU
seconds do not depend on what else runs on the machine's other cores.
"""

import argparse
import time

import numpy as np
import torch

from unet3d.config.experiment import experiment_from_dict
from unet3d.config.labels import LabelScheme
from unet3d.plan import speed, topology
from unet3d.plan.planner import Target
from unet3d.plan.sections import Sections

PATCHES = ([32, 32, 32], [48, 48, 48], [64, 64, 48], [64, 64, 64], [96, 80, 64])


def planned_config(patch, device, batch=2):
    """The planner's config of a BraTS-like dataset at 2 mm with ``patch``."""
    sections = Sections(LabelScheme.brats(), 4, {"normalization": "NormalizeIntensityd",
                                                "normalization_kwargs": {"channel_wise": True}}, False)
    target = Target(device, 2 ** 34, 3600)
    found = topology.fitted(patch, [2.0, 2.0, 2.0])[:3]
    return sections.config(target, [2.0, 2.0, 2.0], found, batch, (1, 10, 1))


def window_seconds(experiment, device, repeats, sw_batch_size=4):
    """One thread's CPU seconds (wall-clock on CUDA) of one inference window, the fastest of ``repeats``."""
    model = experiment.model.build().to(device).eval()
    windows = torch.randn((sw_batch_size, experiment.in_channels, *experiment.dataset.settings.patch_size),
                          device=device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    seconds = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16):
        for _ in range(repeats + 1):
            start = clock()
            model(windows)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(clock() - start)
    return min(seconds[1:]) / sw_batch_size


def fit(work, seconds):
    """``(fixed seconds, work per second)`` of ``seconds = fixed + work / rate``."""
    slope, intercept = np.polyfit(np.array(work, float), np.array(seconds, float), 1)
    return max(0.0, float(intercept)), float(1 / slope)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    table = speed.SPEEDS[device.type]
    if device.type == "cpu":
        torch.set_num_threads(1)
    rows = []
    print("| patch | levels | training MACs | step s | table | window s | table |\n|---|---|---|---|---|---|---|")
    for patch in PATCHES:
        config = planned_config(patch, device)
        experiment = experiment_from_dict(config, cases_required=False)
        model, batch = config["model"], config["training"]["batch_size"]
        step, _ = speed.measure_step(experiment, device, args.repeats)
        step /= speed.DATA_OVERHEAD
        window = window_seconds(experiment, device, args.repeats)
        macs = speed.forward_macs(model, config["dataset"]["patch_size"])
        rows.append((speed.TRAINING_PASSES * batch * macs, step, macs, window))
        print(f"| {config['dataset']['patch_size']} | {len(model['strides'])} | {rows[-1][0]:.3g} | {step:.3f} | "
              f"{table.step_seconds(model, patch, batch) / speed.DATA_OVERHEAD:.3f} | {window:.4f} | "
              f"{table.window_seconds(model, patch):.4f} |")
    step_fit, window_fit = fit([r[0] for r in rows], [r[1] for r in rows]), fit([r[2] for r in rows], [r[3] for r in rows])
    print(f"\nfitted: step {step_fit[0]:.3g} s + MACs / {step_fit[1]:.3g}; window {window_fit[0]:.3g} s + MACs / "
          f"{window_fit[1]:.3g}")


if __name__ == "__main__":
    main()
