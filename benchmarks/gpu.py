"""The GPU path measured: the 1 mm recipe's training step and its data feeding, prediction time, a short recipe run.

One command on one GPU, in under 10 minutes, prints with the card's name and writes as
markdown (to append to ``docs/performance.md``):

1. the training step of ``examples/brats2020/brats2020_recipe_config.json`` (its DynUNet,
   deep-supervised Dice + CE loss, SGD, batch 2 of 128³ patches): samples/s and peak
   memory in float32, float16 autocast with gradient scaling, and bfloat16, each with and
   without ``channels_last_3d``, then with ``torch.compile`` while the time budget lasts;
2. the wait for data: what one training item (patch and augmentations) costs a loader worker,
   and the share of the epoch the recipe's loader (compact cache, one worker per core but
   one, ``--samples`` per epoch) leaves the training steps waiting, on synthetic 1 mm BraTS cases;
3. prediction time per BraTS-size case (4 x 240 x 240 x 155, window 128³, overlap 0.5,
   float16 autocast as ``unet3d-predict`` runs it, no TTA) with unet3d's ``Inferer``
   against plain MONAI ``sliding_window_inference`` (goals: at most 1.10x, under 1 s);
4. a short run of the recipe (``unet3d.api.train``: two epochs on synthetic 1 mm cases,
   validation, prediction of the validation cases);
5. the steady state of training's data feeding: ``--steady_epochs`` epochs of
   ``--steady_samples`` samples of the recipe's training loop (``train_one_epoch``, float16,
   loader workers staying between epochs) for each way of augmenting (per item in the workers
   as the recipe does, ``dataset.batch_augmentation`` "default" and "nnunet" on the device),
   eager then compiled: the data wait's share of the epoch and samples/s (the first epoch
   apart, then the median), beside the step alone and the issue's targets (wait <= 5%,
   >= 0.90x the step alone), within ``--steady_budget`` seconds.

``--cpu-smoke`` runs every part at a tiny size on the CPU in seconds (``torch.compile``
with its eager backend); a test in the default suite runs it. Run from the repository root:

    .venv/bin/python benchmarks/gpu.py --output gpu.md && cat gpu.md >> docs/performance.md
"""

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

from unet3d.api import train
from unet3d.config.experiment import experiment_from_dict
from unet3d.config.overrides import apply_overrides
from unet3d.data.brats import brats_cases
from unet3d.data.dataset import build_dataset
from unet3d.data.loaders import batches, make_loader, start_epoch
from unet3d.data.synthetic import brats_shape, write_synthetic_brats
from unet3d.models.inferer import Inferer
from unet3d.train.compilation import compile_seconds, compiled
from unet3d.train.loop import train_one_epoch
from unet3d.train.parts import build_parts, random_batch
from unet3d.train.step import train_step

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "brats2020" / "brats2020_recipe_config.json"
PRECISIONS = (("float32", False), ("float16 AMP + GradScaler", "fp16"), ("bfloat16", "bf16"))
# --cpu-smoke: the recipe's structure (6 levels, deep supervision) with few filters on tiny cases.
SMOKE = ["model.filters=[4,4,8,8,8,8]", "model.strides=[[1,1,1],[2,2,2],[2,2,2],[2,2,2],[1,1,1],[1,1,1]]",
         "model.upsample_kernel_size=[[2,2,2],[2,2,2],[2,2,2],[1,1,1],[1,1,1]]",
         "dataset.patch_size=[16,16,16]", "training.batch_size=1"]
# The steady state of training's data feeding: how the batches are augmented (None: per item, in the workers, as
# the recipe does; else a dataset.batch_augmentation preset, on the device), and the targets.
FEEDING = (("per-item MONAI augmentation in the workers (the recipe)", None),
           ('batch_augmentation "default" on the device', "default"),
           ('batch_augmentation "nnunet" on the device', "nnunet"))
