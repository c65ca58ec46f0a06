# Shortcuts for scripts/: `make run` is scripts/demo.sh, `make test` is scripts/test.sh (what CI
# runs). The README uses the scripts, since a fresh Debian has no make.
BIN := .venv/bin

.PHONY: bootstrap bootstrap-test run test clean

bootstrap:
	bash scripts/bootstrap.sh

bootstrap-test:
	bash scripts/bootstrap.sh --test

run:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# Spec §10 figures against a bare-libvirt baseline (root: a private libvirtd, a loop device).
.PHONY: bench
bench:
	bash scripts/bench.sh

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
