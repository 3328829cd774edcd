"""What one training item costs, against loading the whole float32 crop, and what the cache keeps per case.

On synthetic BraTS-size cases (240x240x155, LPS, int16) and the patch-based settings of
``examples/brats2020/brats2020_patches_config.json`` (1 mm, cropped to the brain, 96³
patches, the example's augmentation) this reports, measured side by side in one run:

- the cache's size per case against the float32 crop (what the cache held before: the
  normalised image as float32 ``.npy``, plus three uint8 region channels), and against a
  float16 ``.npy`` + uint8 label ``.npy`` alternative (memory-mapped, uncompressed);
- reading one 96³ patch from the cache (Blosc2 chunks) and from the float16 ``.npy`` (memory-mapped);
- the median cost of one training item (``dataset[(index, seed)]``: patch read, target
  channels, augmentation) against the median ``np.load`` of that case's whole float32 crop,
  the two alternating so that load on the machine hits both alike (the goal: at most 1.0x),
  and of the same item without the augmentation (the patch read and its targets);
- the batched path (``dataset.batch_augmentation``, presets ``"default"``, the same augmentation, and
  ``"nnunet"``): a worker's item (the patch read with its label values, larger for ``"nnunet"``)
  plus the batched augmentation of a batch of ``--batch`` such items on the CPU (one thread), divided
  by the batch size, against ``np.load`` in the same alternation;
- with ``--stages``, the batched augmentation's CPU time per element by stage (its own functions wrapped
  in timers), and with ``--against REV`` the batched augmentation of git revision ``REV`` on the same
  batches, the two in turn (before and after a change, in one run);
- a plain MONAI pipeline's item (``Dataset`` + ``LoadImaged`` ... ``RandCropByPosNegLabeld``
  and the same augmentation on every item, no cache), as the same ratio;
- with ``--epochs``: the share of the epoch spent waiting for data, training the example's own
  step with ``--workers`` loader workers.

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/data_pipeline.py [--cases 4] [--items 60] [--workers 1] [--epochs 2]
    .venv/bin/python benchmarks/data_pipeline.py --cases 3 --batched_only --presets default --stages --against REV
"""

import argparse
import collections
import contextlib
import dataclasses
import shutil
import statistics
import subprocess
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from monai.data import Dataset, pad_list_data_collate
from monai.transforms import Compose, RandCropByPosNegLabeld

from unet3d.config.experiment import load_experiment, make_case
from unet3d.config.batch_augmentation import parse_batch_augmentation
from unet3d.data import batch_augmentation as batch_module
from unet3d.data.batch_augmentation import BatchAugmentation
from unet3d.data.brats import brats_cases
from unet3d.data.dataset import SegmentationDataset, build_dataset
from unet3d.data.loaders import make_loader, start_epoch
from unet3d.data.patches import LabelTargetsd
from unet3d.data.synthetic import write_synthetic_brats
from unet3d.data.transforms import augmentations
from unet3d.train.loop import train_one_epoch
from unet3d.train.parts import build_parts

REPO = Path(__file__).resolve().parents[1]


def timed(function):
    """``(wall seconds, CPU seconds)`` of one call of ``function``."""
    start, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - start, time.process_time() - cpu


def medians(pairs):
    """Median wall and median CPU seconds of ``(wall, cpu)`` pairs."""
    return statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs)


def plain_monai(dataset, settings, labels, data):
    """unet3d's steps as a plain MONAI pipeline would run them: every item from the NIfTI files, label
    channels made before cropping, ``RandCropByPosNegLabeld`` scanning the whole label."""
    share = settings.foreground_oversampling
    steps = [*dataset.preprocess.transforms, LabelTargetsd(labels),
             RandCropByPosNegLabeld(["image", "label"], label_key="label", spatial_size=settings.patch_size,
                                    pos=share, neg=1 - share, num_samples=settings.patches_per_case, allow_smaller=True)]
    steps += augmentations(settings.spatial_augmentations, ["image", "label"])
    steps += augmentations(settings.intensity_augmentations, "image")
    return Dataset([case.as_dict() for case in data], transform=Compose(steps))


