"""The recipes the benchmarks train, rebuilt from what the notebook saved.

Every model trained here is one of the notebook's: its architecture is loaded from
`saved_models/<name>.keras` (safe mode) and cloned with `keras.models.clone_model`, which
gives fresh weights, and it is trained with the settings the notebook recorded for it in
`figures/metrics.json` (`models.<name>.training`). The one recipe the notebook no longer
trains as such, the original one this project grew from, is stated here once, frozen.
"""

import functools
import math
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import helpers
import writers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = PROJECT_ROOT / "saved_models"
METRICS_PATH = PROJECT_ROOT / "figures" / "metrics.json"
QMNIST_DIR = PROJECT_ROOT.parent / "shared" / "data" / "qmnist"  # who wrote each MNIST digit, for the split by writer

SEEDS = (42, 7)
THRESHOLDS = {"99.0": 0.990, "99.5": 0.995, "99.6": 0.996, "99.7": 0.997}
INFERENCE_BATCH = 1024
QUICK_TRAIN_IMAGES = 3000
QUICK_TEST_IMAGES = 1000

# The original recipe: the notebook's basic CNN trained as the notebook this project grew from
# trained it: float64 NumPy arrays straight into model.fit, Keras' validation_split holding out
# the last 20%, Adam at its default 1e-3, batch 64, 10 epochs. Read-only, so that no lever or
# quick run can change what "original" means.
ORIGINAL_RECIPE = types.MappingProxyType({
    "model": "cnn_basic",
    "input_dtype": "float64",
    "validation_split": 0.2,
    "optimizer": "Adam",
    "learning_rate": 1e-3,
    "schedule": "constant",
    "batch_size": 64,
    "epochs": 10,
})
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "schedule", "augmentation", "early_stopping_patience")


def add_notebook_arguments(parser):
    """The options both benchmark scripts share for finding the notebook's output and MNIST."""
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="the notebook's saved models (default saved_models/)")
    parser.add_argument("--metrics", type=Path, default=METRICS_PATH,
                        help="the notebook's metrics with each model's training settings "
                             "(default figures/metrics.json)")
    parser.add_argument("--data-dir", default=None,
                        help="MNIST folder (default: $MNIST_DIR, else keras.datasets.mnist downloads it)")


def finish_arguments(parser, arguments, committed_path, what):
    """Check the options both benchmark scripts share: `--seeds` as whole numbers, and an `--output`
    that a `--quick` run never points at the committed file (`committed_path`, results about `what`)."""
    try:
        arguments.seeds = [int(seed) for seed in arguments.seeds.split(",") if seed.strip()]
    except ValueError:
        parser.error(f"--seeds {arguments.seeds!r}: give whole numbers separated by commas, such as 42,7")
    if not arguments.seeds:
        parser.error("--seeds: give at least one seed")
    if arguments.output is None:
        arguments.output = Path(tempfile.mkdtemp()) / committed_path.name if arguments.quick else committed_path
    elif arguments.quick and arguments.output.resolve() == committed_path.resolve():
        parser.error(f"--quick never writes {committed_path}: its numbers say nothing about the {what}; "
                     "give another --output")
    return arguments


# ==================== The notebook's models and training settings ====================


def fresh_model(name, models_dir=MODELS_DIR):
    """The notebook's model `name` with fresh weights: its saved architecture, cloned.

    Call `keras.utils.set_random_seed` first: the clone's initial weights come from it.
    """
    return keras.models.clone_model(helpers.load_saved_model(Path(models_dir) / f"{name}.keras"))


def notebook_training(name, metrics_path=METRICS_PATH):
    """The training settings the notebook recorded for model `name`, and its run settings.

    Returns (training, run): `training` is `models.<name>.training` of metrics.json, with
    `train_images` (how many of the first training images it fits; the run's unless the
    recipe says otherwise), and `run` its `run` entry (validation_split, seed). Raises
    FileNotFoundError or ValueError with a one-line message naming the file and saying to
    run `make run` when they are missing.
    """
    metrics_path = Path(metrics_path)
    metrics = helpers.read_json(metrics_path, "notebook metrics file")
    entry = metrics.get("models", {}).get(name)
    if entry is None:
        raise ValueError(f"{metrics_path}: no model '{name}' in it; run `make run` to train and record it.")
    training = entry.get("training")
    if not isinstance(training, dict):
        raise ValueError(f"{metrics_path}: no training settings for '{name}' (models.{name}.training); "
                         "run `make run` to record them.")
    missing = [key for key in TRAINING_KEYS if key not in training]
    if missing:
        raise ValueError(f"{metrics_path}: models.{name}.training lacks {', '.join(missing)}; "
                         "run `make run` to record them again.")
    run = metrics.get("run", {})
    missing = [key for key in ("validation_split", "train_images") if key not in run and key not in training]
    if missing:
        raise ValueError(f"{metrics_path}: no run.{' or run.'.join(missing)}; run `make run` to record them.")
    return {**training, "train_images": training.get("train_images") or run["train_images"]}, run


