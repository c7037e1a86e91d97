# The two commands a new user runs: `make demo` and `make test`; `make docs` builds the manual.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.skcnn-installed

.PHONY: demo test test-slow docs install clean

install: $(STAMP)

# (Re)install when the package metadata changes. torch and torchvision come
# from the package index (or the local wheels a machine is configured with).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/skcnn demo

# Lint, format and every test but those marked slow: a few minutes on 2 cores.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow" --durations=15

# The slow tests (CI runs both targets: every test runs once).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow --durations=15

# The manual, into docs/_build/html; warnings are errors, the gallery is executed.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache docs/_build docs/generated docs/auto_examples docs/api.rst
