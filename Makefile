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

.PHONY: demo test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(MAKE) -C recipes/tiny

test: install
	$(PY) -m pytest -q
