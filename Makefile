# Two commands on a fresh machine: `make demo` (install + quickstart) and `make test` (install + tests).
# Each target creates its virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
RUN_DIR ?= runs/quickstart

$(VENV)/installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: demo test
demo: $(VENV)/installed
	$(VENV)/bin/python -m trainer.main --gin_file=gin_configs/quickstart.gin --model_dir=$(RUN_DIR)

test: $(VENV)/installed
	$(VENV)/bin/python -m pytest -q tests
