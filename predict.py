"""Classify images of handwritten digits with a model trained by model.ipynb.

Each image is prepared the way MNIST was made (see helpers.prepare_digit_image) and the
predicted digit is printed with its three most likely digits, one line per image.
Exit status: 0 all images read, 1 some image could not be read, 2 the model could not be
loaded or used (and, as argparse does, for usage errors).
"""

import os

# Must be set before TensorFlow is imported, or its C++ logging is already configured.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent  # Python puts this folder first on sys.path for the script


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what TensorFlow's C++ code writes to stderr: its CUDA probes print even with TF_CPP_MIN_LOG_LEVEL set."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# helpers imports TensorFlow, whose C++ start-up chatter would otherwise open every run.
with native_stderr_silenced():
    import keras  # noqa: E402

    import helpers  # noqa: E402

FALLBACK_MODEL = "cnn_optimized"


def default_model_path() -> Path:
    """The most accurate saved model according to figures/metrics.json, else cnn_optimized."""
    models_dir = PROJECT_ROOT / "saved_models"
    try:
        models = json.loads((PROJECT_ROOT / "figures" / "metrics.json").read_text())["models"]
        # Ensembles have members and no file of their own.
        ranked = sorted((float(entry["test_accuracy"]), name) for name, entry in models.items()
                        if "members" not in entry and (models_dir / f"{name}.keras").is_file())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ranked = []  # No run yet, or a metrics file from an older layout: use the usual best model.
    return models_dir / f"{ranked[-1][1] if ranked else FALLBACK_MODEL}.keras"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Predict the digit in each image: a scan, photo or drawing of one handwritten digit,\n"
                    "dark on light or light on dark, any size. Each image is prepared the way MNIST was\n"
                    "made, then the predicted digit and its top three probabilities are printed, one line\n"
                    "per image.",
        epilog="example:\n  python predict.py my_seven.png scan.jpg --model saved_models/cnn_basic.keras\n"
               "  my_seven.png: 7  (7 98.1%, 1 1.2%, 9 0.4%)\n"
               "  python predict.py tight_crop.png --ink dark\n\n"
               "exit status: 0 all images read, 1 some image could not be read, 2 the model could not be "
               "loaded (or a usage error)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, TIFF, ...)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a saved Keras model (default: the most accurate one in saved_models/ according "
                             f"to figures/metrics.json, else saved_models/{FALLBACK_MODEL}.keras)")
    parser.add_argument("--ink", choices=helpers.INK_CHOICES, default="auto",
                        help="dark: dark ink on light paper; light: light ink on dark, as MNIST; auto (default): "
                             "tell from each image. Force it when a tightly cropped, heavy digit is read inverted.")
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f"predict.py: error: {message}", file=sys.stderr)


def first_line(error: Exception) -> str:
    """The error's type and the first line of its message, for a one-line report."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def main(argv=None) -> int:
    arguments = parse_arguments(argv)

    # Read every image first, so that one bad file is reported without stopping the others.
    prepared, names = [], []
    for image in arguments.images:
        try:
            prepared.append(helpers.prepare_digit_image(image, ink=arguments.ink))
            names.append(image)
        except (OSError, ValueError) as error:
            fail(str(error))
    failures = len(arguments.images) - len(names)

    model_path = arguments.model or default_model_path()
    if not model_path.is_file():
        fail(f"{model_path}: no such model file. Train the models with `make run`, or pass --model PATH.")
        return 2
    try:
        with native_stderr_silenced():
            model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a broken file: each means "cannot load".
        fail(f"{model_path}: cannot load this Keras model ({first_line(error)}). "
             "Use a .keras file saved by model.ipynb, or run `make run` to save it again.")
        return 2

    if prepared:
        try:
            with native_stderr_silenced():
                labels, probabilities = helpers.predict_digits(model, prepared)
        except Exception as error:  # A model built for other inputs fails in many ways: all mean "wrong model".
            input_shape = getattr(model, "input_shape", "unknown")
            fail(f"{model_path}: cannot classify 28x28 digits with this model (its input shape is {input_shape}; "
                 f"{first_line(error)}). Pass a model trained by model.ipynb.")
            return 2
        for name, label, row in zip(names, labels, probabilities):
            top = row.argsort()[::-1][:3]
            ranking = ", ".join(f"{digit} {row[digit] * 100:.1f}%" for digit in top)
            print(f"{name}: {label}  ({ranking})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
