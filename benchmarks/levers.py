"""Levers of the notebook's recipes, measured one at a time against one stated base.

Training levers. The base is the notebook's best recipe: its model `resnet` (or --model),
cloned from saved_models/ with fresh weights, trained with the settings the notebook recorded
in figures/metrics.json (epochs, batch size, schedule and peak, augmentation, early stopping,
the first 48,000 training images, validation after each epoch). Each lever changes one thing
and is trained over --seeds; every run records test accuracy after every epoch and each
epoch's wall and CPU seconds. The base also records its test accuracy with test-time
augmentation (the lever `test_time_augmentation`, which trains nothing of its own).

Throughput levers. Training images per second of the notebook's models (cloned) with one
thing changed against the line each names: input type and pipeline, batch size, threads,
oneDNN, bfloat16, XLA, steps per graph call, and architecture variants. Each runs in a fresh
process (thread settings and oneDNN are fixed when TensorFlow starts), trains a few batches
to trace the graph, then times three epochs of 12,288 images and keeps the median, with the
CPU seconds beside the wall clock, which the machine's neighbours move much more.

    python -m benchmarks.levers                                    # everything (make levers)
    python -m benchmarks.levers --levers base,label_smoothing --epochs 5 --seeds 42,7
    python -m benchmarks.levers --list                             # every lever and what it changes
    python -m benchmarks.levers --quick --levers base,tf_data      # smoke run into a temporary file

Each lever's result is merged into benchmarks/levers.json as soon as it is measured, so an
interrupted study keeps what it measured. A training lever is compared with the base trained
with the same model, epochs, images and seeds on the same CPU; when levers.json has no such base,
it is trained first.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

import helpers
from benchmarks import recipes

BEST_MODEL = "resnet"
LEVERS_PATH = recipes.PROJECT_ROOT / "benchmarks" / "levers.json"

# Training levers: name -> what changes against the base.
TRAINING_LEVERS = {
    "base": "the notebook's best recipe as it recorded it (the base of every other training lever)",
    "elastic_grid": "a smooth elastic warp added: random moves of a 4x4 grid of points, up to 2 pixels, "
                    "interpolated bicubically, on half of each batch",
    "label_smoothing": "label smoothing 0.1 (one-hot labels with CategoricalCrossentropy; off where the base has it)",
    "weight_averaging": "Adam's moving average of the weights (use_ema, momentum 0.99), evaluated with the averages "
                        "(off where the base has it)",
    "peak_x0.5": "peak learning rate x0.5",
    "peak_x2": "peak learning rate x2",
    "batch_size": "batch 128, or 64 where the base trains at 128; same peak learning rate",
    "early_stopping": "every epoch trained, the last one kept, where the base stops early and keeps its best validation "
                      "epoch (else early stopping with patience 5)",
    "half_length_members": "the base's epochs spent on an ensemble: two members of half the epochs each (seeds s "
                           "and s + 1000), their probabilities averaged",
    "width_x0.5": "half the filters in every convolution of the base model",
    "width_x2": "twice the filters in every convolution of the base model",
    "all_training_images": "the final fit: all 60,000 training images, no validation split (so no early "
                           "stopping), same epochs",
    "test_time_augmentation": "the base's predictions averaged over the image and its four 1-pixel shifts "
                              "(no training of its own)",
}
ELASTIC_GRID = {"elastic_alpha": 2.0, "elastic_grid": 4, "elastic_fraction": 0.5}
LABEL_SMOOTHING = 0.1
LEVER_BATCH_SIZE = 128
EARLY_STOPPING_PATIENCE = 5

# Throughput levers: name -> (what it measures, settings); `reference` names the lever it changes one
# thing of. Settings: model (a notebook model, default cnn_basic with the original recipe), variant (see
# model_variant), dtype and pipeline (float64 NumPy arrays unless said), batch (default: the
# original's 64 for cnn_basic, else the model's recorded batch), threads, environment, policy, jit,
# steps_per_execution.
FLOAT32_DATA = {"dtype": "float32", "pipeline": True}
BATCH_128 = {**FLOAT32_DATA, "batch": 128}
CNN_OPTIMIZED = {**FLOAT32_DATA, "model": "cnn_optimized"}
RESNET = {**FLOAT32_DATA, "model": "resnet"}
THROUGHPUT_LEVERS = {
    "original": ("original: notebook cnn_basic, float64 NumPy arrays, batch 64", {}),
    "float32": ("float32 NumPy arrays", {"dtype": "float32", "reference": "original"}),
    "tf_data": ("float32 in a cached, prefetched tf.data pipeline", {**FLOAT32_DATA, "reference": "float32"}),
    "batch_128": ("batch 128", {**BATCH_128, "reference": "tf_data"}),
    "batch_256": ("batch 256", {**FLOAT32_DATA, "batch": 256, "reference": "tf_data"}),
    "batch_512": ("batch 512", {**FLOAT32_DATA, "batch": 512, "reference": "tf_data"}),
    "intra_1": ("one intra-op thread", {**BATCH_128, "intra_threads": 1, "reference": "batch_128"}),
    "inter_1": ("one inter-op thread", {**BATCH_128, "inter_threads": 1, "reference": "batch_128"}),
    "onednn_off": ("oneDNN off, TF_ENABLE_ONEDNN_OPTS=0",
        {**BATCH_128, "environment": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "reference": "batch_128"}),
    "bfloat16": ("mixed_bfloat16 policy", {**BATCH_128, "policy": "mixed_bfloat16", "reference": "batch_128"}),
    "xla": ("jit_compile=True", {**BATCH_128, "jit": True, "reference": "batch_128"}),
    "steps_per_execution_8": ("8 training steps per call into the compiled graph",
        {**BATCH_128, "steps_per_execution": 8, "reference": "batch_128"}),
    "notebook_dnn_float64": ("notebook dnn, float64 NumPy arrays as the original fed it", {"model": "dnn"}),
    "notebook_dnn_tf_data": ("notebook dnn, float32 tf.data",
        {**FLOAT32_DATA, "model": "dnn", "reference": "notebook_dnn_float64"}),
    "notebook_cnn_optimized_float64": ("notebook cnn_optimized, float64 NumPy arrays", {"model": "cnn_optimized"}),
    "notebook_cnn_optimized_tf_data": ("notebook cnn_optimized, float32 tf.data",
        {**CNN_OPTIMIZED, "reference": "notebook_cnn_optimized_float64"}),
    "resnet": ("notebook resnet (the best recipe's model) without its augmentation, float32 tf.data", RESNET),
    "resnet_width_x0.5": ("resnet with half the filters",
        {**RESNET, "variant": {"width": 0.5}, "reference": "resnet"}),
    "resnet_width_x2": ("resnet with twice the filters",
        {**RESNET, "variant": {"width": 2.0}, "reference": "resnet"}),
    "resnet_batch_64": ("resnet at batch 64", {**RESNET, "batch": 64, "reference": "resnet"}),
    "resnet_steps_per_execution_8": ("resnet, 8 training steps per graph call",
        {**RESNET, "steps_per_execution": 8, "reference": "resnet"}),
    "resnet_onednn_off": ("resnet, oneDNN off",
        {**RESNET, "environment": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "reference": "resnet"}),
}
THROUGHPUT_IMAGES = 12288  # a multiple of every batch size tried, so no partial batch is traced in a timed epoch
WARMUP_BATCHES = 10
TIMED_EPOCHS = 3

QUICK = {"throughput_images": 512, "warmup_batches": 2, "timed_epochs": 1}
LEVER_NAMES = [*TRAINING_LEVERS, *THROUGHPUT_LEVERS]


# ==================== Architecture variants of the notebook's models =================


def model_variant(model, width=1.0, dtype_policy=None):
    """A notebook model with fresh weights and one thing changed: its width or its dtype policy.

    keras.models.clone_model rebuilds every layer from its own config, changed on the way:
    `width` scales the filters of every Conv2D (in the residual network the stem, both
    convolutions of each block and the 1x1 shortcuts alike, so the additions still match);
    `dtype_policy` (such as "mixed_bfloat16") replaces the float32 policy the layers carry.
    """
    def rebuilt(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2D) and width != 1.0:
            config["filters"] = max(1, round(config["filters"] * width))
        if dtype_policy:
            config["dtype"] = dtype_policy
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=rebuilt)


def lever_changes(name, training):
    """What training lever `name` changes in the base recipe `training`.

    Returns a dict: `training` (overrides of the recorded settings, which helpers.fit_recipe
    reads), or `width`, or `all_training_images`.
    """
    if name == "elastic_grid":
        current = {key: value for key, value in (training["augmentation"] or {}).items() if not key.startswith("elastic")}
        return {"training": {"augmentation": {**current, **ELASTIC_GRID}}}
    if name == "label_smoothing":
        return {"training": {"label_smoothing": 0.0 if training.get("label_smoothing") else LABEL_SMOOTHING}}
    if name == "weight_averaging":
        return {"training": {"use_ema": not training.get("use_ema")}}
    if name in ("peak_x0.5", "peak_x2"):
        return {"training": {"learning_rate": training["learning_rate"] * float(name.split("_x")[1])}}
    if name == "batch_size":
        return {"training": {"batch_size": 64 if training["batch_size"] == LEVER_BATCH_SIZE else LEVER_BATCH_SIZE}}
    if name == "early_stopping":
        return {"training": {"early_stopping_patience": None if training.get("early_stopping_patience")
                             else EARLY_STOPPING_PATIENCE}}
    if name == "half_length_members":
        return {"training": {"epochs": max(1, training["epochs"] // 2)}, "members": 2}
    if name in ("width_x0.5", "width_x2"):
        return {"width": float(name.split("_x")[1])}
    if name == "all_training_images":
        return {"all_training_images": True}
    if name in ("base", "test_time_augmentation"):
        return {}
    raise ValueError(f"{name!r} is not a training lever; choose from {', '.join(TRAINING_LEVERS)}.")


def averaged_weights_accuracy(test_inputs, test_labels):
    """An evaluation for EpochEvaluation: test accuracy with the optimizer's moving averages in place of the weights."""
    def evaluate(model):
        weights = [variable.numpy() for variable in model.trainable_variables]
        model.optimizer.finalize_variable_values(model.trainable_variables)
        try:
            return helpers.accuracy(model.predict(test_inputs, batch_size=recipes.INFERENCE_BATCH, verbose=0),
                                    test_labels)
        finally:
            for variable, value in zip(model.trainable_variables, weights):
                variable.assign(value)
    return evaluate


