#!/usr/bin/env bash
# Runs the whole test suite (real terraform, SQLite and a throwaway PostgreSQL server) on two
# workers. Arguments go to pytest, e.g. ./run-tests.sh tests/cli -k bad_input
set -uo pipefail
cd "$(dirname "$0")"

status=0
.venv/bin/python -m pytest -n 2 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "run-tests.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
