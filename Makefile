# Two commands on a fresh machine: `make demo` (install + quickstart) and `make test` (install + tests).
# Each target creates its virtualenv on first use (and reinstalls when pyproject.toml changes).
# `make test` is what CI runs: the whole suite. `make test-fast` deselects the tests marked `slow` or
# `multiprocess` (markers declared in pyproject.toml) for a quick check while editing. `make lint` runs
# ruff with the configuration in pyproject.toml. `make test-tfa` runs the same tests in the second
# CI lane: TensorFlow 2.15 (Keras 2) + tensorflow-addons 0.23, in .venv-tfa, with Python <= 3.11;
# `make test-fast-tfa` is its quick subset.
PYTHON ?= python3
VENV ?= .venv
RUN_DIR ?= runs/quickstart
PYTHON_TFA ?= python3.11
VENV_TFA ?= .venv-tfa

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,tfds]'
	touch $@

# TensorFlow 2.15 has no wheels for Python 3.12+, and tensorflow-addons 0.23 none for 3.12+ either.
$(VENV_TFA)/installed: pyproject.toml
	@$(PYTHON_TFA) -c '' 2>/dev/null || { echo "test-tfa: '$(PYTHON_TFA)' does not run. The tfa lane needs Python 3.10 or 3.11: make test-tfa PYTHON_TFA=/path/to/python3.11" >&2; exit 1; }
	@$(PYTHON_TFA) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 11) else "test-tfa: $(PYTHON_TFA) is Python %d.%d; TensorFlow 2.15 and tensorflow-addons 0.23 need Python 3.10 or 3.11: make test-tfa PYTHON_TFA=/path/to/python3.11" % v)'
	$(PYTHON_TFA) -m venv $(VENV_TFA)
	$(VENV_TFA)/bin/pip install --quiet --upgrade pip
	$(VENV_TFA)/bin/pip install --quiet -e '.[test,tfa]'
	touch $@

.PHONY: demo lint test test-fast test-tfa test-fast-tfa
demo: $(VENV)/installed
	$(VENV)/bin/python -m trainer.main --gin_file=gin_configs/quickstart.gin --model_dir=$(RUN_DIR)
	@echo "Next, in this and every new shell: source $(VENV)/bin/activate; then: tensorboard --logdir $(RUN_DIR)"

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .

test: $(VENV)/installed
	$(VENV)/bin/python -m pytest -q tests

test-fast: $(VENV)/installed
	$(VENV)/bin/python -m pytest -q -m "not slow and not multiprocess" tests

test-tfa: $(VENV_TFA)/installed
	$(VENV_TFA)/bin/python -m pytest -q tests

test-fast-tfa: $(VENV_TFA)/installed
	$(VENV_TFA)/bin/python -m pytest -q -m "not slow and not multiprocess" tests
