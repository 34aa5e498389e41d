"""Chores for model.ipynb: loading and checking MNIST, input pipelines, training
bookkeeping, saving models, figures and metrics, plotting, and reading a user's digit.

The notebook tells the story (data, model definitions, results); this module holds
the reusable pieces so that the notebook, the tests, `predict.py` and the benchmarks
share one implementation.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28
NUM_CLASSES = 10
CLASS_NAMES = [str(digit) for digit in range(NUM_CLASSES)]

# The four IDX files of the original MNIST release, and the counts they must hold.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_COUNTS = {"train": 60000, "test": 10000}
IDX_UINT8 = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
MNIST_DIR_HINT = (
    "Set MNIST_DIR to a folder holding the four MNIST IDX files (gzip-compressed or raw) "
    "or a Keras-style mnist.npz, for example: export MNIST_DIR=../shared/data/mnist"
)


# --------------------------------------------------------------------------------------
# Data: reading and checking MNIST
# --------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed when its name ends in .gz).

    Returns a uint8 array shaped as the header says. Raises FileNotFoundError for a
    missing file and ValueError, naming the file and what is wrong, for a file that is
    truncated, not gzip, or has a bad magic number or sizes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. {MNIST_DIR_HINT}")
    compressed = path.name.endswith(".gz")
    try:
        if compressed:
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path}: cannot be decompressed ({error}); the file is truncated or not gzip. "
            "Download it again or replace it with an intact copy."
        ) from error

    if len(data) < 4:
        raise ValueError(f"{path}: only {len(data)} bytes, too short for an IDX header; the file is truncated.")
    magic = struct.unpack(">I", data[:4])[0]
    zero_bytes, type_code, dimensions = data[:2], data[2], data[3]
    if zero_bytes != b"\x00\x00" or type_code != IDX_UINT8 or dimensions not in (1, 3):
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}; expected 0x{LABELS_MAGIC:08x} (labels) or "
            f"0x{IMAGES_MAGIC:08x} (images). This is not an MNIST IDX file."
        )
    header_size = 4 + 4 * dimensions
    if len(data) < header_size:
        raise ValueError(f"{path}: the IDX header is cut short ({len(data)} bytes); the file is truncated.")
    shape = struct.unpack(f">{dimensions}I", data[4:header_size])
    expected_bytes = math.prod(shape)
    actual_bytes = len(data) - header_size
    if actual_bytes != expected_bytes:
        problem = "truncated" if actual_bytes < expected_bytes else "longer than its header says"
        raise ValueError(
            f"{path}: the header promises shape {shape} ({expected_bytes} bytes of data) but the file "
            f"holds {actual_bytes}; it is {problem}. Download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def check_split(images: np.ndarray, labels: np.ndarray, split: str, source: str) -> None:
    """Check one split (train or test) of MNIST: shapes, counts, dtype and label range."""
    expected = EXPECTED_COUNTS[split]
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{source}: {split} images have shape {images.shape}; expected (N, 28, 28).")
    if labels.ndim != 1:
        raise ValueError(f"{source}: {split} labels have shape {labels.shape}; expected (N,).")
    if len(images) != len(labels):
        raise ValueError(
            f"{source}: {len(images)} {split} images but {len(labels)} {split} labels; "
            "image and label files do not belong together."
        )
    if len(images) != expected:
        raise ValueError(f"{source}: {len(images)} {split} images; MNIST has {expected}.")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{source}: {split} arrays are {images.dtype}/{labels.dtype}; expected uint8.")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(f"{source}: {split} labels go up to {labels.max()}; MNIST labels are 0-9.")


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist_npz(path: str | os.PathLike):
    """Load a Keras-style mnist.npz (keys x_train, y_train, x_test, y_test), without pickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. {MNIST_DIR_HINT}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise ValueError(
                    f"{path}: missing arrays {sorted(missing)}; a Keras mnist.npz holds "
                    "x_train, y_train, x_test and y_test."
                )
            arrays = [archive[key] for key in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, zlib.error, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error}). Download it again.") from error
    x_train, y_train, x_test, y_test = arrays
    check_split(x_train, y_train, "train", str(path))
    check_split(x_test, y_test, "test", str(path))
    return (x_train, y_train), (x_test, y_test)


def load_mnist_folder(folder: str | os.PathLike):
    """Load MNIST from a folder of the four IDX files, or from mnist.npz in it (or a path to it)."""
    folder = Path(folder).expanduser()
    if folder.is_file() and folder.suffix == ".npz":
        return load_mnist_npz(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist. {MNIST_DIR_HINT}")
    found = {key: _find_idx_file(folder, stem) for key, stem in MNIST_FILES.items()}
    if all(path is None for path in found.values()) and (folder / "mnist.npz").is_file():
        return load_mnist_npz(folder / "mnist.npz")
    missing = [MNIST_FILES[key] + "[.gz]" for key, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}. {MNIST_DIR_HINT}")
    arrays = {key: read_idx(path) for key, path in found.items()}
    for key, kind in (("train_images", 3), ("test_images", 3), ("train_labels", 1), ("test_labels", 1)):
        if arrays[key].ndim != kind:
            raise ValueError(
                f"{found[key]}: holds a {arrays[key].ndim}-dimensional array; expected "
                f"{'images (N, 28, 28)' if kind == 3 else 'labels (N,)'}. Are the files swapped?"
            )
    for split in ("train", "test"):
        source = f"{found[split + '_images']} + {found[split + '_labels'].name}"
        check_split(arrays[split + "_images"], arrays[split + "_labels"], split, source)
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])


