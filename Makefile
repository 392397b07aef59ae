# A newcomer's targets. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup setup-cuda data demo train test clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# CUDA 13 libraries (~1.3 GB) for the bench's CUDA provider, into the same venv; then say what is still missing.
setup-cuda: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,cuda]"
	-$(BIN)/fmnist-bench doctor  # exits 1 where CUDA is not usable (no GPU): said, not an error of the setup

# Real Fashion-MNIST from Debian's package; elsewhere, say what to do instead of failing here.
data:
	@if [ -f $(DEBIAN_DATA) ]; then \
		echo "data: $(dir $(DEBIAN_DATA))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "data: not installed; run 'sudo apt-get install -y dataset-fashion-mnist' or set FMNIST_DATA (see README)"; \
	fi

# The main job on the real data, small enough for a few minutes on 2 cores: train the six models
# (2 epochs, 12,000 images), export Model 4, benchmark it. Outputs in artifacts/demo/.
demo: export FMNIST_ARTIFACTS = artifacts/demo
demo: setup
	$(BIN)/fmnist-train all --epochs 2 --limit 12000
	$(BIN)/fmnist-export model4
	$(BIN)/fmnist-bench run --models model4 --rounds 3

# The report's protocol end to end: six models, 50 epochs, batch 128, every variant, every provider.
train: setup
	$(BIN)/fmnist-train all
	$(BIN)/fmnist-export all
	$(BIN)/fmnist-bench run
	$(BIN)/fmnist-bench report

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts/demo
