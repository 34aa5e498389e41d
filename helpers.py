"""Chores for model.ipynb, in the order the notebook uses them.

Sections: data; input pipeline and augmentation; training (recipes, logger, timer, tuner
bookkeeping); evaluation; plots; digits from elsewhere; results files and prose.
The notebook tells the story and defines the models; this module holds the reusable
pieces, so that the notebook, the tests and the benchmarks share one implementation of
each. The product, the digit reader that predict.py and the pad use, is `reader.py`.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import platform
import struct
import time
import zlib
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from PIL import Image
from scipy import ndimage

import reader
import writers
from reader import IMAGE_SIZE, NUM_CLASSES, atomic_write  # the reader defines what a digit image is; one way to write a file

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


def validation_indices(labels, validation_split: float, seed: int = 0, train_writers=None):
    """Indices (fit, validation) of the training digits, and how the validation digits were chosen.

    With `train_writers` ({"writer", "series"} of writers.load_writers) they are whole writers,
    `validation_split` of each series (writers.split_by_writer): the validation digits then come
    from people who wrote no training digit, as the test digits do. Without, the last
    `validation_split` of the images, as Keras' `validation_split`.
    """
    if train_writers is not None:
        fit, validation = writers.split_by_writer(train_writers["writer"], train_writers["series"], validation_split, seed)
        return fit, validation, "writer"
    (fit, _), (validation, _) = split_validation(np.arange(len(labels)), np.asarray(labels), validation_split)
    return fit, validation, "last fraction"


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


def outlier_exposure_dataset(images, labels, non_digits, batch_size, non_digit_batch_size, non_digit_weight,
                             seed=0, augmentation=None):
    """Batches of digits and non-digits for outlier exposure (Hendrycks et al. 2019).

    Each batch holds `batch_size` shuffled digits with one-hot targets and weight 1, and
    `non_digit_batch_size` non-digits (drawn round and round from `non_digits`) whose target
    is the uniform distribution, with weight `non_digit_weight`: cross-entropy against it
    pushes the model to be unsure of anything that is not a digit. One pass over the digits
    is one epoch. `augmentation` is applied to the whole batch, digits and non-digits alike.
    """
    digits = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, NUM_CLASSES))).cache()
    digits = digits.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    others = tf.data.Dataset.from_tensor_slices(np.asarray(non_digits, dtype=np.float32)).cache()
    others = others.shuffle(len(non_digits), seed=seed + 1, reshuffle_each_iteration=True).repeat()
    others = others.batch(non_digit_batch_size)

    def combine(digit_batch, non_digit_batch):
        digit_inputs, digit_targets = digit_batch
        count = tf.shape(non_digit_batch)[0]
        inputs = tf.concat([digit_inputs, non_digit_batch], axis=0)
        if augmentation is not None:
            inputs = augmentation(inputs, training=True)
        targets = tf.concat([digit_targets, tf.fill([count, NUM_CLASSES], 1.0 / NUM_CLASSES)], axis=0)
        weights = tf.concat([tf.ones([tf.shape(digit_inputs)[0]]), tf.fill([count], float(non_digit_weight))], axis=0)
        return inputs, targets, weights

    return tf.data.Dataset.zip((digits, others)).map(combine, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


class RandomElastic(keras.layers.Layer):
    """Elastic distortion as Simard et al. (2003): a random displacement field smoothed by a Gaussian.

    Each pixel moves by a field drawn uniformly from [-1, 1], smoothed by a Gaussian of width
    `sigma` pixels and scaled by `alpha` (Simard's 34 and 4 move pixels by about 1.4 pixels,
    like one writer's hand against another's); with `grid` (say 4), the field is instead drawn
    at a grid x grid lattice of points and interpolated bicubically, a smooth warp whose largest
    move is `alpha` pixels. The image is resampled bilinearly. Applied to
    the first `fraction` of each (shuffled) batch, which halves its cost at the default.
    Expects images (N, H, W, 1). Keras' RandomElasticTransform is not used: it ties sigma to
    alpha, so a smooth field of small amplitude cannot be asked of it, and in a tf.data
    pipeline (unknown batch size) Keras 3.15's elastic_transform returns one image per batch.
    Active only with training=True.
    """

    def __init__(self, alpha=34.0, sigma=4.0, fraction=0.5, seed=None, grid=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.sigma, self.fraction, self.seed, self.grid = alpha, sigma, fraction, seed, grid
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
        if self.grid:
            # A smooth field: random moves of a coarse grid's points, interpolated bicubically,
            # so `alpha` is the largest move in pixels and neighbouring pixels move together.
            coarse = keras.random.uniform(tf.stack([count, self.grid, self.grid, 2]), -1.0, 1.0,
                                          seed=self.generator)
            field = tf.image.resize(coarse, [height, width], method="bicubic")
        else:
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
                "seed": self.seed, "grid": self.grid}


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
    and `max_zoom` (fractions of the image), `elastic_alpha` with `elastic_sigma` or `elastic_grid`
    and `elastic_fraction` (see RandomElastic), `blur_probability` with `max_blur_sigma`,
    `max_contrast`, `max_stroke_change` (see RandomStrokeWidth) and `max_noise` with
    `noise_probability` (see RandomNoise). Never flips: a flipped digit is another digit.
    All are TensorFlow ops, run inside the tf.data pipeline, so the saved models hold none of them.
    """
    known = {"max_degrees", "max_shift", "max_zoom", "elastic_alpha", "elastic_sigma", "elastic_fraction",
             "elastic_grid",
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
                                   settings.get("elastic_fraction", 0.5), seed=next_seed(),
                                   grid=settings.get("elastic_grid")))
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
    so the benchmarks can train a clone of a saved model exactly as the notebook did. Two
    optional keys: `label_smoothing` (a categorical cross-entropy on one-hot targets, which
    fit_recipe makes) and `use_ema` (Adam keeps a moving average of the weights, momentum
    0.99, and fit leaves the averages in the model at its end).
    """
    optimizer = keras.optimizers.Adam(learning_rate_schedule(training, steps_per_epoch),
                                      use_ema=bool(training.get("use_ema")))
    if training.get("label_smoothing"):
        model.compile(optimizer=optimizer, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=training["label_smoothing"]))
    else:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def compile_for_outlier_exposure(model, training: dict, steps_per_epoch: int):
    """Compile for `outlier_exposure_dataset`'s soft targets: Adam, the recipe's schedule, categorical cross-entropy.

    Only built-in Keras losses and metrics, so the saved model still loads in safe mode.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(training, steps_per_epoch)),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


