"""What each speed lever gives on this CPU, measured one lever at a time.

Throughput levers: each runs in a fresh process (thread settings and oneDNN must be chosen
before TensorFlow starts), trains on a few batches to trace the graph, then times three epochs
on the first 12,288 MNIST training images (a multiple of every batch size tried, so no
partial batch is traced inside a timed epoch) and keeps the median. The wall clock of a
small virtual machine jumps by a third or more from one epoch to the next, so each lever
also records the CPU seconds its epochs used, which the neighbours' load moves much less.

Accuracy levers: the project's fast model trained on all 60,000 training images for a few
epochs (the schedule sized to those epochs), with one thing changed at a time; test accuracy
after every epoch, training seconds as in time_to_accuracy.py.

    python benchmarks/levers.py                         # everything (about 20 minutes on 2 cores)
    python benchmarks/levers.py --part throughput       # one part; merged into levers.json
    python benchmarks/levers.py --lever batch_256       # one throughput lever, in this process

Writes benchmarks/levers.json and prints a table.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

import helpers  # noqa: E402

THROUGHPUT_IMAGES = 12288
WARMUP_BATCHES = 10
TIMED_EPOCHS = 3
ACCURACY_EPOCHS = 2

FLOAT32_DATA = {"dtype": "float32", "pipeline": True}
# name: (what it measures, settings); each line changes one thing against the line it names.
THROUGHPUT_LEVERS = {
    "seed": ("seed: basic CNN, float64 NumPy arrays, batch 64", {}),
    "float32": ("float32 NumPy arrays (vs seed)", {"dtype": "float32"}),
    "tf_data": ("float32 in a cached, prefetched tf.data pipeline (vs float32)", FLOAT32_DATA),
    "batch_128": ("batch 128 (vs tf_data)", {**FLOAT32_DATA, "batch": 128}),
    "batch_256": ("batch 256 (vs tf_data)", {**FLOAT32_DATA, "batch": 256}),
    "batch_512": ("batch 512 (vs tf_data)", {**FLOAT32_DATA, "batch": 512}),
    "intra_1": ("one intra-op thread (vs batch_128)", {**FLOAT32_DATA, "batch": 128, "intra_threads": 1}),
    "inter_1": ("one inter-op thread (vs batch_128)", {**FLOAT32_DATA, "batch": 128, "inter_threads": 1}),
    "onednn_off": ("oneDNN off, TF_ENABLE_ONEDNN_OPTS=0 (vs batch_128)",
                   {**FLOAT32_DATA, "batch": 128, "environment": {"TF_ENABLE_ONEDNN_OPTS": "0"}}),
    "bfloat16": ("mixed_bfloat16 policy (vs batch_128)", {**FLOAT32_DATA, "batch": 128, "policy": "mixed_bfloat16"}),
    "xla": ("jit_compile=True (vs batch_128)", {**FLOAT32_DATA, "batch": 128, "jit": True}),
    "steps_per_execution_8": ("8 training steps per call into the compiled graph (vs batch_128)",
                              {**FLOAT32_DATA, "batch": 128, "steps_per_execution": 8}),
    "fast_model": ("fast model: 16-32-64 filters, same padding, pool after each, BN (vs batch_128)",
                   {**FLOAT32_DATA, "batch": 128, "model": {}}),
    "fast_model_no_bn": ("fast model without batch normalization (vs fast_model)",
                         {**FLOAT32_DATA, "batch": 128, "model": {"batch_norm": False}}),
    "fast_model_wide": ("fast model twice as wide, 32-64-128 filters (vs fast_model)",
                        {**FLOAT32_DATA, "batch": 128, "model": {"filters": (32, 64, 128)}}),
    "fast_model_batch_256": ("fast model at batch 256 (vs fast_model)",
                             {**FLOAT32_DATA, "batch": 256, "model": {}}),
    "fast_model_stride_2": ("fast model whose first convolution has stride 2 instead of pooling (vs fast_model)",
                            {**FLOAT32_DATA, "batch": 128, "model": {"first_stride": 2}}),
    # The notebook's own models keep batch 64 and their definitions; only the input changes.
    "notebook_dnn_float64": ("notebook dnn, float64 NumPy arrays as the seed fed it", {"notebook_model": "dnn"}),
    "notebook_dnn_tf_data": ("notebook dnn, float32 tf.data (vs notebook_dnn_float64)",
                             {**FLOAT32_DATA, "notebook_model": "dnn"}),
    "notebook_cnn_optimized_float64": ("notebook cnn_optimized, float64 NumPy arrays",
                                       {"notebook_model": "cnn_optimized"}),
    "notebook_cnn_optimized_tf_data": ("notebook cnn_optimized, float32 tf.data (vs notebook_cnn_optimized_float64)",
                                       {**FLOAT32_DATA, "notebook_model": "cnn_optimized"}),
}
# The notebook's cnn_optimized as the fast model's builder makes it (its L2 penalty costs little).
NOTEBOOK_CNN_OPTIMIZED = {"dense_units": 256, "dropout": 0.4}
# name: (what changes against the fast recipe, recipe overrides)
ACCURACY_LEVERS = {
    "fast_recipe": ("the fast recipe: BN, one cycle, label smoothing 0.1, batch 128, peak 4e-3", {}),
    "no_batch_norm": ("without batch normalization", {"batch_norm": False}),
    "constant_lr": ("constant learning rate 1e-3 instead of one cycle",
                    {"schedule": "constant", "peak_learning_rate": 1e-3}),
    "no_label_smoothing": ("without label smoothing", {"label_smoothing": 0.0}),
    "batch_256": ("batch 256, peak learning rate x sqrt(2)", {"batch_size": 256, "peak_learning_rate": 5.7e-3}),
    "batch_64": ("batch 64, peak learning rate / sqrt(2)", {"batch_size": 64, "peak_learning_rate": 2.8e-3}),
    "long_warmup": ("warm-up over 30% of the steps instead of 10%", {"warmup_fraction": 0.3}),
    "peak_8e-3": ("peak learning rate 8e-3 instead of 4e-3", {"peak_learning_rate": 8e-3}),
    "stride_2": ("first convolution with stride 2 instead of max-pooling", {"first_stride": 2}),
}


def base_recipe():
    """The recipe every lever changes one thing of: the fast recipe with pooling after its first
    convolution and one step per graph call, as it stood when the levers were measured (it has
    since adopted the stride-2 and steps_per_execution levers)."""
    from time_to_accuracy import FAST_RECIPE

    return {**FAST_RECIPE, "first_stride": 1, "steps_per_execution": 1}


def measure_throughput(name):
    """Train one throughput lever in this process; returns its images per second."""
    settings = THROUGHPUT_LEVERS[name][1]
    import tensorflow as tf

    # Thread pools are sized when TensorFlow's runtime starts, i.e. before its first operation.
    if "intra_threads" in settings:
        tf.config.threading.set_intra_op_parallelism_threads(settings["intra_threads"])
    if "inter_threads" in settings:
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter_threads"])
    import keras

    from time_to_accuracy import build_dnn, build_fast_cnn, build_seed_cnn, one_hot

    if "policy" in settings:
        keras.mixed_precision.set_global_policy(settings["policy"])
    keras.utils.set_random_seed(0)
    (train_images, train_labels), _ = helpers.load_mnist()
    images, labels = train_images[:THROUGHPUT_IMAGES], train_labels[:THROUGHPUT_IMAGES]
    if settings.get("dtype") == "float32":
        inputs = helpers.to_model_input(images)
    else:
        inputs = (images / 255.0)[..., None]  # float64, as the seed had it
    batch_size = settings.get("batch", 64)
    if "model" in settings or settings.get("notebook_model") == "cnn_optimized":
        recipe = {**base_recipe(), **settings.get("model", NOTEBOOK_CNN_OPTIMIZED)}
        model = build_fast_cnn(recipe, total_steps=1000)
        labels = one_hot(labels)
    elif settings.get("notebook_model") == "dnn":
        model = build_dnn()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model = build_seed_cnn()
    if settings.get("jit") or settings.get("steps_per_execution"):
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      jit_compile=settings.get("jit", False),
                      steps_per_execution=settings.get("steps_per_execution", 1))

    warmup_count = batch_size * WARMUP_BATCHES
    if settings.get("pipeline"):
        data = helpers.make_dataset(inputs, labels, batch_size, shuffle=True, seed=0)
        model.fit(data.take(WARMUP_BATCHES), epochs=1, verbose=0, shuffle=False)

        def one_epoch():
            model.fit(data, epochs=1, verbose=0, shuffle=False)
    else:
        model.fit(inputs[:warmup_count], labels[:warmup_count], batch_size=batch_size, epochs=1, verbose=0)

        def one_epoch():
            model.fit(inputs, labels, batch_size=batch_size, epochs=1, verbose=0)
    wall_seconds, cpu_seconds = [], []
    for _ in range(TIMED_EPOCHS):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        one_epoch()
        wall_seconds.append(time.perf_counter() - wall_start)
        cpu_seconds.append(time.process_time() - cpu_start)
    seconds = sorted(wall_seconds)[len(wall_seconds) // 2]
    images_per_second = len(inputs) / seconds
    multiply_adds = helpers.count_multiply_adds(model)
    from time_to_accuracy import training_gflops

    return {"images_per_second": round(images_per_second),
            "seconds_per_60k_images": round(60000 / images_per_second, 1),
            "epoch_seconds": [round(value, 2) for value in wall_seconds],
            "cpu_seconds_per_1k_images": round(1000 * sorted(cpu_seconds)[len(cpu_seconds) // 2] / len(inputs), 3),
            "multiply_adds_per_image": multiply_adds,
            "training_gflops_per_second": round(training_gflops(multiply_adds, images_per_second), 1)}


def run_throughput_levers():
    """Every throughput lever, each in a fresh Python process."""
    results = {}
    for name, (description, settings) in THROUGHPUT_LEVERS.items():
        environment = {**os.environ, **settings.get("environment", {})}
        completed = subprocess.run([sys.executable, __file__, "--lever", name],
                                   capture_output=True, text=True, env=environment)
        if completed.returncode != 0:
            lines = completed.stderr.strip().splitlines() or ["no output"]
            results[name] = {"description": description, "error": lines[-1][:300]}
            print(f"{name:<22} failed: {lines[-1][:150]}", flush=True)
            continue
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        results[name] = {"description": description, **measured}
        print(f"{name:<22}{measured['images_per_second']:>8,} img/s {measured['seconds_per_60k_images']:>6.1f} s/60k "
              f"{measured['cpu_seconds_per_1k_images']:>6.3f} CPU s/1k {measured['training_gflops_per_second']:>6.1f} "
              f"GFLOP/s  {description}", flush=True)
    return results


def run_accuracy_levers():
    """Every accuracy lever in this process: the fast model, one change at a time, a few epochs each."""
    import keras
    import numpy as np

    from time_to_accuracy import build_fast_cnn, epoch_clock, one_hot, seconds_to_thresholds

    (train_images, train_labels), (test_images, test_labels) = helpers.load_mnist()
    train_inputs, test_inputs = helpers.to_model_input(train_images), helpers.to_model_input(test_images)
    results = {}
    for name, (description, overrides) in ACCURACY_LEVERS.items():
        recipe = {**base_recipe(), **overrides, "epochs": ACCURACY_EPOCHS}
        keras.utils.set_random_seed(42)
        data = helpers.make_dataset(train_inputs, one_hot(train_labels), recipe["batch_size"],
                                    shuffle=True, seed=42)
        model = build_fast_cnn(recipe, recipe["epochs"] * -(-len(train_inputs) // recipe["batch_size"]))
        clock = epoch_clock(test_inputs, test_labels, name)
        model.fit(data, epochs=recipe["epochs"], verbose=0, shuffle=False, callbacks=[clock])
        cumulative = np.cumsum(clock.epoch_seconds)
        results[name] = {
            "description": description,
            "epochs": recipe["epochs"],
            "epoch_seconds_cumulative": [round(float(value), 1) for value in cumulative],
            "test_accuracy": [round(value, 4) for value in clock.test_accuracy],
            "seconds_to": seconds_to_thresholds(cumulative, clock.test_accuracy),
        }
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lever", choices=sorted(THROUGHPUT_LEVERS),
                        help="measure one throughput lever in this process and print its JSON")
    parser.add_argument("--part", choices=("throughput", "accuracy", "all"), default="all")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks" / "levers.json")
    arguments = parser.parse_args()
    if arguments.lever:
        print(json.dumps(measure_throughput(arguments.lever)))
        return

    # Merge into earlier results, so that one part can be measured again on its own.
    results = json.loads(arguments.output.read_text()) if arguments.output.is_file() else {}
    results.update({"cpu": helpers.cpu_description(), "throughput_images": THROUGHPUT_IMAGES,
                    "accuracy_epochs": ACCURACY_EPOCHS})
    if arguments.part in ("throughput", "all"):
        results["throughput"] = run_throughput_levers()
        results["throughput_date"] = datetime.datetime.now().isoformat(timespec="seconds")
        helpers.write_json(results, arguments.output)
    if arguments.part in ("accuracy", "all"):
        results["accuracy"] = run_accuracy_levers()
        results["accuracy_date"] = datetime.datetime.now().isoformat(timespec="seconds")
        helpers.write_json(results, arguments.output)
    print(f"written to {arguments.output}")


if __name__ == "__main__":
    main()
