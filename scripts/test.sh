#!/usr/bin/env bash
# The README's second command, and what CI runs: install what is missing (as root: the Debian
# packages the integration and e2e tiers need), then lint, type-check and run every test tier.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
