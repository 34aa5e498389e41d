"""Chores for model.ipynb, in the order the notebook uses them.

Sections: data; input pipeline and augmentation; training (recipes, logger, timer, tuner
bookkeeping); evaluation; plots; reading a user's digit; results files and prose.
The notebook tells the story and defines the models; this module holds the reusable
pieces, so that the notebook, the tests, `predict.py` and the benchmarks share one
implementation of each.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import platform
import struct
import tempfile
import time
import zlib
from pathlib import Path

import anywidget
import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import traitlets
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

# TensorFlow is imported here, at the top, although predict.py only needs it once an image
# is ready: every use of this module ends up loading or training a Keras model anyway.

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


# ==================== Data: reading and checking MNIST ================================


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


# ==================== Input pipeline and augmentation =================================


def make_dataset(images, labels, batch_size, shuffle=False, seed=0, augmentation=None):
    """A cached, prefetched tf.data pipeline of float32 batches.

    `augmentation` is an optional Keras layer (or Sequential of preprocessing layers)
    applied to each training batch, so the saved models stay free of augmentation layers.
    """
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


class RandomElastic(keras.layers.Layer):
    """Elastic distortion as Simard et al. (2003): a random displacement field smoothed by a Gaussian.

    Each pixel moves by a field drawn uniformly from [-1, 1], smoothed by a Gaussian of width
    `sigma` pixels and scaled by `alpha` (Simard's 34 and 4 move pixels by about 1.4 pixels,
    like one writer's hand against another's); the image is resampled bilinearly. Applied to
    the first `fraction` of each (shuffled) batch, which halves its cost at the default.
    Expects images (N, H, W, 1). Keras' RandomElasticTransform is not used: it ties sigma to
    alpha, so a smooth field of small amplitude cannot be asked of it, and in a tf.data
    pipeline (unknown batch size) Keras 3.15's elastic_transform returns one image per batch.
    Active only with training=True.
    """

    def __init__(self, alpha=34.0, sigma=4.0, fraction=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.sigma, self.fraction, self.seed = alpha, sigma, fraction, seed
        self.generator = keras.random.SeedGenerator(seed)
        radius = int(math.ceil(2 * sigma))
        taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
        self.kernel = (taps / taps.sum()).astype(np.float32)

    def call(self, images, training=True):
        if not training or self.alpha == 0 or self.fraction == 0:
            return images
        count = tf.cast(tf.cast(tf.shape(images)[0], tf.float32) * self.fraction, tf.int32)
        return tf.concat([self.distort(images[:count]), images[count:]], axis=0)

    def distort(self, images):
        """Every image of the batch, distorted by its own smoothed random field."""
        count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
        field = keras.random.uniform(tf.stack([count, height, width, 2]), -1.0, 1.0, seed=self.generator)
        # A separable Gaussian: one pass down the rows, one along the columns, for both components.
        field = tf.nn.depthwise_conv2d(field, np.tile(self.kernel[:, None, None, None], (1, 1, 2, 1)), [1, 1, 1, 1], "SAME")
        field = tf.nn.depthwise_conv2d(field, np.tile(self.kernel[None, :, None, None], (1, 1, 2, 1)), [1, 1, 1, 1], "SAME")
        rows = tf.range(height, dtype=tf.float32)[None, :, None] + self.alpha * field[..., 0]
        columns = tf.range(width, dtype=tf.float32)[None, None, :] + self.alpha * field[..., 1]
        top, left = tf.floor(rows), tf.floor(columns)
        down, right = rows - top, columns - left
        pixels = tf.reshape(images, [-1])
        first = tf.range(count)[:, None, None] * height * width

        def sample(row, column):
            # Pixels outside the image are background (0).
            inside = (row >= 0) & (row <= height - 1) & (column >= 0) & (column <= width - 1)
            index = (first + tf.cast(tf.clip_by_value(row, 0, height - 1), tf.int32) * width
                     + tf.cast(tf.clip_by_value(column, 0, width - 1), tf.int32))
            return tf.where(inside, tf.gather(pixels, index), 0.0)

        resampled = ((1 - down) * (1 - right) * sample(top, left) + (1 - down) * right * sample(top, left + 1)
                     + down * (1 - right) * sample(top + 1, left) + down * right * sample(top + 1, left + 1))
        return resampled[..., None]

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "sigma": self.sigma, "fraction": self.fraction,
                "seed": self.seed}


class RandomStrokeWidth(keras.layers.Layer):
    """Thickens or thins each digit's strokes by a random amount (grey dilation or erosion).

    Pens, scanners and the MNIST preparation all change how wide a stroke is. Each image is
    blended with its 3x3 grey dilation (thicker) or erosion (thinner) by a weight drawn
    uniformly from [-max_change, max_change]; 0 leaves the image unchanged. Active only
    with training=True.
    """

    def __init__(self, max_change=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.max_change = max_change
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training or self.max_change == 0:
            return images
        change = keras.random.uniform((keras.ops.shape(images)[0], 1, 1, 1), -self.max_change,
                                      self.max_change, seed=self.generator)
        dilated = keras.ops.max_pool(images, 3, strides=1, padding="same")
        eroded = -keras.ops.max_pool(-images, 3, strides=1, padding="same")
        target = keras.ops.where(change > 0, dilated, eroded)
        return images + keras.ops.abs(change) * (target - images)

    def get_config(self):
        return {**super().get_config(), "max_change": self.max_change, "seed": self.seed}


class RandomNoise(keras.layers.Layer):
    """Adds Gaussian noise of a random strength to a random share of the images, then clips to [0, 1].

    Keras' GaussianNoise uses one fixed strength on every image; a user's photo may be clean or
    grainy, so each image is noised with probability `probability`, with a standard deviation
    drawn uniformly from [0, max_stddev].
    """

    def __init__(self, max_stddev=0.3, probability=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.max_stddev, self.probability, self.seed = max_stddev, probability, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training or self.max_stddev == 0 or self.probability == 0:
            return images
        shape = (keras.ops.shape(images)[0], 1, 1, 1)
        stddev = keras.random.uniform(shape, 0.0, self.max_stddev, seed=self.generator)
        chosen = keras.ops.cast(keras.random.uniform(shape, seed=self.generator) < self.probability, images.dtype)
        noise = keras.random.normal(keras.ops.shape(images), seed=self.generator)
        return keras.ops.clip(images + chosen * stddev * noise, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "max_stddev": self.max_stddev, "probability": self.probability,
                "seed": self.seed}


def augmentation_layers(settings: dict, seed: int | None = None):
    """The training-time augmentation named by `settings`, as one Keras Sequential of preprocessing layers.

    Keys (a missing key or 0 leaves that step out): `max_degrees` (rotation), `max_shift`
    and `max_zoom` (fractions of the image), `elastic_alpha` with `elastic_sigma` and
    `elastic_fraction` (see RandomElastic), `blur_probability` with `max_blur_sigma`,
    `max_contrast`, `max_stroke_change` (see RandomStrokeWidth) and `max_noise` with
    `noise_probability` (see RandomNoise). Never flips: a flipped digit is another digit.
    All are TensorFlow ops, run inside the tf.data pipeline, so the saved models hold none of them.
    """
    known = {"max_degrees", "max_shift", "max_zoom", "elastic_alpha", "elastic_sigma", "elastic_fraction",
             "blur_probability", "max_blur_sigma",
             "max_contrast", "max_stroke_change", "max_noise", "noise_probability"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"augmentation settings {sorted(unknown)} are unknown; use some of {sorted(known)}.")
    value_range = (0.0, 1.0)
    steps = []

    def next_seed():
        # One seed per layer: layers given the same seed would draw the same random numbers.
        return None if seed is None else seed + len(steps)

    if settings.get("max_degrees"):
        steps.append(keras.layers.RandomRotation(settings["max_degrees"] / 360, fill_mode="constant", seed=next_seed()))
    if settings.get("max_shift"):
        steps.append(keras.layers.RandomTranslation(settings["max_shift"], settings["max_shift"],
                                                    fill_mode="constant", seed=next_seed()))
    if settings.get("max_zoom"):
        steps.append(keras.layers.RandomZoom(settings["max_zoom"], fill_mode="constant", seed=next_seed()))
    if settings.get("elastic_alpha"):
        steps.append(RandomElastic(settings["elastic_alpha"], settings.get("elastic_sigma", 4.0),
                                   settings.get("elastic_fraction", 0.5), seed=next_seed()))
    if settings.get("max_stroke_change"):
        steps.append(RandomStrokeWidth(settings["max_stroke_change"], seed=next_seed()))
    if settings.get("blur_probability"):
        steps.append(keras.layers.RandomGaussianBlur(factor=settings["blur_probability"], kernel_size=7,
                                                     sigma=(0.1, settings.get("max_blur_sigma", 1.5)),
                                                     value_range=value_range, seed=next_seed()))
    if settings.get("max_contrast"):
        steps.append(keras.layers.RandomContrast(settings["max_contrast"], value_range=value_range, seed=next_seed()))
    if settings.get("max_noise"):
        steps.append(RandomNoise(settings["max_noise"], settings.get("noise_probability", 1.0), seed=next_seed()))
    return keras.Sequential(steps, name="augmentation")


# ==================== Training: recipes, logging, timing, tuning, cost ================


def one_cycle_schedule(peak_learning_rate: float, total_steps: int, warmup_fraction: float = 0.1,
                       final_fraction: float = 0.01):
    """Learning rate per step: linear warm-up from peak/10 over the first steps, then cosine decay to peak*final_fraction."""
    warmup_steps = int(total_steps * warmup_fraction)
    return keras.optimizers.schedules.CosineDecay(
        peak_learning_rate / 10, decay_steps=max(1, total_steps - warmup_steps), alpha=final_fraction,
        warmup_target=peak_learning_rate, warmup_steps=warmup_steps)


def learning_rate_schedule(training: dict, steps_per_epoch: int):
    """The learning rate a training recipe asks for: 'constant', 'cosine' or 'one_cycle' over its epochs."""
    total_steps = training["epochs"] * steps_per_epoch
    schedule, peak = training.get("schedule", "constant"), training["learning_rate"]
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total_steps, alpha=0.01)
    if schedule == "one_cycle":
        return one_cycle_schedule(peak, total_steps, training.get("warmup_fraction", 0.1))
    raise ValueError(f"schedule={schedule!r}; use 'constant', 'cosine' or 'one_cycle'.")


def compile_for_training(model, training: dict, steps_per_epoch: int):
    """Compile a model with Adam, the recipe's learning-rate schedule and sparse cross-entropy; returns it.

    `training` is one entry of the notebook's TRAINING parameter (also saved in metrics.json),
    so the benchmarks can train a clone of a saved model exactly as the notebook did.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(training, steps_per_epoch)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class EpochLogger(keras.callbacks.Callback):
    """Prints one line per epoch (loss, accuracy, learning rate, seconds), so logs stay short and live."""

    def __init__(self, model_name: str):
        super().__init__()
        self.model_name = model_name

    def on_train_begin(self, logs=None):
        self.total_epochs = self.params.get("epochs")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.epoch_start
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        parts = [f"{self.model_name:>14} epoch {epoch + 1:2d}/{self.total_epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        parts.append(f"lr {learning_rate:.2e}")
        parts.append(f"{seconds:5.1f} s")
        print("  ".join(parts), flush=True)


class EpochTestAccuracy(keras.callbacks.Callback):
    """Times each epoch (wall and CPU seconds), then measures test accuracy once the clocks have stopped.

    Validation accuracy, where fit has a validation split, is kept too (`validation_accuracy`),
    so a choice can rest on it rather than on the test set.
    """

    def __init__(self, test_inputs, test_labels, name: str = "", batch_size: int = 1024):
        super().__init__()
        self.test_inputs, self.test_labels, self.name, self.batch_size = test_inputs, test_labels, name, batch_size
        self.epoch_seconds, self.epoch_cpu_seconds, self.test_accuracy = [], [], []
        self.validation_accuracy = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self.started)
        self.epoch_cpu_seconds.append(time.process_time() - self.cpu_started)
        probabilities = self.model.predict(self.test_inputs, batch_size=self.batch_size, verbose=0)
        self.test_accuracy.append(accuracy(probabilities, self.test_labels))
        validation = ""
        if logs and "val_accuracy" in logs:
            self.validation_accuracy.append(float(logs["val_accuracy"]))
            validation = f", validation {self.validation_accuracy[-1] * 100:.2f}%"
        print(f"  {self.name} epoch {epoch + 1:2d}: {self.epoch_seconds[-1]:5.1f} s, "
              f"{self.epoch_cpu_seconds[-1]:5.1f} CPU-s (total {sum(self.epoch_seconds):6.1f} s), "
              f"test accuracy {self.test_accuracy[-1] * 100:.2f}%{validation}", flush=True)


