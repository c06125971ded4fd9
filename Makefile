# Two commands do all the set-up on a fresh machine: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= train,trt,dev
STAMP  := $(VENV)/.pose-edge-installed

.PHONY: demo test test-accuracy venv clean-venv

venv: $(STAMP)

# Reinstall when the project's dependencies or its one C extension change (setup.py builds it in place).
$(STAMP): pyproject.toml setup.py pose_edge/runtime/_peaks_native.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

# Behaviour tests: everything but the minutes-long trainings that show the small presets learn.
test: $(STAMP)
	$(PY) -m pytest -m "not accuracy"

# The small presets learn: trainings of a few minutes each, scored with pycocotools on unseen images.
test-accuracy: $(STAMP)
	$(PY) -m pytest -m accuracy

clean-venv:
	rm -rf $(VENV)