def load_mnist(data_dir: str | os.PathLike | None = None):
    """Return MNIST as ((x_train, y_train), (x_test, y_test)), uint8 arrays.

    Source, in order: `data_dir`, else the MNIST_DIR environment variable (a folder of
    the four IDX files, gzip-compressed or raw, or a Keras-style mnist.npz), else
    `keras.datasets.mnist.load_data()`, which downloads and caches for users online.
    """
    if data_dir is None:
        data_dir = os.environ.get("MNIST_DIR") or None
    if data_dir is not None:
        return load_mnist_folder(data_dir)
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # Any failure here is a failed download: say how to go offline.
        raise RuntimeError(
            f"No local MNIST was given and the download failed ({type(error).__name__}: {error}). "
            + MNIST_DIR_HINT
        ) from error
    check_split(x_train, y_train, "train", "keras.datasets.mnist")
    check_split(x_test, y_test, "test", "keras.datasets.mnist")
    return (x_train, y_train), (x_test, y_test)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Scale uint8 images (N, 28, 28) to float32 in [0, 1] with a channel axis: (N, 28, 28, 1)."""
    images = np.asarray(images)
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


def split_validation(images: np.ndarray, labels: np.ndarray, validation_split: float):
    """Hold out the last `validation_split` of the data, as Keras' `validation_split` does."""
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split={validation_split!r}; use a fraction between 0 and 1, such as 0.2.")
    cut = int(len(images) * (1.0 - validation_split))
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


# --------------------------------------------------------------------------------------
# Input pipeline and training bookkeeping
# --------------------------------------------------------------------------------------


def make_dataset(images, labels, batch_size, shuffle=False, seed=0, augmentation=None):
    """A cached, prefetched tf.data pipeline of float32 batches.

    `augmentation` is an optional Keras layer (or Sequential of preprocessing layers)
    applied to each training batch, so the saved models stay free of augmentation layers.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augmentation is not None:
        dataset = dataset.map(
            lambda batch, batch_labels: (augmentation(batch, training=True), batch_labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def random_affine_layer(max_degrees=10.0, max_shift=0.1, max_zoom=0.1, seed=None):
    """A Keras preprocessing layer that rotates, shifts and zooms each image at random, never flips.

    It does what RandomRotation, RandomTranslation and RandomZoom do together (constant zero
    fill), in one affine resampling per image instead of three: on a 2-core CPU the three
    stock layers cost more than the training step itself. `max_shift` and `max_zoom` are
    fractions of the image size, `max_degrees` is in degrees. Active only with training=True.
    """
    import keras

    class RandomAffine(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=True):
            if not training:
                return images
            ops = keras.ops
            count = ops.shape(images)[0]
            height, width = images.shape[1], images.shape[2]
            angle = keras.random.uniform((count,), -max_degrees, max_degrees, seed=self.generator) * (math.pi / 180)
            zoom = keras.random.uniform((count,), 1 - max_zoom, 1 + max_zoom, seed=self.generator)
            shift_x = keras.random.uniform((count,), -max_shift, max_shift, seed=self.generator) * width
            shift_y = keras.random.uniform((count,), -max_shift, max_shift, seed=self.generator) * height
            # The transform maps each output pixel to the input pixel it samples: rotate and
            # scale about the image centre, then shift.
            cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
            center_x, center_y = (width - 1) / 2, (height - 1) / 2
            offset_x = center_x - cos * center_x + sin * center_y - shift_x
            offset_y = center_y - sin * center_x - cos * center_y - shift_y
            zeros = ops.zeros_like(cos)
            transforms = ops.stack([cos, -sin, offset_x, sin, cos, offset_y, zeros, zeros], axis=1)
            return ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                              fill_mode="constant", fill_value=0.0)

    return RandomAffine(name="random_affine")


def epoch_logger(model_name: str):
    """A Keras callback that prints one line per epoch (loss, accuracy, learning rate, seconds).

    Rendered notebooks then show a short log instead of thousands of progress-bar updates.
    """
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.total_epochs = self.params.get("epochs")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self.epoch_start
            learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            parts = [f"{model_name:>14} epoch {epoch + 1:2d}/{self.total_epochs}"]
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                if key in logs:
                    parts.append(f"{key} {logs[key]:.4f}")
            parts.append(f"lr {learning_rate:.2e}")
            parts.append(f"{seconds:5.1f} s")
            print("  ".join(parts), flush=True)

    return EpochLogger()


def fit_timed(model, train_data, validation_data, epochs, model_name, callbacks=()):
    """Train with one log line per epoch; return (history dict, training seconds)."""
    start = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        verbose=0,
        shuffle=False,  # The tf.data pipeline shuffles; Keras would only warn about it.
        callbacks=[epoch_logger(model_name), *callbacks],
    )
    seconds = time.perf_counter() - start
    return {key: [float(value) for value in values] for key, values in history.history.items()}, seconds


# --------------------------------------------------------------------------------------
# Results are files: models, figures, metrics
# --------------------------------------------------------------------------------------


def _atomic_target(path: Path):
    """A temporary file beside `path` that keeps its suffix, to be renamed over it once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    # mkstemp makes the file private (0600); give it the permissions a plain new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return Path(temporary)


