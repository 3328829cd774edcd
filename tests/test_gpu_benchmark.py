"""benchmarks/gpu.py runs every part on the CPU at a tiny size, so the GPU command is ready when a GPU is."""

import importlib.util
import re

from helpers import REPO


def test_gpu_benchmark_smoke_writes_every_part(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    output = tmp_path / "gpu.md"
    assert benchmark.main(["--cpu-smoke", "--work_dir", str(tmp_path / "work"), "--output", str(output)]) == 0
    text = output.read_text()
    for heading in ("Training step", "Waiting for data", "Prediction per BraTS-size case", "Short recipe run"):
        assert f"### {heading}" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "samples/s" not in line]
    assert {row.split(" | ")[0][2:] for row in rows} == {"float32", "float16 AMP + GradScaler", "bfloat16"}
    assert all(re.search(r"\| \d+\.\d\d \|", row) for row in rows), rows  # every variant ran and was timed
    assert re.search(r"unet3d \d+\.\d\d s, plain MONAI \d+\.\d\d s per case \(\d+\.\d\dx", text)
    assert re.search(r"loader worker\(s\), 2 samples per epoch, batch 1: waiting for data \d+\.\d% of the epoch", text)
    assert re.search(r"one training item \(patch and augmentations\) costs a worker \d+\.\d\d s", text)
    assert re.search(r"1 prediction\(s\) written; last validation Dice: WT \d\.\d{3}", text)
