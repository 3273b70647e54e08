# Every target that needs the environment depends on `install`, so each works on a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
SLOW   ?=
PYTEST_ARGS ?=
# TensorFlow's two CPU kernel paths: oneDNN off (Eigen) and on (the default on AVX-512 CPUs).
# `make test` runs the suite once in each, whatever this CPU's default; KERNELS=0 runs one.
KERNELS ?= 0 1

.PHONY: install install-torch test lint demo export bench study help

help:
	@echo "make install        create .venv (Python 3.11) with the package and its test extra"
	@echo "make install-torch  add the optional torch extra (weight import, parity tests)"
	@echo "make test           run the test suite on CPU, oneDNN off then on (SLOW=1 adds the slow tests, KERNELS=0 one mode)"
	@echo "make lint           ruff: lint and format check (configured in pyproject.toml)"
	@echo "make demo           train on the built-in synthetic set, evaluate, export (minutes on a CPU)"
	@echo "make export         export a run for TensorFlow Serving (RUN=dir, default: the newest finished demo run)"
	@echo "make bench          run benchmarks/ and write benchmarks/results.md and .json (about 12 minutes)"
	@echo "make study          train a study's variants over its seeds and tabulate mean and std (STUDY=file, default configs/studies/ablation.yaml)"

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
	@failed=; for mode in $(KERNELS); do \
	  echo "== tests with TF_ENABLE_ONEDNN_OPTS=$$mode"; \
	  TF_ENABLE_ONEDNN_OPTS=$$mode $(PY) -m pytest $(if $(SLOW),,-m "not slow") $(PYTEST_ARGS) \
	    || failed="$$failed $$mode"; \
	done; \
	if [ -n "$$failed" ]; then echo "== tests failed with TF_ENABLE_ONEDNN_OPTS=$$failed"; exit 1; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(PY) -m lba_tf.train
	$(MAKE) --no-print-directory export

# RUN=<run dir> exports that run; by default the newest finished demo run (lba_tf.run_dir knows the layout)
export: install
	@run="$(RUN)"; test -n "$$run" || run=$$($(PY) -m lba_tf.run_dir newest synthetic) || exit 2; \
	$(PY) -m lba_tf.export --weights "$$run"

bench: install
	$(PY) benchmarks/run_all.py

# STUDY=<study file> trains its runs under runs/studies/<name>/ (finished ones skipped) and writes study.md and .json
study: install
	$(PY) -m lba_tf.study $(or $(STUDY),configs/studies/ablation.yaml)