def save_model_checked(model, path, sample_inputs, tolerance=1e-5):
    """Save a Keras model, reload it in safe mode and check it predicts as the trained one.

    The file is written beside its final name and renamed only after the check passes,
    so a failed save never replaces a good model. Returns the reloaded model.
    """
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: models are saved in the native Keras format; use a name ending in .keras.")
    temporary = _atomic_target(path)
    try:
        model.save(temporary)
        reloaded = keras.saving.load_model(temporary, safe_mode=True)
        expected = model.predict(sample_inputs, verbose=0)
        actual = reloaded.predict(sample_inputs, verbose=0)
        if not np.allclose(expected, actual, atol=tolerance):
            worst = float(np.max(np.abs(expected - actual)))
            raise ValueError(f"{path}: the reloaded model predicts differently (max difference {worst:.2e}).")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return reloaded


def save_fig(fig, name: str, folder, dpi: int = 120) -> Path:
    """Save a Matplotlib figure as `folder/name.png` (written whole, then renamed into place)."""
    path = Path(folder) / f"{name}.png"
    temporary = _atomic_target(path)
    try:
        fig.savefig(temporary, dpi=dpi, bbox_inches="tight", facecolor="white")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def write_json(data, path) -> Path:
    """Write JSON (indented, keys in order given) to `path`, whole or not at all."""
    path = Path(path)
    temporary = _atomic_target(path)
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def cpu_description() -> str:
    """The processor's model name and the number of cores this process may use, e.g. 'AMD EPYC, 2 cores'."""
    model_name = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if model_name is None:
        import platform

        model_name = platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model_name}, {cores} cores"


class SectionTimer:
    """Wall-clock seconds per notebook section: call `start(name)` as each section begins."""

    def __init__(self):
        self.seconds = {}
        self._current = None

    def start(self, name: str) -> None:
        self.stop()
        self._current = (name, time.perf_counter())

    def stop(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 1)
            self._current = None


def write_text(path, text: str) -> Path:
    """Write a text file (CSV, Markdown) whole or not at all."""
    path = Path(path)
    temporary = _atomic_target(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def count_params(model) -> int:
    """Number of trainable and non-trainable weights of a Keras model."""
    return int(model.count_params())


# --------------------------------------------------------------------------------------
# Plotting: every function returns a Matplotlib figure for save_fig
# --------------------------------------------------------------------------------------

MODEL_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]


def plot_class_balance(train_labels, test_labels):
    """Bar chart of how many images of each digit the train and test sets hold."""
    import matplotlib.pyplot as plt

    train_counts = np.bincount(train_labels, minlength=NUM_CLASSES)
    test_counts = np.bincount(test_labels, minlength=NUM_CLASSES)
    fig, axis = plt.subplots(figsize=(8, 3.6))
    positions = np.arange(NUM_CLASSES)
    axis.bar(positions - 0.2, train_counts, width=0.4, label=f"train ({train_counts.sum():,})")
    axis.bar(positions + 0.2, test_counts, width=0.4, label=f"test ({test_counts.sum():,})")
    axis.set_xticks(positions, CLASS_NAMES)
    axis.set_xlabel("digit")
    axis.set_ylabel("images")
    axis.set_title("Class balance of MNIST")
    axis.legend()
    return fig


