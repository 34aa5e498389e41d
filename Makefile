# `make run` re-executes the whole notebook in place; `make test` runs the tests.
# Both create the virtual environment and install requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Offline copy of MNIST beside the project, used when MNIST_DIR is not set already.
ifneq ($(wildcard ../shared/data/mnist),)
export MNIST_DIR ?= $(abspath ../shared/data/mnist)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test quick benchmark levers clean-venv

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/installed
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 model.ipynb

test: $(VENV)/installed
	$(BIN)/pytest -q tests

quick: $(VENV)/installed
	mkdir -p /tmp/mnist-quick
	$(BIN)/papermill model.ipynb /tmp/mnist-quick/model.ipynb -p QUICK True -p OUTPUT_DIR /tmp/mnist-quick

benchmark: $(VENV)/installed
	$(BIN)/python benchmarks/time_to_accuracy.py
	$(BIN)/python benchmarks/report.py

levers: $(VENV)/installed
	$(BIN)/python benchmarks/levers.py
	$(BIN)/python benchmarks/report.py

clean-venv:
	rm -rf $(VENV)