def fit_timed(model, train_data, validation_data, epochs, model_name, callbacks=()):
    """Train with one log line per epoch; return (history dict, wall seconds, CPU seconds)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        verbose=0,
        shuffle=False,  # The tf.data pipeline shuffles; Keras would only warn about it.
        callbacks=[EpochLogger(model_name), *callbacks],
    )
    history = {key: [float(value) for value in values] for key, values in history.history.items()}
    return history, time.perf_counter() - start, time.process_time() - cpu_start


class SectionTimer:
    """Wall and CPU seconds per notebook section: call `start(name)` as each section begins, `stop()` at the end.

    CPU seconds are the process's own (`time.process_time`), so they stay meaningful when
    other work shares the cores and slows the wall clock down.
    """

    def __init__(self):
        self.seconds, self.cpu_seconds = {}, {}
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self._current = None

    def start(self, name: str) -> None:
        self.stop()
        self._current = (name, time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self._current is not None:
            name, started, cpu_started = self._current
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu_started
            self._current = None

    def totals(self) -> dict:
        """Stop the current section; the whole run's wall and CPU seconds, and each section's, rounded."""
        self.stop()
        return {"total_seconds": round(time.perf_counter() - self.started, 1),
                "cpu_seconds": round(time.process_time() - self.cpu_started, 1),
                "section_seconds": {name: round(value, 1) for name, value in self.seconds.items()},
                "section_cpu_seconds": {name: round(value, 1) for name, value in self.cpu_seconds.items()}}


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
        model_name = platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model_name}, {cores} cores"


class TrialLogger(keras.callbacks.Callback):
    """One line per finished KerasTuner trial, so a long search shows its progress."""

    # KerasTuner hands each trial a deep copy of its callbacks, so the count lives on the class.
    finished_trials = 0

    def __init__(self, max_trials: int):
        super().__init__()
        self.max_trials = max_trials
        self.search_start = time.perf_counter()
        TrialLogger.finished_trials = 0

    def on_train_end(self, logs=None):
        TrialLogger.finished_trials += 1
        print(f"trial {TrialLogger.finished_trials:2d}/{self.max_trials}: final val_accuracy "
              f"{(logs or {}).get('val_accuracy', float('nan')):.4f}  "
              f"({time.perf_counter() - self.search_start:.0f} s so far)", flush=True)


def tuner_trials(tuner) -> list[dict]:
    """Every scored KerasTuner trial in the order it ran: {'trial': n, 'val_accuracy': score, **hyperparameters}."""
    ordered = sorted(tuner.oracle.trials.values(), key=lambda trial: trial.trial_id)
    return [{"trial": index + 1, "val_accuracy": trial.score, **trial.hyperparameters.values}
            for index, trial in enumerate(ordered) if trial.score is not None]


def count_params(model) -> int:
    """Number of trainable and non-trainable weights of a Keras model."""
    return int(model.count_params())


def count_multiply_adds(model) -> int:
    """Multiply-adds of one forward pass of one image through a built Keras model.

    Counts Conv2D (any stride, padding or groups), DepthwiseConv2D and Dense layers, in
    nested models too. Batch normalization, activations, pooling and additions are left
    out: they are few multiply-adds, though on a CPU not free in memory traffic.
    """
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


def training_gflops(multiply_adds: int, images_per_second: float) -> float:
    """Training GFLOP/s: 2 FLOPs per multiply-add, 3 forward-pass equivalents per training image."""
    return 2 * 3 * multiply_adds * images_per_second / 1e9


# ==================== Evaluation ======================================================


def accuracy(predictions, labels) -> float:
    """Share of correct answers; `predictions` are probabilities (N, 10) or predicted labels (N,)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions of shape {predictions.shape} for labels of shape {labels.shape}; "
                         "pass one prediction per label.")
    return float(np.mean(predictions == labels))


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of predicted probabilities (N, 10) against integer labels.

    Unlike the loss Keras reports, it holds no regularization penalty, so models with and
    without L2 weight decay (and ensembles) compare on the same footing.
    """
    chosen = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(chosen, 1e-7, 1.0))))


ONE_PIXEL_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shifted_predictions(model, inputs, shifts=ONE_PIXEL_SHIFTS, batch_size: int = 1024) -> np.ndarray:
    """Test-time augmentation: the model's probabilities averaged over copies of the images moved by each shift.

    `inputs` are model inputs (N, 28, 28, 1); each shift is (rows down, columns right) in
    pixels, and the pixels moved in at the border are 0, MNIST's background. The default
    averages the image itself and its four 1-pixel shifts, so it costs five predictions.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    height, width = inputs.shape[1:3]
    total = None
    for rows, columns in shifts:
        if abs(rows) >= height or abs(columns) >= width:
            raise ValueError(f"shift ({rows}, {columns}) moves the whole {height}x{width} image out of view; "
                             "use shifts of a few pixels.")
        shifted = np.zeros_like(inputs)
        shifted[:, max(rows, 0):height + min(rows, 0), max(columns, 0):width + min(columns, 0)] = \
            inputs[:, max(-rows, 0):height + min(-rows, 0), max(-columns, 0):width + min(-columns, 0)]
        probabilities = np.asarray(model.predict(shifted, batch_size=batch_size, verbose=0), dtype=np.float64)
        total = probabilities if total is None else total + probabilities
    return (total / len(shifts)).astype(np.float32)