def train_members(name, base_training, settings, splits, seed):
    """A lever whose run is an ensemble: each member trained as a lever of its own seed, then their probabilities
    averaged. The record's accuracies are the ensemble's; its epochs, seconds and curves are the members' in turn."""
    changes = lever_changes(name, base_training)
    members = [train_lever(name, base_training, settings, splits, seed + 1000 * index)
               for index in range(changes["members"])]
    record = {key: [value for member, _ in members for value in member[key]]
              for key in ("epoch_seconds", "epoch_cpu_seconds", "test_accuracy", "validation_accuracy")}
    for key, (inputs, labels) in {"test": (splits.test_inputs, splits.test_labels),
                                  "validation": (splits.validation_inputs, splits.validation_labels)}.items():
        probabilities = np.mean([model.predict(inputs, batch_size=recipes.INFERENCE_BATCH, verbose=0)
                                 for _, model in members], axis=0)
        record[f"final_{key}_accuracy"] = round(helpers.accuracy(probabilities, labels), 4)
    first = members[0][0]
    return {**first, **record, "seed": seed, "members": [member for member, _ in members],
            "seconds_to": recipes.seconds_to_thresholds(record["epoch_seconds"], record["epoch_cpu_seconds"],
                                                        record["test_accuracy"])}


def train_lever(name, base_training, settings, splits, seed):
    """Train lever `name` once: the base's clone and settings with the lever's one change; returns its record
    and the trained model."""
    changes = lever_changes(name, base_training)
    training = {**base_training, **changes.get("training", {})}
    keras.utils.set_random_seed(seed)
    model = recipes.fresh_model(settings["model"], settings["models_dir"])
    if "width" in changes:
        model = model_variant(model, width=changes["width"])
    if changes.get("all_training_images"):
        count = settings["all_images"]
        inputs, labels = splits.all_inputs[:count], splits.all_labels[:count]
    else:
        inputs, labels = splits.fit_inputs[:training["train_images"]], splits.fit_labels[:training["train_images"]]
    evaluations = {}
    if name == "base":
        evaluations["shifted"] = recipes.EpochEvaluation(lambda trained: helpers.accuracy(
            helpers.shifted_predictions(trained, splits.test_inputs), splits.test_labels))
    if training.get("use_ema"):
        evaluations["averaged"] = recipes.EpochEvaluation(averaged_weights_accuracy(splits.test_inputs,
                                                                                    splits.test_labels))
    clock = recipes.fit_notebook_recipe(model, training, inputs, labels, splits, seed, f"{name} seed {seed}",
                                        validation=not changes.get("all_training_images"),
                                        callbacks=list(evaluations.values()))
    averaged = evaluations.get("averaged")
    validation = None if changes.get("all_training_images") else (splits.validation_inputs, splits.validation_labels)
    record = recipes.run_record(model, clock, len(inputs), splits.test_inputs, splits.test_labels, seed,
                                test_accuracy=averaged.values if averaged else None, validation=validation)
    if averaged:
        record["test_accuracy_without_averaging"] = [round(value, 4) for value in clock.test_accuracy]
    if "shifted" in evaluations:
        record["test_accuracy_shifted"] = [round(value, 4) for value in evaluations["shifted"].values]
        record["final_test_accuracy_shifted"] = round(helpers.accuracy(
            helpers.shifted_predictions(model, splits.test_inputs), splits.test_labels), 4)
        record["final_validation_accuracy_shifted"] = round(helpers.accuracy(
            helpers.shifted_predictions(model, splits.validation_inputs), splits.validation_labels), 4)
    return record, model


