"""Plan the same folders again and again, quiet and beside a CPU-bound process, and replay a plan.

    .venv/bin/python benchmarks/plan_repeat.py [--repeats 2] [--budget_minutes 10]

Writes two nnU-Net raw datasets (seeded): a BraTS-like one (4 channels, 1 mm, 96 x 96 x 64
voxels, region labels) and the anisotropic phantom (0.9 x 0.9 x 2.5 mm, 96 x 96 x 24). Plans
each one ``--repeats`` times alternately on a quiet machine and beside a process that keeps
one core busy, then once more with ``--step_seconds`` from the first plan's ``plan.json``.
Prints, per plan, the spacing, patch, levels, batch, folds and steps per fold, the step's
measured seconds and the plan's wall time, then whether the structures agree exactly and how
far the lengths spread.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unet3d.data.synthetic import write_synthetic_nnunet

BRATS_LABELS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": 3}


def datasets(root):
    """``{name: folder}`` of the two datasets, written under ``root``."""
    brats = write_synthetic_nnunet(root / "Dataset001_BraTSLike", 12, shape=(96, 96, 64), spacing=(1.0, 1.0, 1.0),
                                   n_test=0, seed=1)
    description = json.loads((brats / "dataset.json").read_text())
    (brats / "dataset.json").write_text(json.dumps({**description, "labels": BRATS_LABELS,
                                                    "regions_class_order": [1, 2, 3]}))
    phantom = write_synthetic_nnunet(root / "Dataset002_Anisotropic", 10, shape=(96, 96, 24), n_test=0, seed=2)
    return {"BraTS-like": brats, "anisotropic": phantom}


def plan(folder, output, budget_minutes, *extra, busy=False):
    """Run unet3d-plan (beside a CPU-bound process with ``busy``); returns ``(config, plan.json, seconds)``."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "unet3d.scripts.plan", "--input_dir", str(folder), "--output_filename",
                        str(output), "--device", "cpu", "--budget_minutes", str(budget_minutes), *extra],
                       check=True, capture_output=True)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    seconds = time.perf_counter() - start
    return (json.loads(Path(output).read_text()), json.loads(Path(output).with_name(f"{output.stem}_plan.json")
                                                             .read_text()), seconds)


def row(name, how, config, plan_json, seconds):
    """A table row of one plan."""
    dataset, training, model = config["dataset"], config["training"], config["model"]
    steps = training["n_epochs"] * training["samples_per_epoch"] // training["batch_size"]
    return (f"| {name} | {how} | {' x '.join(f'{s:g}' for s in dataset['spacing'])} | "
            f"{' x '.join(map(str, dataset['patch_size']))} | {len(model['strides'])} | {training['batch_size']} | "
            f"{config['cross_validation']['n_folds']} | {steps} | {plan_json['cost']['step_seconds']:.4f} | "
            f"{seconds:.0f} |")


def structure(config):
    """Everything the data and the target fix."""
    return {key: config[key] for key in ("model", "dataset", "cross_validation", "loss", "prediction")} | {
        "batch": config["training"]["batch_size"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="plans per dataset, alternately quiet and busy")
    parser.add_argument("--budget_minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print("| dataset | machine | spacing (mm) | patch | levels | batch | folds | steps per fold | step s | "
              "plan s |\n|---|---|---|---|---|---|---|---|---|---|")
        verdicts = []
        for name, folder in datasets(root).items():
            plans = []
            for index in range(args.repeats):
                busy = index % 2 == 1
                output = root / f"{folder.name}_{index}.json"
                plans.append(plan(folder, output, args.budget_minutes, busy=busy))
                print(row(name, "busy" if busy else "quiet", *plans[-1]), flush=True)
            step = plans[0][1]["cost"]["step_seconds"]
            replay = plan(folder, root / f"{folder.name}_replay.json", args.budget_minutes, "--step_seconds", repr(step))
            print(row(name, "--step_seconds", *replay), flush=True)
            lengths = [p[0]["training"]["n_epochs"] * p[0]["training"]["samples_per_epoch"] for p in plans]
            same = all(structure(p[0]) == structure(plans[0][0]) for p in plans)
            replayed = {k: v for k, v in replay[0].items() if not k.endswith("_filenames")} == {
                k: v for k, v in plans[0][0].items() if not k.endswith("_filenames")}
            verdicts.append(f"{name}: structures {'identical' if same else 'DIFFER'}; lengths spread "
                            f"{max(lengths) / min(lengths) - 1:.1%}; replay with --step_seconds "
                            f"{'equals' if replayed else 'DIFFERS from'} the first plan")
        print("\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()