class EpochLogger(keras.callbacks.Callback):
    """Prints one line per epoch (loss, accuracy, learning rate, seconds), so logs stay short and live."""

    # The classifiers' numbers, and the generators' (generative.py).
    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "reconstruction", "kl", "generator_loss", "discriminator_loss")

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
        for key in self.KEYS:
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        parts.append(f"lr {learning_rate:.2e}")
        parts.append(f"{seconds:5.1f} s")
        print("  ".join(parts), flush=True)


def fit_timed(model, train_data, validation_data, epochs, model_name, callbacks=(), initial_epoch=0):
    """Train with one log line per epoch (from `initial_epoch` to `epochs`); return (history dict, wall seconds, CPU seconds)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        shuffle=False,  # The tf.data pipeline shuffles; Keras would only warn about it.
        callbacks=[EpochLogger(model_name), *callbacks],
    )
    history = {key: [float(value) for value in values] for key, values in history.history.items()}
    return history, time.perf_counter() - start, time.process_time() - cpu_start


def fit_recipe(model, training: dict, inputs, labels, validation, seed: int, name: str, callbacks=()):
    """Compile a freshly built `model` and train it with recipe `training`: the one training path.

    The notebook trains every model with it and the benchmarks train their clones with it, so
    a measured lever is the notebook's recipe with one thing changed. `training` is one entry
    of the notebook's TRAINING (epochs, batch_size, learning_rate, schedule, augmentation,
    early_stopping_patience; optionally label_smoothing and use_ema, see compile_for_training);
    `validation` is (inputs, labels) or None. Batches are shuffled (and augmented) with `seed`.
    Returns (history dict, wall seconds, CPU seconds).
    """
    if training.get("label_smoothing"):
        # Keras smooths one-hot targets only, so the labels become one-hot rows here.
        labels = keras.utils.to_categorical(labels, NUM_CLASSES)
        if validation is not None:
            validation = (validation[0], keras.utils.to_categorical(validation[1], NUM_CLASSES))
    compile_for_training(model, training, math.ceil(len(inputs) / training["batch_size"]))
    augmentation = augmentation_layers(training["augmentation"], seed=seed) if training.get("augmentation") else None
    batches = make_dataset(inputs, labels, training["batch_size"], shuffle=True, seed=seed, augmentation=augmentation)
    validation_data = None if validation is None else make_dataset(*validation, 1024)
    stopping = []
    if training.get("early_stopping_patience") and validation is not None:
        stopping = [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=training["early_stopping_patience"],
                                                  restore_best_weights=True)]
    return fit_timed(model, batches, validation_data, training["epochs"], name, [*callbacks, *stopping])


class SectionTimer:
    """Wall and CPU seconds per notebook section: call `start(name)` as each section begins, `stop()` at the end.

    CPU seconds are the process's own (`time.process_time`), so they stay meaningful when
    other work shares the cores and slows the wall clock down. Each `start` prints one line,
    "── section training · 252 s into the run ──", which run_notebook.py turns into its
    console line with the time left (its SECTION_LINE reads this format).
    """

    def __init__(self):
        self.seconds, self.cpu_seconds = {}, {}
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.credited, self.cpu_credited = 0.0, 0.0
        self._current = None

    def start(self, name: str) -> None:
        self.stop()
        self._current = (name, time.perf_counter(), time.process_time())
        print(f"── section {name} · {self._current[1] - self.started:.0f} s into the run ──", flush=True)

    def stop(self) -> None:
        if self._current is not None:
            name, started, cpu_started = self._current
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu_started
            self._current = None

    def credit(self, seconds: float, cpu_seconds: float) -> None:
        """Count work done before a resumed run was interrupted (a model's training) in the current section."""
        name = self._current[0]
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu_seconds
        self.credited, self.cpu_credited = self.credited + seconds, self.cpu_credited + cpu_seconds

    def totals(self) -> dict:
        """Stop the current section; the whole run's wall and CPU seconds, and each section's, rounded."""
        self.stop()
        return {"total_seconds": round(time.perf_counter() - self.started + self.credited, 1),
                "cpu_seconds": round(time.process_time() - self.cpu_started + self.cpu_credited, 1),
                "section_seconds": {name: round(value, 1) for name, value in self.seconds.items()},
                "section_cpu_seconds": {name: round(value, 1) for name, value in self.cpu_seconds.items()}}


def cpu_description() -> str:
    """The processor's model name, the cores this process may use and its widest vector instructions,
    e.g. 'AMD EPYC, 2 cores, AVX2'. Machines sold under one model name differ: this project's residual
    network trained about 3x slower per CPU-second on one 'AMD EPYC, 2 cores' than on another, and the
    vector instructions are one difference the name alone does not show."""
    model_name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model_name is None:
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if model_name is None:
        model_name = platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vector = next((name for flag, name in (("amx_tile", "AVX-512 and AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                           ("avx", "AVX")) if flag in flags), None)
    return f"{model_name}, {cores} cores" + (f", {vector}" if vector else "")


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


def plot_generator_history(history: dict, title: str):
    """A generator's losses per epoch, one panel each (a VAE's loss, reconstruction and KL; a GAN's two players)."""
    keys = [key for key in ("loss", "reconstruction", "kl", "generator_loss", "discriminator_loss") if key in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys):
        axis.plot(np.arange(1, len(history[key]) + 1), history[key], "o-")
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_low_label(results: dict):
    """Test accuracy of classifiers trained on few labels, without and with generated digits: a bar for the mean
    over seeds, a dot for each seed. `results[size][arm]` is a list of accuracies (0-1)."""
    sizes = list(results)
    arms = list(next(iter(results.values())))
    width = 0.8 / len(arms)
    fig, axis = plt.subplots(figsize=(max(6, 2.2 * len(sizes) + 2), 4))
    for index, arm in enumerate(arms):
        positions = np.arange(len(sizes)) + (index - (len(arms) - 1) / 2) * width
        accuracies = [np.array(results[size][arm]) * 100 for size in sizes]
        axis.bar(positions, [values.mean() for values in accuracies], width, label=arm, color=MODEL_COLORS[index], alpha=0.8)
        for position, values in zip(positions, accuracies):
            axis.plot(np.full(len(values), position), values, "k.", markersize=8)
            axis.annotate(f"{values.mean():.1f}", (position, values.max()), ha="center", va="bottom", xytext=(0, 3),
                          textcoords="offset points", fontsize=8)
    axis.set_xticks(np.arange(len(sizes)), [f"{size:,} labelled digits" for size in sizes])
    low = min(min(values) for entry in results.values() for values in entry.values()) * 100
    axis.set_ylim(max(0, low - 5), 100)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Few labels: the basic CNN without and with generated digits (dots: seeds)")
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


def plot_filters(kernels: dict, columns: int = 16):
    """First-layer convolution kernels: one block of small images per model, red positive, blue negative.

    `kernels` maps a title to a kernel array (k, k, 1, filters); each model's kernels share one colour
    scale, symmetric about 0, so a filter's sign pattern (an edge, a blob) reads at a glance.
    """
    blocks = [(title, np.asarray(kernel)[..., 0, :]) for title, kernel in kernels.items()]
    rows = [math.ceil(kernel.shape[-1] / columns) for _, kernel in blocks]
    fig, axes = plt.subplots(sum(rows), columns, figsize=(columns * 0.55, sum(rows) * 0.62 + 0.45 * len(blocks)),
                             squeeze=False)
    row = 0
    for (title, kernel), block_rows in zip(blocks, rows):
        limit = np.abs(kernel).max() or 1.0
        for index in range(block_rows * columns):
            axis = axes[row + index // columns, index % columns]
            axis.axis("off")
            if index < kernel.shape[-1]:
                axis.imshow(kernel[..., index], cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[row, 0].set_title(title, loc="left", fontsize=10, x=0)
        row += block_rows
    fig.tight_layout(h_pad=0.3, w_pad=0.2)
    return fig


def plot_feature_maps(stages: dict, digit, channels: int = 8):
    """What one digit becomes inside each network: per model and stage, the first `channels` feature maps.

    `stages[model_name]` is a list of (label, array (H, W, C)); each map has its own grey scale
    (dark: active), since what matters is where a channel responds, not how strongly.
    """
    rows = sum(len(stage_list) for stage_list in stages.values())
    fig, axes = plt.subplots(rows, channels + 1, figsize=((channels + 1) * 1.0, rows * 1.1), squeeze=False)
    row = 0
    for name, stage_list in stages.items():
        for label, maps in stage_list:
            axes[row, 0].imshow(np.squeeze(digit), cmap="gray_r")
            axes[row, 0].set_title(f"{name}\n{label}", fontsize=8, loc="left", x=0)
            for channel in range(channels):
                axis = axes[row, channel + 1]
                if channel < maps.shape[-1]:
                    axis.imshow(maps[..., channel], cmap="gray_r")
            row += 1
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    fig.tight_layout(h_pad=0.4, w_pad=0.2)
    return fig


def plot_saliency(images, first_maps, second_maps, titles, map_titles, title_colors=None, per_row: int = 2):
    """Each digit beside where the network looked for its two top readings (heat maps over the digit).

    `first_maps` and `second_maps` are heat maps in [0, 1] (saliency.heatmap) for the top and the
    second reading; `map_titles` holds a (first, second) pair of titles per digit.
    """
    count = len(images)
    rows = math.ceil(count / per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(3 * per_row * 1.45, rows * 1.65), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for index in range(count):
        row, column = divmod(index, per_row)
        digit_axis, first_axis, second_axis = axes[row, 3 * column:3 * column + 3]
        digit_axis.imshow(np.squeeze(images[index]), cmap="gray_r", vmin=0, vmax=1)
        digit_axis.set_title(titles[index], fontsize=8, color=title_colors[index] if title_colors else "black")
        for axis, maps, title in ((first_axis, first_maps, map_titles[index][0]),
                                  (second_axis, second_maps, map_titles[index][1])):
            axis.imshow(np.squeeze(images[index]), cmap="gray_r", vmin=0, vmax=1, alpha=0.35)
            axis.imshow(maps[index], cmap="hot_r", vmin=0, vmax=1, alpha=0.75)
            axis.set_title(title, fontsize=8)
    fig.tight_layout(h_pad=0.5, w_pad=0.3)
    return fig


def plot_embedding(embeddings: dict, labels):
    """Two-dimensional maps of the networks' penultimate features, side by side, one colour per digit.

    `embeddings[title]` is (points (N, 2), misread mask (N,)); misread digits are marked with a black x.
    """
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5.6 * len(embeddings), 5.4), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis, (title, (points, misread)) in zip(axes.ravel(), embeddings.items()):
        for digit in range(NUM_CLASSES):
            chosen = labels == digit
            axis.scatter(points[chosen, 0], points[chosen, 1], s=3, color=colors(digit), alpha=0.6)
            centre = np.median(points[chosen], axis=0)
            axis.text(*centre, str(digit), fontsize=14, weight="bold", ha="center", va="center",
                      bbox={"boxstyle": "circle,pad=0.2", "facecolor": "white", "alpha": 0.8, "edgecolor": colors(digit)})
        axis.scatter(points[misread, 0], points[misread, 1], s=22, marker="x", color="black", linewidths=1.0,
                     label=f"misread ({int(np.sum(misread))})")
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_writer_accuracy(per_writer: dict, series_accuracy: dict):
    """Left: how many test writers each model reads at each accuracy; right: accuracy by NIST series.

    `per_writer[model]` is (writer ids, digits per writer, accuracy per writer) from
    writers.accuracy_by_writer; `series_accuracy[model][series name]` an accuracy in [0, 1].
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    lowest = min(accuracies.min() for _, _, accuracies in per_writer.values())
    edges = np.linspace(np.floor(lowest * 50) / 50, 1.0, 21)
    for color, (name, (_, _, accuracies)) in zip(MODEL_COLORS, per_writer.items()):
        left.hist(accuracies * 100, bins=edges * 100, color=color, alpha=0.55, label=f"{name} ({len(accuracies)} writers)")
    left.set_xlabel("accuracy on one writer's test digits (%)")
    left.set_ylabel("writers")
    left.set_title("Accuracy per test writer")
    left.legend(loc="upper left")
    left.grid(alpha=0.3)
    names = list(series_accuracy)
    series = list(next(iter(series_accuracy.values())))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        values = [series_accuracy[name][each] * 100 for each in series]
        bars = right.bar(np.arange(len(series)) + (index - (len(names) - 1) / 2) * width, values, width, label=name,
                         color=MODEL_COLORS[index])
        for bar, value in zip(bars, values):
            right.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                           xytext=(0, 2), textcoords="offset points", fontsize=8)
    right.set_xticks(np.arange(len(series)), [name.replace(" ", "\n", 1) for name in series])
    low = min(value for by_series in series_accuracy.values() for value in by_series.values()) * 100
    right.set_ylim(max(0.0, np.floor(low) - 1), 100)
    right.set_ylabel("test accuracy (%)")
    right.set_title("By NIST series")
    right.legend(loc="lower right", fontsize=8)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pen_writers(per_writer: dict, held_out_writers, title: str):
    """Accuracy on each pen writer's digits (`per_writer[model]` = (writer ids, counts, accuracies)),
    writers sorted by the first model's accuracy; the held-out writers' labels in bold."""
    first = next(iter(per_writer.values()))
    order = np.argsort(first[2])
    ids = first[0][order]
    fig, axis = plt.subplots(figsize=(12, 3.8))
    width = 0.8 / len(per_writer)
    for index, (name, (writer_ids, _, accuracies)) in enumerate(per_writer.items()):
        by_id = dict(zip(writer_ids.tolist(), accuracies))
        axis.bar(np.arange(len(ids)) + (index - (len(per_writer) - 1) / 2) * width, [by_id[i] * 100 for i in ids],
                 width, label=name, color=MODEL_COLORS[index])
    axis.set_xticks(np.arange(len(ids)), [str(i) for i in ids])
    held_out = set(int(writer) for writer in held_out_writers)
    for label, writer in zip(axis.get_xticklabels(), ids):
        if int(writer) in held_out:
            label.set_fontweight("bold")
    lowest = min(accuracies.min() for _, _, accuracies in per_writer.values()) * 100
    axis.set_ylim(max(0.0, np.floor(lowest / 5) * 5 - 5), 100)
    axis.set_xlabel("pen writer (bold: held out from every fit and choice)")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(title)
    axis.legend(loc="lower right")
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_adaptation(curves: dict, examples_per_digit):
    """Accuracy on a writer's other digits against the examples per digit the reader adapted to.

    `curves[group]` = {"mean": [...], "worst": [...]} with one value per entry of `examples_per_digit`
    (0 first: the reader before adaptation).
    """
    fig, axis = plt.subplots(figsize=(7, 4.2))
    for color, (group, curve) in zip(MODEL_COLORS, curves.items()):
        axis.plot(examples_per_digit, np.array(curve["mean"]) * 100, "o-", color=color, label=f"{group}: mean writer")
        axis.plot(examples_per_digit, np.array(curve["worst"]) * 100, "s--", color=color, label=f"{group}: worst writer")
    axis.set_xticks(examples_per_digit)
    axis.set_xlabel("examples per digit the reader adapted to")
    axis.set_ylabel("accuracy on the writer's other digits (%)")
    axis.set_title("Learning a person's hand from a few examples")
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_reliability_diagrams(panels: dict, bins: int = 15):
    """Reliability diagrams: per confidence bin, accuracy against confidence, before and after calibration.

    `panels[name] = (labels, probabilities_before, probabilities_after)`; each panel's title
    gives the expected calibration error (15 equal-width bins) of both.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    for axis, (name, (labels, before, after)) in zip(axes.ravel(), panels.items()):
        axis.plot([0, 1], [0, 1], color="#888", linewidth=1, label="perfect calibration")
        for color, label, probabilities in ((MODEL_COLORS[3], "before", before), (MODEL_COLORS[0], "after", after)):
            confidence, accuracy_per_bin, counts = reader.reliability_bins(probabilities, labels, bins)
            shown = counts >= 5  # a bin of one or two inputs is noise on the plot (the ECE still counts it)
            ece = reader.expected_calibration_error(probabilities, labels, bins)
            axis.plot(confidence[shown], accuracy_per_bin[shown], "o-", color=color, markersize=3,
                      label=f"{label} (ECE {ece * 100:.2f}%)")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("confidence (top probability)")
        axis.set_ylabel("accuracy")
        axis.set_xlim(0, 1.01)
        axis.set_ylim(0, 1.01)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_score_histograms(scores_by_set: dict, threshold: float, title: str, digit_sets=()):
    """Histograms of the refusal score for each set of inputs, with the threshold.

    Sets named in `digit_sets` (real digits) are drawn solid, the others (non-digits) dashed.
    """
    fig, axis = plt.subplots(figsize=(10, 4.6))
    everything = np.concatenate([np.asarray(values, dtype=np.float64) for values in scores_by_set.values()])
    everything = everything[np.isfinite(everything)]
    edges = np.linspace(everything.min(), everything.max(), 40)
    colors = plt.get_cmap("tab20").colors
    for index, (name, values) in enumerate(scores_by_set.items()):
        values = np.asarray(values, dtype=np.float64)
        axis.hist(np.clip(values[np.isfinite(values)], edges[0], edges[-1]), bins=edges, density=True, histtype="step",
                  linewidth=1.6, color=colors[2 * index % 20 + index // 10],
                  linestyle="-" if name in digit_sets else "--", label=name)
    axis.axvline(threshold, color="black", linewidth=2, label=f"threshold {threshold:.3g}: below it, not a digit")
    axis.set_xlabel("score (higher: more like a digit)")
    axis.set_ylabel("density (log scale)")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


# ==================== Digits from elsewhere ===========================================


def naive_resize(images: np.ndarray) -> np.ndarray:
    """Stretch small images (N, H, W) of any value range to (N, 28, 28, 1) in [0, 1], bilinearly.

    The naive way to feed foreign digits to an MNIST model, for comparison with
    `prepare_digit_image`: no cropping, no 20x20 box, no centring.
    """
    images = np.asarray(images, dtype=np.float32)
    scaled = images / max(float(images.max()), 1e-12)
    resized = [np.asarray(Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for image in scaled]
    return np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32)[..., np.newaxis]


def prepare_many(items, strokes: bool = False, ink: str = "auto"):
    """Prepare many images (or, with `strokes`, pen drawings) as the reader does; returns (inputs, blank).

    `inputs` is (N, 28, 28, 1); `blank` marks the items the preparation itself refused as
    blank (no ink), which a person is told instead of a digit: their rows of `inputs` are zero.
    """
    inputs = np.zeros((len(items), IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    blank = np.zeros(len(items), dtype=bool)
    for index, item in enumerate(items):
        try:
            inputs[index, ..., 0] = reader.prepare_strokes(item) if strokes else reader.prepare_digit_image(item, ink=ink)
        except ValueError:
            blank[index] = True
    return inputs, blank


def share(mask) -> float:
    """The share of True in a boolean array (0.0 for an empty one)."""
    mask = np.asarray(mask, dtype=bool)
    return float(mask.mean()) if mask.size else 0.0


def plot_digit_reading(reading):
    """The drawing, the prepared 28x28 image and both readings' ten calibrated probabilities, side by side.

    `reading` is a drawing_pad.DigitReading: what the best model and the ensemble answered.
    """
    figure, (drawn_axis, prepared_axis, bars_axis) = plt.subplots(
        1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    drawn_axis.imshow(reading.drawing, cmap="gray_r", vmin=0, vmax=1)  # dark on white, as on the pad
    drawn_axis.set_title("drawn on the pad")
    prepared_axis.imshow(reading.prepared, cmap="gray", vmin=0, vmax=1)
    prepared_axis.set_title("prepared 28x28 (what is read)")
    for axis in (drawn_axis, prepared_axis):
        axis.set_xticks([])
        axis.set_yticks([])
    digits = np.arange(NUM_CLASSES)
    for offset, color, label, answer in ((-0.2, MODEL_COLORS[0], reading.best_label, reading.best),
                                         (0.2, MODEL_COLORS[1], reading.ensemble_label, reading.ensemble)):
        bars_axis.bar(digits + offset, answer.probabilities, width=0.4, color=color, label=f"{label}: {answer.text}")
    bars_axis.set_xticks(digits)
    bars_axis.set_ylim(0, 1.05)
    bars_axis.set_xlabel("digit")
    bars_axis.set_ylabel("calibrated probability")
    bars_axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"best model: {reading.best.text}   |   ensemble: {reading.ensemble.text}", fontsize=12)
    figure.tight_layout()
    return figure

# ==================== Results files and prose =========================================


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


# One loader for saved models, in safe mode, with an error that names the file: the reader's.
load_saved_model = reader.load_model


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


# One reader of the notebook's JSON files, with an error that names the file: the reader's.
read_json = reader.read_json


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


def candidates_table_markdown(table: dict, adopted: str) -> str:
    """The refusal candidates as a Markdown table: validation (what chose) and the held-out sets (what it measured)."""
    first = next(iter(table.values()))
    kept_sets, refused_sets = list(first["test_kept"]), list(first["test_refused"])
    lines = ["| candidate | validation non-digits refused (mean) | "
             + " | ".join(f"kept: {name}" for name in kept_sets) + " | "
             + " | ".join(f"refused: {name}" for name in refused_sets) + " | AUROC digits vs letters |",
             "| --- |" + " ---: |" * (2 + len(kept_sets) + len(refused_sets))]
    for name, entry in table.items():
        auroc = "-" if entry["test_auroc_letters"] is None else f"{entry['test_auroc_letters']:.4f}"
        lines.append(f"| {'**' + name + '** (adopted)' if name == adopted else name} | "
                     f"{entry['validation_mean_refused'] * 100:.1f}% | "
                     + " | ".join(f"{entry['test_kept'][kind] * 100:.1f}%" for kind in kept_sets) + " | "
                     + " | ".join(f"{entry['test_refused'][kind] * 100:.1f}%" for kind in refused_sets)
                     + f" | {auroc} |")
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
    seeds = [name for name in models if name == "resnet" or (name.startswith("resnet_seed") and name[11:].isdigit())]
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
    pen = (cross_dataset or {}).get("pen_digits")
    if pen:
        held_out = {name: entry["held-out writers"] for name, entry in pen["models"].items()}
        top = max(held_out, key=lambda name: held_out[name]["accuracy"])
        lines.append(f"\nOn {pen['dataset']}, no pen digit trained on, `{top}` reads {held_out[top]['accuracy'] * 100:.1f}% "
                     f"of the held-out pen writers' digits (worst writer {held_out[top]['worst_writer'] * 100:.1f}%).")
    writer_summary = metrics.get("writers")
    if writer_summary:
        for name, entry in writer_summary.items():
            if isinstance(entry, dict) and "mean_writer" in entry:
                series = ", ".join(f"{key} {value * 100:.2f}%" for key, value in entry["series"].items())
                lines.append(f"\nPer test writer ({entry['writers']} writers), `{name}` averages {entry['mean_writer'] * 100:.2f}%; "
                             f"it reads {entry['writers_without_error'] * 100:.0f}% of the writers without an error and the "
                             f"worst at {entry['worst_writer'] * 100:.1f}% ({series}).")
    refusal = metrics.get("refusal")
    if refusal:
        kept = "; ".join(f"{name} {value * 100:.1f}%" for name, value in refusal["kept"].items())
        refused = "; ".join(f"{name} {value * 100:.1f}%" for name, value in refusal["refused"].items())
        auroc = refusal.get("auroc_mnist_test_against_letters")
        lines.append(
            f"\nKnowing when it cannot read: the reader adopted, on validation data, **{refusal['score']}**. On the sets "
            f"held out, it keeps {kept}; it refuses {refused}. Of the MNIST test digits it keeps, it reads "
            f"{refusal['accuracy_on_kept_mnist_test'] * 100:.2f}% correctly, and says \"not sure\" for "
            f"{refusal['not_sure_mnist_test'] * 100:.2f}% of them"
            + (f"; the AUROC between MNIST test digits and held-out letters is {auroc:.4f}." if auroc is not None else "."))
    calibration = metrics.get("calibration")
    if calibration:
        parts = [f"`{name}` {entry['ece_before'] * 100:.2f}% -> {entry['ece_after'] * 100:.2f}%"
                 for name, entry in calibration.items()]
        lines.append(f"\nExpected calibration error on the test set, before and after temperature scaling: "
                     f"{'; '.join(parts)}.")
    adaptation = metrics.get("adaptation")
    if adaptation:
        for group, label in (("pen", "held-out pen writers"), ("mnist_writers", "MNIST test writers")):
            steps = adaptation.get(group) or {}
            if steps:
                parts = [f"{key} per digit {entry['mean'] * 100:.2f}% (worst {entry['worst'] * 100:.1f}%)"
                         for key, entry in steps.items() if key != "0"]
                lines.append(f"\nLearning a person's hand ({adaptation['adopted_name']}, chosen on validation writers): the "
                             f"{steps['0']['writers']} {label} are read at {steps['0']['mean'] * 100:.2f}% on average without "
                             f"examples (worst {steps['0']['worst'] * 100:.1f}%); after adapting to examples: {'; '.join(parts)}.")
        timing = adaptation.get("seconds_to_adapt")
        if timing:
            lines.append(f"\nAdapting to {timing['examples']} examples takes {timing['median_wall']:.2f} s.")
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


def reader_summary_markdown(metrics: dict) -> str:
    """Calibration and the "not a digit" answer of this run, as Markdown tables ("" for a run without them)."""
    lines = []
    calibration = metrics.get("calibration")
    if calibration:
        lines += ["", "Calibration on the test set (temperatures fitted on the validation digits; ECE: expected "
                  "calibration error, 15 equal-width bins; NLL: negative log-likelihood):", "",
                  "| model | temperature | ECE before | ECE after | NLL before | NLL after |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {name} | {entry['temperature']:.3f} | {entry['ece_before'] * 100:.2f}% | "
                  f"{entry['ece_after'] * 100:.2f}% | {entry['nll_before']:.4f} | {entry['nll_after']:.4f} |"
                  for name, entry in calibration.items()]
    refusal = metrics.get("refusal")
    if refusal:
        auroc = refusal.get("auroc_mnist_test_against_letters")
        lines += ["", f"\"Not a digit\": the score adopted on validation data is **{refusal['score']}** "
                  f"(members {', '.join(refusal['members'])}), refusing below {refusal['threshold']:.4g}, the "
                  f"threshold that keeps {refusal['keep_on_validation'] * 100:.0f}% of the MNIST validation digits. "
                  "On sets no model, temperature or threshold was fitted on:", "",
                  "| set | what it is | kept | refused |", "| --- | --- | ---: | ---: |"]
        lines += [f"| {name} | real digits | {value * 100:.2f}% | {(1 - value) * 100:.2f}% |"
                  for name, value in refusal["kept"].items()]
        lines += [f"| {name} | {'ambiguous: measured apart' if name == 'digit-shaped letters' else 'not digits'} | "
                  f"{(1 - value) * 100:.2f}% | {value * 100:.2f}% |" for name, value in refusal["refused"].items()]
        lines += ["", f"On the MNIST test digits it keeps, the reader is right {refusal['accuracy_on_kept_mnist_test'] * 100:.2f}% "
                  f"of the time (all of them: {refusal['accuracy_all_mnist_test'] * 100:.2f}%) and says \"not sure\" "
                  f"for {refusal['not_sure_mnist_test'] * 100:.2f}%"
                  + (f"; the AUROC of its score between MNIST test digits and held-out letters is {auroc:.4f}."
                     if auroc is not None else ".")]
        if refusal.get("candidates"):
            lines += ["", "Every candidate score, each with the threshold that keeps 99% of the validation digits; the one "
                      "that refused the most validation non-digits was adopted before the test sets were scored:", "",
                      candidates_table_markdown(refusal["candidates"], refusal["score"])]
    # The first line is empty: with the newline that ends the table above, it leaves the blank line Markdown needs.
    return "\n" + "\n".join(lines) if lines else ""


def writers_summary_markdown(metrics: dict) -> str:
    """Per-writer accuracy, pen digits and the adaptation to a writer of this run, as Markdown ("" without them)."""
    lines = []
    writer_summary = metrics.get("writers")
    if writer_summary:
        series = list(next(entry for entry in writer_summary.values() if isinstance(entry, dict))["series"])
        lines += ["", f"Per writer: MNIST's {writer_summary['test_writers']} test writers (median "
                  f"{writer_summary['median_digits_per_writer']:.0f} digits each; QMNIST's writer ids), none of whom wrote a "
                  f"training digit; the validation digits are whole writers too (`run.validation_split_by` = "
                  f"\"{metrics['run'].get('validation_split_by')}\"):", "",
                  "| model | mean over writers | writers read without an error | worst writer | "
                  + " | ".join(series) + " |", "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in series) + " |"]
        lines += [f"| {name} | {entry['mean_writer'] * 100:.2f}% | {entry['writers_without_error'] * 100:.0f}% | "
                  f"{entry['worst_writer'] * 100:.1f}% | " + " | ".join(f"{entry['series'][each] * 100:.2f}%" for each in series) + " |"
                  for name, entry in writer_summary.items() if isinstance(entry, dict)]
    pen = (metrics.get("cross_dataset") or {}).get("pen_digits")
    if pen:
        lines += ["", f"Pen digits ({pen['dataset']}), read by the networks as trained (no pen digit seen):", "",
                  "| model | all 30 writers | worst writer | held-out writers | worst held-out writer |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {name} | {entry['all writers']['accuracy'] * 100:.2f}% | {entry['all writers']['worst_writer'] * 100:.1f}% | "
                  f"{entry['held-out writers']['accuracy'] * 100:.2f}% | {entry['held-out writers']['worst_writer'] * 100:.1f}% |"
                  for name, entry in pen["models"].items()]
    adaptation = metrics.get("adaptation")
    if adaptation and (adaptation.get("pen") or adaptation.get("mnist_writers")):
        lines += ["", f"Learning a person's hand: the reader adapted to k examples per digit of one writer "
                  f"({adaptation['adopted_name']}, chosen on validation writers), reading the writer's other digits; "
                  f"mean over writers and the worst writer, {adaptation['draws']} random draws of the examples each:", "",
                  "| writers | examples per digit | writers measured | mean before | mean after | worst before | worst after |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for group, label in (("pen", "held-out pen writers"), ("mnist_writers", "MNIST test writers")):
            lines += [f"| {label} | {key} | {entry['writers']} | {entry['before_mean'] * 100:.2f}% | {entry['mean'] * 100:.2f}% | "
                      f"{entry['before_worst'] * 100:.1f}% | {entry['worst'] * 100:.1f}% |"
                      for key, entry in (adaptation.get(group) or {}).items()]
        refused = adaptation.get("non_digits_refused") or {}
        if refused.get("after_mean"):
            lines += ["", "Held-out non-digits refused before adaptation, and after it (mean and lowest over the adapted "
                      "readers, one per held-out writer): " + "; ".join(
                          f"{kind} {refused['before'][kind] * 100:.1f}% -> {refused['after_mean'][kind] * 100:.1f}% "
                          f"(lowest {refused['after_lowest'][kind] * 100:.1f}%)" for kind in refused["before"]) + "."]
        timing = adaptation.get("seconds_to_adapt")
        if timing:
            lines += ["", f"Adapting to {timing['examples']} examples (what the pad does when it learns one more): "
                      f"{timing['median_wall']:.2f} s wall, {timing['median_cpu']:.2f} CPU-s, median of 5 ({timing['cpu']})."]
    return "\n" + "\n".join(lines) if lines else ""


def inspection_summary_markdown(metrics: dict) -> str:
    """The attacks' accuracy per epsilon, the reader's verdicts on attacked digits and the embedding's silhouettes ("" without them)."""
    attacks = metrics.get("adversarial")
    if not attacks:
        return ""
    epsilons = attacks["epsilons"]
    lines = ["", f"Attacks on {attacks['digits']:,} test digits drawn once with the seed (accuracy at each epsilon, the largest change "
             f"of a pixel on the 0-1 scale; PGD with {attacks['pgd_steps']} steps; {attacks['cpu_seconds']:.0f} CPU-seconds in all):", "",
             "| model | " + " | ".join(f"FGSM {epsilon}" for epsilon in epsilons[1:]) + " | "
             + " | ".join(f"PGD {epsilon}" for epsilon in epsilons[1:]) + " |",
             "| --- |" + " ---: |" * (2 * len(epsilons) - 2)]
    lines += [f"| {name} | " + " | ".join(f"{value * 100:.1f}%" for value in attacks["fgsm"][name][1:]) + " | "
              + " | ".join(f"{value * 100:.1f}%" for value in attacks["pgd"][name][1:]) + " |" for name in attacks["fgsm"]]
    reader_attacks = attacks.get("reader")
    if reader_attacks:
        lines += ["", f"The reader on digits attacked with PGD through its own networks ({', '.join(reader_attacks['members'])}):", "",
                  "| epsilon | read right | read as another digit | not sure | not a digit |", "| ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {epsilon} | {shares['right'] * 100:.1f}% | {shares['wrong'] * 100:.1f}% | {shares['not_sure'] * 100:.1f}% | "
                  f"{shares['not_a_digit'] * 100:.1f}% |" for epsilon, shares in reader_attacks["verdicts"].items()]
    embedding = (metrics.get("inspection") or {}).get("embedding")
    if embedding:
        lines += ["", f"Silhouette of the t-SNE maps of {embedding['digits']:,} test digits (penultimate features): "
                  + ", ".join(f"{name} {entry['silhouette']:.2f}" for name, entry in embedding.items() if isinstance(entry, dict)) + "."]
    return "\n" + "\n".join(lines)


def generative_summary_markdown(metrics: dict) -> str:
    """What the generated digits are worth: the ensemble's reading, the Frechet distance, training on them ("" without them)."""
    generated = metrics.get("generative")
    if not generated:
        return ""
    distance, low_label = generated["frechet_distance"], generated["low_label"]
    lines = ["", f"Generated digits ({generated['kind']}, trained in {generated['train_cpu_seconds'] / 60:.1f} CPU-minutes with its "
             f"trial of the other kind): the ensemble reads {generated['ensemble_accuracy_on_generated'] * 100:.1f}% of "
             f"{generated['digits']:,} as the digit asked for (mean confidence {generated['ensemble_mean_confidence']:.3f}); "
             f"Frechet distance to the test digits {distance['generated_to_test']:.2f} (two halves of the test set: {distance['test_halves']:.2f}); "
             f"the reader answers 'not a digit' for {generated['reader_on_generated']['not a digit'] * 100:.1f}%. The basic CNN trained "
             f"only on {generated['train_on_synthetic']['train_images']:,} generated digits reads {generated['train_on_synthetic_test_accuracy'] * 100:.2f}% "
             "of the real test set. With few labels (test accuracy, mean of "
             f"{len(low_label['seeds'])} seeds, and the spread between seeds):", "",
             "| labelled digits | real only | real + generated |", "| ---: | ---: | ---: |"]
    lines += [f"| {int(size):,} | " + " | ".join(f"{low_label['mean'][size][arm] * 100:.1f}% (±{low_label['spread'][size][arm] * 50:.1f})"
                                                 for arm in ("real", "real + generated")) + " |" for size in low_label["mean"]]
    return "\n" + "\n".join(lines)


def update_readme_results(readme_path, metrics: dict, start="<!-- results:start -->", end="<!-- results:end -->"):
    """Replace the text between the two markers in the README with the results table."""
    run = metrics["run"]
    caption = (
        f"_From `figures/metrics.json` of the committed full run: TensorFlow {run['tensorflow']}, "
        f"Keras {run['keras']}, {run.get('cpu', 'CPU')}, whole notebook {run['total_seconds'] / 60:.1f} min._\n\n"
    )
    replace_between_markers(readme_path, caption + results_table_markdown(metrics) + reader_summary_markdown(metrics)
                            + writers_summary_markdown(metrics) + inspection_summary_markdown(metrics)
                            + generative_summary_markdown(metrics), start, end)