def augmentation_for(training, seed):
    """The recipe's training-time augmentation layers, or None when it has none."""
    return helpers.augmentation_layers(training["augmentation"], seed) if training.get("augmentation") else None


# ==================== Data ===========================================================


@dataclass
class Splits:
    """MNIST as the notebook splits it: the first part of the training set to fit, the rest to validate."""

    train_images: np.ndarray     # uint8, all training images (the original recipe splits them itself)
    train_labels: np.ndarray
    fit_inputs: np.ndarray       # float32 model inputs of the first (1 - validation_split)
    fit_labels: np.ndarray
    validation_inputs: np.ndarray
    validation_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray

    @functools.cached_property
    def all_inputs(self):
        return np.concatenate([self.fit_inputs, self.validation_inputs])

    @functools.cached_property
    def all_labels(self):
        return np.concatenate([self.fit_labels, self.validation_labels])


def load_splits(data_dir, validation_split, quick=False, seed=42, split_by="writer"):
    """MNIST split as the notebook does (whole writers when `split_by` is "writer" and QMNIST's ids are in
    ../shared/data/qmnist, else the last fraction); with `quick`, a small slice of the training and test sets."""
    (train_images, train_labels), (test_images, test_labels) = helpers.load_mnist(data_dir)
    if quick:
        train_images, train_labels = train_images[:QUICK_TRAIN_IMAGES], train_labels[:QUICK_TRAIN_IMAGES]
        test_images, test_labels = test_images[:QUICK_TEST_IMAGES], test_labels[:QUICK_TEST_IMAGES]
    train_writers = (writers.load_writers(QMNIST_DIR, train_labels, test_labels)["train"]
                     if split_by == "writer" and QMNIST_DIR.is_dir() else None)
    fit, validation, _ = helpers.validation_indices(train_labels, validation_split, seed, train_writers)
    fit_images, fit_labels = train_images[fit], train_labels[fit]
    validation_images, validation_labels = train_images[validation], train_labels[validation]
    return Splits(train_images, train_labels, helpers.to_model_input(fit_images), fit_labels,
                  helpers.to_model_input(validation_images), validation_labels,
                  helpers.to_model_input(test_images), test_labels)


def one_hot(labels):
    """Integer labels (N,) as float32 one-hot rows (N, 10), for a categorical cross-entropy."""
    return np.eye(helpers.NUM_CLASSES, dtype=np.float32)[labels]


# ==================== Measuring ======================================================


class EpochEvaluation(keras.callbacks.Callback):
    """Calls `evaluate(model)` after each epoch and keeps what it returns.

    Put it after `helpers.EpochTestAccuracy` in the callback list: that one's clocks have
    stopped by then and the next epoch's have not started, so this evaluation is not timed.
    """

    def __init__(self, evaluate):
        super().__init__()
        self.evaluate, self.values = evaluate, []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(self.evaluate(self.model))


def seconds_to_thresholds(epoch_seconds, epoch_cpu_seconds, test_accuracy):
    """Per threshold: the training seconds (wall, CPU) and epoch at which test accuracy first reached it, or None."""
    wall, cpu = np.cumsum(epoch_seconds), np.cumsum(epoch_cpu_seconds)
    reached = {}
    for label, threshold in THRESHOLDS.items():
        epoch = next((index for index, value in enumerate(test_accuracy) if value >= threshold), None)
        reached[label] = None if epoch is None else {
            "seconds": round(float(wall[epoch]), 1), "cpu_seconds": round(float(cpu[epoch]), 1), "epoch": epoch + 1}
    return reached


def inference_images_per_second(model, test_inputs):
    """model.predict on the test set, warm (it has been predicted after every epoch already)."""
    start = time.perf_counter()
    model.predict(test_inputs, batch_size=INFERENCE_BATCH, verbose=0)
    return len(test_inputs) / (time.perf_counter() - start)


def run_record(model, clock, images_per_epoch, test_inputs, test_labels, seed, test_accuracy=None):
    """One training run: its epochs' seconds and test accuracy, what it reached when, and its throughput.

    `test_accuracy` replaces the clock's per-epoch numbers where a lever evaluates otherwise
    (averaged weights). The final test accuracy is measured on the model as fit left it.
    """
    test_accuracy = clock.test_accuracy if test_accuracy is None else test_accuracy
    training_seconds = sum(clock.epoch_seconds)
    training_rate = images_per_epoch * len(clock.epoch_seconds) / training_seconds
    multiply_adds = helpers.count_multiply_adds(model)
    return {
        "seed": seed,
        "train_images_per_epoch": images_per_epoch,
        "epoch_seconds": [round(value, 2) for value in clock.epoch_seconds],
        "epoch_cpu_seconds": [round(value, 2) for value in clock.epoch_cpu_seconds],
        "test_accuracy": [round(value, 4) for value in test_accuracy],
        "validation_accuracy": [round(value, 4) for value in clock.validation_accuracy],
        "final_test_accuracy": round(helpers.accuracy(
            model.predict(test_inputs, batch_size=INFERENCE_BATCH, verbose=0), test_labels), 4),
        "seconds_to": seconds_to_thresholds(clock.epoch_seconds, clock.epoch_cpu_seconds, test_accuracy),
        "train_images_per_second": round(training_rate),
        "inference_images_per_second": round(inference_images_per_second(model, test_inputs)),
        "multiply_adds_per_image": multiply_adds,
        "training_gflops_per_second": round(helpers.training_gflops(multiply_adds, training_rate), 1),
        "parameters": int(model.count_params()),
    }


