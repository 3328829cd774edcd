"""How long does unet3d-plan take to fingerprint BraTS-size data? Write N cases, time the fingerprint.

Writes ``--n_cases`` BraTS-size cases (four int16 modalities and a label map of 240 x 240 x 155
voxels, as BraTS ships them) into ``--data_dir`` once: ``--distinct`` synthetic cases
(``unet3d.data.synthetic``), copied under new names to make up the rest. Then it times
``unet3d.plan.fingerprint.dataset_fingerprint`` with ``--workers`` processes, as unet3d-plan runs
it, and prints the wall time, the CPU time of the workers and the median seconds per case.

Not a test. Run from the repository root, for example:

    .venv/bin/python benchmarks/plan_speed.py --n_cases 100 --workers 2
"""

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from unet3d.data.synthetic import BRATS_SHAPE, write_synthetic_brats
from unet3d.plan.fingerprint import dataset_fingerprint
from unet3d.plan.layouts import read_layout


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_cases", type=int, default=100)
    parser.add_argument("--distinct", type=int, default=4, help="synthetic cases written; the rest are copies")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data_dir", type=Path, default=Path(tempfile.gettempdir()) / "unet3d_plan_speed")
    return parser.parse_args(argv)


def write_cases(folder, n_cases, distinct):
    """``n_cases`` BraTS-size case folders under ``folder`` (written once)."""
    if (folder / "complete").is_file():
        return
    sources = write_synthetic_brats(folder / "sources", distinct, BRATS_SHAPE, seed=7, dtype="int16")
    for index in range(1, n_cases + 1):
        source = sources[(index - 1) % distinct]
        case = f"BraTS20_Training_{index:03d}"
        (folder / "cases" / case).mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            shutil.copyfile(path, folder / "cases" / case / path.name.replace(source.name, case))
    (folder / "complete").touch()


def main(argv=None):
    args = parse_args(argv)
    folder = args.data_dir / f"{args.n_cases}_cases"
    write_cases(folder, args.n_cases, args.distinct)
    layout = read_layout(folder / "cases")
    start = time.perf_counter()
    fingerprint = dataset_fingerprint(layout, args.workers)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = usage.ru_utime + usage.ru_stime
    print(f"{args.n_cases} cases of 4 x {' x '.join(map(str, BRATS_SHAPE))} int16 + label, {args.workers} workers: "
          f"{wall:.1f} s wall, {workers_cpu:.1f} s CPU in the workers, "
          f"median {fingerprint['read_seconds']['median_cpu_per_case']:.2f} CPU-seconds per case")


if __name__ == "__main__":
    main()