TARGET_WAIT, TARGET_RATIO = 0.05, 0.90


class Budget:
    """Seconds left of the whole run; parts that would not fit are reported as skipped."""

    def __init__(self, seconds):
        self.end = time.perf_counter() + seconds

    def left(self):
        return self.end - time.perf_counter()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device):
    """Peak GPU memory allocated since the last reset, as text."""
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else "n/a (CPU)"


def recipe_config(smoke, folders=None):
    """The GPU recipe's config (smaller with ``smoke``), with synthetic training and validation cases."""
    config = json.loads(RECIPE.read_text())
    config = {key: value for key, value in config.items() if not key.endswith("_filenames") and key != "cross_validation"}
    config = apply_overrides(config, SMOKE if smoke else [])
    if folders:
        config["training_filenames"] = brats_cases(folders["train"])
        config["validation_filenames"] = brats_cases(folders["validation"])
    return config


def bench_parts(experiment, device, amp, memory_format=torch.contiguous_format):
    """The recipe's ``RunParts`` as training builds them, with ``amp`` and the model on ``device`` in
    ``memory_format``."""
    parts = build_parts(experiment, device, amp=amp)
    parts.model.to(memory_format=memory_format)  # in place: the optimizer keeps its parameters
    return parts


def compiled_for(model, device):
    """``torch.compile(model)`` as training compiles it; on the CPU with the eager backend (checks the path in
    seconds)."""
    return torch.compile(model, backend="eager") if device.type == "cpu" else compiled(model)


def step_rate(parts, image, label, steps, warmup, device):
    """``(samples/s, seconds to the first timed step)`` of ``train_step`` on a batch already on ``device``; the
    peak memory is counted from the first timed step."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        train_step(parts, image, label)
    synchronize(device)
    ready = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(parts, image, label)
    synchronize(device)
    return steps * len(image) / (time.perf_counter() - start), ready


def training_steps(experiment, device, amp, channels_last, compile_model, steps, warmup):
    """``(samples/s, peak memory, seconds to the first timed step)`` of the recipe's training step on random patches."""
    torch.manual_seed(0)
    settings = experiment.training
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    parts = bench_parts(experiment, device, amp, memory_format)
    if compile_model:
        parts.network = compiled_for(parts.model, device)
    image, label = random_batch(experiment, experiment.in_channels, experiment.dataset.settings.patch_size, settings.batch_size, device)
    rate, ready = step_rate(parts, image.to(memory_format=memory_format), label, steps, warmup, device)
    return rate, peak_memory(device), ready


def step_variants(smoke):
    """``(precision name, training.amp, channels_last_3d, torch.compile)`` of the training step, eager ones first."""
    eager = [(name, amp, layout, False) for name, amp in PRECISIONS for layout in (False, True)]
    # channels_last_3d last: it slows every eager step down.
    compiled_ones = [(name, amp, layout, True) for layout in (False, True) for name, amp in PRECISIONS[::-1]]
    if smoke:  # each precision, layout and compilation once
        return [eager[0], eager[3], eager[4]], [compiled_ones[2]]
    return eager, compiled_ones


