# Every target that needs the environment depends on `install`, so each works on a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
SLOW   ?=
PYTEST_ARGS ?=

.PHONY: install install-torch test help

help:
	@echo "make install        create .venv (Python 3.11) with the package and its test extra"
	@echo "make install-torch  add the optional torch extra (weight import, parity tests)"
	@echo "make test           run the test suite on CPU (SLOW=1 adds the slow tests)"

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

install-torch: $(VENV)/.installed-torch

$(VENV)/.installed-torch: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,torch]'
	@touch $@

test: install
	$(PY) -m pytest $(if $(SLOW),,-m "not slow") $(PYTEST_ARGS)
