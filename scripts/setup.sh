#!/usr/bin/env bash
# Installs what the hub (and, with --test, the test suite) needs, and nothing that is already there.
# Idempotent; works as root or as a user with sudo. Says what it installs.
#   scripts/setup.sh          Mosquitto + a Python virtual environment with the hub
#   scripts/setup.sh --test   also Node.js + MicroPython (wasm) + OpenSCAD + the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

# 1. Debian packages -------------------------------------------------------------------------
debs=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mosquitto || debs+=(mosquitto)
have mosquitto_passwd || debs+=(mosquitto)
# Vietnamese letters on the terminals' stickers (`sipas-provision label`).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || debs+=(fonts-dejavu-core)
PY=""
for cand in python3.11 python3.12 python3.13 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PY=$cand; break
  fi
done
[ -n "$PY" ] || debs+=(python3)
if [ -n "$PY" ] && ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then debs+=(python3-venv); fi
if [ $want_test -eq 1 ]; then
  have node || debs+=(nodejs)
  have npm || debs+=(npm)
  have openscad || debs+=(openscad)  # renders hardware/enclosure.scad in the tests
  have chromium || debs+=(chromium)  # the dashboard's browser tests (headless)
  have chromedriver || debs+=(chromium-driver)
  # The district server's tests run on a real PostgreSQL (tests/fixtures/district_db.py).
  have pg_ctlcluster || debs+=(postgresql)
fi
if [ ${#debs[@]} -gt 0 ]; then
  mapfile -t debs < <(printf '%s\n' "${debs[@]}" | sort -u)
  say "installing Debian packages: ${debs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${debs[@]}" >&2
  [ -n "$PY" ] || PY=python3
fi

# 2. Python virtual environment ----------------------------------------------------------------
extras=""
[ $want_test -eq 1 ] && extras="[dev]"
stamp=".venv/.sipas-installed$extras"
sum=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  say "creating the Python virtual environment in .venv ($($PY --version))"
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  say "installing the SIPAS Python packages into .venv (pip install -e .$extras)"
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e ".$extras" >&2
  echo "$sum" > "$stamp"
fi

# 3. MicroPython (wasm) for the firmware tests ---------------------------------------------------
if [ $want_test -eq 1 ]; then
  lock=$(sha256sum tests/mpy/package-lock.json | cut -c1-16)
  if [ "$(cat tests/mpy/node_modules/.sipas-installed 2>/dev/null)" != "$lock" ]; then
    say "installing MicroPython (npm @micropython/micropython-webassembly-pyscript) into tests/mpy"
    (cd tests/mpy && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$lock" > tests/mpy/node_modules/.sipas-installed
  fi
fi
say "ready"
