# Two entry points for a new user: `make demo` and `make test`. Both create .venv on first use.
# The FHIR servers of servers/ (HAPI FHIR JPA via Maven, Medplum via npm) build themselves on first start.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= examples/nct00698191
OUT    ?= out

.PHONY: demo test test-unit lint bench wheel clean

$(BIN)/fhir-lupus: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/fhir-lupus
	$(BIN)/fhir-lupus demo --out $(OUT)/demo

test: $(BIN)/fhir-lupus
	$(BIN)/python -m pytest -q

test-unit: $(BIN)/fhir-lupus
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(BIN)/fhir-lupus
	$(BIN)/ruff check fhir_lupus tests examples bench
	$(BIN)/mypy

bench: $(BIN)/fhir-lupus
	$(BIN)/python bench/bench_map.py

# A wheel that carries mappings/ (as fhir_lupus/_mappings): `pip install dist/fhir_lupus-*.whl` anywhere.
wheel: $(BIN)/fhir-lupus
	$(BIN)/python -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) $(OUT) build dist
