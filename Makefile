# Two commands on a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
# Both create .venv themselves. torch is pinned exactly: an unpinned torch pulls a multi-GB CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdtune-installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# A real search on built-in data (a few minutes on 2 cores), then its analysis; each run is a new study.
demo: $(STAMP)
	@name=demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/kdtune search --data builtin:d0.5 --space default --name $$name --storage studies --num-samples 16 \
	&& $(BIN)/kdtune analyse studies/$$name

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/batched_seeds.py

clean:
	rm -rf $(VENV) .pytest_cache
