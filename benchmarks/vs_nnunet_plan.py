"""unet3d-plan beside nnU-Net v2's planner: the same two synthetic datasets, both plans in one Markdown table.

Writes two seeded nnU-Net v2 raw datasets (``unet3d.data.synthetic.write_synthetic_nnunet``):

- ``Dataset501_BraTSLike``: BraTS's field of view at 2 mm (120 x 120 x 78 voxels), four MRI
  channels, nnU-Net's BraTS region labels (``"whole tumor": [1, 2, 3]``, ``"tumor core": [2, 3]``,
  ``"enhancing tumor": [3]``, ``regions_class_order``);
- ``Dataset502_Anisotropic``: the anisotropic phantom of ``tests/test_plan.py`` (0.9 x 0.9 x 2.5 mm:
  slices 2.8 times thicker than in-plane; 96 x 96 x 32 voxels), three exclusive classes;

then plans each with ``unet3d-plan`` (this repository's, ``--device cpu``, and ``--device cuda
--gpu_memory_gb 8``, reported as not available where it cannot plan for CUDA) and with nnU-Net's
``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment`` (the default ``ExperimentPlanner``,
which plans for an 8 GB GPU; the same as ``nnUNetv2_plan_and_preprocess --no_pp``), and prints per
dataset the plans side by side (spacing, patch, network, batch, normalization, crop and mask,
length) and the two fingerprints. Axes are the image files' voxel axes (x, y, z; RAS here):
nnU-Net's plans list them the other way round (z, y, x, after its ``transpose_forward``).
unet3d-plan runs first, alone, because it times training steps on this machine.

nnU-Net runs from its own virtual environment, never a dependency of unet3d. Made once, outside
the repository, with the CPU build of torch (pinning it in the same command keeps pip from
replacing it with the newest torch and its CUDA packages):

    python3 -m venv ~/nnunet-venv
    ~/nnunet-venv/bin/pip install torch==2.13.0 nnunetv2==2.8.1

(nnunetv2 does not need torchvision, but ``timm``, which ``dynamic-network-architectures``
requires, brings PyPI's torchvision 0.28.0; that build fails to import beside the CPU torch,
"operator torchvision::nms does not exist", and neither the fingerprint nor the planner
imports it, so it can stay.)

Not a test. Run from the repository root (10 minutes on two shared cores at a load average of 9; less on
free ones; ``--datasets`` runs one of the two):

    .venv/bin/python benchmarks/vs_nnunet_plan.py --nnunet_python ~/nnunet-venv/bin/python
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from unet3d.data.synthetic import write_synthetic_nnunet

REPO = Path(__file__).resolve().parents[1]
BRATS_REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
DATASETS = {  # name: (nnU-Net id, shape in voxels, spacing in mm, region labels)
    "Dataset501_BraTSLike": (501, (120, 120, 78), (2.0, 2.0, 2.0), True),
    "Dataset502_Anisotropic": (502, (96, 96, 32), (0.9, 0.9, 2.5), False),
}
NNUNET_CONFIGURATIONS = ("3d_fullres", "3d_lowres", "2d")
# nnUNetTrainer's constants: the plan does not choose them.
NNUNET_LENGTH = "5 folds x 1000 epochs x 250 steps (nnUNetTrainer's constants, not planned)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--nnunet_python", type=Path, help="the python of a virtual environment with nnunetv2")
    where.add_argument("--nnunet_bin", type=Path, help="the folder of nnUNetv2_plan_experiment and its siblings "
                                                       "(default: found on PATH)")
    parser.add_argument("--output_dir", type=Path, default=Path(tempfile.gettempdir()) / "unet3d_vs_nnunet",
                        help="datasets, plans and logs (emptied first); the table goes to comparison.md in it")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--n_cases", type=int, default=10, help="training cases per dataset (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget_minutes", type=float, default=60.0, help="unet3d-plan's budget (its default, 60)")
    parser.add_argument("--workers", type=int, default=2, help="processes that read the cases, in both planners")
    return parser.parse_args(argv)


def log(message, start=time.perf_counter()):
    """A progress line on stderr, with the seconds since the start."""
    print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)


def nnunet_bin(args):
    """The folder of nnU-Net's console scripts; exits naming how to make one where there is none."""
    if args.nnunet_bin or args.nnunet_python:
        folder = args.nnunet_bin or args.nnunet_python.parent  # a virtual environment's bin/
    else:
        found = shutil.which("nnUNetv2_plan_experiment")
        folder = Path(found).parent if found else None
    if folder is None or not (folder / "nnUNetv2_plan_experiment").is_file():
        sys.exit(f"nnUNetv2_plan_experiment not found{f' in {folder}' if folder else ' on PATH'}: give "
                 "--nnunet_python or --nnunet_bin of an environment made as this script's docstring says")
    return folder


