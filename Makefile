# One entry point. Each target creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: demo test lint docs bench dist test-wheel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.examples: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[examples]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[examples,test]'
	touch $@

$(VENV)/.docs: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[examples,docs]'
	touch $@

$(VENV)/.lint: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[lint]'
	touch $@

$(VENV)/.dist: | $(BIN)/python
	$(PIP) 'build>=1.2' 'twine>=6.1'
	touch $@

demo: $(VENV)/.examples
	$(BIN)/python examples/train_linear.py

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

lint: $(VENV)/.lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy jaxce

docs: $(VENV)/.docs
	MPLBACKEND=Agg $(BIN)/python examples/plot_figures.py --out docs/figures
	$(BIN)/mkdocs build --strict

bench: $(VENV)/.test
	$(BIN)/python benchmarks/run.py

# The sdist and the wheel in dist/, metadata checked as PyPI would.
dist: $(VENV)/.dist
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The wheel from `make dist`, installed in an empty virtual environment outside the checkout.
test-wheel: dist $(VENV)/.test
	JAXCE_WHEEL="$$(ls dist/jaxce-*.whl)" $(BIN)/python -m pytest -q tests/test_wheel.py

clean:
	rm -rf $(VENV) site dist build .pytest_cache .hypothesis
