#!/usr/bin/env bash
# Sets up a checkout for development and testing: a virtual environment in .venv with iacctl
# (editable) and the test tools. The tests also need the PostgreSQL server programs (installed
# here from Debian's packages when missing and we are root) and terraform on PATH.
set -euo pipefail
cd "$(dirname "$0")"

updated=0
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: please install $* (e.g. sudo apt-get install $*)" >&2
        return 0
    fi
    if [ "$updated" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    apt_install postgresql
fi

if [ ! -x .venv/bin/python ]; then
    # Debian's python3 needs python3-venv for this.
    python3 -m venv .venv || { apt_install python3-venv && python3 -m venv .venv; }
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install -e '.[test]'

if ! command -v terraform >/dev/null; then
    echo "setup.sh: terraform is not on PATH; the tests run the real terraform (1.11)" >&2
fi
