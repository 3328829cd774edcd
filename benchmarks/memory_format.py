"""The CPU recipe's training step with the model's weights in the default layout and channels-last, side by side.

    .venv/bin/python benchmarks/memory_format.py [--filters 8,16,32,64 16,32,64,128] [--rounds 3] [--device cpu]

For each ``--filters`` list (the recipe's DynUNet with those widths, its 48³ patches, batch 2
and bfloat16 autocast on a CPU, float16 on CUDA), measures the step as the planner does
(``speed.measure_step``: one thread's CPU seconds on a CPU, the fastest of several steps
after a warm-up; wall-clock on CUDA) with ``training.channels_last`` off and on, the two in
turn for ``--rounds`` rounds so that the machine's load hits both alike. Prints each round,
then the median of each layout and their ratio (channels-last / default; under 1: faster).
Not a test.
"""

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

from unet3d.config.experiment import experiment_from_dict
from unet3d.plan.speed import measure_step

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "brats2020" / "cpu_recipe_config.json"


def step_seconds(filters, channels_last, device):
    """The recipe's step with ``filters`` in one layout, in seconds."""
    config = copy.deepcopy(json.loads(RECIPE.read_text()))
    config["model"]["filters"] = filters
    config["training"].update(channels_last=channels_last, amp="bf16" if device.type == "cpu" else "fp16")
    return measure_step(experiment_from_dict(config), device)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--filters", nargs="+", default=["8,16,32,64", "16,32,64,128"],
                        help="DynUNet widths, one comma-separated list per network")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    for widths in args.filters:
        filters = [int(width) for width in widths.split(",")]
        seconds = {False: [], True: []}
        for round_ in range(args.rounds):
            for layout in (False, True):
                seconds[layout].append(step_seconds(filters, layout, device))
            print(f"filters {filters} round {round_ + 1}: default {seconds[False][-1]:.3f} s, "
                  f"channels-last {seconds[True][-1]:.3f} s", flush=True)
        default, last = statistics.median(seconds[False]), statistics.median(seconds[True])
        print(f"filters {filters}: median step default {default:.3f} s, channels-last {last:.3f} s, "
              f"ratio {last / default:.2f}x")


if __name__ == "__main__":
    main()
