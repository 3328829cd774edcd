"""How long training waits for data, with unet3d's preprocessing cache and without it.

On synthetic BraTS-size cases (240x240x155, LPS, int16) and the patch-based settings of
``examples/brats2020/brats2020_patches_config.json`` this reports:

- the first epoch's and later epochs' data time per case (the first fills the cache);
- the share of step time spent waiting for data after the first epoch, training a small
  DynUNet with the loader's workers loading ahead (the target is under 5%);
- the cache's size per case;
- a plain MONAI pipeline's later-epoch data time per case (``Dataset`` + ``LoadImaged`` and
  the same transforms every epoch), and its ratio to unet3d's.

Not a test. Run from the repository root:

    .venv/bin/python benchmarks/data_pipeline.py [--cases 4] [--epochs 3] [--workers 1]
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from monai.data import Dataset
from monai.networks.nets import DynUNet

from unet3d.config.experiment import load_experiment, make_case
from unet3d.data.brats import brats_cases
from unet3d.data.dataset import build_dataset
from unet3d.data.loaders import batches, make_loader
from unet3d.data.synthetic import write_synthetic_brats

REPO = Path(__file__).resolve().parents[1]


def example_experiment():
    """The patch-based BraTS example (its data need not exist)."""
    return load_experiment(REPO / "examples" / "brats2020" / "brats2020_patches_config.json")


def timed_epoch(loader, model=None, optimizer=None):
    """``(seconds waiting for batches, seconds in all, number of cases)`` for one pass."""
    waiting, count, start = 0.0, 0, time.perf_counter()
    with batches(loader) as iterator:
        while True:
            before = time.perf_counter()
            batch = next(iterator, None)
            waiting += time.perf_counter() - before
            if batch is None:
                break
            count += len(batch["id"]) if isinstance(batch["id"], list) else 1
            if model is not None:
                optimizer.zero_grad()
                loss = torch.sigmoid(model(batch["image"])).sub(batch["label"]).abs().mean()
                loss.backward()
                optimizer.step()
    return waiting, time.perf_counter() - start, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="epochs with the cache (the first fills it)")
    parser.add_argument("--workers", type=int, default=1, help="data loader worker processes")
    parser.add_argument("--data_dir", help="reuse synthetic cases written here (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="unet3d-bench-"))
    if not (root / "data").is_dir():
        write_synthetic_brats(root / "data", args.cases, shape=(240, 240, 155), orientation="LPS", dtype="int16")
    data = [make_case(entry) for entry in brats_cases(root / "data")[: args.cases]]
    experiment = example_experiment()
    cache_dir = root / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cached = build_dataset(experiment.dataset, experiment.labels, data, "training", cache_dir)
    uncached = build_dataset(experiment.dataset, experiment.labels, data, "training")
    plain = Dataset([case.as_dict() for case in data], transform=uncached.transform)

    torch.manual_seed(0)
    model = DynUNet(3, 4, 3, kernel_size=[3] * 4, strides=[1, 2, 2, 2], upsample_kernel_size=[2] * 3,
                    filters=[8, 16, 32, 64])
    optimizer = torch.optim.Adam(model.parameters())
    loader = make_loader(cached, batch_size=1, shuffle=True, num_workers=args.workers, seed=0)
    print(f"{len(data)} cases of 240x240x155 (LPS, int16), patch {experiment.dataset.settings.patch_size}, "
          f"{args.workers} worker(s), {torch.get_num_threads()} torch thread(s)")
    later = []
    for epoch in range(1, args.epochs + 1):
        loader.generator.manual_seed(epoch)
        waiting, total, count = timed_epoch(loader, model, optimizer)
        print(f"epoch {epoch}: {total / count:.2f} s per case, waiting for data {waiting / count:.3f} s per case "
              f"({100 * waiting / total:.1f}% of step time)")
        if epoch > 1:
            later.append((waiting, total, count))
    del loader

    # Data time alone, without a model and in the main process: the cost a worker must hide.
    serial = make_loader(cached, batch_size=1, shuffle=True, num_workers=0, seed=0)
    cached_time, _, count = timed_epoch(serial)
    plain_loader = make_loader(plain, batch_size=1, shuffle=True, num_workers=0, seed=0)
    plain_time, _, _ = timed_epoch(plain_loader)
    size = sum(f.stat().st_size for f in cache_dir.glob("*/*")) / len(data)
    waiting = sum(w for w, _, _ in later) / sum(t for _, t, _ in later)
    print(f"later epochs: waiting for data {100 * waiting:.1f}% of step time (target < 5%)")
    print(f"data time per case, later epoch, no workers: unet3d cache {cached_time / count:.3f} s, "
          f"plain MONAI {plain_time / count:.3f} s ({plain_time / cached_time:.1f}x)")
    print(f"cache size per case: {size / 2**20:.1f} MiB")
    if not args.data_dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