def most_confused_pairs(matrix: np.ndarray, count: int = 10):
    """The off-diagonal cells of a confusion matrix with the most images: (true, predicted, images)."""
    matrix = np.asarray(matrix)
    pairs = [(true, predicted, int(matrix[true, predicted]))
             for true in range(matrix.shape[0]) for predicted in range(matrix.shape[1])
             if true != predicted and matrix[true, predicted] > 0]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:count]


PERTURBATIONS = ("rotation", "shift", "blur", "noise")


def perturb_images(images: np.ndarray, kind: str, amount: float, seed: int = 0) -> np.ndarray:
    """Distort float images (N, 28, 28[, 1]) in [0, 1] the way real scans differ from MNIST.

    kind: 'rotation' (degrees, every digit turned by `amount`), 'shift' (pixels, moved right
    and down by `amount`), 'blur' (Gaussian sigma in pixels), 'noise' (standard deviation of
    added Gaussian noise). The result is clipped to [0, 1] and keeps the input's shape.
    """
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


def classification_report_csv(reports: dict) -> str:
    """scikit-learn classification reports (output_dict=True) of several models as one CSV table."""
    rows = ["model,digit,precision,recall,f1,support"]
    for name, report in reports.items():
        for label in CLASS_NAMES:
            entry = report[label]
            rows.append(f"{name},{label},{entry['precision']:.4f},{entry['recall']:.4f},"
                        f"{entry['f1-score']:.4f},{entry['support']:.0f}")
    return "\n".join(rows) + "\n"


