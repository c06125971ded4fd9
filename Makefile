# Two commands do all the set-up on a fresh machine: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= train,trt,dev
STAMP  := $(VENV)/.pose-edge-installed

.PHONY: demo test venv clean-venv

venv: $(STAMP)

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
