"""benchmarks/report.py: the measured tables land between the README markers, and only there."""

import json

import keras
import pytest

from benchmarks import levers, recipes, report

BASE_TRAINING = {"epochs": 2, "batch_size": 64, "learning_rate": 3e-3, "schedule": "one_cycle", "warmup_fraction": 0.1,
                 "augmentation": {"max_degrees": 10}, "early_stopping_patience": None, "train_images": 48000}
SETUP = {"model": "resnet", "epochs": 2, "train_images": 48000, "test_images": 10000, "seeds": [42, 7], "quick": False,
         "base_training": BASE_TRAINING}


def record(seed, accuracies, epoch_seconds, cpu_seconds=None, validation=()):
    """One training run as recipes.run_record writes it."""
    cpu_seconds = cpu_seconds or epoch_seconds
    return {"seed": seed, "train_images_per_epoch": 48000, "epoch_seconds": epoch_seconds,
            "validation_accuracy": list(validation),
            "epoch_cpu_seconds": cpu_seconds, "test_accuracy": accuracies, "final_test_accuracy": accuracies[-1],
            "seconds_to": recipes.seconds_to_thresholds(epoch_seconds, cpu_seconds, accuracies),
            "train_images_per_second": 5000, "inference_images_per_second": 20000,
            "multiply_adds_per_image": 2_000_000, "training_gflops_per_second": 60.0, "parameters": 1000}


def recipe(model, epochs, records):
    return {"model": model, "settings": {"epochs": epochs}, "seeds": {str(r["seed"]): r for r in records},
            "summary": recipes.summarize_seeds(records)}


def results_file(quick=False):
    original = [record(42, [0.985, 0.990], [11.0, 11.0]), record(7, [0.986, 0.991], [10.0, 12.0])]
    best = [record(42, [0.991, 0.996], [6.0, 6.0]), record(7, [0.989, 0.997], [5.0, 7.0])]
    return {"date": "2026-11-24T20:00:00", "quick": quick, "cpu": "Test CPU, 2 cores", "tensorflow": "2.x",
            "keras": "3.x", "seeds": [42, 7], "matmul_gflops_per_second": 120.0,
            "recipes": {"original": recipe("cnn_basic", 10, original), "best": recipe("resnet", 15, best)},
            # Best reaches 99.0% at 6 s (seed 42) and 12 s (seed 7): mean 9; original at 22 and 22.
            "ratio_seconds_to_99.0": round(9.0 / 22.0, 3), "ratio_cpu_seconds_to_99.0": round(9.0 / 22.0, 3)}


def lever(description, records, setup=SETUP, changes=None):
    return {"description": description, "changes": changes or {}, "setup": setup,
            "date": "2026-11-25T10:00:00", "seeds": {str(r["seed"]): r for r in records},
            "summary": recipes.summarize_seeds(records)}


def levers_file():
    base = [record(42, [0.990, 0.9950], [50.0, 50.0]), record(7, [0.991, 0.9954], [50.0, 50.0])]
    smoothing = [record(42, [0.992, 0.9970], [50.0, 52.0], validation=[0.991, 0.9960]),
                 record(7, [0.992, 0.9972], [50.0, 52.0], validation=[0.991, 0.9966])]
    wide = [record(42, [0.990, 0.9949], [150.0, 150.0]), record(7, [0.990, 0.9951], [150.0, 150.0])]
    return {"cpu": "Test CPU, 2 cores", "training": {
        "base": lever("base", base), "label_smoothing": lever("smoothing", smoothing),
        "width_x2": lever("wide", wide, changes={"width": 2.0}),
        "elastic_distortions": lever("elastic", smoothing, changes={"training": {"augmentation": {
            "max_degrees": 10, "elastic_alpha": 34.0}}}),
        "peak_x2": lever("peak", smoothing, setup={**SETUP, "epochs": 5}),
        "batch_size": lever("quick", smoothing, setup={**SETUP, "quick": True})}}


def write_tree(root, results=None, levers_content=None):
    (root / "benchmarks").mkdir()
    if results is not None:
        (root / "benchmarks" / "results.json").write_text(json.dumps(results))
    if levers_content is not None:
        (root / "benchmarks" / "levers.json").write_text(json.dumps(levers_content))
    (root / "benchmarks" / "README.md").write_text("# B\n<!-- benchmark:start -->\nold\n<!-- benchmark:end -->\nend\n")
    (root / "README.md").write_text("# R\n<!-- performance:start -->\nold\n<!-- performance:end -->\ntail\n")


