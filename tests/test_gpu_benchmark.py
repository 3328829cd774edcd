"""benchmarks/gpu.py runs every part on the CPU at a tiny size, so the GPU command is ready when a GPU is."""

import math
import re

import pytest

from helpers import REPO, load_module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The benchmark module and the markdown its ``--cpu-smoke`` run wrote (one run for the tests below)."""
    benchmark = load_module(REPO / "benchmarks" / "gpu.py", "gpu_benchmark")
    folder = tmp_path_factory.mktemp("gpu")
    output = folder / "gpu.md"
    assert benchmark.main(["--cpu-smoke", "--work_dir", str(folder / "work"), "--output", str(output)]) == 0
    return benchmark, output.read_text()


def table_rows(section):
    """The cells of a markdown section's table rows, header and separator left out."""
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def test_gpu_benchmark_smoke_writes_every_part(smoke):
    text = smoke[1]
    sections = {part.split("\n", 1)[0]: part for part in text.split("\n### ")[1:]}
    assert set(sections) == {"Training step (random patches)", "Waiting for data", "Prediction per BraTS-size case",
                             "Short recipe run (synthetic 1 mm cases)", "Steady state of training's data feeding"}
    rows = table_rows(sections["Training step (random patches)"])
    assert {row[0] for row in rows} == {"float32", "float16 AMP + GradScaler", "bfloat16"}
    assert all(re.fullmatch(r"\d+\.\d\d", row[3]) for row in rows), rows  # every variant ran and was timed
    assert re.search(r"unet3d \d+\.\d\d s, plain MONAI \d+\.\d\d s per case \(\d+\.\d\dx", text)
    assert re.search(r"loader worker\(s\), 2 samples per epoch, batch 1: waiting for data \d+\.\d% of the epoch", text)
    assert re.search(r"one training item \(patch and augmentations\) costs a worker \d+\.\d\d s", text)
    assert re.search(r"1 prediction\(s\) written; last validation Dice: WT \d\.\d{3}", text)


def steady_figures(row):
    """The figures of a steady-state row: first epoch's wait and samples/s, wait, samples/s, step alone, ratio,
    first batch wait, compile seconds."""
    first_wait, first_rate = row[2].split(", ")
    return [float(value.rstrip("%")) for value in (first_wait, first_rate, *row[3:7], *row[8:])]


def test_gpu_benchmark_smoke_steady_state_of_data_feeding(smoke):
    benchmark, text = smoke
    section = text.split("### Steady state of training's data feeding")[1].split("\n### ")[0]
    assert "3 epochs of 3 samples (batch 1) per path" in section
    assert "data wait (target <= 5%)" in section and "epoch / step alone (target >= 0.90)" in section
    rows = {(row[0], row[1]): row for row in table_rows(section)}
    paths = [name for name, _ in benchmark.FEEDING]
    assert set(rows) == {(name, compiled) for name in paths for compiled in ("False", "True")}
    measured = [rows[name, "False"] for name in paths] + [rows['batch_augmentation "nnunet" on the device', "True"]]
    for row in measured:
        assert len(row) == 10, row
        figures = steady_figures(row)
        assert all(math.isfinite(value) and value > 0 for value in figures[:6]), row
        assert math.isfinite(figures[6]) and figures[6] >= 0, row  # the first batch's wait rounds to 0.00 when fast
        assert row[7] in ("yes", "no")
        ratio = figures[3] / figures[4]
        assert abs(figures[5] - ratio) <= 0.01 + 0.01 * ratio, row  # the ratio is of the figures beside it
    assert all(float(row[9]) == 0 for row in measured[:3]) and float(measured[3][9]) > 0  # compiling reported apart
    skipped = [rows[name, "True"] for name in paths[:2]]
    assert all(row[2] == "skipped (--cpu-smoke compiles one path)" for row in skipped), skipped
