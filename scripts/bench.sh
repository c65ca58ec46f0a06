#!/usr/bin/env bash
# The benchmarks of spec §10 and of the issue "Event-driven for real" in one command (root;
# 8 to 13 minutes on 2 cores): install what is missing like the test command, then run
# benchmarks/run.py, which prints the markdown table and writes benchmarks/results.json.
# Arguments go to it (--help lists them; --quick is a ~2 minute smoke run that writes no JSON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh --test
exec .venv/bin/python -m benchmarks.run "$@"
