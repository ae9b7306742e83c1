# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   - install mmselect alone into .venv and select 20% of the bundled example with DataTailor
#   make test   - install into .venv with the test extras and Ray, and run the test suite
#   make test-minimums - a separate .venv-min with every dependency at its declared lower bound, and the smoke tests
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# torch is pinned so that a CPU-only machine gets the CPU wheel; on a GPU machine, install the
# torch build for your CUDA first and `pip install -e .` keeps it.
TORCH ?= torch==2.13.0
# Where the minimum torch comes from (e.g. https://download.pytorch.org/whl/cpu for the CPU build).
TORCH_INDEX ?=
MIN_VENV ?= .venv-min
SMOKE_TESTS ?= tests/test_operation.py tests/test_cli_help.py tests/test_extraction.py tests/test_budget.py

.PHONY: demo test install install-test test-minimums clean

$(BIN)/mmselect: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $@

install: $(BIN)/mmselect

# The test extras (pytest, faiss, selenium, datasets, ...) and Ray, on top of the install.
$(VENV)/.test-extras: $(BIN)/mmselect
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	touch $@

install-test: $(VENV)/.test-extras

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/mmselect run examples/mini/data.json --image-root examples/mini/images \
		--method datatailor --budget 0.2 --model tiny-llava --out demo-out
	@echo "Open demo-out/report.md; the subset is demo-out/subset.json."

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Every dependency at the lower bound pyproject.toml declares (scripts/lower_bounds.py), then the
# smoke tests: keeps the declared minimums true.
test-minimums:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip packaging
	$(MIN_VENV)/bin/python scripts/lower_bounds.py > $(MIN_VENV)/constraints.txt
	echo "pytest==8.0.0" >> $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install -q --only-binary :all: -c $(MIN_VENV)/constraints.txt \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e . pytest
	HF_HUB_OFFLINE=1 $(MIN_VENV)/bin/python -m pytest $(SMOKE_TESTS)

clean:
	rm -rf $(VENV) $(MIN_VENV) demo-out .pytest_cache
