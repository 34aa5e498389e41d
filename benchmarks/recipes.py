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


# ==================== Measuring ======================================================


class EpochTestAccuracy(keras.callbacks.Callback):
    """Times each epoch (wall and CPU seconds), then measures test accuracy once the clocks have stopped.

    Validation accuracy, where fit has a validation split, is kept too (`validation_accuracy`),
    so a choice can rest on it rather than on the test set.
    """

    def __init__(self, test_inputs, test_labels, name: str = "", batch_size: int = 1024):
        super().__init__()
        self.test_inputs, self.test_labels, self.name, self.batch_size = test_inputs, test_labels, name, batch_size
        self.epoch_seconds, self.epoch_cpu_seconds, self.test_accuracy = [], [], []
        self.validation_accuracy = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self.started)
        self.epoch_cpu_seconds.append(time.process_time() - self.cpu_started)
        probabilities = self.model.predict(self.test_inputs, batch_size=self.batch_size, verbose=0)
        self.test_accuracy.append(helpers.accuracy(probabilities, self.test_labels))
        validation = ""
        if logs and "val_accuracy" in logs:
            self.validation_accuracy.append(float(logs["val_accuracy"]))
            validation = f", validation {self.validation_accuracy[-1] * 100:.2f}%"
        print(f"  {self.name} epoch {epoch + 1:2d}: {self.epoch_seconds[-1]:5.1f} s, "
              f"{self.epoch_cpu_seconds[-1]:5.1f} CPU-s (total {sum(self.epoch_seconds):6.1f} s), "
              f"test accuracy {self.test_accuracy[-1] * 100:.2f}%{validation}", flush=True)


def count_multiply_adds(model) -> int:
    """Multiply-adds of one forward pass of one image through a built Keras model.

    Counts Conv2D (any stride, padding or groups), DepthwiseConv2D and Dense layers, in
    nested models too. Batch normalization, activations, pooling and additions are left
    out: they are few multiply-adds, though on a CPU not free in memory traffic.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_multiply_adds(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * channels * math.prod(layer.kernel_size)
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            input_channels = layer.input.shape[-1]
            total += height * width * filters * math.prod(layer.kernel_size) * input_channels // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.input.shape[1:]) * layer.units
    return int(total)


def training_gflops(multiply_adds: int, images_per_second: float) -> float:
    """Training GFLOP/s: 2 FLOPs per multiply-add, 3 forward-pass equivalents per training image."""
    return 2 * 3 * multiply_adds * images_per_second / 1e9


class EpochEvaluation(keras.callbacks.Callback):
    """Calls `evaluate(model)` after each epoch and keeps what it returns.

    Put it after `EpochTestAccuracy` in the callback list: that one's clocks have
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


def run_record(model, clock, images_per_epoch, test_inputs, test_labels, seed, test_accuracy=None, validation=None):
    """One training run: its epochs' seconds and test accuracy, what it reached when, and its throughput.

    `test_accuracy` replaces the clock's per-epoch numbers where a lever evaluates otherwise
    (averaged weights). The final test accuracy, and the final validation accuracy when
    `validation` (inputs, labels) is given, are measured on the model as fit left it (for
    weight averaging: the averages).
    """
    test_accuracy = clock.test_accuracy if test_accuracy is None else test_accuracy
    training_seconds = sum(clock.epoch_seconds)
    training_rate = images_per_epoch * len(clock.epoch_seconds) / training_seconds
    multiply_adds = count_multiply_adds(model)
    final_validation = {} if validation is None else {"final_validation_accuracy": round(helpers.accuracy(
        model.predict(validation[0], batch_size=INFERENCE_BATCH, verbose=0), validation[1]), 4)}
    return {
        **final_validation,
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
        "training_gflops_per_second": round(training_gflops(multiply_adds, training_rate), 1),
        "parameters": int(model.count_params()),
    }


def fit_notebook_recipe(model, training, inputs, labels, splits, seed, name, validation=True, callbacks=()):
    """Train a fresh clone with the notebook's own training path (helpers.fit_recipe); returns the epoch clock.

    The clock times each epoch (the validation pass included, as in the notebook) and then
    measures test accuracy; `callbacks` run after it (see EpochEvaluation).
    """
    clock = EpochTestAccuracy(splits.test_inputs, splits.test_labels, name, INFERENCE_BATCH)
    helpers.fit_recipe(model, training, inputs, labels,
                       (splits.validation_inputs, splits.validation_labels) if validation else None,
                       seed, name, [clock, *callbacks])
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
        "final_validation_accuracy": spread([record.get("final_validation_accuracy", record["validation_accuracy"][-1])
                                             for record in records if record.get("validation_accuracy")]),
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

