"""unet3d's CPU recipe beside the real nnU-Net v2, trained on the same cases for the same CPU time, scored alike.

Writes synthetic BraTS-like cases (``--data simple`` or ``realistic``, the generators of
``benchmarks/recipe.py``; default 10 training, 2 validation and 4 held-out cases at 2 mm), then:

- unet3d: ``examples/brats2020/cpu_recipe_config.json`` trained by ``benchmarks/recipe.py``'s functions for
  ``--cpu_minutes`` of CPU time per seed (``--seeds``), its best model predicting the held-out cases;
- nnU-Net v2: the same training and validation cases converted to nnU-Net's raw format with its BraTS
  region labels (as its Dataset137_BraTS2021 conversion: edema 1, necrosis 2, enhancing tumour 3;
  regions whole tumour [1, 2, 3], tumour core [2, 3], enhancing tumour [3], ``regions_class_order``) and a
  ``splits_final.json`` whose fold 0 trains on the training cases and validates on the validation cases,
  so both tools see the same cases; ``nnUNetv2_plan_and_preprocess -c 3d_fullres``; then
  ``nnUNetv2_train <id> 3d_fullres 0 -tr <variant> -device cpu`` for each multiple in
  ``--nnunet_budgets`` of the same CPU time, and ``nnUNetv2_predict`` of the held-out cases, with
  its test-time mirroring and without (``--disable_tta``).

nnU-Net's length is fitted to the budget, its own schedule kept whole: a short calibration run
(two epochs of a few iterations, once per dataset) measures the CPU seconds of start-up, of a
training and a validation iteration and of an epoch's end (checkpoint, plot); a trainer variant then
sets ``num_epochs``, ``num_iterations_per_epoch`` and ``num_val_iterations_per_epoch`` (in nnU-Net's
1:5 proportion to the training ones) so that the run fits the budget, keeping nnU-Net's
proportion of epochs to iterations per epoch (1000 : 250), so that its poly learning-rate schedule
runs over all the epochs and is not cut. The budget is also enforced on CPU time (the trainer's
process and its augmentation workers): a run that reaches it is stopped and predicts with
``checkpoint_best.pth``, a finished one with ``checkpoint_final.pth`` (nnU-Net's default). The
variant skips nnU-Net's final validation of the validation cases (the held-out cases are scored
instead) and writes its checkpoints atomically. nnU-Net finds trainers by class name inside its
package, so the variant's module is written into the nnU-Net environment's
``nnunetv2/training/nnUNetTrainer/variants/`` folder at run time (nnU-Net's documented way to add a
trainer); where that environment cannot import ``timm`` (see below), into
``nnunetv2/training/nnUNetTrainer/`` itself, which nnU-Net searches first.

Both tools use the same cores: unet3d loads data in its main process with ``--threads`` torch
threads (``OMP_NUM_THREADS``); nnU-Net's trainer uses as many torch threads
(``torch.set_num_threads`` in the variant) and ``nnUNet_n_proc_DA`` = ``--nnunet_workers``
augmentation processes (default 1), and its prediction one preprocessing and one export process
(``-npp 1 -nps 1``; ``nnUNetv2_predict -device cpu`` itself takes as many torch threads as the
machine has cores). Both tools' held-out label maps are scored by ``unet3d-evaluate``: Dice of the
whole tumour, tumour core and enhancing tumour, beside the CPU and wall minutes of training and
prediction. The table goes to stdout, ``results.csv`` and ``results.md`` in ``--output_dir``; every
run keeps its results in its own folder there, so a rerun does only what is missing.

nnU-Net runs from its own virtual environment, never a dependency of unet3d. Made once, outside the
repository, with the CPU build of torch:

    python -m venv nnunet-venv && nnunet-venv/bin/pip install torch==2.13.0 nnunetv2==2.8.1

(With the CPU build of torch, PyPI's torchvision 0.28.0, which ``timm`` brings, fails to import:
"operator torchvision::nms does not exist". nnU-Net imports it, through ``timm``, only for its
Primus trainers, whose folder its search for a trainer class opens before ``variants/``; hence the
other folder.)

nnU-Net's plan is made for a GPU: a training iteration of its 3d_fullres plan took 19 CPU-seconds
at 3 mm (patch 48 x 80 x 80, batch 2) and over 50 at 2 mm (112 x 112 x 80), so a budget of ten
CPU-minutes buys it about ten iterations.

Not a test. Run from the repository root (``--nnunet_bin`` is that environment's bin folder, or
``NNUNET_BIN``), for example 10 CPU-minutes for unet3d (3 seeds) and 10, 30 and 100 for nnU-Net,
about 200 CPU-minutes in all with the calibration, preprocessing and predictions:

    .venv/bin/python benchmarks/vs_nnunet.py --nnunet_bin nnunet-venv/bin --seeds 3 --nnunet_budgets 1,3,10
"""