def plot_digit_grid(images, titles, columns=10, title_colors=None, suptitle=None, cell_size=1.2):
    """A grid of 28x28 digits, each with a short title (a label or 'true/predicted')."""
    import matplotlib.pyplot as plt

    count = len(images)
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell_size, rows * (cell_size + 0.25)))
    axes = np.atleast_1d(axes).ravel()
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(np.squeeze(images[index]), cmap="gray_r", vmin=0, vmax=np.max(images[index]) or 1)
        color = title_colors[index] if title_colors is not None else "black"
        axis.set_title(titles[index], fontsize=9, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_history(history, model_name):
    """Loss and accuracy per epoch, training vs validation, for one model."""
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    for axis, key, label in ((loss_axis, "loss", "loss"), (accuracy_axis, "accuracy", "accuracy")):
        axis.plot(epochs, history[key], "o-", label=f"training {label}")
        if "val_" + key in history:
            axis.plot(epochs, history["val_" + key], "s-", label=f"validation {label}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1 if "val_accuracy" in history else None
    if best_epoch:
        accuracy_axis.axvline(best_epoch, color="gray", linestyle=":", label="best validation")
    loss_axis.set_title(f"{model_name}: loss")
    accuracy_axis.set_title(f"{model_name}: accuracy")
    fig.tight_layout()
    return fig


def plot_validation_overlay(histories: dict):
    """Validation loss and accuracy of several models on shared axes."""
    import matplotlib.pyplot as plt

    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(12, 4))
    for color, (name, history) in zip(MODEL_COLORS, histories.items()):
        epochs = np.arange(1, len(history["val_loss"]) + 1)
        loss_axis.plot(epochs, history["val_loss"], "o-", color=color, label=name, markersize=3)
        accuracy_axis.plot(epochs, np.array(history["val_accuracy"]) * 100, "o-", color=color, label=name, markersize=3)
    loss_axis.set_title("Validation loss")
    accuracy_axis.set_title("Validation accuracy")
    accuracy_axis.set_ylabel("accuracy (%)")
    loss_axis.set_ylabel("cross-entropy")
    # Start the accuracy axis where the curves are, so late-epoch differences stay visible.
    lows = [np.percentile(np.array(h["val_accuracy"]) * 100, 10) for h in histories.values()]
    accuracy_axis.set_ylim(max(min(lows) - 0.3, 0), 100)
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrices(matrices: dict, normalize=False, columns=3):
    """Confusion matrices (true rows, predicted columns) with counts, one panel per model."""
    import matplotlib.pyplot as plt

    count = len(matrices)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.8 * rows), squeeze=False)
    for axis in axes.ravel()[count:]:
        axis.axis("off")
    for axis, (name, matrix) in zip(axes.ravel(), matrices.items()):
        matrix = np.asarray(matrix, dtype=float)
        shown = matrix / matrix.sum(axis=1, keepdims=True) if normalize else matrix
        # A log-like scale would hide the diagonal; instead colour off-diagonal errors only.
        errors = shown.copy()
        np.fill_diagonal(errors, 0)
        axis.imshow(errors, cmap="Reds", vmin=0, vmax=max(errors.max(), 1e-9))
        for true_label in range(shown.shape[0]):
            for predicted_label in range(shown.shape[1]):
                value = shown[true_label, predicted_label]
                if value == 0:
                    continue
                text = f"{value:.3f}" if normalize else f"{int(value)}"
                on_diagonal = true_label == predicted_label
                axis.text(predicted_label, true_label, text, ha="center", va="center",
                          fontsize=6.5 if normalize else 7.5, fontweight="bold" if on_diagonal else "normal",
                          color="#1f4e79" if on_diagonal else "black")
        errors_total = int(matrix.sum() - np.trace(matrix))
        axis.set_title(f"{name} ({errors_total} errors)")
        axis.set_xticks(range(NUM_CLASSES), CLASS_NAMES)
        axis.set_yticks(range(NUM_CLASSES), CLASS_NAMES)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
    fig.tight_layout()
    return fig