def shifted_records(base_records):
    """The base's runs as the lever test_time_augmentation sees them: accuracy with shifted predictions."""
    records = []
    for record in base_records:
        shifted = dict(record)
        shifted["test_accuracy"] = record["test_accuracy_shifted"]
        shifted["final_test_accuracy"] = record["final_test_accuracy_shifted"]
        if "final_validation_accuracy_shifted" in record:
            shifted["final_validation_accuracy"] = record["final_validation_accuracy_shifted"]
            shifted["final_validation_accuracy_plain"] = record.get("final_validation_accuracy")
        shifted["test_accuracy_plain"] = record["test_accuracy"]
        shifted["seconds_to"] = recipes.seconds_to_thresholds(record["epoch_seconds"], record["epoch_cpu_seconds"],
                                                              record["test_accuracy_shifted"])
        records.append(shifted)
    return records


def lever_entry(description, records, setup, changes):
    """What levers.json keeps of one training lever: its setup (the base), its change, every run, the summary."""
    return {"description": description, "changes": changes, "setup": setup,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "seeds": {str(record["seed"]): record for record in records},
            "summary": recipes.summarize_seeds(records)}


def run_training_levers(names, arguments, base_training, run, splits):
    """Each selected training lever over every seed, each saved as soon as it is measured."""
    all_images = min(len(splits.all_inputs), round(base_training["train_images"] / (1 - run["validation_split"])))
    settings = {"model": arguments.model, "models_dir": arguments.models_dir, "all_images": all_images}
    # A lever is compared with the base measured on the same setup: the same recipe, images, seeds and CPU
    # (the same seed gives other numbers on another CPU).
    setup = {"model": arguments.model, "epochs": base_training["epochs"], "train_images": base_training["train_images"],
             "test_images": len(splits.test_inputs), "seeds": arguments.seeds, "quick": arguments.quick,
             "base_training": base_training, "cpu": helpers.cpu_description()}
    names = [name for name in TRAINING_LEVERS if name in names]  # the base first, test-time augmentation after it
    stored = read_levers(arguments.output).get("training", {}).get("base")
    if names and "base" not in names and not (stored and stored["setup"] == setup):
        print(f"levers.json has no base measured with {setup}; training it first.", flush=True)
        names = ["base", *names]
    for name in names:
        if name == "test_time_augmentation":
            base = read_levers(arguments.output)["training"]["base"]
            records = shifted_records(list(base["seeds"].values()))
            changes = {"evaluation": {"shifts": [list(shift) for shift in helpers.ONE_PIXEL_SHIFTS]}}
        else:
            try:
                changes = lever_changes(name, base_training)
            except ValueError as error:
                print(f"{name}: skipped, {error}", flush=True)
                continue
            if changes.get("all_training_images"):
                changes = {**changes, "train_images": all_images}
            print(f"{name}: {TRAINING_LEVERS[name]} {changes or ''}", flush=True)
            records = [train_members(name, base_training, settings, splits, seed) if changes.get("members")
                       else train_lever(name, base_training, settings, splits, seed)[0] for seed in arguments.seeds]
        entry = lever_entry(TRAINING_LEVERS[name], records, setup, changes)
        save_lever(arguments.output, "training", name, entry)
        accuracy = entry["summary"]["final_test_accuracy"]
        print(f"{name}: final test accuracy {accuracy['mean'] * 100:.2f}% ({accuracy['min'] * 100:.2f}-"
              f"{accuracy['max'] * 100:.2f}), {entry['summary']['cpu_seconds_per_epoch']:.1f} CPU s per epoch",
              flush=True)