# ==================== Plots: each returns a Matplotlib figure =========================


MODEL_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]


class FigureFolder:
    """Where the notebook's figures go: `figures.show(figure, "name")` saves figures/name.png and shows it inline."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def show(self, figure, name: str) -> None:
        # Returns nothing, so a cell that ends with it shows the figure and no path.
        save_fig(figure, name, self.folder)
        plt.show()  # In a notebook, the inline backend displays the figure here.
        plt.close(figure)  # Outside one, nothing else would free it.


def plot_class_balance(train_labels, test_labels):
    """Bar chart of how many images of each digit the train and test sets hold."""
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


def plot_metric_bars(values: dict, title: str, ylabel: str, value_format="{:.2f}", higher_is_better=True):
    """Bar chart of one metric per model, values written on the bars, the axis zoomed to the data."""
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


def plot_confusion_matrices(matrices: dict, normalize=False, columns=3):
    """Confusion matrices (true rows, predicted columns) with counts, one panel per model."""
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


def plot_classification_report(reports: dict):
    """Per-class precision, recall and F1 (rows: digits) of several models as annotated heat maps."""
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


def plot_robustness(curves: dict, x_labels: dict):
    """One panel per perturbation: test accuracy of each model against its strength.

    `curves[kind][model_name]` is a list of (amount, accuracy) pairs; `x_labels[kind]` names the axis.
    """
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


# ==================== Reading a user's digit ==========================================


MNIST_BOX = 20  # MNIST digits were scaled to fit a 20x20 box, then centred in a 28x28 field.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow's convert("L").


def naive_resize(images: np.ndarray) -> np.ndarray:
    """Stretch small images (N, H, W) of any value range to (N, 28, 28, 1) in [0, 1], bilinearly.

    The naive way to feed foreign digits to an MNIST model, for comparison with
    `prepare_digit_image`: no cropping, no 20x20 box, no centring.
    """
    images = np.asarray(images, dtype=np.float32)
    scaled = images / max(float(images.max()), 1e-12)
    resized = [np.asarray(Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for image in scaled]
    return np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32)[..., np.newaxis]


def _open_image_file(path: Path):
    """Open an image file with Pillow, upright as the camera meant it (EXIF orientation applied)."""
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


INK_CHOICES = ("auto", "dark", "light")  # dark: dark ink on light paper; light: light ink on dark, as MNIST.


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The level that best splits `values` (in [0, 1]) into a dark and a bright class (Otsu's method)."""
    histogram, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    count_low = np.cumsum(histogram)
    count_high = count_low[-1] - count_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(count_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(count_high, 1)
    between_class_variance = count_low * count_high * (mean_low - mean_high) ** 2
    return float(edges[1 + int(np.argmax(between_class_variance))])


def _count_regions(mask: np.ndarray, minimum_size: float) -> int:
    """How many 8-connected regions of `mask` have at least `minimum_size` pixels."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return int(np.count_nonzero(sizes >= minimum_size))


def ink_polarity(array: np.ndarray) -> str:
    """Whether a 2-D image of one digit has "dark" ink on light paper or "light" ink on dark.

    The paper goes on beyond the frame, the ink does not. So each reading is scored by its
    pieces once a margin of paper is added around the frame: right way round, a digit is
    one or two pieces of ink on one sheet of paper (plus its holes); the wrong way round, a
    tightly cropped heavy 0 falls apart into four corners and a hole. A reading with at
    least two pieces fewer wins. Otherwise (any digit with paper all around it, where both
    readings differ by one piece) most of the frame is paper, as for any scan or photo.
    """
    array = np.asarray(array, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if array.ndim != 2 or high == low:
        raise ValueError(f"an image of shape {array.shape} with values from {low:g} to {high:g}; "
                         "expected a 2-D image with some contrast.")
    stretched = (array - low) / (high - low)
    bright = stretched > _otsu_threshold(stretched)
    # Specks (sensor noise, JPEG artefacts) count alike in both readings; ignoring the tiniest ones
    # (under 0.05% of a large image) only saves work. The corners of a tight crop can be small.
    minimum_size = max(1.0, 0.0005 * array.size)

    def pieces(ink):
        paper = np.pad(~ink, 1, constant_values=True)
        return _count_regions(ink, minimum_size) + _count_regions(paper, minimum_size)

    light_ink, dark_ink = pieces(bright), pieces(~bright)
    if abs(light_ink - dark_ink) >= 2:
        return "light" if light_ink < dark_ink else "dark"
    frame = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
    return "dark" if frame.mean() > 0.5 else "light"


def prepare_digit_image(image, ink_threshold: float = 0.1, ink: str = "auto") -> np.ndarray:
    """Prepare any image of one digit the way MNIST was made; returns 28x28 float32 in [0, 1].

    `image` is a path, a PIL image or a 2-D array of any size and value range. Steps:
    grayscale; contrast stretched to [0, 1]; dark ink on light paper inverted to MNIST's
    light-on-dark; paper level removed; cropped to the ink; scaled to fit a 20x20 box
    keeping its aspect ratio; placed in a 28x28 field so that the ink's centre of mass is
    at the centre. `ink` is "dark", "light", or "auto" to tell from the image (see
    `ink_polarity`). Raises FileNotFoundError for a missing file, IsADirectoryError for a
    folder, and ValueError for a file that is not an image, an array that is not one
    image, an empty image or a blank one (no ink).
    """
    if not 0.0 < ink_threshold < 1.0:
        raise ValueError(f"ink_threshold={ink_threshold!r}; use a fraction of the contrast between 0 and 1, such as 0.1.")
    if ink not in INK_CHOICES:
        raise ValueError(f"ink={ink!r}; use 'dark' (dark ink on light paper), 'light' (light ink on dark, as MNIST) "
                         "or 'auto' (tell from the image).")
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
    if (ink if ink != "auto" else ink_polarity(array)) == "dark":
        array = 1.0 - array
    # The paper's level is read where the frame shows paper: a digit cropped tightly covers much of the frame.
    paper = array <= _otsu_threshold(array)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    border_paper = border[np.concatenate([paper[0], paper[-1], paper[:, 0], paper[:, -1]])]
    background = float(np.median(border_paper if border_paper.size else array[paper]))
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


PAD_SIZE = 280  # The drawing pad's canvas in pixels: ten pad pixels to one MNIST pixel.
# Measured: with this pen, EXAMPLE_STROKES (a 4 about 190 px tall) prepares to almost as much ink
# as MNIST's average 4 (a pixel sum of 87 against 95); thinner pens give faint, thin digits.
PEN_WIDTH = 24.0
# A 4 drawn by hand on the pad, in two strokes, as the browser records them: (x, y) in pixels.
EXAMPLE_STROKES = [
    [(150, 48), (122, 100), (94, 150), (82, 172), (120, 171), (165, 169), (205, 168)],
    [(168, 104), (165, 160), (162, 200), (160, 238)],
]


def strokes_to_image(strokes, size: int = PAD_SIZE, pen_width: float = PEN_WIDTH) -> np.ndarray:
    """Draw pen strokes into a (size, size) float32 image: light ink (1.0) on black (0.0), as MNIST.

    `strokes` is a list of strokes, each a list of (x, y) points in pixels from the top-left
    corner, as the drawing pad records them; a stroke of one point is a dot. The pen is round:
    a pixel is ink where its centre is within `pen_width / 2` of the stroke, with a ramp one
    pixel wide at the edge, so the result is smooth and exactly computable (no browser's
    antialiasing involved). What lies outside the canvas is cut off.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r}; use the canvas width in pixels, a positive whole number such as {PAD_SIZE}.")
    if not (np.isfinite(pen_width) and pen_width > 0):
        raise ValueError(f"pen_width={pen_width!r}; use the pen's width in pixels, a positive number "
                         f"such as {PEN_WIDTH:g}.")
    radius = pen_width / 2
    image = np.zeros((size, size), dtype=np.float32)
    for index, stroke in enumerate(strokes):
        try:
            points = np.asarray(stroke, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"stroke {index} is not a list of (x, y) numbers ({error}); "
                             "pass strokes as lists of (x, y) points, such as helpers.EXAMPLE_STROKES.") from error
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.all(np.isfinite(points)):
            raise ValueError(f"stroke {index} has shape {points.shape}; each stroke must be a non-empty list of "
                             "finite (x, y) points, such as helpers.EXAMPLE_STROKES.")
        segments = zip(points[:-1], points[1:]) if len(points) > 1 else [(points[0], points[0])]
        for start, end in segments:
            # Only the pixels near this segment can change: a window around it, clipped to the canvas.
            left, top = np.maximum(np.floor(np.minimum(start, end) - radius - 1), 0).astype(int)
            right, bottom = np.minimum(np.ceil(np.maximum(start, end) + radius + 1), size).astype(int)
            if left >= right or top >= bottom:
                continue
            rows, columns = np.mgrid[top:bottom, left:right]
            x, y = columns + 0.5, rows + 0.5  # pixel centres
            direction = end - start
            length_squared = float(direction @ direction)
            along = 0.0 if length_squared == 0 else np.clip(
                ((x - start[0]) * direction[0] + (y - start[1]) * direction[1]) / length_squared, 0.0, 1.0)
            distance = np.hypot(x - start[0] - along * direction[0], y - start[1] - along * direction[1])
            window = image[top:bottom, left:right]
            np.maximum(window, np.clip(radius + 0.5 - distance, 0.0, 1.0), out=window)
    return image


