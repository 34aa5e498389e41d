"""Time to accuracy on MNIST: the seed's recipe against the project's fastest recipe.

Trains, in one process and one after the other, (a) the seed's recipe (basic CNN, Adam,
batch 64, float64 NumPy inputs, validation_split=0.2, 10 epochs) and (b) the project's
fastest recipe, measures test accuracy after every epoch, and reports for each the training
seconds until test accuracy first reaches 99.0% and 99.5%, training and inference images
per second, the model's multiply-adds per image and its training GFLOP/s, and the ratio
(b)/(a) of the seconds to 99.0%. Writes benchmarks/results.json and prints a table.

    python benchmarks/time_to_accuracy.py                 # the full benchmark (about 7 minutes on 2 cores)
    python benchmarks/time_to_accuracy.py --quick         # a smoke run on a small slice, 1 epoch each

Training seconds are the sum of the epochs' wall-clock times, measured from Keras'
on_epoch_begin to on_epoch_end, so they include graph tracing in the first epoch and, for
the seed, its per-epoch validation pass (part of its recipe), but not the test evaluation,
which runs after each epoch's clock has stopped.
"""

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import helpers  # noqa: E402

SEED = 42
THRESHOLDS = {"99.0": 0.990, "99.5": 0.995}
SEED_RECIPE = {"batch_size": 64, "epochs": 10, "validation_split": 0.2, "input_dtype": "float64"}
# The fastest recipe found with benchmarks/levers.py; benchmarks/README.md gives the measurements.
FAST_RECIPE = {
    "filters": (16, 32, 64),        # one 3x3 convolution per resolution: 14x14, 14x14, 7x7
    # The first convolution strides instead of pooling: levers.py measured about a quarter less
    # CPU per image and 99.03% after one epoch (against 99.09% with pooling).
    "first_stride": 2,
    # Eight training steps per call into the compiled graph: x1.12 in levers.py, same arithmetic.
    "steps_per_execution": 8,
    "dense_units": 128,
    "batch_norm": True,
    "dropout": 0.3,
    "batch_size": 128,
    # A short schedule with a higher peak: the 10-epoch one (peak 3e-3, 15% warm-up) reached
    # 98.67% after epoch 1 and 99.07% after epoch 2; a 6-epoch one 98.99% and 99.25% (one run each).
    "epochs": 5,
    "schedule": "one_cycle",        # linear warm-up from peak/10, then cosine decay to peak/100
    "peak_learning_rate": 4e-3,
    "warmup_fraction": 0.1,
    "label_smoothing": 0.1,
    "train_images": 60000,          # all of the training set, no validation split
}
# Leave TensorFlow's thread pools at their defaults (both sized to the cores): levers.py
# measured no gain from other settings on 2 cores.
INFERENCE_BATCH = 1024
QUICK_TRAIN_IMAGES = 3000
QUICK_TEST_IMAGES = 1000


# --------------------------------------------------------------------------------------
# The two recipes' models
# --------------------------------------------------------------------------------------


def build_seed_cnn():
    """The seed notebook's basic CNN (the notebook's cnn_basic), compiled as the seed did."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="cnn_basic")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_dnn():
    """The notebook's dense network, built here only to count its multiply-adds."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Dense(128, activation="relu")(layers.Flatten()(inputs))
    outputs = layers.Dense(10, activation="softmax")(layers.Dropout(0.2)(x))
    return keras.Model(inputs, outputs, name="dnn")


def learning_rate_schedule(recipe, total_steps):
    """The recipe's learning rate: a constant, or one cycle (linear warm-up, cosine decay), per step."""
    import keras

    peak = recipe["peak_learning_rate"]
    if recipe["schedule"] == "constant":
        return peak
    if recipe["schedule"] != "one_cycle":
        raise ValueError(f"schedule={recipe['schedule']!r}; use 'one_cycle' or 'constant'.")
    warmup_steps = int(total_steps * recipe["warmup_fraction"])
    return keras.optimizers.schedules.CosineDecay(
        peak / 10, decay_steps=max(1, total_steps - warmup_steps), alpha=0.01,
        warmup_target=peak, warmup_steps=warmup_steps)


