"""Time to accuracy on MNIST: the notebook's best recipe against the original recipe.

Trains, in one process, for each seed one after the other, (a) the original recipe: the
notebook's basic CNN (cloned from saved_models/cnn_basic.keras) trained as the notebook this
project grew from trained it (benchmarks.recipes.ORIGINAL_RECIPE), and (b) the notebook's best
recipe: its model `resnet` (or --model) cloned from saved_models/ and trained with the settings
the notebook recorded in figures/metrics.json. Measures test accuracy after every epoch and
each epoch's wall and CPU seconds, and reports the training seconds until test accuracy first
reaches 99.0, 99.5, 99.6 and 99.7% (per seed, and mean and spread over seeds), the ratio (b)/(a)
of the seconds to 99.0%, training and inference images per second, multiply-adds per image and
training GFLOP/s. (b) is trained as complete runs of several lengths (--lengths, each a whole
run with its schedule fitted to its length; the longest is the one the time-to-accuracy table shows):
the fast recipe is the fewest epochs whose final test accuracy, mean over the seeds, is at least
99.5%, with its training seconds over the original recipe's measured in this same process.
Writes benchmarks/results.json and prints a table.

    python -m benchmarks.time_to_accuracy              # the full benchmark (make benchmark)
    python -m benchmarks.time_to_accuracy --lengths 5,8   # only complete runs of 5 and 8 epochs
    python -m benchmarks.time_to_accuracy --quick      # a smoke run: a small slice, 1 and 2 epochs

Training seconds are the sum of the epochs' wall-clock times, from Keras' on_epoch_begin to
on_epoch_end: graph tracing in the first epoch and each recipe's validation pass count (both
recipes validate after every epoch, as the notebook does), the test evaluation does not.
"""

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import keras
import tensorflow as tf

import helpers
from benchmarks import recipes, report

BEST_MODEL = "resnet"
# Complete runs of the best recipe besides its recorded length: a one-cycle run is at its best only at
# its end, so the honest question is which whole run of fewer epochs still ends at 99.5%.
LENGTHS = (5, 8)
QUICK_LENGTHS = (1, 2)
FAST_TARGET = 0.995
RESULTS_PATH = recipes.PROJECT_ROOT / "benchmarks" / "results.json"


def train_original(models_dir, splits, seed, epochs):
    """(a) The original recipe: float64 NumPy arrays straight into fit, with Keras' validation_split."""
    recipe = recipes.ORIGINAL_RECIPE
    keras.utils.set_random_seed(seed)
    model = recipes.fresh_model(recipe["model"], models_dir)
    fit_images = int(len(splits.train_images) * (1 - recipe["validation_split"]))
    helpers.compile_for_training(model, {**recipe, "epochs": epochs},
                                 recipes.steps_per_epoch(fit_images, recipe["batch_size"]))
    inputs = (splits.train_images / 255.0)[..., None]  # float64, as the original had it
    clock = recipes.EpochTestAccuracy(splits.test_inputs, splits.test_labels, f"original seed {seed}",
                                      recipes.INFERENCE_BATCH)
    model.fit(inputs, splits.train_labels, batch_size=recipe["batch_size"], epochs=epochs,
              validation_split=recipe["validation_split"], verbose=0, callbacks=[clock])
    return recipes.run_record(model, clock, fit_images, splits.test_inputs, splits.test_labels, seed)


def train_best(name, models_dir, training, splits, seed):
    """(b) The notebook's recipe for model `name`: a fresh clone trained with its recorded settings."""
    keras.utils.set_random_seed(seed)
    model = recipes.fresh_model(name, models_dir)
    inputs, labels = splits.fit_inputs[:training["train_images"]], splits.fit_labels[:training["train_images"]]
    clock = recipes.fit_notebook_recipe(model, training, inputs, labels, splits, seed, f"{name} seed {seed}")
    return recipes.run_record(model, clock, len(inputs), splits.test_inputs, splits.test_labels, seed,
                              validation=(splits.validation_inputs, splits.validation_labels))


def measure_matmul_gflops(seconds=2.0, size=1024):
    """What this CPU reaches on a large float32 matrix product in TensorFlow: a practical ceiling."""
    left = tf.random.uniform((size, size), seed=1)
    right = tf.random.uniform((size, size), seed=2)
    tf.matmul(left, right).numpy()  # warm-up: thread pools and the kernel's first call
    products, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tf.matmul(left, right).numpy()
        products += 1
    return round(2 * size**3 * products / (time.perf_counter() - start) / 1e9, 1)


def ratio_of_means(results, label, key="seconds"):
    """Best recipe's mean seconds to a threshold over the original's, or None unless every seed of both reached it."""
    best, original = (results["recipes"][recipe]["summary"]["seconds_to"][label][key]
                      for recipe in ("best", "original"))
    return round(best["mean"] / original["mean"], 3) if best and original else None