def test_report_fills_both_readmes_from_the_results(tmp_path):
    write_tree(tmp_path, results_file(), levers_file())
    report.main(tmp_path)
    benchmark_readme = (tmp_path / "benchmarks" / "README.md").read_text()
    assert "old" not in benchmark_readme and benchmark_readme.endswith("end\n")
    assert "best / original: 0.409** (CPU seconds: 0.409)" in benchmark_readme
    # Mean over the seeds, lowest-highest, and the epoch; 99.7% reached by one seed of two only.
    assert ("| best (resnet, 15 epochs) | 9.0 s (6-12), epoch 1-2 | 12.0 s, epoch 2 | 12.0 s, epoch 2 "
            "| 1 of 2 seeds | 99.65% (99.60-99.70) |") in benchmark_readme
    assert "| original (cnn_basic, 10 epochs) | 22.0 s, epoch 2 | not reached |" in benchmark_readme
    assert "- best, seed 7: 98.90% (5 s), 99.70% (12 s)" in benchmark_readme
    readme = (tmp_path / "README.md").read_text()
    assert "**0.41**" in readme and readme.startswith("# R\n") and readme.endswith("tail\n")
    assert "| best (resnet, 15 epochs) | 9.0 s (6-12), epoch 1-2 |" in readme


def test_lever_table_compares_with_the_base_and_says_what_is_not_measured(tmp_path):
    table = report.training_levers_markdown(levers_file())
    assert "the notebook's `resnet`" in table and "2 epochs of 48,000 images, batch 64" in table
    # The base has no validation accuracy recorded: its cell stays blank.
    assert "| `base` | " in table and "| 99.52% (99.50-99.54) |  |  | 50.0 | the reference |" in table
    # +0.19 points against a spread of 0.04: it helped; its epochs cost about the same. Validation: the last epoch's.
    assert "| 99.71% (99.70-99.72) | +0.19 | 99.63% (99.60-99.66) | 51.0 | helped: +0.19 points, beyond the seeds' spread of 0.04; " \
           "about the same CPU per epoch |" in table
    assert ("| -0.02 |  | 150.0 | no clear change: -0.02 points, within the seeds' spread of 0.04; "
            "x3.00 the CPU per epoch |") in table
    assert "no comparison: the base was measured with other settings" in table
    # The change the base decided, beside the lever's description.
    assert f"| `width_x2` | {levers.TRAINING_LEVERS['width_x2']} (filters x2) |" in table
    # A lever measured and since removed keeps its row, with the description it was measured with.
    assert "elastic_distortions" not in levers.TRAINING_LEVERS
    assert "| `elastic_distortions` | elastic (on: elastic_alpha) |" in table
    for name in levers.TRAINING_LEVERS:
        assert f"| `{name}` |" in table
    # A quick run's entry counts as not measured.
    assert f"| `batch_size` | {levers.TRAINING_LEVERS['batch_size']} | not measured yet |" in table


def test_report_without_result_files_says_not_measured_yet(tmp_path):
    write_tree(tmp_path)
    report.main(tmp_path)
    benchmark_readme = (tmp_path / "benchmarks" / "README.md").read_text()
    assert "Time to accuracy: not measured yet; run `make benchmark`." in benchmark_readme
    assert "the base (the notebook's best recipe) is not measured yet" in benchmark_readme
    assert "not measured yet" in (tmp_path / "README.md").read_text()


def test_report_refuses_quick_and_old_results(tmp_path):
    write_tree(tmp_path, results_file(quick=True))
    with pytest.raises(ValueError, match="--quick"):
        report.main(tmp_path)
    old_layout = {key: value for key, value in results_file().items() if key != "recipes"}
    (tmp_path / "benchmarks" / "results.json").write_text(json.dumps(old_layout))
    with pytest.raises(ValueError, match="older benchmark.*make benchmark"):
        report.main(tmp_path)