def plot_metric_bars(values: dict, title: str, ylabel: str, value_format="{:.2f}", higher_is_better=True):
    """Bar chart of one metric per model, values written on the bars, the axis zoomed to the data."""
    import matplotlib.pyplot as plt

    names = list(values)
    numbers = np.array([values[name] for name in names], dtype=float)
    fig, axis = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4))
    bars = axis.bar(names, numbers, color=MODEL_COLORS[: len(names)] if len(names) <= len(MODEL_COLORS) else None)
    span = numbers.max() - numbers.min()
    margin = max(span * 0.35, abs(numbers.max()) * 0.002, 1e-6)
    low = max(0.0, numbers.min() - margin) if higher_is_better else 0.0
    axis.set_ylim(low, numbers.max() + margin)
    best = int(np.argmax(numbers) if higher_is_better else np.argmin(numbers))
    for index, (bar, number) in enumerate(zip(bars, numbers)):
        axis.annotate(value_format.format(number), (bar.get_x() + bar.get_width() / 2, number),
                      ha="center", va="bottom", xytext=(0, 3), textcoords="offset points",
                      fontsize=9, fontweight="bold" if index == best else "normal")
    axis.set_title(title + ("  (axis does not start at 0)" if low > 0 else ""))
    axis.set_ylabel(ylabel)
    axis.tick_params(axis="x", rotation=20 if len(names) > 4 else 0)
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_grouped_bars(values: dict, title: str, ylabel: str, value_format="{:.1f}"):
    """Bars grouped by model: `values[model][variant]` (for example naive vs prepared input)."""
    import matplotlib.pyplot as plt

    names = list(values)
    variants = list(next(iter(values.values())))
    width = 0.8 / len(variants)
    fig, axis = plt.subplots(figsize=(max(6, 1.6 * len(names) + 2), 4))
    positions = np.arange(len(names))
    for index, variant in enumerate(variants):
        numbers = [values[name][variant] for name in names]
        bars = axis.bar(positions + (index - (len(variants) - 1) / 2) * width, numbers, width, label=variant,
                        color=MODEL_COLORS[index])
        for bar, number in zip(bars, numbers):
            axis.annotate(value_format.format(number), (bar.get_x() + bar.get_width() / 2, number), ha="center",
                          va="bottom", xytext=(0, 2), textcoords="offset points", fontsize=8)
    axis.set_xticks(positions, names)
    axis.set_ylim(0, 105)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(loc="lower right")
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_tuner_trials(trials: list):
    """The tuner's search: validation accuracy per trial (with the best so far) and against the learning rate."""
    import matplotlib.pyplot as plt

    numbers = [trial["trial"] for trial in trials]
    scores = np.array([trial["val_accuracy"] for trial in trials]) * 100
    fig, (order_axis, rate_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    order_axis.plot(numbers, scores, "o", label="trial")
    order_axis.plot(numbers, np.maximum.accumulate(scores), "-", color="gray", label="best so far")
    order_axis.set_xlabel("trial")
    order_axis.set_ylabel("validation accuracy (%)")
    order_axis.set_title("Search progress")
    order_axis.legend()
    points = rate_axis.scatter([trial["learning_rate"] for trial in trials], scores,
                               c=[trial["dropout_dense"] for trial in trials], cmap="viridis")
    rate_axis.set_xscale("log")
    rate_axis.set_xlabel("peak learning rate")
    rate_axis.set_title("Score against learning rate")
    fig.colorbar(points, ax=rate_axis, label="dense dropout")
    # Zoom to the better trials; a trial below the axis is drawn on its lower edge as a
    # triangle with its score, so no trial silently disappears.
    low = max((np.percentile(scores, 20) if len(scores) > 4 else scores.min()) - 0.5, 0)
    for axis, x_values in ((order_axis, numbers), (rate_axis, [trial["learning_rate"] for trial in trials])):
        axis.grid(alpha=0.3)
        axis.set_ylim(low, min(scores.max() + 0.3, 100.05))
        for x_value, score in zip(x_values, scores):
            if score < low:
                axis.plot(x_value, low, "v", color="tab:red", clip_on=False)
                axis.annotate(f"{score:.2f}", (x_value, low), textcoords="offset points", xytext=(0, 6),
                              ha="center", fontsize=8, color="tab:red")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Writing results as prose and tables (from metrics.json, never by hand)
# --------------------------------------------------------------------------------------


def results_table_markdown(metrics: dict) -> str:
    """A Markdown table of every model in metrics['models'] (ensembles included)."""
    lines = [
        "| model | test accuracy | test loss | parameters | epochs | training seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in metrics["models"].items():
        params = f"{entry['params']:,}" if "params" in entry else "-"
        epochs = str(entry.get("epochs", "-"))
        seconds = f"{entry['train_seconds']:.0f}" if "train_seconds" in entry else "-"
        if "members" in entry:
            name = f"{name} (mean of {', '.join(entry['members'])})"
        lines.append(
            f"| {name} | {entry['test_accuracy'] * 100:.2f}% | {entry['test_loss']:.4f} | {params} | {epochs} | {seconds} |"
        )
    return "\n".join(lines)


def conclusion_markdown(metrics: dict, targets: dict | None = None) -> str:
    """The notebook's conclusion, written from the metrics of this run.

    `targets` maps a model name to the test accuracy (a fraction) it was meant to reach.
    """
    run, models = metrics["run"], metrics["models"]
    test_images = run["test_images"]
    ranked = sorted(models, key=lambda name: models[name]["test_accuracy"], reverse=True)
    best = ranked[0]

    def errors(name):
        return round((1 - models[name]["test_accuracy"]) * test_images)

    lines = []
    if run.get("quick"):
        lines.append("> **Quick run**: a small slice of MNIST and few epochs, for smoke tests only; "
                     "these numbers say nothing about the models.\n")
    lines.append(
        f"**{best}** is the most accurate model of this run: {models[best]['test_accuracy'] * 100:.2f}% "
        f"test accuracy, {errors(best)} of {test_images:,} test digits wrong."
    )
    lines.append("")
    for name in ranked:
        entry = models[name]
        detail = f"mean of {', '.join(entry['members'])}" if "members" in entry else (
            f"{entry['params']:,} parameters, {entry['epochs']} epochs in {entry['train_seconds']:.0f} s")
        lines.append(f"- `{name}`: {entry['test_accuracy'] * 100:.2f}% ({errors(name)} errors), "
                     f"test loss {entry['test_loss']:.4f}; {detail}.")
    comparisons = (("cnn_basic", "dnn"), ("cnn_optimized", "cnn_basic"), ("cnn_augmented", "cnn_optimized"),
                   ("cnn_tuned", "cnn_optimized"), ("resnet", "cnn_optimized"), ("ensemble", "resnet"))
    for better, worse in comparisons:
        if better in models and worse in models and errors(worse) > 0:
            change = 1 - errors(better) / errors(worse)
            verb = "removes" if change >= 0 else "adds"
            lines.append(f"\n`{better}` {verb} {abs(change) * 100:.0f}% of the errors of `{worse}` "
                         f"({errors(worse)} -> {errors(better)}).")
    if targets:
        lines.append("\nTargets of the full run:")
        for name, target in targets.items():
            if name not in models:
                continue
            reached = models[name]["test_accuracy"]
            verdict = "met" if reached >= target else f"missed by {(target - reached) * 100:.2f} points"
            lines.append(f"- `{name}` at least {target * 100:.1f}%: {reached * 100:.2f}%, {verdict}.")
    tuner = metrics.get("tuner")
    if tuner:
        settings = ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                             for key, value in tuner["best_hyperparameters"].items())
        lines.append(f"\nKerasTuner ran {len(tuner['trials'])} trials in {tuner['seconds'] / 60:.1f} minutes; the best "
                     f"({settings}) scored {tuner['best_val_accuracy'] * 100:.2f}% on validation after "
                     f"{tuner['epochs']} epochs on {tuner['train_images']:,} images.")
    robustness = metrics.get("robustness")
    if robustness:
        # The ensemble is not distorted-tested; speak of the best model that was.
        tested = next((name for name in ranked if all(name in entry["models"] for entry in robustness.values())), None)
        if tested is not None:
            parts = [f"{kind} {entry['amounts'][-1]}: {entry['models'][tested][-1] * 100:.1f}%"
                     for kind, entry in robustness.items()]
            lines.append(f"\nUnder the strongest distortions tested, `{tested}` keeps: {'; '.join(parts)}.")
    cross_dataset = metrics.get("cross_dataset")
    if cross_dataset and cross_dataset.get("models"):
        scores = cross_dataset["models"]
        top = max(scores, key=lambda name: scores[name]["prepared"])
        lines.append(
            f"\nOn {cross_dataset['dataset']}, `{top}` reads {scores[top]['prepared'] * 100:.1f}% correctly once "
            f"the images are prepared the MNIST way, against {scores[top]['naive_resize'] * 100:.1f}% when they "
            "are simply resized."
        )
    lines.append(f"\nThe whole notebook ran in {run['total_seconds'] / 60:.1f} minutes on {run.get('cpu', 'this CPU')}.")
    return "\n".join(lines)


def replace_between_markers(path, content: str, start: str, end: str) -> None:
    """Replace the text between two marker lines of a Markdown file with `content` (atomically)."""
    path = Path(path)
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path}: markers {start} and {end} not found; add them where the text goes.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    write_text(path, head + start + "\n" + content.strip("\n") + "\n" + end + tail)


