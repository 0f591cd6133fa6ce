#!/usr/bin/env bash
# Create .venv with the pinned stack (requirements.txt), install the grading package, and make
# sure bubblewrap (the grading sandbox) is present. Safe to run again: it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  if command -v python3.11 >/dev/null 2>&1; then python_bin=python3.11; else python_bin=python3; fi
fi
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required (found $("$python_bin" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python_bin" -m venv .venv
fi

stamp=.venv/.installed-requirements
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

# apt_install PACKAGE WHY: install a Debian package when running as root with apt; false otherwise.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $1 ($2)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    return 1
  fi
}

if ! command -v bwrap >/dev/null 2>&1; then
  if ! apt_install bubblewrap "the grading sandbox"; then
    echo "setup: bubblewrap is required for sealed grading: install it (e.g. 'sudo apt-get install bubblewrap')" >&2
    exit 1
  fi
fi

# PostgreSQL server binaries: the gradebook tests start a throw-away server (tests/pgserver.py).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if ! apt_install postgresql "for the PostgreSQL gradebook tests"; then
    echo "setup: PostgreSQL server binaries not found; the postgres tests will be skipped (install 'postgresql')" >&2
  fi
fi
