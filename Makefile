# `make run` re-executes the whole notebook, printing a line as each section starts (with the time left),
# one per training epoch and the key results (everything else goes to runs/<timestamp>/log.txt), and replaces
# model.ipynb, figures/ and saved_models/ only when every cell succeeded (see run_notebook.py).
# `make resume RUN=runs/<timestamp>` continues an interrupted or failed `make run`, loading the models it saved.
# `make explore` runs the analysis from the committed models into runs/explore/ and replaces nothing.
# `make test` runs every test; `make test-fast` leaves out the slow and browser ones.
# All of them create the virtual environment and install requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Offline copy of MNIST beside the project, used when MNIST_DIR is not set already.
ifneq ($(wildcard ../shared/data/mnist),)
export MNIST_DIR ?= $(abspath ../shared/data/mnist)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run resume explore test test-fast quick onnx benchmark levers clean-venv

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/installed
	$(BIN)/python run_notebook.py

resume: $(VENV)/installed
	$(BIN)/python run_notebook.py --resume $(RUN)

explore: $(VENV)/installed
	$(BIN)/python run_notebook.py --output-dir runs/explore -p TRAIN False

test: $(VENV)/installed
	$(BIN)/pytest -q tests

test-fast: $(VENV)/installed
	$(BIN)/pytest -q -m "not slow and not browser" tests

quick: $(VENV)/installed
	$(BIN)/python run_notebook.py --output-dir /tmp/mnist-quick -p QUICK True

# Exports the saved reader's models to saved_models/<name>.onnx, which predict.py reads without TensorFlow.
onnx: $(VENV)/installed
	$(BIN)/python -c "import reader; print(*reader.export_onnx(), sep='\n')"

benchmark: $(VENV)/installed
	$(BIN)/python -m benchmarks.time_to_accuracy
	$(BIN)/python -m benchmarks.report

levers: $(VENV)/installed
	$(BIN)/python -m benchmarks.levers
	$(BIN)/python -m benchmarks.report

clean-venv:
	rm -rf $(VENV)
