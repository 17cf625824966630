#!/usr/bin/env bash
# Everything Headroom needs on a fresh Debian machine, installed only if missing:
# Java and Maven (for the Kafka broker's jars), Prometheus + promtool and
# Alertmanager (Debian packages), and a virtualenv at .venv with Headroom in it. (The `peers`
# bench installs Debian's victoria-metrics itself when it runs; the tests and demo need none.)
# Kafka's jars themselves are resolved from Maven Central on the first broker start.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
# The anomaly detector's step is compiled from Cython at install: a C compiler and Python's headers.
command -v gcc >/dev/null || missing+=(gcc)
python=${PYTHON:-python3}
"$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
# Reinstall only when the declared dependencies or the compiled module's source changed (or it is not built).
stamp=.venv/.headroom-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ detector/anomaly/_kernel.pyx -nt "$stamp" ] \
    || ! ls detector/anomaly/_kernel.*.so >/dev/null 2>&1; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