def write_datasets(raw, names, n_cases, seed):
    """Write the nnU-Net raw datasets ``names`` under ``raw``; returns their folders by name."""
    folders = {}
    for name in names:
        _, shape, spacing, regions = DATASETS[name]
        root = write_synthetic_nnunet(raw / name, n_cases, shape=shape, spacing=spacing, seed=seed)
        if regions:  # nnU-Net's BraTS example: 1 edema, 2 non-enhancing core, 3 enhancing tumour
            description = json.loads((root / "dataset.json").read_text())
            description.update(labels=BRATS_REGIONS, regions_class_order=[1, 2, 3])
            (root / "dataset.json").write_text(json.dumps(description, indent=2))
        folders[name] = root
    return folders


def run_logged(command, log_path, env=None):
    """Run ``command`` with its output in ``log_path``; ``(exit code, seconds, last line of its output)``."""
    start = time.perf_counter()
    with open(log_path, "w") as output:
        code = subprocess.run(list(map(str, command)), stdout=output, stderr=subprocess.STDOUT, env=env).returncode
    lines = [line for line in Path(log_path).read_text().splitlines() if line.strip()]
    return code, time.perf_counter() - start, lines[-1] if lines else ""


def plan_unet3d(dataset_dir, output, args, *device):
    """Run unet3d-plan; a dict of its config, plan.md rows, fingerprint, seconds and the load average before it, or
    the reason it made no plan (a str)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "unet3d.scripts.plan", "--input_dir", dataset_dir, "--output_filename", output,
               "--budget_minutes", args.budget_minutes, "--workers", args.workers, "--overwrite", *device]
    load = os.getloadavg()[0]  # it times training steps: other jobs make it plan for a slower machine
    code, seconds, last = run_logged(command, output.with_suffix(".log"), env)
    if code:
        return f"exit {code}: {last}"
    stem = output.with_suffix("")
    rows = {}
    for line in Path(f"{stem}_plan.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3:
            rows[cells[0]] = cells[1]
    return {"config": json.loads(output.read_text()), "plan": rows, "seconds": seconds, "load": load,
            "fingerprint": json.loads(Path(f"{stem}_fingerprint.json").read_text())}


def plan_nnunet(dataset_id, bin_dir, root, workers):
    """nnU-Net's fingerprint and plan of a dataset in ``root/raw``; ``(plans, fingerprint, seconds)``."""
    env = {**os.environ, **{f"nnUNet_{name}": str(root / name) for name in ("raw", "preprocessed", "results")}}
    seconds = 0.0
    for command in (["nnUNetv2_extract_fingerprint", "-d", dataset_id, "-np", workers],
                    ["nnUNetv2_plan_experiment", "-d", dataset_id]):
        log_path = root / "logs" / f"{command[0]}_{dataset_id}.log"
        code, took, last = run_logged([bin_dir / command[0], *command[1:]], log_path, env)
        if code:
            sys.exit(f"{command[0]} -d {dataset_id} failed (exit {code}): {last}; see {log_path}")
        seconds += took
    folder = next((root / "preprocessed").glob(f"Dataset{dataset_id:03d}_*"))
    return (json.loads((folder / "nnUNetPlans.json").read_text()),
            json.loads((folder / "dataset_fingerprint.json").read_text()), seconds)


def number(value):
    """A number as a reader wants it: 0.9 for 0.8999999761581421, 2 for 2.0."""
    return f"{round(float(value), 3):g}"


def axes(values):
    """``120 x 120 x 78``; an axis a 2D configuration does not have is ``-``."""
    return " x ".join("-" if value is None else number(value) for value in values)


