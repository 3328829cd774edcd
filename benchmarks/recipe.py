"""Does a config learn? Train it on synthetic BraTS-like cases for a CPU-time budget, score held-out cases.

For each seed this writes a copy of the config with synthetic training and validation
cases and ``training.seed`` set, runs ``unet3d-train`` in a subprocess and, once the
process has used ``--cpu_minutes`` of CPU time (user + system, all threads), sends it
SIGTERM: the loop stops at the next batch and ``model_best.pth`` (best validation Dice)
is on disk. Then ``unet3d-predict`` labels the held-out cases and ``unet3d-evaluate``
scores them. It prints and writes ``results.csv``: per seed the Dice of WT, TC and ET
over the held-out cases, the epochs trained and the CPU and wall time of training; then
the mean and spread (max - min) over seeds.

CPU time, not wall time, is the budget because the machine may be shared: on two free
cores, 40 CPU-minutes take about 20 wall-clock minutes.

Not a test. Run from the repository root, for example:

    .venv/bin/python benchmarks/recipe.py --config examples/brats2020/cpu_recipe_config.json --seeds 3
    # an ablation: the same without deep supervision
    .venv/bin/python benchmarks/recipe.py --config examples/brats2020/cpu_recipe_config.json --seeds 3 \\
        --set model.deep_supervision=false
    # nnU-Net's augmentation, batched in the training loop, instead of the config's MONAI lists
    .venv/bin/python benchmarks/recipe.py --config examples/brats2020/cpu_recipe_config.json --seeds 3 \
        --set dataset.batch_augmentation='"nnunet"' --set dataset.spatial_augmentations=null \
        --set dataset.intensity_augmentations=null

The synthetic cases cover BraTS's field of view at ``--spacing`` mm (2: 120 x 120 x 78
voxels) and are written once into ``--data_dir``: ``--data simple`` (the default) writes
tumour blobs in a box (``unet3d.data.synthetic``), ``--data realistic`` tumours grown in
the MNI brain template with distractors that are not tumour (``unet3d.data.realistic``,
needs nilearn), on which recipe choices can be told apart.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas

from unet3d.config.overrides import apply_overrides
from unet3d.data.brats import brats_cases
from unet3d.data.realistic import write_realistic_brats
from unet3d.data.synthetic import brats_shape, write_synthetic_brats

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRATCH = Path(tempfile.gettempdir()) / "unet3d_recipe"
REGIONS = ("WT", "TC", "ET")
# Separate data seeds, so training, validation and held-out cases never coincide.
DATA_SEEDS = {"train": 100, "validation": 200, "test": 300}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the config whose settings are trained (file lists are replaced)")
    parser.add_argument("--cpu_minutes", type=float, default=40.0,
                        help="CPU-time budget of each training run (default 40: 20 minutes on two cores)")
    parser.add_argument("--seeds", type=int, default=1, help="runs, with training.seed = first_seed, first_seed + 1, ...")
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained at the same time (each still gets its full CPU-time budget)")
    parser.add_argument("--n_train", type=int, default=20)
    parser.add_argument("--n_validation", type=int, default=2)
    parser.add_argument("--n_test", type=int, default=6)
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size of the synthetic cases in mm")
    parser.add_argument("--data", choices=("simple", "realistic"), default="simple",
                        help="simple: tumour blobs in a box (unet3d.data.synthetic); realistic: tumours grown in "
                             "the MNI brain template, with distractors (unet3d.data.realistic, needs nilearn)")
    parser.add_argument("--data_dir", default=SCRATCH / "data", type=Path,
                        help="where the synthetic cases are kept (default: <temp dir>/unet3d_recipe/data)")
    parser.add_argument("--output_dir", default=SCRATCH / "runs", type=Path,
                        help="runs and results.csv (default: <temp dir>/unet3d_recipe/runs)")
    parser.add_argument("--tta", action="store_true", help="predict the held-out cases with test-time mirroring")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: predict and score the held-out cases again with the models already in "
                             "--output_dir (other held-out cases, --tta, prediction settings changed with --set), "
                             "written next to the first scores")
    parser.add_argument("--tag", default="", help="with --rescore: a suffix for the folders and results of this "
                                                  "rescoring (e.g. _no_cleanup with "
                                                  "--set prediction.min_component_size=null)")
    parser.add_argument("--cross_validation", action="store_true",
                        help="train as unet3d-train runs the config: its folds over the training and validation "
                             "cases together (--cpu_minutes for all of them), post-processing chosen on their "
                             "out-of-fold predictions; the held-out cases are predicted by the folds' ensemble")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a config key, e.g. training.n_epochs=40 or loss='{\"name\": \"DiceLoss\"}'; "
                             "null removes the key")
    return parser.parse_args(argv)


def synthetic_groups(data_dir, counts, spacing, data="simple"):
    """``{group: case folder}`` with ``counts[group]`` synthetic cases each, written if not there yet."""
    shape = brats_shape(spacing)
    folders = {}
    for group, count in counts.items():
        folder = Path(data_dir).resolve() / f"{data}_{group}_{count}_{spacing:g}mm"
        if not (folder / "complete").is_file():
            if data == "realistic":
                write_realistic_brats(folder, count, spacing, seed=DATA_SEEDS[group])
            else:
                write_synthetic_brats(folder, count, shape, seed=DATA_SEEDS[group], spacing=(spacing,) * 3)
            (folder / "complete").touch()
        folders[group] = folder
    return folders


def run_configs(template, folders, seed, overrides, run_dir, cross_validation=False):
    """Write ``train.json`` (training + validation) and ``test.json`` (+ labelled held-out cases); return both paths.

    With ``cross_validation`` the template's folds are kept and split the training and validation cases
    together; without, the template's folds are dropped and one model trains on the training cases.
    """
    config = {k: v for k, v in template.items()
              if not k.endswith("_filenames") and (cross_validation or k != "cross_validation")}
    config = apply_overrides(config, overrides)
    if cross_validation and not config.get("cross_validation"):
        raise SystemExit(f"--cross_validation: {run_dir}: the config has no cross_validation section")
    config.setdefault("training", {})["seed"] = seed
    if cross_validation:
        # The groups' folders number their cases alike: the validation cases get ids of their own.
        validation = [{**case, "id": f"validation_{Path(case['label']).parent.name}"}
                      for case in brats_cases(folders["validation"])]
        config["training_filenames"] = brats_cases(folders["train"]) + validation
    else:
        config["training_filenames"] = brats_cases(folders["train"])
        config["validation_filenames"] = brats_cases(folders["validation"])
    run_dir.mkdir(parents=True, exist_ok=True)
    train = run_dir / "train.json"
    train.write_text(json.dumps(config, indent=2))
    test = run_dir / "test.json"
    test.write_text(json.dumps({**config, "test_filenames": brats_cases(folders["test"])}, indent=2))
    return train, test


def process_cpu_seconds(pid):
    """User + system CPU seconds of a running process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_with_cpu_budget(command, cpu_seconds, cpu_seconds_of=process_cpu_seconds, stop=None, **popen):
    """Run ``command`` until it ends or ``cpu_seconds_of(pid)`` reaches ``cpu_seconds``, then ``stop(process)``
    (default SIGTERM); returns ``(exit code, stopped, cpu seconds, wall seconds)``."""
    start = time.perf_counter()
    process = subprocess.Popen(list(map(str, command)), **popen)
    stop = stop or subprocess.Popen.terminate
    stopped, polled = False, 0.0
    try:
        while True:
            # wait4, not Popen.poll: it also returns this child's own resource usage.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            polled = cpu_seconds_of(process.pid)
            if not stopped and polled >= cpu_seconds:
                stop(process)
                stopped = True
            time.sleep(1)
    except BaseException:  # Ctrl-C: the run stops too
        stop(process)
        raise
    # A stopped process's workers may die unwaited-for, outside its usage: the last poll counted them.
    cpu = max(usage.ru_utime + usage.ru_stime, polled)
    return os.waitstatus_to_exitcode(status), stopped, cpu, time.perf_counter() - start


