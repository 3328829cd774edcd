#!/usr/bin/env bash
# Set up .venv, write a small synthetic BraTS data set (14 cases of 48^3 voxels) and train the CPU
# demo: 2 cross-validation folds, then predictions for each fold's validation cases and the test group.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
cd examples/brats2020
if [ ! -d synthetic/train ]; then
    ../../.venv/bin/python make_synthetic_data.py --output_dir synthetic/train --n_cases 12
    ../../.venv/bin/python make_synthetic_data.py --output_dir synthetic/test --n_cases 2 \
        --prefix BraTS20_Validation --no_label --seed 1
fi
../../.venv/bin/unet3d-train --config_filename demo_config.json --device cpu "$@"
echo "demo outputs: examples/brats2020/demo_config/"
