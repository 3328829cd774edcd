#!/usr/bin/env bash
# Set up .venv, write a small synthetic BraTS data set (16 training + 2 test cases at 2 mm, 120 x 120 x 78
# voxels) and train the CPU recipe on it: 2 cross-validation folds, then predictions for each fold's
# validation cases and the test group, their evaluation and a cross-validation summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
cd examples/brats2020
if [ ! -f synthetic_2mm/complete ]; then
    ../../.venv/bin/python make_synthetic_data.py --output_dir synthetic_2mm/train --n_cases 16 --spacing 2
    ../../.venv/bin/python make_synthetic_data.py --output_dir synthetic_2mm/test --n_cases 2 --spacing 2 \
        --prefix BraTS20_Validation --no_label --seed 1
    touch synthetic_2mm/complete
fi
# 20 epochs per fold instead of the recipe's 32, and predictions without the recipe's test-time mirroring (8 passes
# over every case predicted), so that the demo takes under 10 minutes on two cores.
../../.venv/bin/unet3d-train --config_filename cpu_recipe_config.json --device cpu --set training.n_epochs=20 \
    --set prediction.tta=false "$@"
echo "demo outputs: examples/brats2020/cpu_recipe_config/"