class DigitReading:
    """What the models read in one drawing: the drawn image, the prepared 28x28 field, the probabilities.

    `best_probabilities` (10,) come from the single model `best_name`; `ensemble_probabilities`
    (10,) are the mean of the probabilities of the models in `members`, as the notebook's
    ensemble is computed.
    """

    def __init__(self, drawing, prepared, best_name, best_probabilities, members, ensemble_probabilities):
        self.drawing = drawing
        self.prepared = prepared
        self.best_name = best_name
        self.best_probabilities = best_probabilities
        self.members = list(members)
        self.ensemble_probabilities = ensemble_probabilities

    @property
    def best_digit(self) -> int:
        return int(np.argmax(self.best_probabilities))

    @property
    def ensemble_digit(self) -> int:
        return int(np.argmax(self.ensemble_probabilities))

    @property
    def best_label(self) -> str:
        return f"best model ({self.best_name})"

    @property
    def ensemble_label(self) -> str:
        return f"ensemble of {len(self.members)} model{'s' if len(self.members) > 1 else ''}"


def _check_pad_models(models: dict, best_name: str, members) -> None:
    """Refuse, naming the fix, a best model or ensemble member that is not among `models`."""
    available = ", ".join(models) or "none"
    if best_name not in models:
        raise ValueError(f"best_name={best_name!r} is not among the models ({available}); "
                         "pass the name of one of them.")
    missing = [name for name in members if name not in models]
    if missing or not list(members):
        problem = f"{missing} not among the models" if missing else "no members"
        raise ValueError(f"members={list(members)!r}: {problem} ({available}); "
                         "pass the names of the ensemble's models.")