def test_throughput_table_gives_speed_ups_against_the_named_reference_and_cpu_seconds():
    levers_content = {
        "cpu": "Test CPU, 2 cores", "throughput_images": 12288,
        "throughput": {
            "original": {"description": "original", "date": "2026-11-25T11:00:00", "images_per_second": 2000,
                         "seconds_per_60k_images": 30.0, "cpu_seconds_per_1k_images": 0.8,
                         "training_gflops_per_second": 31.6},
            "batch_128": {"description": "batch 128", "reference": "original", "date": "2026-11-26T11:00:00",
                          "images_per_second": 2500, "seconds_per_60k_images": 24.0, "cpu_seconds_per_1k_images": 0.7,
                          "training_gflops_per_second": 39.5},
            "bfloat16": {"description": "mixed_bfloat16", "reference": "batch_128", "error": "not supported"},
        },
    }
    table = report.throughput_markdown(levers_content)
    assert "measured 2026-11-25 to 2026-11-26" in table
    assert "| `batch_128` | batch 128 | 2,500 | 24.0 | x1.25 vs `original` | 0.700 | 39.5 |" in table
    assert "| `original` | original | 2,000 | 30.0 |  | 0.800 | 31.6 |" in table
    assert "| `bfloat16` | mixed_bfloat16 | failed: not supported | | | | |" in table


def test_notebook_cost_counts_multiply_adds_on_the_saved_model(tmp_path):
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


def test_lengths_table_names_the_fast_recipe_from_complete_runs():
    from benchmarks import time_to_accuracy

    original = [record(42, [0.985, 0.990], [11.0, 11.0]), record(7, [0.986, 0.991], [10.0, 12.0])]
    short = [record(42, [0.990, 0.9952], [6.0, 6.0]), record(7, [0.991, 0.9950], [6.0, 7.0])]
    shorter = [record(42, [0.9940], [6.0]), record(7, [0.9950], [6.0])]
    full = [record(42, [0.991, 0.996, 0.997], [6.0, 6.0, 6.0]), record(7, [0.99, 0.996, 0.9968], [6.0, 6.0, 6.0])]
    lengths = time_to_accuracy.lengths_summary({"original": original, 3: full, 1: shorter, 2: short}, [1, 2, 3])
    # One epoch ends at 99.45% on average, two at 99.51%: the fast recipe is two epochs, at 12.5 s of
    # training against the original's 22 s.
    assert lengths["fast_recipe_epochs"] == 2
    assert lengths["runs"]["2"]["ratio_to_original_seconds"] == round(12.5 / 22.0, 3)
    table = report.lengths_markdown({**results_file(), "lengths": lengths})
    assert "**2 epochs**" in table
    assert "| 1 | 99.45% (99.40-99.50) |" in table and "| 3 | 99.69% (99.68-99.70) |" in table
    assert ("Fast recipe: **2 epochs** of the best recipe, the fewest of the complete runs measured (1, 2, 3 epochs) "
            "whose final test accuracy, mean over the seeds, is at least 99.5%: 99.51% (99.50-99.52), in x0.57 the "
            "original recipe's training seconds") in report.performance_summary({**results_file(), "lengths": lengths})
    lengths = time_to_accuracy.lengths_summary({"original": original, 3: full, 1: shorter}, [1, 3])
    assert lengths["fast_recipe_epochs"] == 3
    lengths["runs"]["3"]["final_test_accuracy"] = {"mean": 0.994, "min": 0.993, "max": 0.995}
    lengths["fast_recipe_epochs"] = None
    assert "Fast recipe: no complete run of the best recipe (1, 3 epochs) ended at 99.5% or more" in \
        report.performance_summary({**results_file(), "lengths": lengths})


def test_a_verdict_rests_on_the_validation_writers_when_both_runs_recorded_them():
    base = lever("base", [record(42, [0.9950], [50.0], validation=[0.9940]), record(7, [0.9952], [50.0], validation=[0.9942])])
    # Better on the test set, beyond the spread, but not on validation: no clear change.
    lucky = lever("smoothing", [record(42, [0.9970], [50.0], validation=[0.9941]),
                                record(7, [0.9972], [50.0], validation=[0.9943])])
    assert report.verdict("label_smoothing", lucky, base).startswith("no clear change on validation: +0.01 points")
    better = lever("smoothing", [record(42, [0.9950], [50.0], validation=[0.9961]),
                                 record(7, [0.9951], [50.0], validation=[0.9961])])
    assert report.verdict("label_smoothing", better, base).startswith("helped on validation: +0.20 points")