def per_level(levels):
    """Kernels or strides per level, runs of equal levels counted: ``3x3x1, 3x3x3 (x4)``."""
    runs = []
    for level in ("x".join(map(number, values)) for values in levels):
        if runs and runs[-1][0] == level:
            runs[-1][1] += 1
        else:
            runs.append([level, 1])
    return ", ".join(level if count == 1 else f"{level} (x{count})" for level, count in runs)


def nnunet_xyz(values, transpose_forward, missing=None):
    """nnU-Net's per-axis ``values`` (its transposed z, y, x order; 2D: the in-plane two) in x, y, z order."""
    values = list(values)
    if len(values) == 2:
        values = [missing, *values]
    zyx = [None] * 3
    for axis, value in zip(transpose_forward, values):
        zyx[axis] = value
    return zyx[::-1]


def nnunet_column(plans, name, seconds):
    """The rows of one nnU-Net configuration."""
    configuration, forward = plans["configurations"][name], plans["transpose_forward"]
    network = configuration["architecture"]["arch_kwargs"]
    schemes = configuration["normalization_schemes"]
    masks = configuration["use_mask_for_norm"]
    return {
        "planned for": "a GPU of 8 GB (ExperimentPlanner's default)",
        "spacing (mm)": axes(nnunet_xyz(configuration["spacing"], forward)),
        "patch (voxels)": axes(nnunet_xyz(configuration["patch_size"], forward, 1)),
        "network": f"{network_name(configuration)}, {network['n_stages']} levels",
        "filters": ", ".join(map(str, network["features_per_stage"])),
        "kernels": per_level(nnunet_xyz(kernel, forward, 1) for kernel in network["kernel_sizes"]),
        "strides": per_level(nnunet_xyz(stride, forward, 1) for stride in network["strides"]),
        "batch": str(configuration["batch_size"]),
        "normalization": f"{'/'.join(sorted(set(schemes)))} per channel, use_mask_for_norm "
                         f"{'/'.join(str(mask) for mask in sorted(set(masks)))}",
        "crop, mask": "cropped to the non-zero box (always); predictions not masked",
        "length": NNUNET_LENGTH,
        "planning time (s)": f"{seconds:.0f} (fingerprint + plan, both configurations)",
    }


def network_name(configuration):
    """The network's class name without its module."""
    return configuration["architecture"]["network_class_name"].rsplit(".", 1)[-1]


def unet3d_column(result, planned_for):
    """The rows of a unet3d config and its plan.md."""
    config, plan_rows = result["config"], result["plan"]
    dataset, model = config["dataset"], config["model"]
    kwargs = json.dumps(dataset.get("normalization_kwargs", {}))
    return {
        "planned for": f"{planned_for} (load average {result['load']:.1f} before it)",
        "spacing (mm)": axes(dataset["spacing"]),
        "patch (voxels)": axes(dataset["patch_size"]),
        "network": f"{model['name']}, {len(model['filters'])} levels",
        "filters": ", ".join(map(str, model["filters"])),
        "kernels": per_level(model["kernel_size"]),
        "strides": per_level(model["strides"]),
        "batch": str(config["training"]["batch_size"]),
        "normalization": f"{dataset['normalization']} {kwargs}",
        "crop, mask": f"crop_foreground {str(dataset.get('crop_foreground', False)).lower()}; mask_to_nonzero "
                      f"{str(config.get('prediction', {}).get('mask_to_nonzero', False)).lower()}",
        "length": f"{plan_rows.get('length', '?')}; step {plan_rows.get('step', '?')}",
        "planning time (s)": f"{result['seconds']:.0f} (fingerprint, measured step, plan)",
    }