def read_drawing(strokes, models: dict, best_name: str, members, size: int = PAD_SIZE,
                 pen_width: float = PEN_WIDTH) -> DigitReading:
    """Read the digit drawn as `strokes` (see `strokes_to_image`) with the best model and the ensemble.

    `models` maps names to Keras models (loaded from saved_models/ or just trained);
    `best_name` is one of them, `members` the ensemble's. The drawing is prepared as
    predict.py prepares an image file, with its polarity known: light ink on black.
    """
    _check_pad_models(models, best_name, members)
    drawing = strokes_to_image(strokes, size=size, pen_width=pen_width)
    if not drawing.any():
        raise ValueError("the drawing is empty (no stroke on the pad); draw a digit on it.")
    prepared = prepare_digit_image(drawing, ink="light")
    # Each model runs once, also when the best model is one of the members.
    names = dict.fromkeys([best_name, *members])
    probabilities = {name: predict_digits(models[name], prepared)[1][0] for name in names}
    ensemble = np.mean([probabilities[name] for name in members], axis=0).astype(np.float32)
    return DigitReading(drawing, prepared, best_name, probabilities[best_name], members, ensemble)


def plot_digit_reading(reading: DigitReading):
    """The drawing, the prepared 28x28 image and both predictions' ten probabilities, side by side."""
    figure, (drawn_axis, prepared_axis, bars_axis) = plt.subplots(
        1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    drawn_axis.imshow(reading.drawing, cmap="gray_r", vmin=0, vmax=1)  # dark on white, as on the pad
    drawn_axis.set_title("drawn on the pad")
    prepared_axis.imshow(reading.prepared, cmap="gray", vmin=0, vmax=1)
    prepared_axis.set_title("prepared 28x28 (what the models see)")
    for axis in (drawn_axis, prepared_axis):
        axis.set_xticks([])
        axis.set_yticks([])
    digits = np.arange(NUM_CLASSES)
    bars_axis.bar(digits - 0.2, reading.best_probabilities, width=0.4, color=MODEL_COLORS[0],
                  label=f"{reading.best_label}: {reading.best_digit}")
    bars_axis.bar(digits + 0.2, reading.ensemble_probabilities, width=0.4, color=MODEL_COLORS[1],
                  label=f"{reading.ensemble_label}: {reading.ensemble_digit}")
    bars_axis.set_xticks(digits)
    bars_axis.set_ylim(0, 1.05)
    bars_axis.set_xlabel("digit")
    bars_axis.set_ylabel("probability")
    bars_axis.set_title(f"read as {reading.best_digit} (best model) and {reading.ensemble_digit} (ensemble)")
    bars_axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


class DrawingPad(anywidget.AnyWidget):
    """A pad to draw a digit on in the notebook, showing what the best model and the ensemble read.

    Works in JupyterLab 4, Notebook 7 and VS Code, offline: anywidget loads drawing_pad.js
    as an ES module, with no build step and nothing from the network. The browser records
    each stroke as coordinates and sends the strokes when one ends; `read_drawing` does the
    rest in Python; the browser shows the prepared image, each prediction as text (elements
    of class pad-best-digit and pad-ensemble-digit) and the ten probabilities as bars.
    `pad.read(strokes)` gives the same reading without a browser.
    """

    _esm = (Path(__file__).resolve().parent / "drawing_pad.js").read_text(encoding="utf-8")
    size = traitlets.Int(PAD_SIZE).tag(sync=True)
    pen_width = traitlets.Float(PEN_WIDTH).tag(sync=True)
    strokes = traitlets.List().tag(sync=True)  # from the browser: [[[x, y], ...], ...]
    reading = traitlets.Dict().tag(sync=True)  # to the browser: what the models read, or a message

    def __init__(self, models: dict, best_name: str, members, size: int = PAD_SIZE, pen_width: float = PEN_WIDTH):
        _check_pad_models(models, best_name, members)
        self.models, self.best_name, self.members = dict(models), best_name, list(members)
        super().__init__(size=size, pen_width=pen_width)

    def read(self, strokes) -> DigitReading:
        """What the models read in `strokes`, drawn with this pad's canvas size and pen."""
        return read_drawing(strokes, self.models, self.best_name, self.members, self.size, self.pen_width)

    def __repr__(self) -> str:
        # What a notebook shows where no browser runs the widget (nbconvert, GitHub): no memory address.
        return (f"DrawingPad for {self.best_name} and an ensemble of {len(self.members)}: draw a digit here "
                "when the notebook runs live in JupyterLab, Notebook 7 or VS Code.")

    @traitlets.observe("strokes")
    def _read_new_strokes(self, change):
        # The stroke count tells the browser which drawing a reading belongs to.
        if not change["new"]:
            self.reading = {"strokes": 0}
            return
        try:
            reading = self.read(change["new"])
        except ValueError as error:
            self.reading = {"strokes": len(change["new"]), "message": str(error)}
            return
        self.reading = {
            "strokes": len(change["new"]),
            "prepared": np.round(reading.prepared.ravel(), 3).tolist(),
            "best": {"label": reading.best_label, "digit": reading.best_digit,
                     "probabilities": reading.best_probabilities.tolist()},
            "ensemble": {"label": reading.ensemble_label, "digit": reading.ensemble_digit,
                         "probabilities": reading.ensemble_probabilities.tolist()},
        }


# ==================== Results files and prose =========================================


@contextlib.contextmanager
def atomic_write(path):
    """Write a file whole or not at all: yields a temporary path beside `path`, renamed over it on success.

    The temporary file keeps the suffix (Keras and Matplotlib choose the format by it); if
    the block raises, it is deleted and any earlier file at `path` stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    # mkstemp makes the file private (0600); give it the permissions a plain new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def save_model_checked(model, path, sample_inputs, tolerance=1e-5):
    """Save a Keras model, reload it in safe mode and check it predicts as the trained one.

    The file is written beside its final name and renamed only after the check passes,
    so a failed save never replaces a good model. Returns the reloaded model.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: models are saved in the native Keras format; use a name ending in .keras.")
    with atomic_write(path) as temporary:
        model.save(temporary)
        reloaded = keras.saving.load_model(temporary, safe_mode=True)
        expected = model.predict(sample_inputs, verbose=0)
        actual = reloaded.predict(sample_inputs, verbose=0)
        if not np.allclose(expected, actual, atol=tolerance):
            worst = float(np.max(np.abs(expected - actual)))
            raise ValueError(f"{path}: the reloaded model predicts differently (max difference {worst:.2e}).")
    return reloaded


def load_saved_model(path):
    """Load a model saved by the notebook, in safe mode; a missing or unreadable file says to run `make run`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such saved model; run `make run` to train and save the models.")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged file; all mean the same here.
        raise ValueError(f"{path}: cannot be loaded as a Keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); run `make run` to save it again.") from error


def save_fig(fig, name: str, folder, dpi: int = 120) -> Path:
    """Save a Matplotlib figure as `folder/name.png` (written whole, then renamed into place)."""
    path = Path(folder) / f"{name}.png"
    with atomic_write(path) as temporary:
        fig.savefig(temporary, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def write_json(data, path) -> Path:
    """Write JSON (indented, keys in order given) to `path`, whole or not at all."""
    path = Path(path)
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_json(path, what: str = "file") -> dict:
    """Read a JSON file the notebook wrote; a missing or damaged one says which file and to run `make run`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}; run `make run` to write it.")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as JSON ({error}); run `make run` to write it again.") from error