import argparse
import contextlib
import inspect
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel
import numpy as np
import pandas

BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:  # run as a file, or loaded by a test
    sys.path.insert(0, str(BENCHMARKS))

import recipe  # noqa: E402
import vs_nnunet_plan  # noqa: E402
from unet3d.atomic import write_csv, write_text  # noqa: E402
from unet3d.data.brats import brats_cases  # noqa: E402
from unet3d.data.synthetic import NNUNET_CLASSES  # noqa: E402

REPO = BENCHMARKS.parent
RECIPE = REPO / "examples" / "brats2020" / "cpu_recipe_config.json"
CHANNELS = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}  # brats_cases' order: flair, t1, t1ce, t2
CONFIGURATION = "3d_fullres"
VARIANTS = ("training", "nnUNetTrainer", "variants")  # inside the nnunetv2 package
NNUNET_LENGTH = (1000, 250, 50)  # nnUNetTrainer's epochs, training and validation iterations per epoch
TTA = {"tta": [], "no tta": ["--disable_tta"]}
REGIONS = recipe.REGIONS
COLUMNS = ["tool", "run", "budget_cpu_min", "epochs", "iterations_per_epoch", "stopped_by_budget", "model",
           "train_cpu_min", "train_wall_min", "predict_cpu_min", "predict_wall_min",
           *(f"dice_{region}" for region in REGIONS)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet_bin", type=Path, default=os.environ.get("NNUNET_BIN"),
                        help="bin folder of a virtual environment with nnunetv2 (default: $NNUNET_BIN)")
    parser.add_argument("--output_dir", type=Path, default=Path(tempfile.gettempdir()) / "unet3d_vs_nnunet_training",
                        help="data, runs and the results (kept: a rerun does only what is missing)")
    parser.add_argument("--cpu_minutes", type=float, default=10.0, help="unet3d's CPU-time budget per seed")
    parser.add_argument("--seeds", type=int, default=1, help="unet3d runs, training.seed 0, 1, ...")
    parser.add_argument("--nnunet_budgets", default="1,3,10",
                        help="nnU-Net's budgets as multiples of --cpu_minutes, comma-separated (default 1,3,10)")
    parser.add_argument("--data", choices=("simple", "realistic"), default="simple",
                        help="simple: tumour blobs in a box; realistic: tumours grown in the MNI brain template "
                             "(needs nilearn); as benchmarks/recipe.py's --data")
    parser.add_argument("--n_train", type=int, default=10)
    parser.add_argument("--n_validation", type=int, default=2)
    parser.add_argument("--n_test", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size of the cases in mm")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both tools' training")
    parser.add_argument("--nnunet_workers", type=int, default=1, help="nnU-Net's augmentation processes")
    parser.add_argument("--calibration_iterations", type=int, default=3,
                        help="training iterations per epoch of nnU-Net's two-epoch calibration run")
    parser.add_argument("--dataset_id", type=int, default=611, help="nnU-Net's dataset id")
    parser.add_argument("--tta", choices=("both", "tta", "no tta"), default="both",
                        help="nnU-Net's prediction with its mirroring, without, or both (default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a key of unet3d's config, as benchmarks/recipe.py's --set")
    parser.add_argument("--skip_unet3d", action="store_true")
    parser.add_argument("--skip_nnunet", action="store_true")
    args = parser.parse_args(argv)
    args.nnunet_budgets = [float(value) for value in str(args.nnunet_budgets).split(",") if value.strip()]
    args.output_dir = args.output_dir.resolve()
    args.nnunet_python = None  # vs_nnunet_plan.nnunet_bin takes either
    return args


