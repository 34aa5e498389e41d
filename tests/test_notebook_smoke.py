"""Executes model.ipynb in QUICK mode on a small slice of the real MNIST, into a temporary folder."""

import json

import numpy as np
import pytest

from conftest import PROJECT_ROOT

# Every figure the notebook saves; the README embeds some of them by these names.
EXPECTED_FIGURES = [
    "class_balance", "sample_digits", "history_dnn", "history_cnn_basic", "history_cnn_optimized",
    "validation_curves", "sample_predictions", "confusion_matrices", "test_accuracy", "test_loss",
]
BASELINE_MODELS = ["dnn", "cnn_basic", "cnn_optimized"]


@pytest.fixture(scope="module")
def quick_run(mnist_dir, tmp_path_factory):
    papermill = pytest.importorskip("papermill")
    output_dir = tmp_path_factory.mktemp("quick_run")
    papermill.execute_notebook(
        str(PROJECT_ROOT / "model.ipynb"),
        str(output_dir / "model.ipynb"),
        parameters={"QUICK": True, "OUTPUT_DIR": str(output_dir), "DATA_DIR": str(mnist_dir)},
        cwd=str(PROJECT_ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    return output_dir


def test_notebook_runs_without_errors(quick_run):
    notebook = json.loads((quick_run / "model.ipynb").read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert not any(output.get("output_type") == "error" for output in cell.get("outputs", []))
            assert cell["execution_count"] is not None


def test_every_figure_is_written(quick_run):
    missing = [name for name in EXPECTED_FIGURES if not (quick_run / "figures" / f"{name}.png").is_file()]
    assert missing == []


def test_metrics_are_well_formed(quick_run):
    metrics = json.loads((quick_run / "figures" / "metrics.json").read_text())
    run = metrics["run"]
    assert run["quick"] is True
    for key in ("seed", "tensorflow", "keras", "python", "total_seconds", "section_seconds"):
        assert key in run
    for name in BASELINE_MODELS:
        entry = metrics["models"][name]
        for key in ("test_accuracy", "test_loss", "params", "epochs", "train_seconds", "best_val_accuracy"):
            assert key in entry, f"{name} lacks {key}"
        # Chance is 10%: even two epochs on 2,400 images should be far above it.
        assert entry["test_accuracy"] > 0.6, f"{name}: {entry['test_accuracy']}"
        assert entry["params"] > 10000 and entry["train_seconds"] > 0


def test_saved_models_reload_and_predict(quick_run, mnist_dir):
    import keras

    import helpers

    _, (test_images, test_labels) = helpers.load_mnist(mnist_dir)
    inputs = helpers.to_model_input(test_images[:200])
    for name in BASELINE_MODELS:
        model = keras.saving.load_model(quick_run / "saved_models" / f"{name}.keras", safe_mode=True)
        predictions = model.predict(inputs, verbose=0).argmax(axis=1)
        assert np.mean(predictions == test_labels[:200]) > 0.6, name


def test_quick_run_refuses_to_overwrite_the_committed_results(tmp_path):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError, match="QUICK=True would overwrite"):
        papermill.execute_notebook(
            str(PROJECT_ROOT / "model.ipynb"), str(tmp_path / "refused.ipynb"),
            parameters={"QUICK": True, "OUTPUT_DIR": "."}, cwd=str(PROJECT_ROOT),
            kernel_name="python3", progress_bar=False,
        )