def write_text(path, text: str) -> Path:
    """Write a text file (CSV, Markdown) whole or not at all."""
    path = Path(path)
    with atomic_write(path) as temporary:
        temporary.write_text(text)
    return path


def results_table_markdown(metrics: dict) -> str:
    """A Markdown table of every model in metrics['models'] (ensembles included)."""
    lines = [
        "| model | test accuracy | test loss | parameters | epochs | training seconds | training CPU seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in metrics["models"].items():
        params = f"{entry['params']:,}" if "params" in entry else "-"
        epochs = str(entry.get("epochs", "-"))
        seconds = f"{entry['train_seconds']:.0f}" if "train_seconds" in entry else "-"
        cpu_seconds = f"{entry['train_cpu_seconds']:.0f}" if "train_cpu_seconds" in entry else "-"
        if "members" in entry:
            name = f"{name} (mean of {', '.join(entry['members'])})"
        lines.append(
            f"| {name} | {entry['test_accuracy'] * 100:.2f}% | {entry['test_loss']:.4f} | {params} | {epochs} | {seconds} | {cpu_seconds} |"
        )
    return "\n".join(lines)


def trials_table_markdown(trials: list[dict]) -> str:
    """KerasTuner trials as a Markdown table, best validation accuracy first."""
    columns = list(trials[0]) if trials else ["trial", "val_accuracy"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " ---: |" * len(columns)]
    for trial in sorted(trials, key=lambda trial: -trial["val_accuracy"]):
        lines.append("| " + " | ".join(f"{trial[column]:.4g}" if isinstance(trial[column], float) else str(trial[column])
                                       for column in columns) + " |")
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
    seeds = [name for name in models if name == "resnet" or name.startswith("resnet_seed")]
    if len(seeds) > 1:
        scores = np.array([models[name]["test_accuracy"] for name in seeds]) * 100
        lines.append(f"\nThe {len(seeds)} residual networks (same recipe, different seeds) score {scores.mean():.2f}% "
                     f"on average (from {scores.min():.2f}% to {scores.max():.2f}%, standard deviation {scores.std(ddof=1):.2f}).")
    if targets:
        lines.append("\nTargets of the full run:")
        for name, target in targets.items():
            if name not in models:
                continue
            reached = models[name]["test_accuracy"]
            verdict = "met" if reached >= target else f"missed by {(target - reached) * 100:.2f} points"
            lines.append(f"- `{name}` at least {target * 100:.2f}%: {reached * 100:.2f}%, {verdict}.")
    tuner = metrics.get("tuner")
    if tuner:
        settings = ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                             for key, value in tuner["best_hyperparameters"].items())
        lines.append(f"\nKerasTuner ran {len(tuner['trials'])} trials in {tuner['seconds'] / 60:.1f} minutes; the best "
                     f"({settings}) scored {tuner['best_val_accuracy'] * 100:.2f}% on validation after "
                     f"{tuner['epochs']} epochs on {tuner['train_images']:,} images.")
    robustness = metrics.get("robustness")
    if robustness:
        tested = [name for name in ranked if all(name in entry["models"] for entry in robustness.values())]
        if tested:
            # Most robust: the best mean accuracy over every distortion and strength tested.
            def mean_distorted(name):
                return float(np.mean([value for entry in robustness.values() for value in entry["models"][name]]))

            sturdiest = max(tested, key=mean_distorted)
            for name in dict.fromkeys([tested[0], sturdiest]):
                parts = [f"{kind} {entry['amounts'][-1]}: {entry['models'][name][-1] * 100:.1f}%"
                         for kind, entry in robustness.items()]
                lines.append(f"\nUnder the strongest distortions tested, `{name}` keeps: {'; '.join(parts)}.")
            if sturdiest == tested[0]:
                lines.append(f"\nThe most accurate model is also the most robust: **{sturdiest}** averages "
                             f"{mean_distorted(sturdiest) * 100:.1f}% test accuracy over every distortion and "
                             "strength tested.")
            else:
                lines.append(f"\nThe most robust model is **{sturdiest}**: {mean_distorted(sturdiest) * 100:.1f}% mean "
                             f"test accuracy over every distortion and strength tested (the most accurate, "
                             f"`{tested[0]}`: {mean_distorted(tested[0]) * 100:.1f}%).")
    cross_dataset = metrics.get("cross_dataset")
    if cross_dataset and cross_dataset.get("models"):
        scores = cross_dataset["models"]
        top = max(scores, key=lambda name: scores[name]["prepared"])
        lines.append(
            f"\nOn {cross_dataset['dataset']}, `{top}` reads {scores[top]['prepared'] * 100:.1f}% correctly once "
            f"the images are prepared the MNIST way, against {scores[top]['naive_resize'] * 100:.1f}% when they "
            "are simply resized."
        )
    cpu_seconds = f" ({run['cpu_seconds'] / 60:.1f} CPU-minutes)" if "cpu_seconds" in run else ""
    how = "" if run.get("train", True) else ", loading the saved models instead of training them"
    lines.append(f"\nThe whole notebook ran in {run['total_seconds'] / 60:.1f} minutes{cpu_seconds} on "
                 f"{run.get('cpu', 'this CPU')}{how}.")
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
