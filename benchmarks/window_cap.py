"""CPU time of one volume predicted with a window that covers it, against the largest window that fits in it.

A window longer than the volume is shortened to a multiple of what the network's strides divide
(``unet3d.models.inferer.capped_window``). The multiple that covers the volume is one window along that axis,
padded by fewer voxels than the divisor; the largest multiple that fits in the volume needs two overlapping
windows along it. Both are timed side by side, alternating, on the CPU recipe's network (random weights,
bfloat16 autocast where the CPU has it natively, as the recipe's validation and prediction run) and a random
volume the size of a cropped realistic brain at 2 mm. Prints the median CPU seconds of each and their ratio.

Not a test; run it by hand: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/window_cap.py``.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from unet3d.config.experiment import experiment_from_dict
from unet3d.config.labels import LabelScheme
from unet3d.models.inferer import Inferer, capped_window, model_divisor
from unet3d.train.precision import Precision

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "brats2020" / "cpu_recipe_config.json"


def main():
    """Print the timings and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[72, 92, 78], help="the volume, in voxels")
    parser.add_argument("--window", type=int, nargs=3, default=[96, 96, 96])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = json.loads(RECIPE.read_text())
    config.pop("training_filenames"), config.pop("test_filenames")
    experiment = experiment_from_dict(config, cases_required=False)
    torch.manual_seed(0)
    model = experiment.model.build().eval()
    divisor = model_divisor(experiment.model, args.window)
    covers = capped_window(args.window, args.shape, divisor)
    fits = tuple(min(size, length // step * step) for size, length, step in zip(args.window, args.shape, divisor))
    autocast = Precision(config["training"]["amp"], torch.device("cpu")).autocast
    image = torch.randn(1, 4, *args.shape)
    inferers = {window: Inferer(LabelScheme.brats(), window, overlap=0.5, autocast=autocast, divisor=divisor)
                for window in (fits, covers)}
    print(f"volume {args.shape}, window {args.window}, divisor {list(divisor)}, "
          f"{torch.get_num_threads()} thread(s)")
    seconds = {window: [] for window in inferers}
    for _ in range(args.repeats):
        for window, inferer in inferers.items():
            start = time.process_time()
            inferer.probabilities([model], image)
            seconds[window].append(time.process_time() - start)
    median = {window: statistics.median(times) for window, times in seconds.items()}
    for name, window in (("largest window that fits", fits), ("window that covers", covers)):
        print(f"{name:26s} {'x'.join(map(str, window)):>10s}: {median[window]:6.2f} CPU-s (median of "
              f"{args.repeats})")
    print(f"ratio fits / covers: {median[fits] / median[covers]:.2f}")


if __name__ == "__main__":
    main()
