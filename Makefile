# Two entry points for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= examples/nct00698191
OUT    ?= out

.PHONY: demo test lint bench clean

$(BIN)/fhir-lupus: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/fhir-lupus
	$(BIN)/fhir-lupus validate $(DATA)
	$(BIN)/fhir-lupus map $(DATA) -o $(OUT)/bundle.json --quarantine $(OUT)/quarantine

test: $(BIN)/fhir-lupus
	$(BIN)/python -m pytest -q

lint: $(BIN)/fhir-lupus
	$(BIN)/ruff check fhir_lupus tests examples bench
	$(BIN)/mypy

bench: $(BIN)/fhir-lupus
	$(BIN)/python bench/bench_map.py

clean:
	rm -rf $(VENV) $(OUT)