# ==================== Throughput levers ==============================================


def measure_throughput(name, arguments):
    """Train one throughput lever in this process; returns its images per second and CPU seconds."""
    settings = THROUGHPUT_LEVERS[name][1]
    sizes = QUICK if arguments.quick else {"throughput_images": THROUGHPUT_IMAGES, "warmup_batches": WARMUP_BATCHES,
                                           "timed_epochs": TIMED_EPOCHS}
    import tensorflow as tf

    # Thread pools are sized when TensorFlow's runtime starts, i.e. before its first operation.
    if "intra_threads" in settings:
        tf.config.threading.set_intra_op_parallelism_threads(settings["intra_threads"])
    if "inter_threads" in settings:
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter_threads"])
    model_name = settings.get("model", recipes.ORIGINAL_RECIPE["model"])
    if model_name == recipes.ORIGINAL_RECIPE["model"]:
        training = dict(recipes.ORIGINAL_RECIPE)
    else:
        training, _ = recipes.notebook_training(model_name, arguments.metrics)
    keras.utils.set_random_seed(0)
    model = recipes.fresh_model(model_name, arguments.models_dir)
    if "variant" in settings or "policy" in settings:
        model = model_variant(model, **settings.get("variant", {}), dtype_policy=settings.get("policy"))
    (train_images, train_labels), _ = helpers.load_mnist(arguments.data_dir)
    images, labels = train_images[:sizes["throughput_images"]], train_labels[:sizes["throughput_images"]]
    if settings.get("dtype") == "float32":
        inputs = helpers.to_model_input(images)
    else:
        inputs = (images / 255.0)[..., None]  # float64, as the original had it
    batch_size = settings.get("batch", training["batch_size"])
    helpers.compile_for_training(model, training, recipes.steps_per_epoch(len(inputs), batch_size))
    if settings.get("jit") or settings.get("steps_per_execution"):
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      jit_compile=settings.get("jit", False),
                      steps_per_execution=settings.get("steps_per_execution", 1))

    warmup_count = batch_size * sizes["warmup_batches"]
    if settings.get("pipeline"):
        data = helpers.make_dataset(inputs, labels, batch_size, shuffle=True, seed=0)
        model.fit(data.take(sizes["warmup_batches"]), epochs=1, verbose=0, shuffle=False)

        def one_epoch():
            model.fit(data, epochs=1, verbose=0, shuffle=False)
    else:
        model.fit(inputs[:warmup_count], labels[:warmup_count], batch_size=batch_size, epochs=1, verbose=0)

        def one_epoch():
            model.fit(inputs, labels, batch_size=batch_size, epochs=1, verbose=0)
    wall_seconds, cpu_seconds = [], []
    for _ in range(sizes["timed_epochs"]):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        one_epoch()
        wall_seconds.append(time.perf_counter() - wall_start)
        cpu_seconds.append(time.process_time() - cpu_start)
    images_per_second = len(inputs) / float(np.median(wall_seconds))
    multiply_adds = recipes.count_multiply_adds(model)
    return {"model": model_name, "batch_size": batch_size, "parameters": int(model.count_params()),
            "images_per_second": round(images_per_second),
            "seconds_per_60k_images": round(60000 / images_per_second, 1),
            "epoch_seconds": [round(value, 2) for value in wall_seconds],
            "cpu_seconds_per_1k_images": round(1000 * float(np.median(cpu_seconds)) / len(inputs), 3),
            "multiply_adds_per_image": multiply_adds,
            "training_gflops_per_second": round(recipes.training_gflops(multiply_adds, images_per_second), 1)}


