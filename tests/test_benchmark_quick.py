"""Smoke runs of the benchmarks' --quick modes on a fake notebook output and a small slice of the real MNIST.

The fake output is what the notebook leaves behind, in miniature: tiny models saved as
saved_models/<name>.keras and a figures/metrics.json with each model's training settings.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from keras import layers

import helpers
from benchmarks import levers, recipes, time_to_accuracy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMMITTED = [PROJECT_ROOT / "benchmarks" / "results.json", PROJECT_ROOT / "benchmarks" / "levers.json"]
# As the notebook records a recipe; the images it fits are the run's train_images.
TRAINING = {"epochs": 3, "batch_size": 64, "learning_rate": 3e-3, "schedule": "one_cycle", "warmup_fraction": 0.1,
            "augmentation": {"max_degrees": 8, "max_shift": 0.08}, "early_stopping_patience": None}


def tiny_cnn_basic():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
    x = layers.Dropout(0.5)(layers.Dense(16, activation="relu")(layers.Flatten()(x)))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="cnn_basic")


def tiny_resnet():
    """The notebook's resnet in miniature: strided stem, one residual block, a strided convolution, pooling."""
    inputs = keras.Input(shape=(28, 28, 1))
    stem = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(4, 3, strides=2, padding="same",
                                                                   use_bias=False)(inputs)))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same", use_bias=False)(stem))
    x = layers.ReLU()(layers.Add()([x, stem]))
    x = layers.ReLU()(layers.Conv2D(8, 3, strides=2, padding="same")(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x)),
                       name="resnet")


def tiny_dnn():
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Dense(8, activation="relu")(layers.Flatten()(inputs))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="dnn")


@pytest.fixture(scope="module")
def notebook_output(tmp_path_factory):
    """saved_models/ and figures/metrics.json as the notebook writes them, with tiny models."""
    root = tmp_path_factory.mktemp("notebook")
    builders = {"cnn_basic": tiny_cnn_basic, "resnet": tiny_resnet, "dnn": tiny_dnn}
    (root / "saved_models").mkdir()
    models = {}
    for name, builder in builders.items():
        model = builder()
        model.save(root / "saved_models" / f"{name}.keras")
        augmentation = TRAINING["augmentation"] if name == "resnet" else None
        models[name] = {"test_accuracy": 0.9, "params": model.count_params(), "epochs": 3, "train_seconds": 9.0,
                        "training": {**TRAINING, "augmentation": augmentation}}
    metrics = {"run": {"quick": False, "seed": 42, "validation_split": 0.2, "train_images": 48000}, "models": models}
    helpers.write_json(metrics, root / "figures" / "metrics.json")
    return root


