"""Should the pad's networks learn from pen digits? One residual network, fine-tuned two ways, measured on pen writers.

Loads the notebook's `resnet` (safe mode) and fine-tunes a copy for a few epochs with its own augmentation,
once on the MNIST training digits alone and once with the pen digits of pen writers 1-15 added
(`--repeats` times each), then reads the pen digits of writers 16-20 (never trained on) through the pad's
path, and the MNIST validation digits. Prints one line per variant and writes `pen_digits.json`.
Run from the project root: .venv/bin/python -m benchmarks.pen_digits
"""

import argparse
import json
from pathlib import Path

import keras
import numpy as np

import helpers
import other_sources
import reader
import writers
from benchmarks import recipes

PENDIGITS_DIR = recipes.PROJECT_ROOT.parent / "shared" / "data" / "pendigits"
FIT_WRITERS, MEASURE_WRITERS = range(1, 16), range(16, 21)


def measure(model, pen_inputs, pen_labels, pen_writers, splits):
    measured = np.isin(pen_writers, MEASURE_WRITERS)
    correct = reader.predict_digits(model, pen_inputs[measured])[0] == pen_labels[measured]
    summary = writers.summary_by_writer(correct, pen_writers[measured])
    summary["mnist_validation"] = helpers.accuracy(reader.predict_digits(model, splits.validation_inputs)[1],
                                                   splits.validation_labels)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("pen_digits.json"))
    arguments = parser.parse_args()
    training, run = recipes.notebook_training("resnet")
    splits = recipes.load_splits(None, run["validation_split"], False, run.get("seed", 42),
                                 run.get("validation_split_by", "last fraction"))
    pen_labels, pen_writers, drawings = other_sources.load_pendigits(PENDIGITS_DIR)
    pen_inputs = helpers.prepare_many(drawings, strokes=True)[0]
    base = reader.load_model(recipes.PROJECT_ROOT / "saved_models" / "resnet.keras")
    results = {"cpu": helpers.cpu_description(), "epochs": arguments.epochs, "repeats": arguments.repeats,
               "as trained": measure(base, pen_inputs, pen_labels, pen_writers, splits)}
    fit_pen = np.isin(pen_writers, FIT_WRITERS)
    for repeats in (0, arguments.repeats):
        images = np.concatenate([splits.fit_inputs] + [pen_inputs[fit_pen]] * repeats)
        labels = np.concatenate([splits.fit_labels] + [pen_labels[fit_pen]] * repeats)
        fine_tune = {**training, "epochs": arguments.epochs, "learning_rate": 1e-3}
        keras.utils.set_random_seed(42)
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        name = f"fine-tuned, pen digits x{repeats}" if repeats else "fine-tuned, MNIST only"
        _, seconds, cpu_seconds = helpers.fit_recipe(model, fine_tune, images, labels, None, 42, name)
        results[name] = {**measure(model, pen_inputs, pen_labels, pen_writers, splits),
                         "seconds": seconds, "cpu_seconds": cpu_seconds}
    for name, entry in results.items():
        if isinstance(entry, dict):
            print(f"{name:>28}: pen writers 16-20 {entry['accuracy'] * 100:.2f}% (worst {entry['worst_writer'] * 100:.1f}%), "
                  f"MNIST validation {entry['mnist_validation'] * 100:.2f}%")
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
