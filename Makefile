# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv, install the CPU build of torch first (so nothing pulls a CUDA
# build), install torchslim with its test extras, and install Fashion-MNIST.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test setup data browser clean

demo: setup data
	$(VENV)/bin/torchslim demo $(DEMO_ARGS)

test: setup data browser
	$(PY) -m pytest -q -n auto $(TEST_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package when we are root; otherwise say how to get it.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	  || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	else echo "note: run 'sudo apt-get install dataset-fashion-mnist' for Fashion-MNIST (not root, skipping)"; fi

# Headless Chromium renders the HTML report in one test (skipped, with its reason, when absent).
browser:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	  || echo "warning: could not install chromium; the report screenshot test will be skipped"; \
	else echo "note: run 'sudo apt-get install chromium' for the report screenshot test (not root, skipping)"; fi

clean:
	rm -rf $(VENV) demo-out .pytest_cache
