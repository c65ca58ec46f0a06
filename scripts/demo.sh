#!/usr/bin/env bash
# The README's first command: install what is missing, then run poolwatch on libvirt's embedded
# test driver with demo pools on http://127.0.0.1:9479/ (Ctrl-C stops it). Extra arguments go to
# `poolwatch demo`, e.g. `bash scripts/demo.sh --web.listen-address 127.0.0.1:9500`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
if [ $# -eq 0 ]; then
  set -- --web.listen-address 127.0.0.1:9479
fi
exec .venv/bin/poolwatch demo "$@"
