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

# apt_install PACKAGE WHY: install a Debian package when running as root with apt-get, else fail.
apt_updated=
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  echo "setup: installing $1 ($2)"
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

if ! command -v bwrap >/dev/null 2>&1 && ! apt_install bubblewrap "the grading sandbox"; then
  echo "setup: bubblewrap is required for sealed grading: install it (e.g. 'sudo apt-get install bubblewrap')" >&2
  exit 1
fi

# JupyterHub deployment (deploy/jupyterhub/) and its browser test: the Hub's proxy from npm, into the
# venv (never global), and Debian's Chromium for Playwright (browsers cannot be downloaded).
proxy_version=5.3.0
if [ "$(.venv/bin/configurable-http-proxy --version 2>/dev/null)" != "$proxy_version" ]; then
  if ! command -v npm >/dev/null 2>&1 && ! apt_install npm "JupyterHub's proxy"; then
    echo "setup: npm is required for JupyterHub's configurable-http-proxy (e.g. 'sudo apt-get install npm')" >&2
    exit 1
  fi
  echo "setup: installing configurable-http-proxy $proxy_version into .venv"
  npm install --silent --prefix .venv --no-save --no-audit --no-fund --no-package-lock \
    "configurable-http-proxy@$proxy_version" 2>&1 | grep -v EBADENGINE || true
  ln -sf ../node_modules/.bin/configurable-http-proxy .venv/bin/configurable-http-proxy
  .venv/bin/configurable-http-proxy --version >/dev/null
fi

if [ ! -x /usr/bin/chromium ] && ! apt_install chromium "the JupyterHub browser test"; then
  echo "setup: chromium is missing: the JupyterHub test (pytest -m hub) needs /usr/bin/chromium" >&2
fi

# PostgreSQL server binaries: the gradebook tests start a throw-away server (tests/support/pgserver.py).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if ! apt_install postgresql "for the PostgreSQL gradebook tests"; then
    echo "setup: PostgreSQL server binaries not found; the postgres tests will be skipped (install 'postgresql')" >&2
  fi
fi