def lengths_summary(records, lengths):
    """Complete runs of each length: final accuracy over the seeds, training seconds against the original
    recipe's (mean over mean, wall and CPU), and the fast recipe: the fewest epochs whose mean final test
    accuracy is at least FAST_TARGET (None when no length reaches it). The longest run's seeds are kept
    under recipes/best, so its entry here does not repeat them."""
    original = recipes.summarize_seeds(records["original"])
    summary = {}
    for length in lengths:
        seeds = recipes.summarize_seeds(records[length])
        summary[str(length)] = {
            "epochs": length,
            "final_test_accuracy": seeds["final_test_accuracy"],
            "final_validation_accuracy": seeds["final_validation_accuracy"],
            "training_seconds": seeds["training_seconds"],
            "training_cpu_seconds": seeds["training_cpu_seconds"],
            "ratio_to_original_seconds": round(seeds["training_seconds"]["mean"]
                                               / original["training_seconds"]["mean"], 3),
            "ratio_to_original_cpu_seconds": round(seeds["training_cpu_seconds"]["mean"]
                                                   / original["training_cpu_seconds"]["mean"], 3),
            "seeds": {str(record["seed"]): record for record in records[length]} if length != lengths[-1] else "best",
        }
    fast = next((entry["epochs"] for entry in summary.values()
                 if entry["final_test_accuracy"]["mean"] >= FAST_TARGET), None)
    return {"target": FAST_TARGET, "fast_recipe_epochs": fast, "runs": summary}


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=BEST_MODEL,
                        help=f"the notebook model of the best recipe (default {BEST_MODEL})")
    parser.add_argument("--seeds", default=",".join(map(str, recipes.SEEDS)),
                        help="comma-separated random seeds, each trains both recipes (default %(default)s)")
    recipes.add_notebook_arguments(parser)
    parser.add_argument("--lengths", default=None,
                        help="epochs of the complete runs of the best recipe, comma-separated; each is a whole "
                             "run of that length, its schedule fitted to it (default "
                             f"{','.join(map(str, LENGTHS))} and the recorded length; with --quick "
                             f"{','.join(map(str, QUICK_LENGTHS))})")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the JSON (default benchmarks/results.json; with --quick a temporary file)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {recipes.QUICK_TRAIN_IMAGES:,} training and {recipes.QUICK_TEST_IMAGES:,} "
                             "test images, one epoch of the original recipe")
    arguments = parser.parse_args(argv)
    if arguments.lengths is not None:
        try:
            arguments.lengths = sorted({int(value) for value in arguments.lengths.split(",") if value.strip()})
        except ValueError:
            parser.error(f"--lengths: {arguments.lengths!r} is not a comma-separated list of epochs, such as 5,8")
        if not arguments.lengths or any(length < 1 for length in arguments.lengths):
            parser.error("--lengths: give at least one length, each at least 1 epoch")
    elif arguments.quick:
        arguments.lengths = list(QUICK_LENGTHS)
    return recipes.finish_arguments(parser, arguments, RESULTS_PATH, "recipes")


def main(argv=None):
    arguments = parse_arguments(argv)
    # Read everything the notebook must have written before training anything.
    try:
        training, run = recipes.notebook_training(arguments.model, arguments.metrics)
        for name in (recipes.ORIGINAL_RECIPE["model"], arguments.model):
            helpers.load_saved_model(arguments.models_dir / f"{name}.keras")
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    splits = recipes.load_splits(arguments.data_dir, run["validation_split"], arguments.quick,
                                 run.get("seed", 42), run.get("validation_split_by", "last fraction"))
    original_epochs = 1 if arguments.quick else recipes.ORIGINAL_RECIPE["epochs"]
    lengths = arguments.lengths or sorted({*LENGTHS, training["epochs"]})
    best_training = {**training, "epochs": lengths[-1]}
    cpu = helpers.cpu_description()
    print(f"{cpu}; TensorFlow {tf.__version__}, Keras {keras.__version__}; seeds {arguments.seeds}")
    print(f"(a) original recipe: {dict(recipes.ORIGINAL_RECIPE)}")
    print(f"(b) best recipe: the notebook's {arguments.model} with {training}, complete runs of {lengths} epochs",
          flush=True)

    records = {"original": [], **{length: [] for length in lengths}}
    for seed in arguments.seeds:
        records["original"].append(train_original(arguments.models_dir, splits, seed, original_epochs))
        for length in lengths:
            records[length].append(train_best(arguments.model, arguments.models_dir,
                                              {**training, "epochs": length}, splits, seed))
    matmul_gflops = measure_matmul_gflops(0.5 if arguments.quick else 3.0)

    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": arguments.quick,
        "cpu": cpu,
        "cpu_model": cpu.split(",", 1)[0],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "seeds": arguments.seeds,
        "thresholds": list(recipes.THRESHOLDS),
        "train_images": len(splits.train_images),
        "test_images": len(splits.test_inputs),
        "notebook": {"models_dir": str(arguments.models_dir), "metrics": str(arguments.metrics)},
        "recipes": {
            "original": {
                "model": recipes.ORIGINAL_RECIPE["model"],
                "settings": dict(recipes.ORIGINAL_RECIPE),
                "description": "the notebook's basic CNN, cloned, trained as the original notebook did: float64 "
                               "NumPy arrays into model.fit with validation_split (fits the first 80%)",
                "seeds": {str(record["seed"]): record for record in records["original"]},
                "summary": recipes.summarize_seeds(records["original"]),
            },
            "best": {
                "model": arguments.model,
                "settings": best_training,
                "description": f"the notebook's {arguments.model}, cloned, trained with its recorded settings "
                               f"for {lengths[-1]} epochs: float32 tf.data pipeline, validation after each epoch",
                "seeds": {str(record["seed"]): record for record in records[lengths[-1]]},
                "summary": recipes.summarize_seeds(records[lengths[-1]]),
            },
        },
        "matmul_gflops_per_second": matmul_gflops,
    }
    if arguments.quick:
        results["quick_overrides"] = {"original_epochs": 1, "train_images": len(splits.train_images),
                                      "test_images": len(splits.test_inputs)}
    results["lengths"] = lengths_summary(records, lengths)
    results["ratio_seconds_to_99.0"] = ratio_of_means(results, "99.0")
    results["ratio_cpu_seconds_to_99.0"] = ratio_of_means(results, "99.0", "cpu_seconds")
    helpers.write_json(results, arguments.output)
    print("\n" + report.time_to_accuracy_markdown(results) + "\n\n" + report.lengths_markdown(results))
    print(f"written to {arguments.output}")
    return results


if __name__ == "__main__":
    main()
