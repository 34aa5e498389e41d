"""Read handwritten digits in image files with the reader that model.ipynb saved.

Each image is prepared the way MNIST was made (see reader.prepare_digit_image) and read by the
ensemble in saved_models/ (or one model, with --model), with calibrated probabilities. Each image
gets one verdict: the digit, "not sure: 7 or 1" when two digits are close or the models disagree,
or "not a digit" when it looks like none of the digits the models know. With --examples, the reader
first learns one person's hand from their labelled digits (see reader.Reader.adapted).
Each model is read with ONNX Runtime from its export beside it (<name>.onnx, written by `make onnx`),
without TensorFlow; without one, or with one exported from an older <name>.keras, with Keras, which
first waits for TensorFlow's start-up of several seconds.
Exit status: 0 every image got a verdict, 1 some image could not be read, 2 the reader or the
examples file could not be loaded or used (and, as argparse does, for usage errors).
"""

import os

# Must be set before TensorFlow is imported, or its C++ logging is already configured.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import reader  # noqa: E402  (imports neither TensorFlow nor Keras: only a Keras model, read or adapted, does)

PROJECT_ROOT = Path(__file__).resolve().parent  # Python puts this folder first on sys.path for the script
MODELS_DIR = PROJECT_ROOT / "saved_models"


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


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Read the digit in each image: a scan, photo or drawing of one handwritten digit,\n"
                    "dark on light or light on dark, any size. Each image is prepared the way MNIST was\n"
                    "made and read with calibrated probabilities; one line per image says the digit,\n"
                    "'not sure: 7 or 1' (two digits are close, or the models disagree) or 'not a digit'.",
        epilog="example:\n  python predict.py my_seven.png blank_page.jpg\n"
               "  my_seven.png: 7  (7 98.1%, 1 1.2%, 9 0.4%)\n"
               "  blank_page.jpg: not a digit  (looks most like 1 at 41.0%; score 0.41 below 0.93)\n"
               "  python predict.py tight_crop.png --ink dark --json\n"
               "  python predict.py my_one.png --examples my_digits.json\n\n"
               "--json prints one JSON object per line and image: file, digit (an int, or null unless the\n"
               "verdict is 'digit'), verdict ('digit', 'not sure' or 'not a digit'), candidates (the digits\n"
               "named), probabilities (ten, calibrated), score (higher: more like a digit), threshold;\n"
               "with --examples also adapted_to_examples (how many examples the reader learned from).\n\n"
               "Each model is read with ONNX Runtime from <name>.onnx beside its <name>.keras (`make onnx`\n"
               "writes them), without TensorFlow; without it, or when the .keras file changed since, with\n"
               "Keras, after TensorFlow's start-up of several seconds (a stale export is noted on stderr).\n\n"
               "exit status: 0 every image got a verdict (also 'not a digit'), 1 some image could not be\n"
               "read, 2 the reader, model or examples file could not be loaded (or a usage error)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, TIFF, ...)")
    parser.add_argument("--model", type=Path, default=None,
                        help="read with this one saved Keras model (from its ONNX export <name>.onnx beside it, "
                             "if fresh), calibrated by the <name>.calibration.json beside it (default: the ensemble "
                             "of saved_models/reader.json)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="the folder of the saved reader and its models (default: saved_models/ beside predict.py)")
    parser.add_argument("--ink", choices=reader.INK_CHOICES, default="auto",
                        help="dark: dark ink on light paper; light: light ink on dark, as MNIST; auto (default): "
                             "tell from each image. Force it when a tightly cropped, heavy digit is read inverted.")
    parser.add_argument("--examples", type=Path, default=None, metavar="FILE",
                        help="first adapt the reader to one person's hand: FILE holds their labelled digits, as the "
                             "drawing pad's teach mode (or reader.save_examples) saves them")
    parser.add_argument("--json", action="store_true", help="one JSON object per image, for scripts")
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f"predict.py: error: {message}", file=sys.stderr)


def first_line(error: Exception) -> str:
    """The error's type and the first line of its message, for a one-line report."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def describe(reading, threshold) -> str:
    """One line for a person: the verdict, then the top three probabilities or why it was refused."""
    ranking = reading.probabilities.argsort()[::-1]
    if reading.verdict == "not a digit":
        return (f"not a digit  (looks most like {ranking[0]} at {reading.probabilities[ranking[0]] * 100:.1f}%; "
                f"score {reading.score:.3g} below {threshold:.3g})")
    top = ", ".join(f"{digit} {reading.probabilities[digit] * 100:.1f}%" for digit in ranking[:3])
    answer = f"not sure: {reading.candidates[0]} or {reading.candidates[1]}" if reading.verdict == "not sure" else reading.digit
    return f"{answer}  ({top})"


def load(model_path, models_dir):
    """The reader to use: one model with --model, else the saved ensemble. Raises (OSError, ValueError).

    A stale ONNX export (see reader.load_reading_model) is noted in one line on stderr.
    """
    with warnings.catch_warnings(record=True) as notes, native_stderr_silenced():
        warnings.simplefilter("always", reader.StaleExportWarning)
        digit_reader = reader.load_single_model_reader(model_path) if model_path else reader.load_reader(models_dir)
    for note in notes:
        if issubclass(note.category, reader.StaleExportWarning):
            print(f"predict.py: note: {note.message}", file=sys.stderr)
    return digit_reader


def main(argv=None) -> int:
    arguments = parse_arguments(argv)

    # Read every image first, so that one bad file is reported without stopping the others.
    prepared, names = [], []
    for image in arguments.images:
        try:
            prepared.append(reader.prepare_digit_image(image, ink=arguments.ink))
            names.append(image)
        except (OSError, ValueError) as error:
            fail(str(error))
    failures = len(arguments.images) - len(names)

    # The examples are checked before the models load: a wrong file name should not cost that wait.
    examples = None
    if arguments.examples is not None:
        try:
            examples = reader.load_examples(arguments.examples)
        except (OSError, ValueError) as error:
            fail(str(error).strip().splitlines()[0])
            return 2

    try:
        digit_reader = load(arguments.model, arguments.models_dir)
    except (OSError, ValueError) as error:
        fail(f"{first_line(error).split(': ', 1)[-1]} Pass --model PATH to read with one saved model."
             if not arguments.model else str(error).splitlines()[0])
        return 2

    if prepared:
        try:
            with native_stderr_silenced():
                if examples is not None:
                    digit_reader = digit_reader.adapted(*examples)
                readings = digit_reader.read(prepared)
        except Exception as error:  # A model built for other inputs fails in many ways: all mean "wrong model".
            fail(f"{arguments.model or arguments.models_dir}: cannot read 28x28 digits with this model ({first_line(error)}). "
                 "Pass a model trained by model.ipynb.")
            return 2
        for name, reading in zip(names, readings):
            if arguments.json:
                adaptation = {} if examples is None else {"adapted_to_examples": len(examples[1])}
                print(json.dumps({"file": name, **reading.as_dict(), "threshold": digit_reader.threshold,
                                  **adaptation}))
            else:
                print(f"{name}: {describe(reading, digit_reader.threshold)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
