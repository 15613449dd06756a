# segmend developer tasks. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export WANDB_SILENT := true

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check src callbacks datamodules tests bench
	$(BIN)/ruff format --check src callbacks datamodules tests bench

demo: $(STAMP)
	$(BIN)/segmend fit -c configs/baseline_synthetic.yaml

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/data.py

clean:
	rm -rf $(VENV) runs lightning_logs wandb