def train_with_budget(config_filename, cpu_seconds):
    """Run unet3d-train until it ends or has used ``cpu_seconds``; returns ``(stopped, cpu seconds, wall seconds)``."""
    # SIGTERM at the budget: the loop stops at the next batch.
    returncode, stopped, cpu, wall = run_with_cpu_budget(
        [BIN / "unet3d-train", "--config_filename", config_filename, "--device", "cpu", "--restart"], cpu_seconds,
        stdout=subprocess.DEVNULL)
    if returncode not in (0, 128 + signal.SIGTERM):
        raise SystemExit(f"unet3d-train {config_filename} failed with status {returncode}")
    return stopped, cpu, wall


def predict_heldout(test_config, model_filename, output_dir, tta=False):
    """Label the held-out cases of ``test_config`` with ``model_filename`` (a glob averages several models, with
    their run's post-processing) into ``output_dir``; returns the CPU seconds it took."""
    command = [BIN / "unet3d-predict", "--config_filename", test_config, "--model_filename", model_filename,
               "--group", "test", "--output_directory", output_dir, "--device", "cpu", "--overwrite"] + ["--tta"] * tta
    returncode, _, cpu, _ = run_with_cpu_budget(command, float("inf"), stdout=subprocess.DEVNULL)
    if returncode:
        raise SystemExit(f"unet3d-predict {test_config} failed with status {returncode}")
    return cpu