def update_readme_results(readme_path, metrics: dict, start="<!-- results:start -->", end="<!-- results:end -->"):
    """Replace the text between the two markers in the README with the results table."""
    run = metrics["run"]
    caption = (
        f"_From `figures/metrics.json` of the committed full run: TensorFlow {run['tensorflow']}, "
        f"Keras {run['keras']}, {run.get('cpu', 'CPU')}, whole notebook {run['total_seconds'] / 60:.1f} min._\n\n"
    )
    replace_between_markers(readme_path, caption + results_table_markdown(metrics), start, end)


# --------------------------------------------------------------------------------------
# Error analysis and robustness
# --------------------------------------------------------------------------------------

PERTURBATIONS = ("rotation", "shift", "blur", "noise")


def perturb_images(images: np.ndarray, kind: str, amount: float, seed: int = 0) -> np.ndarray:
    """Distort float images (N, 28, 28[, 1]) in [0, 1] the way real scans differ from MNIST.

    kind: 'rotation' (degrees, every digit turned by `amount`), 'shift' (pixels, moved right
    and down by `amount`), 'blur' (Gaussian sigma in pixels), 'noise' (standard deviation of
    added Gaussian noise). The result is clipped to [0, 1] and keeps the input's shape.
    """
    from scipy import ndimage

    if kind not in PERTURBATIONS:
        raise ValueError(f"kind={kind!r}; choose one of {', '.join(PERTURBATIONS)}.")
    images = np.asarray(images, dtype=np.float32)
    if amount == 0:
        return images.copy()
    squeezed = images.reshape(-1, images.shape[1], images.shape[2])
    if kind == "rotation":
        result = ndimage.rotate(squeezed, amount, axes=(2, 1), reshape=False, order=1, mode="constant")
    elif kind == "shift":
        result = ndimage.shift(squeezed, (0, amount, amount), order=1, mode="constant")
    elif kind == "blur":
        result = ndimage.gaussian_filter(squeezed, sigma=(0, amount, amount))
    else:
        result = squeezed + np.random.default_rng(seed).normal(0, amount, squeezed.shape).astype(np.float32)
    return np.clip(result, 0.0, 1.0).astype(np.float32).reshape(images.shape)


def naive_resize(images: np.ndarray) -> np.ndarray:
    """Stretch small images (N, H, W) of any value range to (N, 28, 28, 1) in [0, 1], bilinearly.

    The naive way to feed foreign digits to an MNIST model, for comparison with
    `prepare_digit_image`: no cropping, no 20x20 box, no centring.
    """
    from PIL import Image

    images = np.asarray(images, dtype=np.float32)
    scaled = images / max(float(images.max()), 1e-12)
    resized = [np.asarray(Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for image in scaled]
    return np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32)[..., np.newaxis]


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of predicted probabilities (N, 10) against integer labels.

    Unlike the loss Keras reports, it holds no regularization penalty, so models with and
    without L2 weight decay (and ensembles) compare on the same footing.
    """
    chosen = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(chosen, 1e-7, 1.0))))


def most_confused_pairs(matrix: np.ndarray, count: int = 10):
    """The off-diagonal cells of a confusion matrix with the most images: (true, predicted, images)."""
    matrix = np.asarray(matrix)
    pairs = [(true, predicted, int(matrix[true, predicted]))
             for true in range(matrix.shape[0]) for predicted in range(matrix.shape[1])
             if true != predicted and matrix[true, predicted] > 0]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:count]


def plot_robustness(curves: dict, x_labels: dict):
    """One panel per perturbation: test accuracy of each model against its strength.

    `curves[kind][model_name]` is a list of (amount, accuracy) pairs; `x_labels[kind]` names the axis.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False)
    for axis, (kind, by_model) in zip(axes.ravel(), curves.items()):
        for color, (name, points) in zip(MODEL_COLORS, by_model.items()):
            amounts, accuracies = zip(*points)
            axis.plot(amounts, np.array(accuracies) * 100, "o-", color=color, label=name, markersize=4)
        axis.set_title(kind)
        axis.set_xlabel(x_labels[kind])
        axis.set_ylabel("test accuracy (%)")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
    axes.ravel()[0].legend()
    fig.tight_layout()
    return fig


