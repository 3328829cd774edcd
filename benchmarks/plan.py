"""Does a planned config match the hand-made recipe? Plan the synthetic BraTS set, train both, score held-out cases.

``unet3d-plan`` plans the training cases that ``benchmarks/recipe.py`` writes (by default 20
BraTS-like cases at 2 mm; ``--data realistic`` the brain phantom) for the CPU, with the
recipe's own budget: the minutes that the planner's cost model gives a whole 2-fold
``unet3d-train`` run of ``examples/brats2020/cpu_recipe_config.json`` on these cases (its
steps timed here and now, its validation every epoch, its predictions), or ``--budget_minutes``.
Both are timed on the same machine at the same moment, so load on a shared machine slows
both alike. Then, for each seed, the planned config and the recipe each
train one model on the same training and validation cases (``benchmarks/recipe.py``'s
``run_seed``: their own epochs, no cross-validation) and predict and score the same held-out
cases. It prints and writes ``results.csv`` (a row per config and seed, as each finishes) and
``summary.csv``: per config the mean held-out Dice per region and training time, and the
planned minus the recipe.

Not a test. Run from the repository root, for example:

    nice -n 10 .venv/bin/python benchmarks/plan.py --seeds 3
    .venv/bin/python benchmarks/plan.py --seeds 3 --data realistic --n_train 10 --n_validation 2 --n_test 12
"""

import argparse
import json
import math
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import REGIONS, SCRATCH, run_seed, synthetic_groups  # noqa: E402
from recipe import parse_args as recipe_options  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECIPE = REPO / "examples" / "brats2020" / "cpu_recipe_config.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget_minutes", type=float,
                        help="the planner's budget for the whole run (default: the recipe's, estimated here)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="training runs at the same time (default 2: a seed's "
                                                            "planned and recipe runs side by side)")
    parser.add_argument("--cpu_minutes", type=float, default=120.0,
                        help="a CPU-time cap on each training run (default 120: runs end with their own epochs)")
    parser.add_argument("--data", choices=("simple", "realistic"), default="simple",
                        help="the synthetic cases of benchmarks/recipe.py: simple blobs or the realistic brain phantom")
    parser.add_argument("--n_train", type=int, default=20)
    parser.add_argument("--n_validation", type=int, default=2)
    parser.add_argument("--n_test", type=int, default=6)
    parser.add_argument("--data_dir", default=SCRATCH / "data", type=Path)
    parser.add_argument("--output_dir", default=Path(SCRATCH.parent / "unet3d_plan"), type=Path)
    return parser.parse_args(argv)


def recipe_minutes(train_dir):
    """The minutes of the recipe's whole 2-fold run on the cases in ``train_dir``, by the planner's cost model:
    its training step measured now, on this machine, as the planner measures a step; its windows and mirroring
    counted as the planner counts them."""
    import torch

    from unet3d.config.experiment import experiment_from_dict
    from unet3d.plan import budget, speed, topology
    from unet3d.plan.fingerprint import dataset_fingerprint
    from unet3d.plan.layouts import read_layout
    from unet3d.models.inferer import capped_window
    from unet3d.plan.planner import median_shape
    from unet3d.plan.prediction import window_cost

    recipe = json.loads(RECIPE.read_text())
    dataset, training = recipe["dataset"], recipe["training"]
    fingerprint = dataset_fingerprint(read_layout(train_dir))
    patch, batch = dataset["patch_size"], training["batch_size"]
    components = {key: value for key, value in recipe.items() if not key.endswith("_filenames")}
    seconds, _ = speed.measure_step(experiment_from_dict(components, cases_required=False), torch.device("cpu"))
    cost = speed.given_cost(seconds, speed.SPEEDS["cpu"], recipe["model"], patch, batch, speed.training_threads(),
                            "measured")
    shape = median_shape(fingerprint["cases"], dataset["spacing"], dataset["crop_foreground"])
    n_folds = recipe["cross_validation"]["n_folds"]
    window = recipe.get("prediction", {}).get("window")
    if window:  # as validation and prediction shorten it to the median volume
        window = capped_window(window, [math.ceil(s) for s in shape], topology.divisor_of(recipe["model"]["strides"]))
    mirrorings = budget.MIRRORINGS if recipe.get("prediction", {}).get("tta") else 1
    costs = budget.run_costs(cost, fingerprint["n_cases"], n_folds, 0, window_cost(shape, patch, window),
                             budget.read_seconds(fingerprint), mirrorings)
    steps = training["samples_per_epoch"] // batch
    return budget.run_seconds(cost, costs, n_folds, training["n_epochs"], steps,
                              training.get("validation_interval", 1)) / 60


def planned_config(train_dir, output_dir, budget_minutes=None):
    """Run unet3d-plan on the training cases with ``budget_minutes`` (default: the recipe's), unless an earlier run
    left ``planned.json`` in ``output_dir``; returns the planned config's path."""
    output = output_dir / "planned.json"
    if not output.is_file():
        budget_minutes = budget_minutes or recipe_minutes(train_dir)
        print(f"planning with --budget_minutes {budget_minutes:.1f}", flush=True)
        subprocess.run([str(BIN / "unet3d-plan"), "--input_dir", str(train_dir), "--output_filename", str(output),
                        "--device", "cpu", "--budget_minutes", str(budget_minutes)], check=True)
    return output


def summary(table):
    """Mean Dice per region and training minutes per config, and the planned config's difference to the recipe."""
    columns = [f"dice_{region}" for region in REGIONS] + ["train_wall_min", "train_cpu_min"]
    means = table.groupby("config")[columns].mean().round(4)
    seeds = set(table[table.config == "planned"].seed) & set(table[table.config == "recipe"].seed)
    paired = table[table.seed.isin(seeds)].set_index(["config", "seed"])[columns]
    if seeds:
        difference = (paired.loc["planned"] - paired.loc["recipe"]).mean().round(4).rename("planned - recipe")
        means = pandas.concat([means, difference.to_frame().T])
    return means


def main(argv=None):
    args = parse_args(argv)
    args.output_dir = args.output_dir.resolve()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    folders = synthetic_groups(args.data_dir, {"train": args.n_train, "validation": args.n_validation,
                                               "test": args.n_test}, 2.0, args.data)
    configs = {"planned": planned_config(folders["train"], args.output_dir, args.budget_minutes), "recipe": RECIPE}
    rows, results, lock = [], args.output_dir / "results.csv", threading.Lock()

    def train(job):
        seed, name = job
        run_args = recipe_options(["--config", str(configs[name]), "--output_dir", str(args.output_dir / name),
                                   "--cpu_minutes", str(args.cpu_minutes)])
        row = run_seed(json.loads(Path(configs[name]).read_text()), folders, seed, run_args)
        with lock:  # each row is kept as soon as it is there
            rows.append({"config": name, **row})
            pandas.DataFrame(rows).to_csv(results, index=False)

    jobs = [(seed, name) for seed in range(args.first_seed, args.first_seed + args.seeds) for name in configs]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(train, jobs))
    table = pandas.DataFrame(rows)
    means = summary(table)
    means.to_csv(args.output_dir / "summary.csv")
    print(f"planned config: {configs['planned']} (its budget and reasons: planned_plan.md beside it)")
    print(table.to_string(index=False))
    print(means.to_string())


if __name__ == "__main__":
    main()
