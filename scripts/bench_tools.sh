#!/usr/bin/env bash
# Tools the API benchmark compares against or drives (benchmarks/api_bench.py): TiPg 1.6 in its own venv
# under the git-ignored benchmarks/out/, and wrk. Safe to re-run: every step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench-tools: %s\n' "$*"; }
die() { printf 'bench-tools: error: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
TIPG_VENV=benchmarks/out/.venv-tipg

if ! command -v wrk >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "wrk is missing: run 'sudo apt-get install -y wrk'"
    say "installing wrk (the API benchmark's load generator)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi

if ! "$TIPG_VENV/bin/python" -c 'import tipg, uvicorn' 2>/dev/null; then
    say "installing TiPg 1.6 into $TIPG_VENV (the API benchmark's reference server)"
    mkdir -p benchmarks/out
    "$PYTHON" -m venv "$TIPG_VENV"
    "$TIPG_VENV/bin/pip" install -q --disable-pip-version-check 'tipg>=1.6,<1.7' uvicorn
fi
say "ready: wrk, TiPg $("$TIPG_VENV/bin/python" -c 'import tipg; print(tipg.__version__)')"
