"""What TensorFlow's deterministic ops cost on this CPU, for the notebook's own models.

`tf.config.experimental.enable_op_determinism()` cannot be turned off again in a process, so
each setting trains in a process of its own: for each model (cloned from `saved_models/`, with
the batch size and augmentation the notebook recorded in `figures/metrics.json`), one warm-up
pass, then `--epochs` timed passes over `--images` training images, with and without
deterministic ops, alternating. Prints wall and CPU seconds per pass and the median ratio, and
writes benchmarks/determinism.json.

    python -m benchmarks.determinism                       # cnn_basic and resnet, 12,800 images, 3 passes each
    python -m benchmarks.determinism --models cnn_basic --images 3200 --output /tmp/determinism.json
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = PROJECT_ROOT / "benchmarks" / "determinism.json"


def measure(name, deterministic, images, epochs, models_dir, metrics_path, data_dir):
    """In this process: CPU and wall seconds of `epochs` passes of model `name` (called in a child process)."""
    import keras
    import tensorflow as tf

    import helpers
    from benchmarks import recipes

    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(42)
    training, _ = recipes.notebook_training(name, metrics_path)
    (train_images, train_labels), _ = helpers.load_mnist(data_dir)
    inputs, labels = helpers.to_model_input(train_images[:images]), train_labels[:images]
    augmentation = helpers.augmentation_layers(training["augmentation"], seed=42) if training["augmentation"] else None
    data = helpers.make_dataset(inputs, labels, training["batch_size"], shuffle=True, seed=42, augmentation=augmentation)
    model = helpers.compile_for_training(recipes.fresh_model(name, models_dir), training,
                                         -(-images // training["batch_size"]))
    model.fit(data.take(3), epochs=1, verbose=0)  # tracing and thread pools, outside the clock
    passes = []
    for _ in range(epochs):
        started, cpu_started = time.perf_counter(), time.process_time()
        model.fit(data, epochs=1, verbose=0)
        passes.append({"seconds": round(time.perf_counter() - started, 2),
                       "cpu_seconds": round(time.process_time() - cpu_started, 2)})
    return passes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cnn_basic,resnet", help="notebook models, comma-separated")
    parser.add_argument("--images", type=int, default=12800, help="training images per timed pass")
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per setting")
    parser.add_argument("--models-dir", default=str(PROJECT_ROOT / "saved_models"))
    parser.add_argument("--metrics", default=str(PROJECT_ROOT / "figures" / "metrics.json"))
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "DETERMINISTIC"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        name, deterministic = arguments.child[0], arguments.child[1] == "on"
        print(json.dumps(measure(name, deterministic, arguments.images, arguments.epochs, arguments.models_dir,
                                 arguments.metrics, arguments.data_dir)))
        return 0

    import helpers

    results = {"measured": datetime.date.today().isoformat(), "cpu": helpers.cpu_description(),
               "images_per_pass": arguments.images, "models": {}}
    for name in arguments.models.split(","):
        runs = {"off": [], "on": []}
        for setting in ("off", "on", "off", "on"):  # alternating, so a slow spell of the machine hits both
            command = [sys.executable, "-m", "benchmarks.determinism", "--child", name, setting,
                       "--images", str(arguments.images), "--epochs", str(arguments.epochs),
                       "--models-dir", arguments.models_dir, "--metrics", arguments.metrics]
            if arguments.data_dir:
                command += ["--data-dir", arguments.data_dir]
            child = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if child.returncode != 0:
                print(child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "child failed", file=sys.stderr)
                return 1
            runs[setting] += json.loads(child.stdout.strip().splitlines()[-1])
        median = {setting: {key: statistics.median(run[key] for run in passes) for key in ("seconds", "cpu_seconds")}
                  for setting, passes in runs.items()}
        ratio = {key: round(median["on"][key] / median["off"][key], 3) for key in ("seconds", "cpu_seconds")}
        results["models"][name] = {"passes": runs, "median": median, "on_over_off": ratio}
        print(f"{name}: median per pass without deterministic ops {median['off']['seconds']:.1f} s, "
              f"{median['off']['cpu_seconds']:.1f} CPU-s; with them {median['on']['seconds']:.1f} s, "
              f"{median['on']['cpu_seconds']:.1f} CPU-s (x{ratio['cpu_seconds']:.2f} CPU)", flush=True)
    helpers.write_json(results, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