def fingerprint_rows(ours, theirs):
    """Rows ``(what, unet3d, nnU-Net)``: the two fingerprints, as a check that both read the same data."""
    spacings, cropped = np.array(theirs["spacings"]), np.array(theirs["shapes_after_crop"])
    first_ours, first_theirs = ours["channels"][0], theirs["foreground_intensity_properties_per_channel"]["0"]

    def stats(channel, keys):
        return " / ".join(number(channel[key]) for key in keys)

    return [
        ("training cases", str(ours["n_cases"]), str(len(spacings))),
        ("median spacing (mm)", axes(ours["median_spacing"]), axes(np.median(spacings, axis=0)[::-1])),
        ("median shape (voxels)", f"{axes(ours['median_shape'])}; non-zero box {axes(ours['median_nonzero_shape'])}",
         f"non-zero box {axes(np.median(cropped, axis=0)[::-1])}"),
        ("non-zero box / volume", number(ours["nonzero_share"]), number(theirs["median_relative_size_after_cropping"])),
        (f"channel 0 ({first_ours['name']}) in the labels: mean / std",
         stats(first_ours, ("mean", "std")), stats(first_theirs, ("mean", "std"))),
        ("channel 0 in the labels: 0.5 / 50 / 99.5 percentiles",
         stats(first_ours, ("percentile_0.5", "percentile_50", "percentile_99.5")),
         stats(first_theirs, ("percentile_00_5", "median", "percentile_99_5"))),
    ]


def markdown_table(header, rows):
    """A Markdown table of ``header`` and ``rows`` (lists of cells)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def dataset_section(name, unet3d_plans, nnunet_plan, budget_minutes):
    """The Markdown of one dataset: the plans side by side, then the fingerprints."""
    plans, fingerprint, seconds = nnunet_plan
    columns, missing = {}, []
    for label, result in unet3d_plans.items():
        if isinstance(result, str):
            missing.append(f"`unet3d-plan {label}`: not available ({result})")
        else:
            columns[f"unet3d-plan {label}"] = unet3d_column(result, f"{label[2:]}, budget {budget_minutes:g} min")
    for configuration in NNUNET_CONFIGURATIONS:
        if configuration in plans["configurations"]:
            columns[f"nnU-Net {configuration}"] = nnunet_column(plans, configuration, seconds)
    rows = [[row, *(column[row] for column in columns.values())] for row in next(iter(columns.values()))]
    text = [f"### {name}", "", markdown_table(["", *columns], rows), ""]
    text += [f"- {line}" for line in missing] + ([""] if missing else [])
    ours = next(result["fingerprint"] for result in unet3d_plans.values() if not isinstance(result, str))
    text += ["Fingerprints:", "", markdown_table(["", "unet3d-plan", "nnU-Net"], fingerprint_rows(ours, fingerprint))]
    return "\n".join(text) + "\n"


def versions(bin_dir):
    """The versions of the two planners and their torch builds, as one line."""
    probe = "import importlib.metadata as m; print(m.version('nnunetv2'), m.version('torch'))"
    python = bin_dir / "python"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.split()
    nnunet, nnunet_torch = found if len(found) == 2 else ("?", "?")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    return (f"unet3d {commit} (torch {metadata.version('torch')}); nnunetv2 {nnunet} (torch {nnunet_torch}); "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")


def main(argv=None):
    args = parse_args(argv)
    bin_dir = nnunet_bin(args)
    root = args.output_dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    (root / "logs").mkdir(parents=True)
    header = versions(bin_dir)
    log(f"writing {len(args.datasets)} dataset(s) of {args.n_cases} training cases under {root / 'raw'}")
    folders = write_datasets(root / "raw", args.datasets, args.n_cases, args.seed)
    sections = []
    for name, folder in folders.items():
        unet3d_plans = {}
        for label, device in (("--device cpu", ["--device", "cpu"]),
                              ("--device cuda --gpu_memory_gb 8", ["--device", "cuda", "--gpu_memory_gb", "8"])):
            log(f"{name}: unet3d-plan {label}")
            output = root / "unet3d" / name / f"{device[1]}.json"
            unet3d_plans[label] = plan_unet3d(folder, output, args, *device)
        if isinstance(unet3d_plans["--device cpu"], str):
            sys.exit(f"unet3d-plan --device cpu failed on {name} ({unet3d_plans['--device cpu']}); see its .log")
        log(f"{name}: nnUNetv2_extract_fingerprint + nnUNetv2_plan_experiment")
        nnunet_plan = plan_nnunet(DATASETS[name][0], bin_dir, root, args.workers)
        sections.append(dataset_section(name, unet3d_plans, nnunet_plan, args.budget_minutes))
    text = "\n".join([f"Versions: {header}. Axes: x, y, z (the files' voxel axes).", "", *sections])
    (root / "comparison.md").write_text(text)
    log(f"done; the table is also in {root / 'comparison.md'}")
    print(text)


if __name__ == "__main__":
    main()