def plot_classification_report(reports: dict):
    """Per-class precision, recall and F1 (rows: digits) of several models as annotated heat maps."""
    import matplotlib.pyplot as plt

    names = list(reports)
    panel_columns = min(4, len(names))
    panel_rows = math.ceil(len(names) / panel_columns)
    fig, axes = plt.subplots(panel_rows, panel_columns, figsize=(3.6 * panel_columns, 4.6 * panel_rows), squeeze=False)
    for axis in axes.ravel()[len(names):]:
        axis.axis("off")
    columns = ["precision", "recall", "f1-score"]
    for axis, name in zip(axes.ravel(), names):
        table = np.array([[reports[name][label][column] for column in columns] for label in CLASS_NAMES]) * 100
        axis.imshow(table, cmap="RdYlGn", vmin=min(95.0, table.min()), vmax=100, aspect="auto")
        for row in range(table.shape[0]):
            for column in range(table.shape[1]):
                axis.text(column, row, f"{table[row, column]:.1f}", ha="center", va="center", fontsize=7.5)
        axis.set_xticks(range(3), ["precision", "recall", "F1"])
        axis.set_yticks(range(NUM_CLASSES), CLASS_NAMES)
        axis.set_title(name)
    for axis in axes[:, 0]:
        axis.set_ylabel("digit")
    fig.suptitle("Per-class precision, recall and F1 on the test set (%)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Reading a user's digit
# --------------------------------------------------------------------------------------
MNIST_BOX = 20  # MNIST digits were scaled to fit a 20x20 box, then centred in a 28x28 field.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow's convert("L").


def _open_image_file(path: Path):
    """Open an image file with Pillow, upright as the camera meant it (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not an image file; pass the path of one image inside it.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the name and the folder it is in.")
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except PermissionError as error:
        raise PermissionError(f"{path}: cannot be read ({error.strerror}); check the file's permissions.") from error
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: too large for Pillow's safety limit ({error}); scale the image down first.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"{path}: not an image Pillow can read ({type(error).__name__}); save it as PNG, JPEG, BMP or TIFF."
        ) from error


def _image_to_array(image) -> tuple[np.ndarray, str]:
    """A path, PIL image or array as a 2-D float array, with a name for error messages.

    Transparent pixels count as white paper, for PIL images and RGBA arrays alike.
    """
    from PIL import Image

    name = "image"
    if isinstance(image, (str, os.PathLike)):
        name = str(image)
        image = _open_image_file(Path(image))
    if isinstance(image, Image.Image):
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            # 16- and 32-bit scans: convert("L") would clip them at 255 instead of scaling.
            return np.asarray(image, dtype=np.float32), name
        if "A" in image.getbands() or "transparency" in image.info:
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        return np.asarray(image.convert("L"), dtype=np.float32), name
    try:
        array = np.asarray(image, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: cannot be read as an array of numbers ({error}); pass a path, "
                         "a PIL image or a 2-D numeric array.") from error
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.shape[-1] == 4:
            # The value range says what "opaque" and "white" are: 1 for floats, 255 for 8 bits, 65535 for 16.
            largest = float(array.max()) if array.size else 1.0
            full = 1.0 if largest <= 1.0 else 255.0 if largest <= 255.0 else 65535.0
            alpha = np.clip(array[..., 3] / full, 0.0, 1.0)[..., np.newaxis]
            array = array[..., :3] * alpha + full * (1.0 - alpha)
        array = array @ GRAY_WEIGHTS
    if array.ndim != 2:
        raise ValueError(f"{name}: an array of shape {array.shape}; expected a 2-D grayscale image (height, width), "
                         "an RGB image (height, width, 3) or RGBA (height, width, 4).")
    return array, name


def prepare_digit_image(image, ink_threshold: float = 0.1) -> np.ndarray:
    """Prepare any image of one digit the way MNIST was made; returns 28x28 float32 in [0, 1].

    `image` is a path, a PIL image or a 2-D array of any size and value range. Steps:
    grayscale; contrast stretched to [0, 1]; dark-on-light input (a bright border)
    inverted to MNIST's light-on-dark; background level removed; cropped to the ink;
    scaled to fit a 20x20 box keeping its aspect ratio; placed in a 28x28 field so that
    the ink's centre of mass is at the centre. Raises FileNotFoundError for a missing
    file, IsADirectoryError for a folder, and ValueError for a file that is not an image,
    an array that is not one image, an empty image or a blank one (no ink).
    """
    from PIL import Image

    if not 0.0 < ink_threshold < 1.0:
        raise ValueError(f"ink_threshold={ink_threshold!r}; use a fraction of the contrast between 0 and 1, such as 0.1.")
    array, name = _image_to_array(image)
    if array.size == 0:
        raise ValueError(f"{name}: the image is empty (0 pixels); pass an image of one digit.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: the image holds NaN or infinite values; replace them before preparing it.")
    low, high = float(array.min()), float(array.max())
    if high == low:
        raise ValueError(f"{name}: the image is blank (no ink): every pixel has the value {high:g}.")
    # Ink must differ from the paper by a visible share of the value range, or the contrast
    # stretch below would blow sensor noise on an empty page up into a "digit".
    if high - low < 0.05 * max(abs(high), abs(low)):
        raise ValueError(f"{name}: the image is blank (no ink): its values only range from {low:g} to {high:g}.")
    array = (array - low) / (high - low)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    if np.median(border) > 0.5:
        array = 1.0 - array
        border = 1.0 - border
    background = float(np.median(border))
    array = np.clip((array - background) / (1.0 - background), 0.0, 1.0)
    ink_rows = np.flatnonzero(array.max(axis=1) > ink_threshold)
    ink_columns = np.flatnonzero(array.max(axis=0) > ink_threshold)
    if ink_rows.size == 0 or ink_columns.size == 0:
        raise ValueError(f"{name}: the image is blank (no ink stands out from the background).")
    crop = array[ink_rows[0]:ink_rows[-1] + 1, ink_columns[0]:ink_columns[-1] + 1]

    height, width = crop.shape
    scale = MNIST_BOX / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    # Lanczos keeps strokes sharp both when shrinking a photo and when enlarging a tiny scan
    # (bilinear enlarging blurs 8x8 digits into blobs); clipping removes its slight ringing.
    resized = np.asarray(Image.fromarray(crop.astype(np.float32)).resize(
        (new_width, new_height), Image.LANCZOS), dtype=np.float32)
    resized = np.clip(resized, 0.0, 1.0)
    if resized.max() > 0:
        resized = resized / resized.max()

    total = resized.sum()
    rows, columns = np.indices(resized.shape)
    center_row = (rows * resized).sum() / total if total > 0 else (new_height - 1) / 2
    center_column = (columns * resized).sum() / total if total > 0 else (new_width - 1) / 2
    middle = IMAGE_SIZE / 2  # MNIST's digits have their centre of mass at pixel (14, 14), measured.
    top = int(np.clip(round(middle - center_row), 0, IMAGE_SIZE - new_height))
    left = int(np.clip(round(middle - center_column), 0, IMAGE_SIZE - new_width))
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    field[top:top + new_height, left:left + new_width] = resized
    return field


def predict_digits(model, images):
    """Predict digits with a Keras model; returns (labels (N,), probabilities (N, 10)).

    `images`: one prepared 28x28 array, a list of them, or an array (N, 28, 28) or (N, 28, 28, 1)
    of floats in [0, 1] (see `prepare_digit_image` and `to_model_input`). Raises ValueError,
    naming the shape received, for any other shape, and for values outside [0, 1].
    """
    fix = "Prepare each image with helpers.prepare_digit_image first."
    if isinstance(images, (list, tuple)):
        shapes = sorted({np.shape(image) for image in images})
        if len(shapes) > 1:
            raise ValueError(f"a list of images of shapes {', '.join(map(str, shapes))}; expected all (28, 28). {fix}")
    array = np.asarray(images, dtype=np.float32)
    received = array.shape
    if array.shape == (IMAGE_SIZE, IMAGE_SIZE):
        array = array[np.newaxis]
    if array.ndim == 3 and array.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1) or len(array) == 0:
        raise ValueError(f"images of shape {received}; expected (28, 28), (N, 28, 28) or (N, 28, 28, 1) "
                         f"with N >= 1. {fix}")
    # Raw uint8 pixels (0-255) would be read without complaint and give confident nonsense.
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0 + 1e-6:
        raise ValueError(f"images with values from {array.min():g} to {array.max():g}; the models expect [0, 1]. "
                         "Divide 0-255 pixels by 255 (helpers.to_model_input) or prepare each image with "
                         "helpers.prepare_digit_image.")
    probabilities = np.asarray(model.predict(array, batch_size=1024, verbose=0), dtype=np.float32)
    return probabilities.argmax(axis=1), probabilities


# --------------------------------------------------------------------------------------
# Model cost
# --------------------------------------------------------------------------------------
def count_multiply_adds(model) -> int:
    """Multiply-adds of one forward pass of one image through a built Keras model.

    Counts Conv2D (any stride, padding or groups), DepthwiseConv2D and Dense layers, in
    nested models too. Batch normalization, activations, pooling and additions are left
    out: they are few multiply-adds, though on a CPU not free in memory traffic.
    """
    import keras

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