def run_throughput_levers(names, arguments):
    """Each selected throughput lever in a fresh Python process, saved as soon as it is measured."""
    for name in names:
        description, settings = THROUGHPUT_LEVERS[name]
        # The child runs in the project root (so that `-m benchmarks.levers` imports), hence absolute paths.
        command = [sys.executable, "-m", "benchmarks.levers", "--measure-throughput", name,
                   "--models-dir", str(arguments.models_dir.resolve()), "--metrics", str(arguments.metrics.resolve())]
        if arguments.data_dir:
            command += ["--data-dir", str(Path(arguments.data_dir).resolve())]
        if arguments.quick:
            command.append("--quick")
        completed = subprocess.run(command, capture_output=True, text=True, cwd=recipes.PROJECT_ROOT,
                                   env={**os.environ, **settings.get("environment", {})})
        entry = {"description": description, "reference": settings.get("reference"),
                 "date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "images": QUICK["throughput_images"] if arguments.quick else THROUGHPUT_IMAGES}
        if completed.returncode != 0:
            lines = completed.stderr.strip().splitlines() or ["no output"]
            entry["error"] = lines[-1][:300]
            print(f"{name:<30} failed: {lines[-1][:150]}", flush=True)
        else:
            measured = json.loads(completed.stdout.strip().splitlines()[-1])
            entry.update(measured)
            print(f"{name:<30}{measured['images_per_second']:>8,} img/s {measured['cpu_seconds_per_1k_images']:>6.3f} "
                  f"CPU s/1k {measured['training_gflops_per_second']:>6.1f} GFLOP/s  {description}", flush=True)
        save_lever(arguments.output, "throughput", name, entry)


# ==================== levers.json ====================================================


def read_levers(path):
    """What levers.json holds so far ({} when there is no file)."""
    return helpers.read_json(path, "levers file") if Path(path).is_file() else {}


def save_lever(path, section, name, entry):
    """Merge one measured lever into levers.json, atomically, keeping everything else there."""
    results = read_levers(path)
    results["cpu"] = helpers.cpu_description()
    results.setdefault(section, {})[name] = entry
    helpers.write_json(results, path)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", default=",".join(LEVER_NAMES),
                        help="comma-separated levers to measure (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="print every lever and what it changes, then stop")
    parser.add_argument("--model", default=BEST_MODEL,
                        help=f"the notebook model of the base recipe (default {BEST_MODEL})")
    parser.add_argument("--seeds", default=",".join(map(str, recipes.SEEDS)),
                        help="comma-separated random seeds; each training lever trains once per seed "
                             "(default %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per training lever (default: the recorded ones)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="at most this many training images (default: the recorded 48,000)")
    recipes.add_notebook_arguments(parser)
    parser.add_argument("--output", type=Path, default=None,
                        help="levers file to merge into (default benchmarks/levers.json; "
                             "with --quick a temporary file)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a small slice of MNIST, one epoch, short throughput timings")
    parser.add_argument("--measure-throughput", choices=sorted(THROUGHPUT_LEVERS), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    arguments.levers = [name.strip() for name in arguments.levers.split(",") if name.strip()]
    unknown = [name for name in arguments.levers if name not in LEVER_NAMES]
    if unknown:
        parser.error(f"--levers: unknown {', '.join(unknown)}; choose from {', '.join(LEVER_NAMES)}")
    for option in ("epochs", "train_images"):
        if getattr(arguments, option) is not None and getattr(arguments, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return recipes.finish_arguments(parser, arguments, LEVERS_PATH, "levers")


def main(argv=None):
    arguments = parse_arguments(argv)
    if arguments.list:
        for group in (TRAINING_LEVERS, {name: entry[0] for name, entry in THROUGHPUT_LEVERS.items()}):
            for name, description in group.items():
                print(f"{name:<32}{description}")
        return
    if arguments.measure_throughput:
        try:
            print(json.dumps(measure_throughput(arguments.measure_throughput, arguments)))
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
        return
    selected = arguments.levers
    training_names = [name for name in selected if name in TRAINING_LEVERS]
    throughput_names = [name for name in selected if name in THROUGHPUT_LEVERS]
    print(f"{helpers.cpu_description()}; seeds {arguments.seeds}; writing {arguments.output}", flush=True)
    if training_names:
        # Read everything the notebook must have written before measuring anything.
        try:
            base_training, run = recipes.notebook_training(arguments.model, arguments.metrics)
            helpers.load_saved_model(arguments.models_dir / f"{arguments.model}.keras")
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
        splits = recipes.load_splits(arguments.data_dir, run["validation_split"], arguments.quick,
                                 run.get("seed", 42), run.get("validation_split_by", "last fraction"))
        base_training["epochs"] = arguments.epochs or (1 if arguments.quick else base_training["epochs"])
        fit_images = len(splits.fit_inputs)
        base_training["train_images"] = min(base_training["train_images"], arguments.train_images or fit_images,
                                            fit_images)
        print(f"base: the notebook's {arguments.model} with {base_training}", flush=True)
    if throughput_names:
        run_throughput_levers(throughput_names, arguments)
    if training_names:
        run_training_levers(training_names, arguments, base_training, run, splits)
    print(f"written to {arguments.output}")


if __name__ == "__main__":
    main()
