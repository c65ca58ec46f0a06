# `make run` starts the demo daemon; `make test` runs what CI runs (.ci/run).
BIN := .venv/bin

.PHONY: bootstrap bootstrap-test run lint test clean

bootstrap:
	bash scripts/bootstrap.sh

bootstrap-test:
	bash scripts/bootstrap.sh --test

run: bootstrap
	$(BIN)/poolwatch demo --web.listen-address 127.0.0.1:9479

lint: bootstrap-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