def build_fast_cnn(recipe, total_steps):
    """A narrow CNN that halves the resolution after every convolution, with batch normalization.

    Width at 28x28 is what costs on a CPU, so the first convolution is the narrowest; the
    classifier sees only 3x3x64 values. `total_steps` sizes the learning-rate schedule.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for index, filters in enumerate(recipe["filters"]):
        # A strided first convolution computes at 14x14 what the pooled one computes at 28x28.
        strides = recipe.get("first_stride", 1) if index == 0 else 1
        # Without a bias when batch normalization follows: its shift makes the bias redundant.
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=not recipe["batch_norm"])(x)
        if recipe["batch_norm"]:
            x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        if strides == 1:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(recipe["dense_units"], use_bias=not recipe["batch_norm"])(x)
    if recipe["batch_norm"]:
        x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(recipe["dropout"])(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="fast_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(recipe, total_steps)),
        # Keras' sparse cross-entropy has no label smoothing, so this model trains on one-hot labels.
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe["label_smoothing"]),
        metrics=["categorical_accuracy"],
        steps_per_execution=recipe.get("steps_per_execution", 1))
    return model


def one_hot(labels):
    """Integer labels (N,) as float32 one-hot rows (N, 10), for the categorical cross-entropy."""
    import numpy as np

    return np.eye(helpers.NUM_CLASSES, dtype=np.float32)[labels]


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def epoch_clock(test_inputs, test_labels, name):
    """A callback that times each epoch, then measures test accuracy after the clock stops."""
    import keras
    import numpy as np

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_seconds, self.test_accuracy = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_seconds.append(time.perf_counter() - self.started)
            predictions = self.model.predict(test_inputs, batch_size=INFERENCE_BATCH, verbose=0).argmax(axis=1)
            self.test_accuracy.append(float(np.mean(predictions == test_labels)))
            print(f"  {name} epoch {epoch + 1:2d}: {self.epoch_seconds[-1]:5.1f} s "
                  f"(total {sum(self.epoch_seconds):6.1f} s), test accuracy {self.test_accuracy[-1] * 100:.2f}%",
                  flush=True)

    return EpochClock()


def seconds_to_thresholds(cumulative_seconds, test_accuracy):
    """For each threshold, the training seconds and epoch at which test accuracy first reached it, or None."""
    reached = {}
    for label, threshold in THRESHOLDS.items():
        epoch = next((index for index, accuracy in enumerate(test_accuracy) if accuracy >= threshold), None)
        reached[label] = None if epoch is None else {
            "seconds": round(float(cumulative_seconds[epoch]), 1), "epoch": epoch + 1}
    return reached


def training_gflops(multiply_adds, images_per_second):
    """Training GFLOP/s: 2 FLOPs per multiply-add, 3 forward-pass equivalents per training image."""
    return 2 * 3 * multiply_adds * images_per_second / 1e9


def summarize(name, model, clock, images_per_epoch, test_inputs):
    """Seconds to each threshold, throughput and model cost of one trained recipe."""
    import numpy as np

    cumulative = np.cumsum(clock.epoch_seconds)
    # The test set has been predicted after every epoch already, so this pass is warm.
    start = time.perf_counter()
    model.predict(test_inputs, batch_size=INFERENCE_BATCH, verbose=0)
    inference_rate = len(test_inputs) / (time.perf_counter() - start)
    training_rate = images_per_epoch * len(cumulative) / cumulative[-1]
    multiply_adds = helpers.count_multiply_adds(model)
    return {
        "name": name,
        "train_images_per_epoch": images_per_epoch,
        "epoch_seconds_cumulative": [round(float(value), 2) for value in cumulative],
        "test_accuracy": [round(value, 4) for value in clock.test_accuracy],
        "seconds_to": seconds_to_thresholds(cumulative, clock.test_accuracy),
        "train_images_per_second": round(float(training_rate)),
        "inference_images_per_second": round(inference_rate),
        "multiply_adds_per_image": multiply_adds,
        "training_gflops_per_second": round(training_gflops(multiply_adds, training_rate), 1),
        "parameters": model.count_params(),
    }


def measure_matmul_gflops(seconds=2.0, size=1024):
    """What this CPU reaches on a large float32 matrix product in TensorFlow: a practical ceiling."""
    import tensorflow as tf

    left = tf.random.uniform((size, size), seed=SEED)
    right = tf.random.uniform((size, size), seed=SEED + 1)
    tf.matmul(left, right).numpy()  # warm-up: thread pools and the kernel's first call
    products, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tf.matmul(left, right).numpy()
        products += 1
    return round(2 * size**3 * products / (time.perf_counter() - start) / 1e9, 1)


# --------------------------------------------------------------------------------------
# The two recipes
# --------------------------------------------------------------------------------------


def run_seed_recipe(train_images, train_labels, test_inputs, test_labels, recipe):
    """(a) The seed, verbatim: float64 arrays straight into fit, with Keras' validation_split."""
    import keras

    keras.utils.set_random_seed(SEED)
    model = build_seed_cnn()
    inputs = (train_images / 255.0)[..., None]  # float64, as the seed had it
    clock = epoch_clock(test_inputs, test_labels, "seed")
    model.fit(inputs, train_labels, batch_size=recipe["batch_size"], epochs=recipe["epochs"],
              validation_split=recipe["validation_split"], verbose=0, callbacks=[clock])
    return summarize("seed", model, clock, int(len(inputs) * (1 - recipe["validation_split"])), test_inputs)


