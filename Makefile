# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   - install into .venv and select 20% of the bundled example with DataTailor
#   make test   - install into .venv (with test extras) and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# torch is pinned so that a CPU-only machine gets the CPU wheel; on a GPU machine, install the
# torch build for your CUDA first and `pip install -e .` keeps it.
TORCH ?= torch==2.13.0

.PHONY: demo test install clean

$(BIN)/mmselect: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/mmselect

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/mmselect run examples/mini/data.json --image-root examples/mini/images \
		--method datatailor --budget 0.2 --model tiny-llava --out demo-out
	@echo "Open demo-out/report.md; the subset is demo-out/subset.json."

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-out .pytest_cache
