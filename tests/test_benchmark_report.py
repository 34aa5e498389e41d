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