def run_fast_recipe(train_images, train_labels, test_inputs, test_labels, recipe):
    """(b) The project's recipe: float32 in a cached, shuffled, prefetched tf.data pipeline."""
    import keras

    keras.utils.set_random_seed(SEED)
    count = min(recipe["train_images"], len(train_images))
    inputs = helpers.to_model_input(train_images[:count])
    data = helpers.make_dataset(inputs, one_hot(train_labels[:count]), recipe["batch_size"],
                                shuffle=True, seed=SEED)
    steps_per_epoch = -(-count // recipe["batch_size"])
    model = build_fast_cnn(recipe, recipe["epochs"] * steps_per_epoch)
    clock = epoch_clock(test_inputs, test_labels, "project")
    model.fit(data, epochs=recipe["epochs"], verbose=0, shuffle=False, callbacks=[clock])
    return summarize("project", model, clock, count, test_inputs)


def print_table(results):
    """The comparison as a plain-text table."""
    def reach(entry, label):
        hit = entry["seconds_to"][label]
        return f"{hit['seconds']:.1f} s (ep {hit['epoch']})" if hit else "not reached"

    header = (f"{'recipe':<9}{'to 99.0%':>16}{'to 99.5%':>16}{'final':>8}{'train s':>9}{'train img/s':>13}"
              f"{'infer img/s':>13}{'MACs/img':>11}{'GFLOP/s':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for key in ("seed", "project"):
        entry = results[key]
        print(f"{key:<9}{reach(entry, '99.0'):>16}{reach(entry, '99.5'):>16}"
              f"{entry['test_accuracy'][-1] * 100:>7.2f}%{entry['epoch_seconds_cumulative'][-1]:>9.1f}"
              f"{entry['train_images_per_second']:>13,}{entry['inference_images_per_second']:>13,}"
              f"{entry['multiply_adds_per_image']:>11,}{entry['training_gflops_per_second']:>9.1f}")
    ratio = results["ratio_seconds_to_99.0"]
    print(f"\nseconds to 99.0%, project / seed: {ratio:.3f}" if ratio is not None
          else "\nseconds to 99.0%: not reached by both recipes, so no ratio")
    print(f"float32 matrix product on this CPU: {results['matmul_gflops_per_second']} GFLOP/s "
          f"({results['cpu']})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="MNIST folder (default: $MNIST_DIR, else keras.datasets.mnist downloads it)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the JSON (default: benchmarks/results.json; "
                             "with --quick, a temporary file)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_TRAIN_IMAGES:,} training and {QUICK_TEST_IMAGES:,} test "
                             "images, one epoch per recipe")
    arguments = parser.parse_args(argv)
    if arguments.output is None:
        # A quick run never overwrites the committed results.
        arguments.output = (Path(tempfile.mkdtemp()) / "results.json" if arguments.quick
                            else PROJECT_ROOT / "benchmarks" / "results.json")

    import keras
    import tensorflow as tf

    (train_images, train_labels), (test_images, test_labels) = helpers.load_mnist(arguments.data_dir)
    seed_recipe, fast_recipe = dict(SEED_RECIPE), dict(FAST_RECIPE)
    if arguments.quick:
        train_images, train_labels = train_images[:QUICK_TRAIN_IMAGES], train_labels[:QUICK_TRAIN_IMAGES]
        test_images, test_labels = test_images[:QUICK_TEST_IMAGES], test_labels[:QUICK_TEST_IMAGES]
        seed_recipe["epochs"] = fast_recipe["epochs"] = 1
    test_inputs = helpers.to_model_input(test_images)
    cpu = helpers.cpu_description()
    print(f"{cpu}; TensorFlow {tf.__version__}, Keras {keras.__version__}")

    print(f"(a) seed recipe: basic CNN, Adam, batch {seed_recipe['batch_size']}, float64 NumPy inputs, "
          f"validation_split {seed_recipe['validation_split']}, {seed_recipe['epochs']} epochs", flush=True)
    seed = run_seed_recipe(train_images, train_labels, test_inputs, test_labels, seed_recipe)
    print(f"(b) project recipe: {fast_recipe}", flush=True)
    project = run_fast_recipe(train_images, train_labels, test_inputs, test_labels, fast_recipe)
    matmul_gflops = measure_matmul_gflops(0.5 if arguments.quick else 3.0)

    seed_hit, project_hit = seed["seconds_to"]["99.0"], project["seconds_to"]["99.0"]
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": arguments.quick,
        "cpu": cpu,
        "cpu_model": cpu.rsplit(",", 1)[0],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "train_images": len(train_images),
        "test_images": len(test_images),
        "conventions": {
            "training_seconds": "sum of epoch wall-clock times (on_epoch_begin to on_epoch_end); includes "
                                "tracing and, for the seed, its validation pass; excludes the test evaluation",
            "train_images_per_second": "training images per epoch x epochs / training seconds",
            "inference_images_per_second": f"model.predict on the test set, batch {INFERENCE_BATCH}, warm",
            "multiply_adds_per_image": "helpers.count_multiply_adds: Conv2D and Dense, one forward pass",
            "training_gflops_per_second": "2 x multiply-adds x 3 (forward + backward) x training images/s / 1e9",
            "matmul_gflops_per_second": "tf.matmul of two 1024x1024 float32 matrices, the CPU's practical ceiling",
        },
        "seed_recipe": {**seed_recipe, "model": "cnn_basic", "optimizer": "Adam(1e-3)",
                        "notes": "float64 NumPy arrays straight into model.fit with validation_split; "
                                 "trains on the first 80% of the training images"},
        "project_recipe": {**fast_recipe, "filters": list(fast_recipe["filters"]), "model": "fast_cnn",
                           "optimizer": "Adam",
                           "notes": "float32 inputs in a cached, shuffled, prefetched tf.data pipeline; trains "
                                    "on all training images without a validation split"},
        "seed": seed,
        "project": project,
        "ratio_seconds_to_99.0": (round(project_hit["seconds"] / seed_hit["seconds"], 3)
                                  if seed_hit and project_hit else None),
        "matmul_gflops_per_second": matmul_gflops,
        "notebook_models_multiply_adds": {"dnn": helpers.count_multiply_adds(build_dnn()),
                                          "cnn_basic": helpers.count_multiply_adds(build_seed_cnn())},
    }
    helpers.write_json(results, arguments.output)
    print_table(results)
    print(f"written to {arguments.output}")
    return results


if __name__ == "__main__":
    main()
