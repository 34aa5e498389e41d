"""A smoke run of benchmarks/time_to_accuracy.py --quick on a small slice of the real MNIST."""

import json
import subprocess
import sys

from conftest import PROJECT_ROOT

COMMITTED_RESULTS = PROJECT_ROOT / "benchmarks" / "results.json"


def test_quick_benchmark_writes_well_formed_results(mnist_dir, tmp_path):
    committed_before = COMMITTED_RESULTS.read_bytes() if COMMITTED_RESULTS.exists() else None
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "time_to_accuracy.py"), "--quick",
         "--data-dir", str(mnist_dir), "--output", str(output)],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]

    results = json.loads(output.read_text())
    assert results["quick"] is True
    assert results["cores"] >= 1 and results["cpu_model"] and results["tensorflow"] and results["keras"]
    assert results["matmul_gflops_per_second"] > 0
    for recipe in ("seed", "project"):
        entry = results[recipe]
        assert len(entry["test_accuracy"]) == len(entry["epoch_seconds_cumulative"]) == 1
        assert 0.0 <= entry["test_accuracy"][0] <= 1.0 and entry["epoch_seconds_cumulative"][0] > 0
        assert entry["train_images_per_second"] > 0 and entry["inference_images_per_second"] > 0
        assert entry["multiply_adds_per_image"] > 100_000 and entry["training_gflops_per_second"] > 0
        assert set(entry["seconds_to"]) == {"99.0", "99.5"}
        for hit in entry["seconds_to"].values():
            assert hit is None or (hit["seconds"] > 0 and hit["epoch"] == 1)
    assert "ratio_seconds_to_99.0" in results
    cnn_basic = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 9 * 32 + 5 * 5 * 64 * 128 + 128 * 10
    assert results["notebook_models_multiply_adds"] == {"dnn": 784 * 128 + 128 * 10, "cnn_basic": cnn_basic}
    assert "project / seed" in completed.stdout or "no ratio" in completed.stdout
    # A quick run never touches the committed results.
    after = COMMITTED_RESULTS.read_bytes() if COMMITTED_RESULTS.exists() else None
    assert after == committed_before