def fit_notebook_recipe(model, training, inputs, labels, splits, seed, name, validation=True, callbacks=()):
    """Train a compiled clone the way the notebook trains its models; returns the epoch clock.

    float32 inputs in a cached, shuffled, prefetched tf.data pipeline with the recipe's
    augmentation, the validation split evaluated after each epoch as the notebook does (its
    time counts in the epoch), and early stopping on validation accuracy where the recipe has it.
    `callbacks` run after the clock (see EpochEvaluation).
    """
    data = helpers.make_dataset(inputs, labels, training["batch_size"], shuffle=True, seed=seed,
                                augmentation=augmentation_for(training, seed))
    clock = helpers.EpochTestAccuracy(splits.test_inputs, splits.test_labels, name, INFERENCE_BATCH)
    validation_data, stopping = None, []
    if validation:
        validation_labels = splits.validation_labels if labels.ndim == 1 else one_hot(splits.validation_labels)
        validation_data = helpers.make_dataset(splits.validation_inputs, validation_labels, INFERENCE_BATCH)
        if training.get("early_stopping_patience"):
            stopping = [keras.callbacks.EarlyStopping(monitor="val_accuracy", restore_best_weights=True,
                                                      patience=training["early_stopping_patience"])]
    model.fit(data, validation_data=validation_data, epochs=training["epochs"], verbose=0, shuffle=False,
              callbacks=[clock, *callbacks, *stopping])
    return clock


def steps_per_epoch(images, batch_size):
    """Training steps in one epoch over `images` images, the last batch possibly partial."""
    return math.ceil(images / batch_size)


def spread(values):
    """Mean, lowest and highest of a list of numbers, rounded; None for an empty list."""
    if not values:
        return None
    return {"mean": round(float(np.mean(values)), 4), "min": round(float(min(values)), 4),
            "max": round(float(max(values)), 4)}


def summarize_seeds(records):
    """Mean and spread over seeds: final test accuracy, seconds to each threshold, throughput and cost.

    Seconds to a threshold get a mean only when every seed reached it; `seeds_reached` says how many did.
    """
    seconds_to = {}
    for label in THRESHOLDS:
        hits = [record["seconds_to"][label] for record in records if record["seconds_to"][label]]
        everyone = len(hits) == len(records)
        seconds_to[label] = {
            "seeds_reached": len(hits),
            "seconds": spread([hit["seconds"] for hit in hits]) if everyone else None,
            "cpu_seconds": spread([hit["cpu_seconds"] for hit in hits]) if everyone else None,
            "epoch": spread([hit["epoch"] for hit in hits]) if everyone else None,
        }
    cpu_per_epoch = [value for record in records for value in record["epoch_cpu_seconds"]]
    return {
        "seeds": len(records),
        "final_test_accuracy": spread([record["final_test_accuracy"] for record in records]),
        # The last epoch's validation accuracy (none for a fit on all training images).
        "final_validation_accuracy": spread([record["validation_accuracy"][-1] for record in records
                                             if record.get("validation_accuracy")]),
        "seconds_to": seconds_to,
        "training_seconds": spread([sum(record["epoch_seconds"]) for record in records]),
        "training_cpu_seconds": spread([sum(record["epoch_cpu_seconds"]) for record in records]),
        # The median epoch: the first one also traces the graph, and a neighbour's burst of load
        # can stretch any one of them.
        "cpu_seconds_per_epoch": round(float(np.median(cpu_per_epoch)), 2),
        "train_images_per_second": round(float(np.mean([record["train_images_per_second"] for record in records]))),
        "inference_images_per_second": round(float(np.mean(
            [record["inference_images_per_second"] for record in records]))),
        "training_gflops_per_second": round(float(np.mean(
            [record["training_gflops_per_second"] for record in records])), 1),
        "multiply_adds_per_image": records[0]["multiply_adds_per_image"],
        "parameters": records[0]["parameters"],
    }


def reached_text(summary, label):
    """When a recipe reached a threshold, over its seeds: '82.7 s (80-85), epoch 4', 'not reached' or '1 of 2 seeds'."""
    entry = summary["seconds_to"][label]
    if entry["seconds"] is None:
        return "not reached" if entry["seeds_reached"] == 0 else f"{entry['seeds_reached']} of {summary['seeds']} seeds"
    seconds, epoch = entry["seconds"], entry["epoch"]
    epochs = f"{epoch['min']:.0f}" if epoch["min"] == epoch["max"] else f"{epoch['min']:.0f}-{epoch['max']:.0f}"
    if seconds["min"] == seconds["max"]:
        return f"{seconds['mean']:.1f} s, epoch {epochs}"
    return f"{seconds['mean']:.1f} s ({seconds['min']:.0f}-{seconds['max']:.0f}), epoch {epochs}"
