#!/usr/bin/env bash
# Set up .venv and run the test suite; extra arguments go to pytest (e.g. -m "not slow").
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "tools/test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
