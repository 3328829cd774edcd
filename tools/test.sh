#!/usr/bin/env bash
# Set up .venv and run the test suite; extra arguments go to pytest (e.g. -m "not slow").
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh || exit 1
# One worker per core (at most 4): most tests wait on the console scripts they start, so two
# workers on two cores finish the default suite in two thirds of the time of one.
.venv/bin/python -m pytest -n auto --maxprocesses 4 "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "tools/test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
