# segmend developer tasks. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST := .venv-lowest
# The torch build `make install` puts in .venv (pip takes both from local disk); pyproject.toml only
# bounds torch from below.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST := -m pytest -q -p no:cacheprovider tests

export WANDB_SILENT := true

.PHONY: install browser test test-lowest lint demo bench clean

install: $(STAMP)

# The rating page's browser test drives Debian's headless Chromium through its driver (selenium):
# installed from Debian's packages when `chromedriver` is missing (CI: a fresh machine, as root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromedriver >/dev/null 2>&1 || { \
		echo "chromedriver not found: installing chromium and chromium-driver with apt-get (the rating page's browser test)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	@command -v chromedriver >/dev/null 2>&1 || { echo "chromedriver is still missing after apt-get install chromium-driver"; exit 1; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP) browser
	WANDB_MODE=disabled $(BIN)/python $(PYTEST)

# The test suite at exactly the lower bounds pyproject.toml declares (dependencies and the test extra,
# torch included: from PyPI), in a fresh $(LOWEST). The constraints are generated from pyproject.toml,
# so the two cannot drift apart.
test-lowest: browser
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(PYTHON) .ci/lowest_constraints.py --extra test > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt -e ".[test]"
	@echo "Installed at the lower bounds:" && cat $(LOWEST)/constraints.txt
	WANDB_MODE=disabled $(LOWEST)/bin/python $(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check src callbacks datamodules tests bench
	$(BIN)/ruff format --check src callbacks datamodules tests bench

demo: $(STAMP)
	$(BIN)/segmend fit -c configs/baseline_synthetic.yaml

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/data.py

clean:
	rm -rf $(VENV) $(LOWEST) runs lightning_logs wandb
