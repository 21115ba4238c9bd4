# The single entry point for humans and CI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck bench clinical demo up docs clean constraints

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -c constraints.txt -e '.[dev,charts]'
	touch $(STAMP)

install: $(STAMP)

## Tests: unit, integration (real Redis), e2e (real processes over HTTP), fault.
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Benchmarks print figures; they assert nothing about speed.
bench: $(STAMP)
	$(BIN)/python -m tests.bench

## Virtual patients through the pure engine under every built-in rule set: docs/CLINICAL.md.
clinical: $(STAMP)
	$(BIN)/python -m services.clinical

## The committed OpenAPI/AsyncAPI documents (a unit test checks they match the code).
docs: $(STAMP)
	$(BIN)/python -m services.cli.docs

demo: $(STAMP)
	$(BIN)/backtrack demo

up: $(STAMP)
	$(BIN)/backtrack up

constraints:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-header -o constraints.txt

clean:
	rm -rf $(VENV) .backtrack .pytest_cache .mypy_cache .ruff_cache
