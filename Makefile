# Two entry points for a fresh machine with Python 3.11:
#   make demo   create .venv, install requirements.txt, run the offline demo
#   make test   create .venv, install requirements.txt, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
TEST_WORKERS ?= 2

.PHONY: demo test clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) -m experiments.reconstruct --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests

clean:
	rm -rf $(VENV) workdirs