def to_nnunet_labels(label):
    """BraTS labels (1 necrosis, 2 edema, 4 enhancing) as nnU-Net's BraTS classes (2, 1, 3)."""
    table = np.zeros(256, np.uint8)
    for brats, nnunet in NNUNET_CLASSES.items():
        table[brats] = nnunet
    return table[np.asarray(label, np.uint8)]


def to_brats_labels(label):
    """nnU-Net's BraTS classes (1 edema, 2 necrosis, 3 enhancing) back as BraTS labels (2, 1, 4)."""
    table = np.zeros(256, np.uint8)
    for brats, nnunet in NNUNET_CLASSES.items():
        table[nnunet] = brats
    return table[np.asarray(label, np.uint8)]


def save_labels(labels, like, path):
    """Save a uint8 label map with the geometry of the image ``like``."""
    image = nibabel.Nifti1Image(labels, like.affine, like.header)
    image.set_data_dtype(np.uint8)
    nibabel.save(image, path)


def write_nnunet_raw(root, groups):
    """nnU-Net's raw dataset at ``root`` from ``{"train", "validation", "test": brats_cases}``; returns the splits.

    Training and validation cases go to ``imagesTr``/``labelsTr`` as ``<group>_<case id>``, the held-out
    cases to ``imagesTs`` under their own ids (nnU-Net's predictions are then named as unet3d's)."""
    root = Path(root)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": []}
    for group, cases in groups.items():
        for case in cases:
            identifier = Path(case["image"][0]).parent.name
            if group != "test":
                identifier = f"{group}_{identifier}"
                splits["val" if group == "validation" else "train"].append(identifier)
                label = nibabel.load(case["label"])
                save_labels(to_nnunet_labels(label.dataobj), label, root / "labelsTr" / f"{identifier}.nii.gz")
            images = root / ("imagesTs" if group == "test" else "imagesTr")
            for channel, image in enumerate(case["image"]):
                shutil.copyfile(image, images / f"{identifier}_{channel:04d}.nii.gz")
    description = {"channel_names": CHANNELS, "labels": vs_nnunet_plan.BRATS_REGIONS, "regions_class_order": [1, 2, 3],
                   "numTraining": len(splits["train"]) + len(splits["val"]), "file_ending": ".nii.gz",
                   "name": root.name, "description": "unet3d's synthetic BraTS-like cases"}
    write_text(root / "dataset.json", json.dumps(description, indent=2))
    return [splits]