def score_heldout(test_config, prediction_dir):
    """Mean Dice per region over the held-out cases of ``test_config``, of the label maps in ``prediction_dir``."""
    subprocess.run([str(BIN / "unet3d-evaluate"), "--prediction_dir", str(prediction_dir), "--config_filename",
                    str(test_config), "--group", "test", "--no_hausdorff"], check=True, stdout=subprocess.DEVNULL)
    per_case = pandas.read_csv(Path(prediction_dir) / "evaluation.csv")
    return per_case.groupby("region")["dice"].mean().to_dict()


def heldout_dice(test_config, model_filename, output_dir, tta=False):
    """``(mean Dice per region over the held-out cases, predicted with model_filename; CPU seconds of prediction)``."""
    cpu = predict_heldout(test_config, model_filename, output_dir, tta)
    return score_heldout(test_config, output_dir), cpu


def heldout_name(args, n_test):
    """The held-out predictions' folder name: ``heldout`` for the first scores, else what differs from them."""
    return "heldout" if not args.rescore else f"heldout_{n_test}" + "_tta" * args.tta + args.tag


def run_seed(template, folders, seed, args):
    """One training run (none with ``--rescore``) and its held-out scores, as a results row."""
    run_dir = args.output_dir.resolve() / f"seed{seed}"
    work_dir = run_dir / "train"
    if args.rescore:
        _, test_config = run_configs(json.loads((run_dir / "train.json").read_text()), folders, seed, args.set,
                                     run_dir / ("rescore" + args.tag), args.cross_validation)
        stopped, cpu, wall = None, float("nan"), float("nan")
    else:
        train_config, test_config = run_configs(template, folders, seed, args.set, run_dir, args.cross_validation)
        stopped, cpu, wall = train_with_budget(train_config, args.cpu_minutes * 60)
    if args.cross_validation:
        model_dirs = sorted(path for path in work_dir.glob("fold*") if path.is_dir())
        models = str(work_dir / "fold*" / "model_best.pth")  # the folds' ensemble, with postprocessing.json
    else:
        model_dirs = [work_dir]
        models = work_dir / "model_best.pth" if (work_dir / "model_best.pth").is_file() else work_dir / "model.pth"
    epochs = sum(len(pandas.read_csv(folder / "training_log.csv")) for folder in model_dirs)
    dice, predict_cpu = heldout_dice(test_config, models,
                                     run_dir / heldout_name(args, len(brats_cases(folders["test"]))), args.tta)
    row = {"seed": seed, "epochs": epochs, "stopped_by_budget": stopped,
           "train_cpu_min": round(cpu / 60, 2), "train_wall_min": round(wall / 60, 2),
           "predict_cpu_min": round(predict_cpu / 60, 2)}
    row.update({f"dice_{region}": round(dice[region], 4) for region in REGIONS})
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    args = parse_args(argv)
    template = json.loads(Path(args.config).read_text())
    counts = {"train": args.n_train, "validation": args.n_validation, "test": args.n_test}
    folders = synthetic_groups(args.data_dir, counts, args.spacing, args.data)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda seed: run_seed(template, folders, seed, args), seeds))
    table = pandas.DataFrame(rows)
    columns = [f"dice_{region}" for region in REGIONS] + ["train_cpu_min", "train_wall_min", "predict_cpu_min"]
    summary = pandas.DataFrame([{"seed": "mean", **table[columns].mean().round(4).to_dict()},
                                {"seed": "spread", **(table[columns].max() - table[columns].min()).round(4).to_dict()}])
    table = pandas.concat([table, summary], ignore_index=True)
    output = args.output_dir / ("results.csv" if not args.rescore else f"results_{heldout_name(args, args.n_test)}.csv")
    table.to_csv(output, index=False)
    print(f"config {args.config}, {args.cpu_minutes:g} CPU-minutes, overrides {args.set or 'none'}")
    print(table.to_string(index=False))
    print(f"written to {output}")


if __name__ == "__main__":
    main()
