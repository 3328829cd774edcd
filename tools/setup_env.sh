#!/usr/bin/env bash
# Create (or update) the project environment in .venv: torch first, pinned, so that
# nothing pulls an unpinned torch with gigabytes of CUDA packages; then unet3d itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
# Environments made before the distribution was renamed hold it as "unet3d".
.venv/bin/python -m pip uninstall --quiet --yes unet3d 2>/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