def storage(cached, data, root):
    """Sizes per case (bytes) of the cache entry, the float32 crop and the float16 .npy alternative; patch read times."""
    import blosc2

    sizes = {"cache": [], "float32 crop": [], "float32 crop + 3 uint8 regions (before)": [], "float16 + uint8 .npy": []}
    reads = {"cache (Blosc2 chunks)": [], "float16 .npy (memory-mapped)": [],
             "cache, float16 alone (no conversion)": [], "cache, the label values (uint8)": []}
    patch = cached.random.transforms[0].patch_size
    for case in data:
        entry = cached.cache.entry(case)
        stored = cached.cache.load(case)
        image = np.asarray(stored["image"][:], dtype=np.float32)
        crop = root / "crops" / f"{case.id}.npy"
        crop.parent.mkdir(exist_ok=True)
        np.save(crop, image)
        np.save(root / "crops" / "f16.npy", image.astype(np.float16))
        np.save(root / "crops" / "label.npy", stored["label"][:])
        sizes["cache"].append(sum(f.stat().st_size for f in entry.iterdir()))
        sizes["float32 crop"].append(crop.stat().st_size)
        sizes["float32 crop + 3 uint8 regions (before)"].append(crop.stat().st_size + 3 * stored["label"][:].size)
        sizes["float16 + uint8 .npy"].append(sum((root / "crops" / n).stat().st_size for n in ("f16.npy", "label.npy")))
        box = (slice(None), *(slice(n // 4, n // 4 + p) for n, p in zip(image.shape[1:], patch)))
        mapped = np.load(root / "crops" / "f16.npy", mmap_mode="r")
        for _ in range(5):
            reads["cache (Blosc2 chunks)"].append(timed(
                lambda: np.asarray(blosc2.open(str(entry / "image.b2nd"), mode="r")[box], dtype=np.float32))[0])
            reads["float16 .npy (memory-mapped)"].append(timed(lambda: np.asarray(mapped[box], dtype=np.float32))[0])
            half = blosc2.open(str(entry / "image.b2nd"), mode="r")
            reads["cache, float16 alone (no conversion)"].append(timed(lambda: half[box])[0])
            label = blosc2.open(str(entry / "label.b2nd"), mode="r")
            reads["cache, the label values (uint8)"].append(timed(lambda: label[box[1:]])[0])
    return sizes, reads


def item_costs(cached, bare, plain, data, root, items):
    """Median ``(wall, CPU)`` seconds of a training item, of the same item without augmentation (``bare``: the
    patch read and its targets), of ``np.load`` of its case's float32 crop, and of a plain MONAI item; and the
    mean of the training item."""
    ours, patches, loads = [], [], []
    rng = np.random.default_rng(0)
    for number in range(items):
        index = number % len(data)
        seed = int(rng.integers(2**31))
        ours.append(timed(lambda: cached[(index, seed)]))
        loads.append(timed(lambda: np.load(root / "crops" / f"{data[index].id}.npy")))
        patches.append(timed(lambda: bare[(index, seed)]))
    plain_times = []
    for index in range(len(data)):
        plain.transform.set_random_state(index)
        plain_times.append(timed(lambda: plain[index]))
        loads.append(timed(lambda: np.load(root / "crops" / f"{data[index].id}.npy")))
    mean = statistics.mean(w for w, _ in ours), statistics.mean(c for _, c in ours)
    return medians(ours), medians(patches), medians(loads), medians(plain_times), mean


def batched_costs(experiment, data, root, items, batch, preset, repeats=100):
    """With ``dataset.batch_augmentation`` ``preset``: median ``(wall, CPU)`` seconds of a worker's item (the patch
    and its label values); the median and mean ``(wall, CPU)`` of the batched augmentation (with the targets) of
    batches of ``batch`` such items, per item, over ``repeats`` batch indices (20% of the elements rotate in
    ``"default"``: a few batches decide a median); and the median ``np.load`` of a case's float32 crop, timed
    after each read and each batch alike. Also the batches, for ``stage_costs``."""
    recipe = parse_batch_augmentation(preset, "dataset.batch_augmentation")
    settings = dataclasses.replace(experiment.dataset.settings, spatial_augmentations=None,
                                   intensity_augmentations=None, batch_augmentation=recipe)
    dataset = SegmentationDataset(data, settings, experiment.labels, "training", root / "cache")
    augmentation = BatchAugmentation(recipe, experiment.labels, settings.patch_size, seed=0)
    reads, loads, made = [], [], []
    rng = np.random.default_rng(0)
    for number in range(items):
        index = number % len(data)
        reads.append(timed(lambda: made.extend(dataset[(index, int(rng.integers(2**31)))])))
        loads.append(timed(lambda: np.load(root / "crops" / f"{data[index].id}.npy")))
    collated = [pad_list_data_collate(made[start:start + batch]) for start in range(0, len(made) - batch + 1, batch)]
    batches = [(item["image"].as_tensor(), item["label"].as_tensor().float()) for item in collated]
    augmented = []
    for number in range(repeats):
        image, label = batches[number % len(batches)]
        image = image.clone()  # changed in place
        wall, cpu = timed(lambda: augmentation(image, label, 0, number))
        augmented.append((wall / batch, cpu / batch))
        loads.append(timed(lambda: np.load(root / "crops" / f"{data[number % len(data)].id}.npy")))
    means = (statistics.mean(w for w, _ in augmented), statistics.mean(c for _, c in augmented))
    return {"read": medians(reads), "load": medians(loads), "median": medians(augmented), "mean": means,
            "shape": tuple(made[0]["image"].shape[1:]), "augmentation": augmentation, "batches": batches}


STAGES = {"draw_parameters": "parameters", "resample": "resample", "sampling_grid": "resample: the grid",
          "sample_nearest": "resample: label (nearest)", "flip_in_place": "flips", "flipped": "flips",
          "label_targets": "targets", "apply_intensity": lambda name, *args: f"intensity: {name}"}


def stage_costs(augmentation, batches, module=batch_module, repeats=100):
    """Mean CPU seconds per element of each stage of ``augmentation`` (of ``module``, this checkout's or a revision's)
    over ``repeats`` batches: the module's own functions, ``grid_sample`` and without ``label_targets`` the scheme's
    ``targets``, each wrapped in a timer (the rest of ``resample`` is the cuts and copies), and what lies outside."""
    spent = collections.Counter()

    def timer(name, function):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name(*args, **kwargs) if callable(name) else name] += time.process_time() - start
        return wrapper

    def sampled(*args, mode="bilinear", **kwargs):
        return "resample: image (trilinear)" if mode == "bilinear" else "resample: label (nearest)"

    with contextlib.ExitStack() as stack:
        for attribute, name in STAGES.items():
            if hasattr(module, attribute):
                stack.enter_context(mock.patch.object(module, attribute, timer(name, getattr(module, attribute))))
        stack.enter_context(mock.patch.object(torch.nn.functional, "grid_sample",
                                              timer(sampled, torch.nn.functional.grid_sample)))
        if not hasattr(module, "label_targets"):
            scheme = type(augmentation.labels)
            stack.enter_context(mock.patch.object(scheme, "targets", timer("targets", scheme.targets)))
        elements = 0
        for number in range(repeats):
            image, label = batches[number % len(batches)]
            image = image.clone()
            spent["all"] += timed(lambda: augmentation(image, label, 0, number))[1]
            elements += len(image)
    inner = sum(seconds for name, seconds in spent.items() if name.startswith("resample:"))
    spent["resample: cuts, copies"] = spent.pop("resample") - inner
    spent["other"] = spent["all"] - sum(seconds for name, seconds in spent.items() if name != "all")
    return {name: seconds / elements for name, seconds in spent.items()}


def revision_module(revision):
    """``unet3d.data.batch_augmentation`` as it was at git ``revision``, imported beside this checkout's (its own
    imports come from this checkout)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:unet3d/data/batch_augmentation.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"batch_augmentation_at_{revision}")
    exec(compile(source, module.__name__, "exec"), module.__dict__)
    return module


def against_costs(costs, theirs, revision, repeats=100):
    """Mean ``(wall, CPU)`` seconds per element of this checkout's batched augmentation and of ``theirs``
    (``revision``'s, the same recipe), on the same batches, each batch augmented by the two in turn."""
    ours = costs["augmentation"]
    times = {"this checkout": [], revision: []}
    for number in range(repeats):
        image, label = costs["batches"][number % len(costs["batches"])]
        for name, augmentation in (("this checkout", ours), (revision, theirs)):
            copy = image.clone()
            wall, cpu = timed(lambda: augmentation(copy, label, 0, number))
            times[name].append((wall / len(image), cpu / len(image)))
    return {name: (statistics.mean(w for w, _ in pairs), statistics.mean(c for _, c in pairs))
            for name, pairs in times.items()}


def print_batched(preset, costs, args):
    """Print ``batched_costs``'s figures for ``preset``."""
    read, load = costs["read"], costs["load"]
    print(f"batched \"{preset}\", the worker's item (read {costs['shape']}, label values; median of {args.items}): "
          f"{1000 * read[0]:.1f} ms wall = {read[0] / load[0]:.2f}x np.load ({1000 * load[0]:.1f} ms wall, "
          f"{1000 * load[1]:.1f} ms CPU), {1000 * read[1]:.1f} ms CPU = {read[1] / load[1]:.2f}x (goal <= 1.0x)")
    for name in ("median", "mean"):
        cost = costs[name]
        total = (read[0] + cost[0], read[1] + cost[1])
        print(f"  + its share of the batched augmentation on the CPU (batches of {args.batch}, {name} of 100): "
              f"{1000 * cost[0]:.1f} ms wall, {1000 * cost[1]:.1f} ms CPU; item in all {total[0] / load[0]:.2f}x "
              f"np.load wall, {total[1] / load[1]:.2f}x CPU")
    ours = costs["augmentation"]
    compared = [("this checkout", ours, batch_module)]
    if args.against:
        module = revision_module(args.against)
        theirs = module.BatchAugmentation(ours.recipe, ours.labels, ours.patch_size, ours.seed)
        compared.append((args.against, theirs, module))
        for name, cost in against_costs(costs, theirs, args.against).items():
            print(f"  {name}'s batched augmentation, the same batches in turn (mean of 100): {1000 * cost[1]:.1f} ms "
                  f"CPU per item; item in all {(read[0] + cost[0]) / load[0]:.2f}x np.load wall, "
                  f"{(read[1] + cost[1]) / load[1]:.2f}x CPU")
    for name, augmentation, module in compared if args.stages else ():
        stages = stage_costs(augmentation, costs["batches"], module)
        print(f"  {name}'s batched augmentation by stage, mean ms CPU per element: " + ", ".join(
            f"{stage} {1000 * seconds:.1f}" for stage, seconds in sorted(stages.items(), key=lambda pair: -pair[1])))


def waiting_share(experiment, cached, workers, epochs):
    """Share of the epoch spent waiting for batches after the first epoch, training the example's step
    (``train_step`` of its ``build_parts``) on the CPU."""
    torch.manual_seed(0)
    parts = build_parts(experiment, torch.device("cpu"))
    loader = make_loader(cached, batch_size=1, shuffle=True, num_workers=workers, seed=0)
    waiting = total = 0.0
    for epoch in range(epochs + 1):
        start_epoch(loader, seed=0, epoch=epoch)
        start = time.perf_counter()
        row = train_one_epoch(parts, loader, torch.device("cpu"), description=f"epoch {epoch}")
        if epoch:  # the first pass warms the workers and the page cache
            waiting += row["data_time"]
            total += time.perf_counter() - start
    return waiting / total


def print_item_costs(experiment, cached, data, root, items):
    """Print ``item_costs``'s figures: the per-item path, its patch alone, and a plain MONAI pipeline's item."""
    settings = experiment.dataset.settings.for_split("training")
    # The same patches without the example's augmentation: what reading a patch and making its targets costs.
    bare = SegmentationDataset(data, dataclasses.replace(experiment.dataset.settings, spatial_augmentations=None,
                                                         intensity_augmentations=None),
                               experiment.labels, "training", root / "cache")
    ours, patch, load, plain, mean = item_costs(cached, bare, plain_monai(cached, settings, experiment.labels, data),
                                                data, root, items)
    print(f"np.load of the whole float32 crop: {1000 * load[0]:.1f} ms wall, {1000 * load[1]:.1f} ms CPU (medians)")
    for name, cost, count in (("unet3d", ours, items), ("unet3d without augmentation", patch, items),
                              ("plain MONAI", plain, len(data))):
        print(f"training item, {name} (median of {count}): {1000 * cost[0]:.1f} ms wall = {cost[0] / load[0]:.2f}x np.load, "
              f"{1000 * cost[1]:.1f} ms CPU = {cost[1] / load[1]:.2f}x (goal for unet3d <= 1.0x)")
    print(f"training item, unet3d, mean of {items} (the 20% of items that rotate count): {1000 * mean[0]:.1f} ms "
          f"wall = {mean[0] / load[0]:.2f}x np.load, {1000 * mean[1]:.1f} ms CPU = {mean[1] / load[1]:.2f}x")


def main():
    """Print the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--items", type=int, default=60, help="training items timed (cases in turn, random seeds)")
    parser.add_argument("--epochs", type=int, default=0, help="also measure the wait for data over this many epochs")
    parser.add_argument("--workers", type=int, default=1, help="data loader worker processes (with --epochs)")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the batched augmentation")
    parser.add_argument("--data_dir", help="reuse synthetic cases written here (default: a temporary folder)")
    parser.add_argument("--batched_only", action="store_true", help="only the batched path's figures (and the crops)")
    parser.add_argument("--presets", nargs="+", default=["default", "nnunet"], help="batched augmentation presets")
    parser.add_argument("--stages", action="store_true", help="also the batched augmentation's cost per stage")
    parser.add_argument("--against", help="also time the batched augmentation of this git revision, in turn")
    args = parser.parse_args()

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="unet3d-bench-"))
    if not (root / "data").is_dir():
        write_synthetic_brats(root / "data", args.cases, shape=(240, 240, 155), orientation="LPS", dtype="int16")
    data = [make_case(entry) for entry in brats_cases(root / "data")[: args.cases]]
    experiment = load_experiment(REPO / "examples" / "brats2020" / "brats2020_patches_config.json")
    shutil.rmtree(root / "cache", ignore_errors=True)
    cached = build_dataset(experiment.dataset, experiment.labels, data, "training", root / "cache")
    settings = experiment.dataset.settings.for_split("training")
    fill = [timed(lambda: cached.cache.load(case))[0] for case in data]
    # Items are made in loader workers, which run one torch and one Blosc2 thread each.
    torch.set_num_threads(1)
    import blosc2

    blosc2.set_nthreads(1)
    print(f"{len(data)} cases of 240x240x155 (LPS, int16), patch {settings.patch_size}, "
          f"1 thread as in a loader worker; filling the cache: {statistics.median(fill):.2f} s per case")

    sizes, reads = storage(cached, data, root)
    crop = statistics.median(sizes["float32 crop"])
    for name, values in sizes.items():
        print(f"size per case, {name}: {statistics.median(values) / 2**20:.1f} MiB "
              f"({100 * statistics.median(values) / crop:.0f}% of the float32 crop)")
    for name, values in reads.items():
        print(f"one {settings.patch_size[0]}³ patch (4 channels) from the {name}: {1000 * statistics.median(values):.1f} ms")

    if not args.batched_only:
        print_item_costs(experiment, cached, data, root, args.items)
    for preset in args.presets:
        print_batched(preset, batched_costs(experiment, data, root, args.items, args.batch, preset), args)
    if args.epochs:
        share = waiting_share(experiment, cached, args.workers, args.epochs)
        print(f"waiting for data with {args.workers} worker(s): {100 * share:.1f}% of the epoch")
    if not args.data_dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
