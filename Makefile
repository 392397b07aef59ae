# A newcomer's targets. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo train test clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

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
	$(BIN)/fmnist-train report

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts/demo