def training_length(cost, budget_seconds):
    """``(epochs, iterations, validation iterations)`` that fit ``budget_seconds`` of CPU time at ``cost``.

    ``cost``: CPU seconds of ``startup``, of a ``train_iteration``, a ``val_iteration`` and an ``epoch_end``.
    Keeps nnU-Net's proportions: 1 validation iteration per 5 training ones, 4 epochs per iteration per epoch
    (1000 epochs of 250 iterations), at most nnU-Net's own length; at least one epoch of one iteration."""
    max_epochs, max_iterations, max_val = NNUNET_LENGTH
    available = budget_seconds - cost["startup"] - cost["epoch_end"]  # the final checkpoint's save
    epochs = 1
    for iterations in range(1, max_iterations + 1):
        val_iterations = max(1, round(iterations * max_val / max_iterations))
        epoch = cost["epoch_end"] + iterations * cost["train_iteration"] + val_iterations * cost["val_iteration"]
        epochs = min(max_epochs, int(available // epoch))
        if epochs <= 4 * iterations:
            break
    return max(1, epochs), iterations, val_iterations


# A trainer variant's module, for str.format; its process_tree_cpu_seconds is this file's.
TRAINER_SOURCE = '''"""nnUNetTrainer for a CPU-time budget: {epochs} epochs of {iterations} iterations (by a benchmark).

It logs the CPU seconds of its process and its workers at each epoch's phases to cpu_seconds.json,
writes checkpoints atomically and skips the final validation (the benchmark scores held-out cases).
"""

import json
import os
from pathlib import Path

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


{tree_cpu_seconds}


class {class_name}(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
        torch.set_num_threads({threads})
        self.cpu_log = []

    def log_cpu(self, epoch, phase):
        seconds = process_tree_cpu_seconds(os.getpid())
        self.cpu_log.append({{"epoch": epoch, "phase": phase, "cpu_seconds": seconds}})
        path = os.path.join(self.output_folder, "cpu_seconds.json")
        with open(path + ".part", "w") as output:
            json.dump(self.cpu_log, output)
        os.replace(path + ".part", path)

    def on_train_epoch_start(self):
        self.log_cpu(self.current_epoch, "start")
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs):
        self.log_cpu(self.current_epoch, "trained")
        super().on_train_epoch_end(train_outputs)

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        self.log_cpu(self.current_epoch, "validated")

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        self.log_cpu(epoch, "end")

    def save_checkpoint(self, filename):
        super().save_checkpoint(filename + ".part")
        if os.path.isfile(filename + ".part"):
            os.replace(filename + ".part", filename)

    def perform_actual_validation(self, save_probabilities=False):
        self.print_to_log_file("final validation skipped: the benchmark scores held-out cases itself")
'''


def trainer_source(class_name, epochs, iterations, val_iterations, threads):
    """The Python module of an nnUNetTrainer variant of this length that logs its CPU time per epoch phase."""
    return TRAINER_SOURCE.format(class_name=class_name, epochs=epochs, iterations=iterations,
                                 val_iterations=val_iterations, threads=threads,
                                 tree_cpu_seconds=PROCESS_TREE_CPU_SECONDS)


def epoch_costs(cpu_log):
    """The ``training_length`` costs from a calibration run's ``cpu_seconds.json`` (at least two epochs)."""
    seconds = {(row["epoch"], row["phase"]): row["cpu_seconds"] for row in cpu_log}
    last = max(epoch for epoch, _ in seconds)
    first_epoch = seconds[0, "end"] - seconds[0, "start"]
    steady = seconds[last, "end"] - seconds[last, "start"]
    return {"train": seconds[last, "trained"] - seconds[last, "start"],
            "val": seconds[last, "validated"] - seconds[last, "trained"],
            "epoch_end": seconds[last, "end"] - seconds[last, "validated"],
            "startup": seconds[0, "start"] + max(0.0, first_epoch - steady)}


def calibrated_cost(costs, iterations, val_iterations):
    """Per-iteration costs of ``epoch_costs`` measured with ``iterations`` and ``val_iterations`` per epoch."""
    return {"startup": costs["startup"], "epoch_end": costs["epoch_end"],
            "train_iteration": costs["train"] / iterations, "val_iteration": costs["val"] / val_iterations}


def trainer_name(epochs, iterations, val_iterations):
    """The variant's class (and module) name: ``nnUNetTrainerCPUBudget_<epochs>x<iterations>v<val>``."""
    return f"nnUNetTrainerCPUBudget_{epochs}x{iterations}v{val_iterations}"


def process_tree_cpu_seconds(pid):
    """User + system CPU seconds of a process, its waited-for children and its running descendants (/proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [child for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
    except OSError:  # it ended meanwhile
        return 0.0
    own = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_tree_cpu_seconds(child) for child in children)


PROCESS_TREE_CPU_SECONDS = inspect.getsource(process_tree_cpu_seconds).strip()  # read now, as the trainer's own


@contextlib.contextmanager
def child_time(into):
    """Add ``cpu_seconds`` (of the child processes waited for inside the block) and ``wall_seconds`` to ``into``."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    yield into
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    into["cpu_seconds"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    into["wall_seconds"] = time.perf_counter() - start


def cached(path, compute):
    """The JSON in ``path``; computed by ``compute()`` and written there first if it is not there yet."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(compute(), indent=2))
    return json.loads(path.read_text())


class NNUNet:
    """nnU-Net's commands in its own environment, on one dataset under ``root`` (raw, preprocessed, results)."""

    def __init__(self, bin_dir, root, dataset_id, threads, workers):
        self.bin, self.root, self.id, self.threads = Path(bin_dir), Path(root), dataset_id, threads
        self.name = f"Dataset{dataset_id:03d}_UNet3DBenchmark"
        self.env = {**os.environ, "nnUNet_n_proc_DA": str(workers),
                    **{f"nnUNet_{folder}": str(self.root / folder) for folder in ("raw", "preprocessed")}}

    def run(self, command, log_path, results=None):
        """Run one of nnU-Net's commands, its output in ``log_path``; exits naming the log if it fails."""
        env = {**self.env, "nnUNet_results": str(results or self.root / "results")}
        code, _, last = vs_nnunet_plan.run_logged([self.bin / command[0], *command[1:]], log_path, env)
        if code:
            sys.exit(f"{command[0]} failed (exit {code}): {last}; see {log_path}")

    def prepare(self, groups, workers=2):
        """The raw dataset, its plans and preprocessed data, and fold 0's split (done once)."""
        done = self.root / "preprocessed" / self.name / "splits_final.json"
        if done.is_file():
            return
        shutil.rmtree(self.root, ignore_errors=True)
        splits = write_nnunet_raw(self.root / "raw" / self.name, groups)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.run(["nnUNetv2_plan_and_preprocess", "-d", self.id, "-c", CONFIGURATION, "-np", workers, "-npfp", workers,
                  "--verify_dataset_integrity"], self.root / "logs" / "plan_and_preprocess.log")
        write_text(done, json.dumps(splits, indent=2))

    def install_trainer(self, epochs, iterations, val_iterations):
        """Write the variant of this length into nnU-Net's trainers (see ``trainer_folder``); returns its class name."""
        name = trainer_name(epochs, iterations, val_iterations)
        source = trainer_source(name, epochs, iterations, val_iterations, self.threads)
        write_text(self.trainer_folder() / f"{name}.py", source)
        return name

    def trainer_folder(self):
        """``variants/`` of nnU-Net's trainer package; the package's own folder where ``timm`` does not import.

        nnU-Net looks for a trainer class in the package's modules first, then in its subpackages in
        alphabetical order: ``primus/`` before ``variants/``. Importing ``primus`` imports ``timm`` and so
        torchvision, which fails beside the CPU build of torch ("operator torchvision::nms does not
        exist") where pip installed PyPI's torchvision; a module in the package's own folder is found
        before that."""
        probe = ("import os, nnunetv2; print(os.path.dirname(nnunetv2.__file__))\n"
                 "try:\n    import timm\nexcept Exception:\n    print('no timm')")
        lines = subprocess.run([str(self.bin / "python"), "-c", probe], capture_output=True, text=True,
                               check=True).stdout.split("\n")
        trainers = Path(lines[0].strip(), *VARIANTS[:-1])
        return trainers if "no timm" in lines else trainers / VARIANTS[-1]

    def train(self, trainer, results, cpu_seconds):
        """``nnUNetv2_train`` fold 0 with ``trainer`` for at most ``cpu_seconds``; a dict of how it went."""
        env = {**self.env, "nnUNet_results": str(results)}
        log_path = Path(results) / "train.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as output:
            code, stopped, cpu, wall = recipe.run_with_cpu_budget(
                [self.bin / "nnUNetv2_train", self.id, CONFIGURATION, "0", "-tr", trainer, "-device", "cpu"],
                cpu_seconds, cpu_seconds_of=process_tree_cpu_seconds, stop=stop_group, env=env, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True)
        if code and not stopped:
            sys.exit(f"nnUNetv2_train -tr {trainer} failed (exit {code}); see {log_path}")
        fold = self.fold_dir(results, trainer)
        checkpoint = next((name for name in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
                           if (fold / name).is_file()), None)
        cpu_log = json.loads((fold / "cpu_seconds.json").read_text()) if (fold / "cpu_seconds.json").is_file() else []
        epochs = len({row["epoch"] for row in cpu_log if row["phase"] == "end"})
        return {"trainer": trainer, "stopped_by_budget": stopped, "checkpoint": checkpoint, "epochs_done": epochs,
                "cpu_seconds": cpu, "wall_seconds": wall, "cpu_log": cpu_log}

    def fold_dir(self, results, trainer):
        """Where nnU-Net keeps fold 0 of ``trainer``."""
        return Path(results) / self.name / f"{trainer}__nnUNetPlans__{CONFIGURATION}" / "fold_0"

    def predict(self, results, trainer, checkpoint, output_dir, tta):
        """``nnUNetv2_predict`` of the held-out cases into ``output_dir``, as BraTS labels; CPU and wall seconds."""
        raw_output = Path(output_dir).with_name(Path(output_dir).name + "_nnunet_labels")
        shutil.rmtree(raw_output, ignore_errors=True)
        raw_output.mkdir(parents=True)
        timing = {}
        with child_time(timing):
            self.run(["nnUNetv2_predict", "-i", self.root / "raw" / self.name / "imagesTs", "-o", raw_output,
                      "-d", self.id, "-c", CONFIGURATION, "-f", "0", "-tr", trainer, "-chk", checkpoint,
                      "-npp", "1", "-nps", "1", "-device", "cpu", *TTA[tta]], raw_output.with_suffix(".log"), results)
        write_brats_predictions(raw_output, output_dir)
        return timing


def stop_group(process):
    """SIGTERM to the process and its augmentation workers (it was started in a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)


def write_brats_predictions(nnunet_dir, output_dir):
    """nnU-Net's label maps in ``nnunet_dir`` as BraTS labels in ``output_dir``, under the same names."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(nnunet_dir).glob("*.nii.gz")):
        image = nibabel.load(path)
        save_labels(to_brats_labels(image.dataobj), image, output_dir / path.name)


def calibrate(nnunet, output_dir, iterations):
    """nnU-Net's CPU cost per start-up, iteration and epoch end, from a two-epoch run of ``iterations``."""
    val_iterations = max(1, round(iterations / 5))
    trainer = nnunet.install_trainer(2, iterations, val_iterations)
    run = nnunet.train(trainer, output_dir / "results", cpu_seconds=math.inf)
    cost = calibrated_cost(epoch_costs(run["cpu_log"]), iterations, val_iterations)
    return {**cost, "calibration_cpu_seconds": run["cpu_seconds"], "calibration_wall_seconds": run["wall_seconds"]}


def nnunet_runs(args, nnunet, groups, test_config):
    """nnU-Net at each budget of ``--nnunet_budgets``: table rows, one per budget and prediction mode, and a line
    on its calibration."""
    log = vs_nnunet_plan.log
    log("nnU-Net: raw dataset, nnUNetv2_plan_and_preprocess, splits_final.json")
    nnunet.prepare(groups)
    log(f"nnU-Net: calibration run ({args.calibration_iterations} iterations per epoch, 2 epochs)")
    cost = cached(args.output_dir / "nnunet" / "calibration" / "cost.json",
                  lambda: calibrate(nnunet, args.output_dir / "nnunet" / "calibration", args.calibration_iterations))
    rows = []
    for multiple in args.nnunet_budgets:
        budget = args.cpu_minutes * multiple * 60
        length = training_length(cost, budget)
        trainer = nnunet.install_trainer(*length)
        run_dir = args.output_dir / "nnunet" / f"{budget / 60:g}_cpu_minutes"
        log(f"nnU-Net: {budget / 60:g} CPU-minutes, {trainer}")
        training = cached(run_dir / "training.json", lambda: nnunet.train(trainer, run_dir / "results", budget))
        for tta in (("tta", "no tta") if args.tta == "both" else (args.tta,)):
            prediction_dir = run_dir / f"heldout_{tta.replace(' ', '_')}"
            rows.append(cached(prediction_dir.with_suffix(".json"), lambda: nnunet_row(
                nnunet, run_dir, training, tta, prediction_dir, test_config, budget, length)))
    return rows, calibration_line(cost)


def calibration_line(cost):
    """What the calibration run measured, as a sentence."""
    return (f"nnU-Net's calibration (CPU seconds): start-up {cost['startup']:.0f}, training iteration "
            f"{cost['train_iteration']:.1f}, validation iteration {cost['val_iteration']:.1f}, epoch end "
            f"{cost['epoch_end']:.1f}; the run itself {minutes(cost['calibration_cpu_seconds'])} CPU-minutes, "
            f"{minutes(cost['calibration_wall_seconds'])} wall minutes, not in the budgets.")


def nnunet_row(nnunet, run_dir, training, tta, prediction_dir, test_config, budget, length):
    """One nnU-Net run's prediction and scores, as a table row."""
    row = {"tool": f"nnU-Net ({tta})", "run": training["trainer"], "budget_cpu_min": round(budget / 60, 2),
           "epochs": f"{training['epochs_done']}/{length[0]}", "iterations_per_epoch": length[1],
           "stopped_by_budget": training["stopped_by_budget"], "model": training["checkpoint"],
           "train_cpu_min": minutes(training["cpu_seconds"]), "train_wall_min": minutes(training["wall_seconds"])}
    if training["checkpoint"] is None:  # stopped before its first epoch ended
        return {**row, **{f"dice_{region}": float("nan") for region in REGIONS}}
    timing = nnunet.predict(run_dir / "results", training["trainer"], training["checkpoint"], prediction_dir, tta)
    return {**row, **scores(test_config, prediction_dir, timing)}


def minutes(seconds):
    """Seconds as minutes, two decimals."""
    return round(seconds / 60, 2)


def unet3d_dir(args, seed):
    """The folder of one unet3d run."""
    return args.output_dir / "unet3d" / f"{args.cpu_minutes:g}_cpu_minutes" / f"seed{seed}"


def unet3d_row(args, template, folders, seed):
    """One seed of unet3d's recipe: training for the budget, prediction and scores, as a table row."""
    run_dir = unet3d_dir(args, seed)
    train_config, test_config = recipe.run_configs(template, folders, seed, args.set, run_dir)
    training = cached(run_dir / "training.json", lambda: dict(zip(
        ("stopped_by_budget", "cpu_seconds", "wall_seconds"), recipe.train_with_budget(train_config,
                                                                                      args.cpu_minutes * 60))))
    work_dir = run_dir / "train"
    model = next((path for path in (work_dir / "model_best.pth", work_dir / "model.pth") if path.is_file()), None)
    log_file = work_dir / "training_log.csv"
    training_settings = json.loads(Path(train_config).read_text())["training"]  # with --set's overrides
    row = {"tool": "unet3d", "run": f"seed {seed}", "budget_cpu_min": args.cpu_minutes,
           "epochs": f"{len(pandas.read_csv(log_file)) if log_file.is_file() else 0}/{training_settings['n_epochs']}",
           "iterations_per_epoch": training_settings["samples_per_epoch"] // training_settings["batch_size"],
           "stopped_by_budget": training["stopped_by_budget"], "model": model.name if model else None,
           "train_cpu_min": minutes(training["cpu_seconds"]), "train_wall_min": minutes(training["wall_seconds"])}
    if model is None:  # stopped before its first epoch ended
        return {**row, **{f"dice_{region}": float("nan") for region in REGIONS}}
    timing = {}
    with child_time(timing):
        recipe.predict_heldout(test_config, model, run_dir / "heldout")
    return {**row, **scores(test_config, run_dir / "heldout", timing)}


def scores(test_config, prediction_dir, timing):
    """The prediction's CPU and wall minutes and the mean Dice per region of its held-out label maps."""
    dice = recipe.score_heldout(test_config, prediction_dir)
    return {"predict_cpu_min": minutes(timing["cpu_seconds"]), "predict_wall_min": minutes(timing["wall_seconds"]),
            **{f"dice_{region}": round(dice[region], 4) for region in REGIONS}}


def data_groups(args):
    """``{group: folder}`` of the training, validation and held-out cases (written once)."""
    counts = {"train": args.n_train, "validation": args.n_validation, "test": args.n_test}
    return recipe.synthetic_groups(args.output_dir / "data", counts, args.spacing, args.data)


def markdown(table):
    """The table in Markdown."""
    cells = [[str(value) for value in row] for row in table.itertuples(index=False)]
    return vs_nnunet_plan.markdown_table(list(table.columns), cells)


def write_results(args, rows, lines):
    """Print the table under ``lines`` and write ``results.csv`` and ``results.md``."""
    table = pandas.DataFrame(rows, columns=COLUMNS)
    unet3d = table[table["tool"] == "unet3d"]
    if len(unet3d) > 1:
        columns = [f"dice_{region}" for region in REGIONS]
        mean = {"tool": "unet3d", "run": f"mean of {len(unet3d)}", **unet3d[columns].mean().round(4).to_dict()}
        table = pandas.concat([table, pandas.DataFrame([mean])], ignore_index=True)
    table = table.fillna("")
    recipe_line = (f"unet3d: {RECIPE.relative_to(REPO)}, overrides {' '.join(args.set) or 'none'}, "
                   f"{args.cpu_minutes:g} CPU-minutes per seed")
    text = "\n".join([*lines, recipe_line, "", markdown(table), ""])
    write_csv(table, args.output_dir / "results.csv")
    write_text(args.output_dir / "results.md", text)
    print(text)


def check_settings(args):
    """Exit if ``--output_dir`` holds runs on other cases or with other settings than these."""
    keys = ("data", "n_train", "n_validation", "n_test", "spacing", "threads", "nnunet_workers",
            "calibration_iterations", "dataset_id", "set")
    settings = {key: getattr(args, key) for key in keys}
    found = cached(args.output_dir / "settings.json", lambda: settings)
    if found != settings:
        changed = ", ".join(f"--{key} {found.get(key)}" for key in keys if found.get(key) != settings[key])
        sys.exit(f"{args.output_dir} holds runs made with {changed}: give those or another --output_dir")


def main(argv=None):
    args = parse_args(argv)
    check_settings(args)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # unet3d-train's and unet3d-predict's torch threads
    bin_dir = None if args.skip_nnunet else vs_nnunet_plan.nnunet_bin(args)
    header = (vs_nnunet_plan.versions(bin_dir) if bin_dir else "nnU-Net skipped") + (
        f"; {args.threads} torch threads, nnUNet_n_proc_DA {args.nnunet_workers}; data: {args.data}, "
        f"{args.n_train} training, {args.n_validation} validation, {args.n_test} held-out cases at {args.spacing:g} mm")
    vs_nnunet_plan.log(f"data under {args.output_dir / 'data'}")
    folders = data_groups(args)
    template = json.loads(RECIPE.read_text())
    _, test_config = recipe.run_configs(template, folders, 0, [], args.output_dir / "scoring")
    rows = []
    if not args.skip_unet3d:
        for seed in range(args.seeds):
            vs_nnunet_plan.log(f"unet3d: seed {seed}, {args.cpu_minutes:g} CPU-minutes")
            rows.append(cached(unet3d_dir(args, seed) / "row.json", lambda: unet3d_row(args, template, folders, seed)))
    if bin_dir:
        nnunet = NNUNet(bin_dir, args.output_dir / "nnunet" / "data", args.dataset_id, args.threads,
                        args.nnunet_workers)
        groups = {group: brats_cases(folder) for group, folder in folders.items()}
        nnunet_rows, calibration = nnunet_runs(args, nnunet, groups, test_config)
        rows += nnunet_rows
        header += f"\n\n{calibration}"
    write_results(args, rows, [header, ""])


if __name__ == "__main__":
    main()
