"""Classify images of handwritten digits with a model trained by model.ipynb.

Each image is prepared the way MNIST was made (see helpers.prepare_digit_image) and the
predicted digit is printed with its three most likely digits.
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(PROJECT_ROOT))

import helpers  # noqa: E402


def default_model_path() -> Path:
    """The most accurate saved model according to figures/metrics.json, else cnn_optimized."""
    metrics_path = PROJECT_ROOT / "figures" / "metrics.json"
    models_dir = PROJECT_ROOT / "saved_models"
    try:
        models = json.loads(metrics_path.read_text())["models"]
    except (OSError, ValueError, KeyError):
        return models_dir / "cnn_optimized.keras"
    # Ensembles have members and no file of their own.
    ranked = sorted((entry["test_accuracy"], name) for name, entry in models.items()
                    if "members" not in entry and (models_dir / f"{name}.keras").is_file())
    return models_dir / f"{ranked[-1][1]}.keras" if ranked else models_dir / "cnn_optimized.keras"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Predict the digit in each image (a scan, photo or drawing of one handwritten digit, "
                    "dark on light or light on dark, any size). Prints the predicted digit and its top three "
                    "probabilities per image.",
        epilog="example: python predict.py my_seven.png scan.jpg --model saved_models/cnn_basic.keras\n"
               "exit status: 0 all images read, 1 some image could not be read, 2 the model could not be loaded",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, TIFF, ...)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a saved Keras model (default: the most accurate one in saved_models/, "
                             "according to figures/metrics.json)")
    return parser.parse_args(argv)


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what TensorFlow's C++ start-up writes to stderr (it ignores Python's logging settings)."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def fail(message: str) -> None:
    print(f"predict.py: error: {message}", file=sys.stderr)


def main(argv=None) -> int:
    arguments = parse_arguments(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # Keep TensorFlow's start-up chatter off the output.

    prepared, names, failures = [], [], 0
    for image in arguments.images:
        try:
            prepared.append(helpers.prepare_digit_image(image))
            names.append(image)
        except (OSError, ValueError) as error:
            fail(str(error))
            failures += 1

    model_path = arguments.model or default_model_path()
    if not model_path.is_file():
        fail(f"{model_path}: no such model file. Train the models with `make run`, or pass --model PATH.")
        return 2
    try:
        with native_stderr_silenced():
            import keras

            model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a broken file: each means "cannot load".
        fail(f"{model_path}: cannot load this Keras model ({type(error).__name__}: {str(error).splitlines()[0][:200]}).")
        return 2

    if prepared:
        labels, probabilities = helpers.predict_digits(model, prepared)
        for name, label, row in zip(names, labels, probabilities):
            top = row.argsort()[::-1][:3]
            ranking = ", ".join(f"{digit} {row[digit] * 100:.1f}%" for digit in top)
            print(f"{name}: {label}  ({ranking})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