def step_rows(config, device, smoke, budget, variants):
    """Markdown rows of the training step for ``variants``; those that do not fit the budget are reported skipped."""
    experiment = experiment_from_dict(config)
    steps, warmup = (2, 1) if smoke else (10, 3)
    rows = []
    for name, amp, layout, compile_model in variants:
        if budget.left() < (90 if compile_model and not smoke else 10):
            rows.append(f"| {name} | {layout} | {compile_model} | skipped (time budget) | | |")
            continue
        try:
            rate, memory, ready = training_steps(experiment, device, amp, layout, compile_model, steps, warmup)
            rows.append(f"| {name} | {layout} | {compile_model} | {rate:.2f} | {memory} | {ready:.0f} |")
        except (RuntimeError, torch.OutOfMemoryError) as error:  # one failing variant must not hide the others
            rows.append(f"| {name} | {layout} | {compile_model} | failed: {str(error).splitlines()[0][:80]} | | |")
        print(rows[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def data_wait(config, device, workers, samples, cache_dir):
    """Markdown lines: what one training item costs a worker, and the share of the epoch the recipe's training
    loop waits for data with ``workers`` workers."""
    experiment = experiment_from_dict(config)
    cases = experiment.labelled_cases("training")
    dataset = build_dataset(experiment.dataset, experiment.labels, cases, "training", cache_dir)
    fill = time.perf_counter()
    for case in cases:
        dataset.cache.load(case)
    fill = (time.perf_counter() - fill) / len(cases)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        item = time.perf_counter()
        for index in range(4):
            dataset[(index % len(cases), index)]
        item = (time.perf_counter() - item) / 4
    finally:
        torch.set_num_threads(threads)
    loader = make_loader(dataset, experiment.training.batch_size, shuffle=True, num_workers=workers, seed=0,
                         samples=samples)
    parts = bench_parts(experiment, device, experiment.training.amp)
    times = []
    for epoch in range(2):  # the first warms up the GPU (cuDNN, allocations)
        loader.generator.manual_seed(epoch)
        start = time.perf_counter()
        row = train_one_epoch(parts, loader, device, description="data wait")
        synchronize(device)
        times.append((row["data_time"], time.perf_counter() - start))
    waiting, total = times[-1]
    return [f"- cache fill: {fill:.1f} s per case (preprocessing, once)",
            f"- one training item (patch and augmentations) costs a worker {item:.2f} s",
            f"- {workers} loader worker(s), {samples} samples per epoch, batch {experiment.training.batch_size}: "
            f"waiting for data {100 * waiting / total:.1f}% of the epoch, {samples / total:.2f} samples/s"]


def fed_by(config, preset):
    """The recipe's config with its training batches augmented on the device by ``dataset.batch_augmentation``
    ``preset`` (the per-item augmentations off); None keeps the recipe's per-item augmentation in the workers."""
    if preset is None:
        return config
    dataset = {**config["dataset"], "spatial_augmentations": None, "intensity_augmentations": None,
               "batch_augmentation": preset}
    return {**config, "dataset": dataset}


def timed_epochs(parts, loader, device, seed, epochs):
    """``(data wait, epoch seconds, compile seconds)`` of each of ``epochs`` epochs of the training loop's
    ``train_one_epoch``; the epoch's seconds leave out compiling, as ``run_epoch``'s do."""
    times = []
    for epoch in range(1, epochs + 1):
        synchronize(device)
        start, compile_start = time.perf_counter(), compile_seconds()
        start_epoch(loader, seed, epoch)
        row = train_one_epoch(parts, loader, device, description=f"steady state, epoch {epoch}", epoch=epoch)
        synchronize(device)
        compile_time = compile_seconds() - compile_start
        times.append((row["data_time"], time.perf_counter() - start - compile_time, compile_time))
    return times


def first_batch_wait(loader, seed, epoch):
    """Seconds from the start of epoch ``epoch`` to its first batch: what every epoch's first step waits."""
    start_epoch(loader, seed, epoch)
    start = time.perf_counter()
    with batches(loader) as iterator:
        next(iterator)
        return time.perf_counter() - start


def steady_state(config, device, workers, samples, epochs, compile_model, cache_dir, smoke):
    """``(per epoch (data wait, seconds, compile seconds), first batch wait, samples/s of the step alone)`` of
    ``epochs`` epochs of ``samples`` samples of ``config``'s training, ``workers`` loader workers staying
    between epochs, float16 AMP on CUDA."""
    experiment = experiment_from_dict(config)
    settings = experiment.training
    torch.manual_seed(0)
    if compile_model:
        torch._dynamo.reset()  # compiled from scratch, as in a new training process
    parts = bench_parts(experiment, device, "fp16" if device.type == "cuda" else False)
    if compile_model:
        parts.network = compiled_for(parts.model, device)
    dataset = build_dataset(experiment.dataset, experiment.labels, experiment.labelled_cases("training"), "training",
                            cache_dir)
    loader = make_loader(dataset, settings.batch_size, shuffle=True, num_workers=workers, seed=settings.seed,
                         samples=samples)
    try:
        times = timed_epochs(parts, loader, device, settings.seed, epochs)
        start_wait = first_batch_wait(loader, settings.seed, epochs + 1)
    finally:
        del loader  # its workers end with it
        gc.collect()
    image, label = random_batch(experiment, experiment.in_channels, experiment.dataset.settings.patch_size,
                                settings.batch_size, device)
    steps, warmup = (2, 1) if smoke else (10, 3)
    return times, start_wait, step_rate(parts, image, label, steps, warmup, device)[0]


def steady_row(name, compile_model, samples, figures):
    """A markdown row of ``steady_state``'s figures: the first epoch apart, the median of the later ones."""
    times, start_wait, step = figures
    first_wait, first_seconds, _ = times[0]
    wait = statistics.median(waiting / seconds for waiting, seconds, _ in times[1:])
    rate = statistics.median(samples / seconds for _, seconds, _ in times[1:])
    met = "yes" if wait <= TARGET_WAIT and rate >= TARGET_RATIO * step else "no"
    return (f"| {name} | {compile_model} | {100 * first_wait / first_seconds:.1f}%, {samples / first_seconds:.2f} | "
            f"{100 * wait:.1f}% | {rate:.2f} | {step:.2f} | {rate / step:.2f} | {met} | {start_wait:.2f} | "
            f"{sum(compiling for _, _, compiling in times):.1f} |")


def steady_header(workers, samples, epochs, batch_size, device):
    """The markdown that introduces ``steady_rows``' table, and the table's header."""
    precision = "float16 AMP + GradScaler" if device.type == "cuda" else "float32 (CPU)"
    return [f"{workers} loader worker(s) staying between epochs, {epochs} epochs of {samples} samples (batch "
            f"{batch_size}) per path, {precision}: the first epoch (warm-up) apart, then the median of the later "
            "ones; the step alone is `train_step` on a batch already on the device. Targets (the issue's): data wait "
            f"<= {TARGET_WAIT:.0%} of the epoch, epoch samples/s >= {TARGET_RATIO:.2f} x the step alone (compiled "
            "float16; eager rows against the eager step). The first batch wait is paid once an epoch, so its share "
            "shrinks as epochs grow (the recipe's have 500 samples).", "",
            "| path | torch.compile | first epoch: data wait, samples/s | data wait (target <= 5%) | epoch samples/s "
            "| step alone samples/s | epoch / step alone (target >= 0.90) | targets met | first batch wait s "
            "| compile s |", "|---|---|---|---|---|---|---|---|---|---|"]


def steady_rows(config, device, workers, samples, epochs, seconds, budget, cache_dir, smoke):
    """Markdown lines: the steady state of training's data feeding for each of ``FEEDING``'s paths, eager, then
    compiled; paths that would not fit in ``seconds`` (or what is left of ``budget``) are reported skipped."""
    budget = Budget(min(seconds, budget.left()))
    lines = steady_header(workers, samples, epochs, experiment_from_dict(config).training.batch_size, device)
    eager_seconds, compile_seconds_guess = {}, 45  # a path's eager run, and what compiling took last
    for compile_model in (False, True):
        for name, preset in FEEDING:
            needed = eager_seconds.get(name, 30) + (compile_seconds_guess if compile_model else 0)
            skip = "time budget" if budget.left() < needed else None
            if smoke and compile_model and preset != "nnunet":
                skip = "--cpu-smoke compiles one path"  # compiling takes seconds even with the eager backend
            if skip:
                lines.append(f"| {name} | {compile_model} | skipped ({skip}) | | | | | | | |")
                print(lines[-1], flush=True)
                continue
            start = time.perf_counter()
            try:
                figures = steady_state(fed_by(config, preset), device, workers, samples, epochs, compile_model,
                                       cache_dir, smoke)
                lines.append(steady_row(name, compile_model, samples, figures))
                compile_seconds_guess = sum(compiling for *_, compiling in figures[0]) or compile_seconds_guess
            except Exception as error:  # one failing path must not hide the others
                traceback.print_exc()
                lines.append(f"| {name} | {compile_model} | failed: {(str(error).splitlines() or [''])[0][:80]} "
                             "| | | | | | | |")
            eager_seconds.setdefault(name, time.perf_counter() - start)
            print(lines[-1], flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return lines


def prediction_times(config, device, shape, repeats):
    """Markdown lines: seconds per case for unet3d's Inferer and plain MONAI sliding-window inference."""
    experiment = experiment_from_dict(config)
    model = experiment.model.build().to(device).eval()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if device.type == "cuda" else None
    inferer = Inferer.from_experiment(experiment, **({"autocast": autocast} if autocast else {}))
    window = tuple(experiment.window)
    image = torch.randn((1, 4, *shape), device=device)

    def plain():
        with torch.no_grad(), (autocast() if autocast else torch.autocast("cpu", enabled=False)):
            logits = sliding_window_inference(image, window, inferer.sw_batch_size, model, inferer.overlap, mode="gaussian")
            return torch.sigmoid(logits.float())

    def ours():
        return inferer.probabilities([model], image)

    best = {"plain": [], "ours": []}
    for _ in range(repeats + 1):  # the first round warms up (cuDNN autotuning, allocations)
        for name, function in (("plain", plain), ("ours", ours)):
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            best[name].append(time.perf_counter() - start)
    plain_time, ours_time = (statistics.median(best[name][1:]) for name in ("plain", "ours"))
    return [f"- {'x'.join(map(str, shape))} volume, window {window}, overlap {inferer.overlap}, "
            f"sw_batch_size {inferer.sw_batch_size}, no TTA: unet3d {ours_time:.2f} s, plain MONAI {plain_time:.2f} s "
            f"per case ({ours_time / plain_time:.2f}x; goals <= 1.10x and < 1 s)"]


def short_recipe(config, device, output_dir, smoke):
    """Markdown lines: two epochs (one with ``smoke``) of the recipe through ``unet3d.api.train`` (validation and
    its predictions)."""
    epochs = 1 if smoke else 2
    overrides = [f"training.n_epochs={epochs}", f"training.samples_per_epoch={1 if smoke else 16}"]
    start = time.perf_counter()
    work_dir = train(config, output_dir=output_dir, name="recipe", device=str(device), overrides=overrides,
                     num_workers=0 if smoke else min(4, os.cpu_count() or 1))
    wall = time.perf_counter() - start
    import pandas

    log = pandas.read_csv(Path(work_dir) / "training_log.csv")
    last = log.iloc[-1]
    dice = " ".join(f"{column[9:]} {last[column]:.3f}" for column in log.columns if column.startswith("val_dice_"))
    predictions = len(list(Path(work_dir).rglob("*.nii.gz")))
    return [f"- {epochs} epoch(s) of {overrides[1].split('=')[1]} samples: epoch times {', '.join(f'{t:.1f}' for t in log['epoch_time'])} s, "
            f"{wall:.0f} s in all with validation and {predictions} prediction(s) written; last validation Dice: {dice} "
            "(a run this short checks that the recipe runs, not what it scores)"]


def main(argv=None):
    """Run the parts and write the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at a tiny size on the CPU (seconds)")
    parser.add_argument("--output", type=Path, help="write the markdown here too")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole run (compiled variants fill what is left)")
    parser.add_argument("--workers", type=int, help="loader workers (default: one per CPU core but one)")
    parser.add_argument("--samples", type=int, default=200,
                        help="samples per epoch when timing the wait for data (the recipe trains 500)")
    parser.add_argument("--steady_samples", type=int, default=64,
                        help="samples per epoch of the steady state of data feeding (per path)")
    parser.add_argument("--steady_epochs", type=int, default=4,
                        help="epochs per path of the steady state of data feeding (the first warms up)")
    parser.add_argument("--steady_budget", type=float, default=180,
                        help="seconds for the steady state of data feeding (paths that would not fit are skipped)")
    parser.add_argument("--work_dir", type=Path, help="keep synthetic cases and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.steady_epochs < 2:
        parser.error("--steady_epochs must be 2 or more: the first epoch warms up")
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device (use --cpu-smoke to check the script on the CPU)")
    device = torch.device("cpu" if smoke else "cuda")
    threads = torch.get_num_threads()
    if smoke:
        torch.set_num_threads(1)  # tiny tensors: threads only add waiting, most of all on a busy machine
    try:
        return run_parts(args, smoke, device)
    finally:
        torch.set_num_threads(threads)


def run_parts(args, smoke, device):
    """Write the synthetic cases, run the five parts, print and write the markdown (after each part, so that
    a run stopped early still leaves what it measured)."""
    budget = Budget(args.budget)
    name = "CPU (--cpu-smoke, tiny sizes)" if smoke else torch.cuda.get_device_name(device)
    workers = args.workers if args.workers is not None else (0 if smoke else max(1, (os.cpu_count() or 2) - 1))
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="unet3d-gpu-"))
    shape = (24, 24, 20) if smoke else brats_shape(1.0)
    folders = {}
    for group, count, seed in (("train", 1 if smoke else 4, 100), ("validation", 1, 200)):
        folders[group] = root / "data" / group
        if not folders[group].is_dir():
            write_synthetic_brats(folders[group], count, shape, seed=seed)
    config = recipe_config(smoke, folders)
    print(f"# {name}, torch {torch.__version__}", flush=True)
    header = [f"## GPU benchmark: {name}", "", f"`benchmarks/gpu.py{' --cpu-smoke' if smoke else ''}`, torch "
              f"{torch.__version__}, {workers} loader worker(s).", "", "### Training step (random patches)", "",
              "| precision | channels_last_3d | torch.compile | samples/s | peak memory | warm-up s |",
              "|---|---|---|---|---|---|"]
    table, lines = [], []

    def write():
        text = "\n".join([*header, *table, "", *lines]) + "\n"
        if args.output:
            args.output.write_text(text)
        return text

    eager, compiled_ones = step_variants(smoke)
    table += step_rows(config, device, smoke, budget, eager)
    write()
    parts = [("Waiting for data", data_wait, (config, device, workers, 2 if smoke else args.samples, root / "cache")),
             ("Prediction per BraTS-size case", prediction_times,
              (config, device, (24, 24, 20) if smoke else (240, 240, 155), 1 if smoke else 3)),
             ("Short recipe run (synthetic 1 mm cases)", short_recipe, (config, device, root / "runs", smoke)),
             ("Steady state of training's data feeding", steady_rows,
              (config, device, workers, 3 if smoke else args.steady_samples,
               3 if smoke else args.steady_epochs, args.steady_budget, budget, root / "cache",
               smoke))]
    failed = False
    for title, function, arguments in parts:
        lines += [f"### {title}", ""]
        start = time.perf_counter()
        try:
            lines += function(*arguments)
        except Exception as error:  # one failing part must not hide the others
            traceback.print_exc()
            lines.append(f"- failed: {error.__class__.__name__}: {(str(error).splitlines() or [''])[0][:160]}")
            failed = True
        lines.append("")
        print(f"{title}: {time.perf_counter() - start:.0f} s", flush=True)
        write()
    table += step_rows(config, device, smoke, budget, compiled_ones)  # compiling takes what time is left
    print(write())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
