# The two Quick start commands (README): `make demo` and `make test`.
# Each sets up what is missing first (scripts/setup.sh), then runs.

.PHONY: setup demo test bench

setup:
	@./scripts/setup.sh

demo: setup
	.venv/bin/headroom demo

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python -m bench.run all
