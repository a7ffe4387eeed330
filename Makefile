# Every target bootstraps what it needs: a fresh clone runs `make demo` or `make test` and nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench soak stress-e2e clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ebbtide.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest-xdist workers: more than the two cores, as end-to-end tests mostly wait on their
# subprocesses and sockets. `--dist loadgroup` keeps each xdist_group on one worker.
PYTEST_WORKERS ?= 4

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m bench

# Not part of `make test`: 200 syncs killed at random, each recovery checked (bench/README.md).
soak: $(STAMP)
	$(BIN)/python -m soak $(SOAK_ARGS)

# Not part of `make test`: tests/e2e STRESS_RUNS times while busy loops keep every core busy.
STRESS_RUNS ?= 20
stress-e2e: $(STAMP)
	PYTEST_WORKERS=$(PYTEST_WORKERS) scripts/stress_e2e.sh $(STRESS_RUNS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-workspace
