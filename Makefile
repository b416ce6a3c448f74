# HK SDI. Two commands: `make demo` and `make test` (each does all set-up first).
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: setup demo test lint bench bench-tools bench-api bench-overload bench-planning bench-joins clean-venv

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/sdi layers validate
	$(BIN)/sdi load --all
	$(BIN)/sdi layers list
	$(BIN)/sdi sites --out data/store/data-centre-sites.gpkg --map data/store/data-centre-sites.png
	$(BIN)/sdi serve --host 127.0.0.1 --port $(PORT)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check sdi loaders tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/load_bench.py

bench-tools:
	@bash scripts/bench_tools.sh

bench-api: setup bench-tools
	$(BIN)/python benchmarks/api_bench.py

bench-overload: setup
	$(BIN)/python benchmarks/overload_bench.py

bench-planning: setup
	$(BIN)/python benchmarks/planning_bench.py

bench-joins: setup  # e.g. make bench-joins JOINS_ARGS="--sizes 200000 --repeat 3"
	$(BIN)/python benchmarks/join_bench.py $(JOINS_ARGS)

clean-venv:
	rm -rf $(VENV)
