# The two set-up commands: `make serve` and `make test` (both build .venv from nothing on first use).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export RAY_AUTH_MODE ?= disabled

.PHONY: install serve test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel; a bare `torch` would pull a multi-GB CUDA build
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/vlreward serve

test: install
	$(PYTHON) -m pytest -q
