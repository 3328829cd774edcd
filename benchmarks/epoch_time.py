"""The CPU recipe's epoch time in this checkout against another revision, measured side by side in one run.

Both checkouts train fold 1 of their own ``examples/brats2020/cpu_recipe_config.json`` (the demo's
first fold: 8 synthetic 2 mm BraTS-like cases to train on, 8 to validate every epoch) for
``--epochs`` epochs, alternating ``--rounds`` times, so that load on the machine hits both
alike. It prints each run's epochs and the median ``epoch_time`` (validation included,
compilation excluded) and ``data_time`` of each checkout, leaving out every run's first
epoch (warm-up), and their ratio; and whether the two checkouts learned the same (every
column of the training logs but the timings equal).

The other revision is exported with ``git archive`` into a temporary folder and run with
this environment's packages (``PYTHONPATH``); its training log is read as this one's.

Not a test. Run from the repository root, for example:

    .venv/bin/python benchmarks/epoch_time.py --against 79a689e --epochs 4 --rounds 2
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from unet3d.data.brats import brats_cases
from unet3d.data.synthetic import brats_shape, write_synthetic_brats

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "brats2020" / "cpu_recipe_config.json"
TIMINGS = ("epoch_time", "data_time", "compile_time")


def export(revision, folder):
    """``folder`` holding the tree of ``revision`` (``git archive``)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def recipe_config(source, data_dir, epochs, output):
    """The recipe of the checkout ``source`` with the synthetic training cases and ``epochs`` epochs, written to
    ``output``."""
    config = json.loads((source / RECIPE.relative_to(REPO)).read_text())
    config = {key: value for key, value in config.items() if not key.endswith("_filenames")}
    config["training_filenames"] = brats_cases(data_dir)
    config["training"]["n_epochs"] = epochs
    output.write_text(json.dumps(config, indent=1))
    return output


def train_fold(source, config, work_dir):
    """Train fold 1 of ``config`` with the unet3d of ``source``; returns the log rows."""
    env = {**os.environ, "PYTHONPATH": str(source), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "unet3d.scripts.train", "--config_filename", str(config), "--output_dir",
               str(work_dir), "--fold", "1", "--device", "cpu"]
    subprocess.run(command, check=True, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(work_dir / config.stem / "fold1" / "training_log.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def main():
    """Alternate the two checkouts and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data_dir", type=Path, help="synthetic cases, written once (default: a temporary folder)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="unet3d-epochs-"))
    data_dir = args.data_dir or scratch / "data"
    if not data_dir.is_dir():
        write_synthetic_brats(data_dir, 16, brats_shape(2.0), spacing=(2.0,) * 3)
    checkouts = {"this checkout": REPO, args.against: export(args.against, scratch / "other")}
    times = {name: {"epoch_time": [], "data_time": []} for name in checkouts}
    learned = {name: set() for name in checkouts}
    for round_ in range(args.rounds):
        for index, (name, source) in enumerate(checkouts.items()):
            work = scratch / f"round{round_ + 1}-checkout{index + 1}"
            rows = train_fold(source, recipe_config(source, data_dir, args.epochs, scratch / "recipe.json"), work)
            for column, values in times[name].items():
                values.extend(float(row[column]) for row in rows[1:])
            learned[name].add(json.dumps([{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]))
            print(f"round {round_ + 1}, {name}: epoch_time " + " ".join(row["epoch_time"] for row in rows), flush=True)
    medians = {name: {column: statistics.median(values) for column, values in columns.items()}
               for name, columns in times.items()}
    for name, median in medians.items():
        print(f"{name}: median epoch_time {median['epoch_time']:.2f} s, data_time {median['data_time']:.2f} s "
              f"({len(times[name]['epoch_time'])} epochs)")
    this, other = (medians[name]["epoch_time"] for name in checkouts)
    print(f"epoch time, this checkout / {args.against}: {this / other:.3f}x")
    same = len(set.union(*learned.values())) == 1
    print("training logs apart from the timings: " + ("the same in every run" if same else "they differ"))


if __name__ == "__main__":
    main()
