# make demo: set up .venv and run the offline demo (fit, inspect, evaluate on shipped data).
# make test: set up .venv and run the test suite.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch is pinned to the CPU wheel first; a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomalens demo -o demo_results

test: $(STAMP)
	$(PYTHON) -m pytest -q

bench: $(STAMP)
	$(PYTHON) bench/patchcore_magnetic_tile.py --json bench/results/patchcore_magnetic_tile.json

clean:
	rm -rf $(VENV) demo_results
