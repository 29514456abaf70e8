# The two set-up commands of README: `make demo` and `make test`. Everything they need is
# installed here: a virtualenv with the pinned Python deps (constraints.txt), the Kafka broker
# jars (Maven Central, cached outside the tree) and, for the chart checks, helm (Go module proxy).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test unit lint deps broker-jars registry-dist helm-check promcheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

deps: $(VENV)/.deps

broker-jars: deps
	$(PY) -m bridge_devtools.broker fetch

## Apicurio Registry (Maven Central, cached like the broker) for the schema-registry tests.
registry-dist: deps
	$(PY) -m bridge_devtools.registry fetch

## Run the main job on a local broker: send the three samples, print the records.
demo: broker-jars
	$(PY) -m bridge_devtools.demo

## Chart: helm lint/template + offline Kubernetes schema validation.
helm-check: deps
	PYTHON=$(PY) bash .ci/helm.sh

## Prometheus's rule checks and PromQL parser for the monitoring tests (Go module proxy, cached).
promcheck:
	bash .ci/promcheck.sh

## ruff (lint + format) and mypy --strict (relaxed for tests and benchmarks: see pyproject.toml).
lint: deps
	$(PY) -m ruff check bridge bridge_devtools tests benchmarks
	$(PY) -m ruff format --check bridge bridge_devtools tests benchmarks
	$(PY) -m mypy

## The whole test suite against a real broker (what CI runs).
test: lint broker-jars registry-dist helm-check promcheck
	$(PY) -m bridge schemas check
	$(PY) -m pytest

## Unit and HTTP tests only (no broker, no helm).
unit: deps
	$(PY) -m pytest tests/unit tests/http

bench: broker-jars
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