def run_module(module, *arguments):
    return subprocess.run([sys.executable, "-m", module, *map(str, arguments)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_without_training_settings_the_benchmark_says_to_run_the_notebook(notebook_output, tmp_path):
    metrics = json.loads((notebook_output / "figures" / "metrics.json").read_text())
    for entry in metrics["models"].values():
        del entry["training"]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SystemExit, match=r"metrics\.json: no training settings for 'resnet'.*make run") as raised:
        time_to_accuracy.main(["--quick", "--metrics", str(tmp_path / "metrics.json"),
                               "--models-dir", str(notebook_output / "saved_models")])
    assert "\n" not in str(raised.value)
    with pytest.raises(SystemExit, match=r"metrics\.json: no training settings for 'resnet'.*make run"):
        levers.main(["--quick", "--levers", "base", "--metrics", str(tmp_path / "metrics.json"),
                     "--models-dir", str(notebook_output / "saved_models")])
    with pytest.raises(SystemExit, match=r"cnn_basic\.keras: no such saved model.*make run"):
        time_to_accuracy.main(["--quick", "--metrics", str(notebook_output / "figures" / "metrics.json"),
                               "--models-dir", str(tmp_path)])


def test_the_original_recipe_is_frozen():
    assert recipes.ORIGINAL_RECIPE["model"] == "cnn_basic"
    assert (recipes.ORIGINAL_RECIPE["batch_size"], recipes.ORIGINAL_RECIPE["learning_rate"],
            recipes.ORIGINAL_RECIPE["epochs"], recipes.ORIGINAL_RECIPE["validation_split"],
            recipes.ORIGINAL_RECIPE["input_dtype"]) == (64, 1e-3, 10, 0.2, "float64")
    with pytest.raises(TypeError):
        recipes.ORIGINAL_RECIPE["epochs"] = 1


@pytest.mark.slow
def test_quick_time_to_accuracy_trains_clones_of_the_saved_models(notebook_output, mnist_dir, tmp_path):
    committed_before = [path.read_bytes() if path.exists() else None for path in COMMITTED]
    output = tmp_path / "results.json"
    completed = run_module("benchmarks.time_to_accuracy", "--quick", "--seeds", "42,7", "--data-dir", mnist_dir,
                           "--models-dir", notebook_output / "saved_models",
                           "--metrics", notebook_output / "figures" / "metrics.json", "--output", output)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads(output.read_text())
    saved = json.loads((notebook_output / "figures" / "metrics.json").read_text())["models"]
    assert results["quick"] is True and results["seeds"] == [42, 7]
    assert results["thresholds"] == ["99.0", "99.5", "99.6", "99.7"]
    assert results["matmul_gflops_per_second"] > 0 and results["cores"] >= 1
    original, best = results["recipes"]["original"], results["recipes"]["best"]
    assert original["settings"] == dict(recipes.ORIGINAL_RECIPE)
    # --quick trains complete runs of 1 and 2 epochs; the longer is the one the time-to-accuracy table shows.
    assert best["model"] == "resnet"
    assert best["settings"] == {**saved["resnet"]["training"], "train_images": 48000, "epochs": 2}
    assert [entry["epochs"] for entry in results["lengths"]["runs"].values()] == [1, 2]
    assert set(results["lengths"]["runs"]["1"]["seeds"]) == {"42", "7"} and results["lengths"]["runs"]["2"]["seeds"] == "best"
    for recipe, model_name, epochs in ((original, "cnn_basic", 1), (best, "resnet", 2)):
        assert set(recipe["seeds"]) == {"42", "7"}
        for record in recipe["seeds"].values():
            assert record["parameters"] == saved[model_name]["params"]  # a clone of the saved model
            assert len(record["test_accuracy"]) == len(record["epoch_seconds"]) == len(record["epoch_cpu_seconds"]) == epochs
            assert 0.0 <= record["final_test_accuracy"] <= 1.0 and record["epoch_seconds"][0] > 0
            assert record["train_images_per_second"] > 0 and record["inference_images_per_second"] > 0
            assert record["multiply_adds_per_image"] > 0 and record["training_gflops_per_second"] > 0
            assert set(record["seconds_to"]) == set(recipes.THRESHOLDS)
        summary = recipe["summary"]
        assert summary["seeds"] == 2 and summary["parameters"] == saved[model_name]["params"]
        accuracies = [record["final_test_accuracy"] for record in recipe["seeds"].values()]
        assert summary["final_test_accuracy"]["min"] == min(accuracies)
    # The original splits 3,000 images itself and fits the first 80%; the best recipe fits the same 2,400.
    assert original["seeds"]["42"]["train_images_per_epoch"] == best["seeds"]["42"]["train_images_per_epoch"] == 2400
    assert "ratio_seconds_to_99.0" in results
    # It prints the tables the report writes: the time to accuracy, then the complete runs of each length.
    assert "Seconds to 99.0% test accuracy, best / original" in completed.stdout or "No ratio" in completed.stdout
    assert "| original (cnn_basic, " in completed.stdout and "The fast recipe is" in completed.stdout
    assert [path.read_bytes() if path.exists() else None for path in COMMITTED] == committed_before


@pytest.mark.slow
def test_quick_levers_measure_clones_one_change_at_a_time_and_merge_into_the_file(notebook_output, mnist_dir,
                                                                                   tmp_path):
    committed_before = [path.read_bytes() if path.exists() else None for path in COMMITTED]
    output = tmp_path / "levers.json"
    helpers.write_json({"throughput": {"measured_earlier": {"description": "kept"}}}, output)
    completed = run_module("benchmarks.levers", "--quick", "--seeds", "42,7", "--data-dir", mnist_dir,
                           "--levers", "label_smoothing,weight_averaging,half_length_members,width_x0.5,"
                                       "all_training_images,test_time_augmentation,original",
                           "--models-dir", notebook_output / "saved_models",
                           "--metrics", notebook_output / "figures" / "metrics.json", "--output", output)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads(output.read_text())
    saved = json.loads((notebook_output / "figures" / "metrics.json").read_text())["models"]
    assert results["throughput"]["measured_earlier"] == {"description": "kept"}  # merged, not replaced
    original = results["throughput"]["original"]
    assert original["parameters"] == saved["cnn_basic"]["params"] and original["batch_size"] == 64
    assert original["images_per_second"] > 0 and original["cpu_seconds_per_1k_images"] > 0

    training = results["training"]
    # The base was not asked for, but every lever needs it: it was trained first, on the same setup.
    assert list(training) == ["base", "label_smoothing", "weight_averaging", "half_length_members", "width_x0.5",
                              "all_training_images", "test_time_augmentation"]
    recorded = saved["resnet"]["training"]
    for name, entry in training.items():
        assert entry["setup"] == training["base"]["setup"]
        assert entry["setup"]["seeds"] == [42, 7] and set(entry["seeds"]) == {"42", "7"}
        assert entry["setup"]["cpu"] == helpers.cpu_description()  # a base from another CPU is not reused
        assert {key: value for key, value in entry["setup"]["base_training"].items()
                if key not in ("epochs", "train_images")} \
            == {key: value for key, value in recorded.items() if key not in ("epochs", "train_images")}
        for run in entry["seeds"].values():
            epochs = 2 if name == "half_length_members" else 1  # two members of one epoch each (half of 1, at least 1)
            assert len(run["test_accuracy"]) == len(run["epoch_seconds"]) == len(run["epoch_cpu_seconds"]) == epochs
            assert 0.0 <= run["final_test_accuracy"] <= 1.0
        assert entry["summary"]["seeds"] == 2 and entry["summary"]["cpu_seconds_per_epoch"] > 0
    base_runs = training["base"]["seeds"].values()
    assert all(run["parameters"] == saved["resnet"]["params"] for run in base_runs)  # a clone of the saved model
    assert all(run["parameters"] < saved["resnet"]["params"] for run in training["width_x0.5"]["seeds"].values())
    assert all(len(run["test_accuracy_shifted"]) == 1 for run in base_runs)
    assert [run["final_test_accuracy"] for run in training["test_time_augmentation"]["seeds"].values()] == \
        [run["final_test_accuracy_shifted"] for run in base_runs]
    for seed, run in training["half_length_members"]["seeds"].items():
        assert [member["seed"] for member in run["members"]] == [int(seed), int(seed) + 1000]
        assert 0.0 <= run["final_validation_accuracy"] <= 1.0
    assert all("test_accuracy_without_averaging" in run for run in training["weight_averaging"]["seeds"].values())
    assert all(run["train_images_per_epoch"] == 3000 for run in training["all_training_images"]["seeds"].values())
    assert all(run["train_images_per_epoch"] == 2400 for run in base_runs)
    assert [path.read_bytes() if path.exists() else None for path in COMMITTED] == committed_before
