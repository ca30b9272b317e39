# One entry point. Each target creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q
# Browser libraries that the docs site serves itself (no CDN), from the npm registry;
# not committed. iframe-worker is the offline search plugin's shim for file://.
VENDOR := docs/javascripts/vendor
MATHJAX_VERSION := 3.2.2
IFRAME_WORKER_VERSION := 1.0.4
VENDORED := $(VENDOR)/.mathjax-$(MATHJAX_VERSION)-iframe-worker-$(IFRAME_WORKER_VERSION)

.PHONY: demo test lint docs docs-check bench dist test-wheel clean

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

$(VENV)/.docs-check: | $(BIN)/python
	$(PIP) 'websocket-client>=1.6'
	touch $@

# MathJax's browser build (es5/) without the other combined bundles and the SVG output.
$(VENDORED):
	command -v npm >/dev/null || { apt-get update -q && $(APT) npm; }
	rm -rf $(VENDOR) build/npm
	mkdir -p build/npm $(VENDOR)/mathjax/output $(VENDOR)/iframe-worker
	cd build/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null \
		&& mkdir mathjax && tar -xzf mathjax-$(MATHJAX_VERSION).tgz -C mathjax
	cd build/npm && npm pack --silent iframe-worker@$(IFRAME_WORKER_VERSION) >/dev/null \
		&& mkdir iframe-worker && tar -xzf iframe-worker-$(IFRAME_WORKER_VERSION).tgz -C iframe-worker
	cp build/npm/mathjax/package/LICENSE build/npm/mathjax/package/es5/tex-mml-chtml.js \
		$(VENDOR)/mathjax/
	cp -R $(addprefix build/npm/mathjax/package/es5/,a11y adaptors input sre ui) $(VENDOR)/mathjax/
	cp -R $(addprefix build/npm/mathjax/package/es5/output/,chtml chtml.js) $(VENDOR)/mathjax/output/
	cp build/npm/iframe-worker/package/LICENSE $(VENDOR)/iframe-worker/
	cp build/npm/iframe-worker/package/shim/index.js $(VENDOR)/iframe-worker/shim.js
	touch $@

$(VENV)/.dist: | $(BIN)/python
	$(PIP) 'build>=1.2' 'twine>=6.1'
	touch $@

demo: $(VENV)/.examples
	$(BIN)/python examples/train_linear.py

# One worker per core; each test file's subprocess checks (8 host devices) stay on one worker.
# Line coverage of jaxce/ is printed, and the run fails if it falls below the floor.
test: $(VENV)/.test
	$(BIN)/python -m pytest -q -n auto --dist loadgroup --cov --cov-report=term

lint: $(VENV)/.lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy jaxce

docs: $(VENV)/.docs $(VENDORED)
	MPLBACKEND=Agg $(BIN)/python examples/plot_figures.py --out docs/figures
	$(BIN)/mkdocs build --strict

# Every page of the built site in headless Chromium (Debian's): no failed request or
# console error, every image loaded, every formula typeset; screenshots in site/.
docs-check: docs $(VENV)/.docs-check
	command -v chromium >/dev/null || { apt-get update -q && $(APT) chromium; }
	$(BIN)/python scripts/docs_check.py site

# The CPU rows, then the accelerator rows where JAX's default backend is a GPU or TPU.
bench: $(VENV)/.test
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/accelerator.py

# The sdist and the wheel in dist/, metadata checked as PyPI would.
dist: $(VENV)/.dist
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The wheel from `make dist`, installed in an empty virtual environment outside the checkout.
test-wheel: dist $(VENV)/.test
	JAXCE_WHEEL="$$(ls dist/jaxce-*.whl)" $(BIN)/python -m pytest -q tests/test_wheel.py

clean:
	rm -rf $(VENV) site dist build $(VENDOR) .pytest_cache .hypothesis
