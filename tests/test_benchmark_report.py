"""benchmarks/report.py: the measured tables land between the README markers, and only there."""

import json
import sys

import pytest

from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import report  # noqa: E402


def recipe_entry(accuracies, seconds, reached_99_0):
    return {"test_accuracy": accuracies, "epoch_seconds_cumulative": seconds,
            "seconds_to": {"99.0": reached_99_0, "99.5": None},
            "train_images_per_second": 5000, "inference_images_per_second": 20000,
            "multiply_adds_per_image": 2_000_000, "training_gflops_per_second": 60.0}


def write_tree(root, quick=False):
    (root / "benchmarks").mkdir()
    results = {
        "date": "2026-11-24T20:00:00", "quick": quick, "cpu": "Test CPU, 2 cores", "tensorflow": "2.x",
        "keras": "3.x", "matmul_gflops_per_second": 120.0, "project_recipe": {"batch_size": 128},
        "seed": recipe_entry([0.985, 0.990], [11.0, 22.0], {"seconds": 22.0, "epoch": 2}),
        "project": recipe_entry([0.991, 0.993], [6.0, 12.0], {"seconds": 6.0, "epoch": 1}),
        "ratio_seconds_to_99.0": 0.273,
    }
    (root / "benchmarks" / "results.json").write_text(json.dumps(results))
    (root / "benchmarks" / "README.md").write_text("# B\n<!-- benchmark:start -->\nold\n<!-- benchmark:end -->\nend\n")
    (root / "README.md").write_text("# R\n<!-- performance:start -->\nold\n<!-- performance:end -->\ntail\n")


def test_report_fills_both_readmes_from_the_results(tmp_path):
    write_tree(tmp_path)
    report.main(tmp_path)
    benchmark_readme = (tmp_path / "benchmarks" / "README.md").read_text()
    assert "old" not in benchmark_readme and benchmark_readme.endswith("end\n")
    assert "project / seed: 0.273" in benchmark_readme
    assert "| project | 6.0 s (epoch 1) | not reached | 99.30% (2 epochs) |" in benchmark_readme
    assert "project's training runs at 50% of that" in benchmark_readme
    readme = (tmp_path / "README.md").read_text()
    assert "**0.27**" in readme and readme.startswith("# R\n") and readme.endswith("tail\n")


def test_report_refuses_quick_results(tmp_path):
    write_tree(tmp_path, quick=True)
    with pytest.raises(ValueError, match="--quick"):
        report.main(tmp_path)


def test_throughput_table_gives_speed_ups_against_the_named_reference_and_cpu_seconds():
    levers = {
        "cpu": "Test CPU, 2 cores", "throughput_images": 12288, "throughput_date": "2026-11-25T11:00:00",
        "throughput": {
            "seed": {"description": "seed", "images_per_second": 2000, "seconds_per_60k_images": 30.0,
                     "cpu_seconds_per_1k_images": 0.8, "training_gflops_per_second": 31.6},
            "batch_128": {"description": "batch 128 (vs seed)", "images_per_second": 2500,
                          "seconds_per_60k_images": 24.0, "cpu_seconds_per_1k_images": 0.7,
                          "training_gflops_per_second": 39.5},
            "bfloat16": {"description": "mixed_bfloat16 (vs batch_128)", "error": "not supported"},
        },
    }
    table = report.throughput_markdown(levers)
    assert "| `batch_128` | batch 128 (vs seed) | 2,500 | 24.0 | x1.25 | 0.700 | 39.5 |" in table
    assert "| `seed` | seed | 2,000 | 30.0 |  | 0.800 | 31.6 |" in table
    assert "| `bfloat16` | mixed_bfloat16 (vs batch_128) | failed: not supported | | | | |" in table


def test_notebook_cost_counts_multiply_adds_on_the_saved_model(tmp_path):
    import keras

    inputs = keras.Input(shape=(28, 28, 1))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "tiny.keras")
    metrics = {"run": {"train_images": 48000},
               "models": {"tiny": {"params": 62810, "epochs": 10, "train_seconds": 100.0},
                          "missing": {"params": 1, "epochs": 1, "train_seconds": 1.0},
                          "ensemble": {"members": ["tiny"], "test_accuracy": 0.99, "test_loss": 0.1}}}
    table = report.notebook_cost_markdown(metrics, tmp_path, ceiling=100.0)
    multiply_adds = 28 * 28 * 8 * 9 + 28 * 28 * 8 * 10
    gflops = 6 * multiply_adds * 4800 / 1e9
    assert f"| `tiny` | {multiply_adds:,} | 62,810 | 4,800 | {gflops:.1f} |" in table
    assert "missing" not in table and "ensemble" not in table
    assert "100.0 GFLOP/s" in table
