# Set-up and the two everyday commands. `make demo` and `make test` create .venv on first use.
#
#   make demo    install rftcli into .venv and run the tiny pipeline (recipes/tiny), printing accuracy
#   make test    run the test suite in .venv
#
# On a CPU machine torch is pinned to the small CPU build first (TORCH=...); a GPU user installs
# their CUDA torch into the venv beforehand and then `pip install -e ".[gpu]"` (see README).

VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test install install-dev

# The demo needs rftcli and matplotlib (its charts); the tests also need the dev tools (pytest, DeepSpeed,
# TensorBoard, W&B, ...), which stay out of a demo-only venv: transformers imports DeepSpeed at every model
# load when it is installed.
install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[report]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(MAKE) -C recipes/tiny

test: install-dev
	$(PY) -m pytest -q
