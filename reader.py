"""The digit reader: what predict.py, the drawing pad and the notebook use to read one digit.

It prepares an image or pen strokes the way MNIST was made (ink polarity included), reads it
with one model or an ensemble, turns the models' outputs into calibrated probabilities
(temperature scaling, fitted on validation digits) and answers with a verdict: a digit,
"not sure: 7 or 1" when two digits are close or the models disagree, or "not a digit" when
the score says the input is unlike the digits the models know. It imports only what reading
needs (NumPy, Pillow, SciPy, and ONNX Runtime or Keras): no Matplotlib, anywidget, KerasTuner or
papermill. The saved models are read with ONNX Runtime when they were exported to ONNX
(`export_onnx`, `make onnx`), so that predict.py never waits for TensorFlow's start-up of several
seconds; Keras, and with it TensorFlow, is imported only when a Keras model is read or exported.

Sections: preparing an image; drawing pen strokes; model outputs and calibration; scores;
learning a person's hand from a few examples; the models in ONNX; the reader and its verdicts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage, special

# Keras, and with it TensorFlow, is imported inside the functions that need it: a reader of models
# exported to ONNX never pays its start-up.

IMAGE_SIZE = 28
NUM_CLASSES = 10
MODELS_DIR = Path(__file__).resolve().parent / "saved_models"  # where model.ipynb saves the models and the reader


# ==================== Preparing an image the MNIST way ================================


MNIST_BOX = 20  # MNIST digits were scaled to fit a 20x20 box, then centred in a 28x28 field.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow's convert("L").


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


def check_images(images) -> np.ndarray:
    """Prepared digits as one float32 array (N, 28, 28, 1), or a ValueError that names what was received.

    `images`: one prepared 28x28 array, a list of them, or an array (N, 28, 28) or (N, 28, 28, 1)
    of floats in [0, 1] (see `prepare_digit_image`). Raises ValueError, naming the shape
    received, for any other shape, and for values outside [0, 1].
    """
    fix = "Prepare each image with reader.prepare_digit_image first."
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
                         "Divide 0-255 pixels by 255 or prepare each image with reader.prepare_digit_image.")
    return array


def predict_digits(model, images):
    """Predict digits with a Keras model; returns (labels (N,), probabilities (N, 10)), uncalibrated.

    `images` as for `check_images`. The verdicts a person sees come from `Reader`.
    """
    probabilities = np.asarray(model.predict(check_images(images), batch_size=1024, verbose=0), dtype=np.float32)
    return probabilities.argmax(axis=1), probabilities




# ==================== Drawing pen strokes =============================================


PAD_SIZE = 280  # The drawing pad's canvas in pixels: ten pad pixels to one MNIST pixel.
# Measured: with this pen, EXAMPLE_STROKES (a 4 about 190 px tall) prepares to almost as much ink
# as MNIST's average 4 (a pixel sum of 87 against 95); thinner pens give faint, thin digits.
PEN_WIDTH = 24.0
# A 4 drawn by hand on the pad, in two strokes, as the browser records them: (x, y) in pixels.
EXAMPLE_STROKES = [
    [(150, 48), (122, 100), (94, 150), (82, 172), (120, 171), (165, 169), (205, 168)],
    [(168, 104), (165, 160), (162, 200), (160, 238)],
]


def stroke_arrays(strokes) -> list[np.ndarray]:
    """Each stroke as a float array (points, 2), or a ValueError that names the stroke and the fix."""
    arrays = []
    for index, stroke in enumerate(strokes):
        try:
            points = np.asarray(stroke, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"stroke {index} is not a list of (x, y) numbers ({error}); "
                             "pass strokes as lists of (x, y) points, such as reader.EXAMPLE_STROKES.") from error
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.all(np.isfinite(points)):
            raise ValueError(f"stroke {index} has shape {points.shape}; each stroke must be a non-empty list of "
                             "finite (x, y) points, such as reader.EXAMPLE_STROKES.")
        arrays.append(points)
    return arrays


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
    for points in stroke_arrays(strokes):
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


# ==================== Model outputs and calibration ===================================


# One feature extractor per model, built once: building and tracing it again for every drawing
# on the pad would cost a tenth of a second each time.
_feature_models = weakref.WeakKeyDictionary()


def feature_model(model):
    """The Keras model from `model`'s input to the input of its last layer: its penultimate features.

    The model's last layer must be Dense(10, activation="softmax"), as in every model of
    model.ipynb: the logits are its input times its weights, before the softmax, which
    temperature scaling and the energy score need.
    """
    import keras

    head = model.layers[-1]
    if not (isinstance(head, keras.layers.Dense) and head.units == NUM_CLASSES
            and getattr(head.activation, "__name__", "") == "softmax"):
        raise ValueError(f"model {model.name!r} ends in {type(head).__name__}; the reader needs a model whose last "
                         "layer is Dense(10, activation='softmax'), as every model of model.ipynb has.")
    if model not in _feature_models:
        _feature_models[model] = keras.Model(model.inputs[0], head.input)
    return _feature_models[model]


def model_outputs(model, images, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (N, D) and logits (N, 10) of `model` for prepared images.

    `model` is a Keras model (see `feature_model`) or its ONNX export (`OnnxModel`). Either way
    the logits are computed here, from the features and the last layer's weights (`last_layer`),
    so calibration, scores and adaptation are the same code for both. `images` as for `check_images`.
    """
    if isinstance(model, OnnxModel):
        features = model.features(check_images(images), batch_size)
    else:
        import keras

        extractor = feature_model(model)
        array = check_images(images)
        # A few images (a drawing on the pad, one file) are faster through a direct call; many through
        # predict(), which compiles the model once.
        if len(array) <= batch_size:
            features = keras.ops.convert_to_numpy(extractor(array, training=False))
        else:
            features = extractor.predict(array, batch_size=batch_size, verbose=0)
    features = np.asarray(features, dtype=np.float32)
    kernel, bias = (weight.astype(np.float32) for weight in last_layer(model))
    return features, features @ kernel + bias


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Probabilities (N, 10) from logits divided by `temperature`."""
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1).astype(np.float32)


def log_mean_probabilities(member_logits) -> np.ndarray:
    """The ensemble's "logits": the log of its members' mean probabilities, as the notebook's ensemble averages them."""
    mean = np.mean([softmax(logits) for logits in member_logits], axis=0)
    return np.log(np.clip(mean, 1e-12, 1.0))


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """Mean cross-entropy of softmax(logits / temperature) against integer labels."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    labels = np.asarray(labels)
    return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels) -> float:
    """The temperature that minimizes the NLL of softmax(logits / T) on held-out digits (Guo et al. 2017).

    Fit it on validation digits, never on the test set. One number per model: it changes
    how sure the model says it is, never which digit it picks.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] != NUM_CLASSES or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"logits of shape {logits.shape} for labels of shape {labels.shape}; "
                         "pass (N, 10) logits and N integer labels, N >= 1.")
    from scipy import optimize  # here, not at the top: only fitting needs it, and every predict.py would import it

    result = optimize.minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, np.exp(log_t)),
                                      bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def reliability_bins(probabilities, labels, bins: int = 15):
    """Per equal-width confidence bin: (mean confidence, accuracy, count), for a reliability diagram."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    accuracy = np.bincount(index, weights=correct, minlength=bins) / np.maximum(counts, 1)
    return mean_confidence, accuracy, counts


def expected_calibration_error(probabilities, labels, bins: int = 15) -> float:
    """ECE: the count-weighted gap between confidence and accuracy over equal-width bins (15, as Guo et al.)."""
    mean_confidence, accuracy, counts = reliability_bins(probabilities, labels, bins)
    return float(np.sum(counts * np.abs(accuracy - mean_confidence)) / max(counts.sum(), 1))


# ==================== Scores: how much an input looks like a digit ====================


# Every score is higher for inputs that look more like the digits the models were trained on.
# "probability": the ensemble's calibrated top probability (Hendrycks and Gimpel 2017);
# "energy": the members' mean log-sum-exp of the logits (Liu et al. 2020);
# "agreement": minus the members' disagreement (the mutual information between member and answer);
# "feature_distance": minus the Mahalanobis distance to the nearest digit class in the
# penultimate features (Lee et al. 2018), averaged over the members.
SCORES = ("probability", "energy", "agreement", "feature_distance")


class FeatureDensity:
    """Class means and a shared covariance of one model's penultimate features, for the Mahalanobis distance."""

    def __init__(self, means: np.ndarray, precision: np.ndarray):
        self.means = np.asarray(means, dtype=np.float64)
        self.precision = np.asarray(precision, dtype=np.float64)

    @classmethod
    def fit(cls, features, labels, shrinkage: float = 1e-3) -> "FeatureDensity":
        """Fit on training digits' features; `shrinkage` keeps the covariance invertible."""
        features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
        means = np.stack([features[labels == digit].mean(axis=0) for digit in range(NUM_CLASSES)])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)
        covariance += shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
        return cls(means, np.linalg.inv(covariance))

    def distance(self, features) -> np.ndarray:
        """Mahalanobis distance (N,) from each feature vector to its nearest class mean."""
        features = np.asarray(features, dtype=np.float64)
        squared = np.stack([np.einsum("nd,de,ne->n", features - mean, self.precision, features - mean)
                            for mean in self.means], axis=1)
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def scores(kind: str, member_outputs, ensemble_temperature: float = 1.0, densities=None) -> np.ndarray:
    """The score `kind` (one of SCORES) of N inputs from each member's (features, logits)."""
    member_logits = [logits for _, logits in member_outputs]
    if kind == "probability":
        return calibrated_probabilities(member_logits, ensemble_temperature).max(axis=1)
    if kind == "energy":
        return np.mean([special.logsumexp(logits, axis=1) for logits in member_logits], axis=0)
    if kind == "agreement":
        probabilities = [np.clip(softmax(logits), 1e-12, 1.0) for logits in member_logits]
        mean = np.mean(probabilities, axis=0)
        mutual_information = (-(mean * np.log(mean)).sum(axis=1)
                              + np.mean([(p * np.log(p)).sum(axis=1) for p in probabilities], axis=0))
        return -mutual_information
    if kind == "feature_distance":
        if densities is None or len(densities) != len(member_outputs):
            raise ValueError("the feature_distance score needs one FeatureDensity per member (FeatureDensity.fit).")
        return -np.mean([density.distance(features) for density, (features, _) in zip(densities, member_outputs)],
                        axis=0)
    raise ValueError(f"score {kind!r} is unknown; use one of {', '.join(SCORES)}.")


def calibrated_probabilities(member_logits, temperature: float) -> np.ndarray:
    """Calibrated probabilities (N, 10): one member's logits, or the ensemble's mean probabilities, over `temperature`."""
    logits = member_logits[0] if len(member_logits) == 1 else log_mean_probabilities(member_logits)
    return softmax(logits, temperature)


def keep_threshold(digit_scores, keep: float = 0.99) -> float:
    """The score above which a share `keep` of (validation) digits lies: inputs below it are refused."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep={keep!r}; use the share of digits to keep, between 0 and 1, such as 0.99.")
    return float(np.quantile(np.asarray(digit_scores, dtype=np.float64), 1.0 - keep))


# ==================== Learning a person's hand ========================================


# How strongly an adapted last layer is pulled toward its trained weights, and whether each example
# is also seen shifted by one pixel: chosen in model.ipynb on validation writers, saved in reader.json.
DEFAULT_ADAPTATION = {"pull": 1.0, "shifted_copies": False}
ONE_PIXEL = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def last_layer(model) -> tuple[np.ndarray, np.ndarray]:
    """The kernel (D, 10) and bias (10,) of a model's last Dense layer (Keras, or kept in its ONNX export)."""
    kernel, bias = (model.kernel, model.bias) if isinstance(model, OnnxModel) else model.layers[-1].get_weights()
    return np.asarray(kernel, dtype=np.float64), np.asarray(bias, dtype=np.float64)


def fit_head(features, digits, kernel, bias, pull: float) -> tuple[np.ndarray, np.ndarray]:
    """Re-fit a last layer on a few examples, pulled toward its trained weights.

    Minimizes the examples' summed cross-entropy plus `pull` times the squared distance of the
    kernel and bias from the trained ones (an L2 prior centred on them, as in transfer learning
    with "L2-SP", Li et al. 2018), with L-BFGS: a few milliseconds for a 128x10 layer. Summed,
    not averaged: one example moves the layer a little, each further one more, so a single
    taught digit cannot swing the reading of all the others.
    """
    features = np.asarray(features, dtype=np.float64)
    digits = np.asarray(digits)
    kernel, bias = np.asarray(kernel, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    targets = np.eye(NUM_CLASSES)[digits]
    rows, columns = kernel.shape

    def loss_and_gradient(flat):
        new_kernel, new_bias = flat[:rows * columns].reshape(rows, columns), flat[rows * columns:]
        logits = features @ new_kernel + new_bias
        probabilities = special.softmax(logits, axis=1)
        loss = np.sum(special.logsumexp(logits, axis=1) - (logits * targets).sum(axis=1))
        error = probabilities - targets
        kernel_change, bias_change = new_kernel - kernel, new_bias - bias
        loss += pull * (np.sum(kernel_change ** 2) + np.sum(bias_change ** 2))
        gradient = np.concatenate([(features.T @ error + 2 * pull * kernel_change).ravel(),
                                   error.sum(axis=0) + 2 * pull * bias_change])
        return loss, gradient

    from scipy import optimize

    start = np.concatenate([kernel.ravel(), bias])
    result = optimize.minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B", options={"maxiter": 200})
    return (result.x[:rows * columns].reshape(rows, columns).astype(np.float32),
            result.x[rows * columns:].astype(np.float32))


def shifted_copies(images) -> np.ndarray:
    """Each prepared image and its four one-pixel shifts, as (5 * N, 28, 28, 1): copies grouped by shift."""
    images = check_images(images)
    return np.concatenate([np.roll(images, shift, axis=(1, 2)) for shift in ONE_PIXEL])


EXAMPLES_FORMAT = "handwriting examples"


def save_examples(path, images, digits) -> Path:
    """Save a person's labelled digits (prepared 28x28 images) as JSON: pixels 0-255, no pickle."""
    path = Path(path)
    images = check_images(images)[..., 0]
    digits = np.asarray(digits, dtype=np.int64).reshape(-1)
    if len(digits) != len(images):
        raise ValueError(f"{len(images)} images and {len(digits)} digits; give one digit per image.")
    data = {"format": EXAMPLES_FORMAT, "version": 1, "image_size": IMAGE_SIZE,
            "examples": [{"digit": int(digit), "pixels": np.round(image * 255).astype(int).ravel().tolist()}
                         for image, digit in zip(images, digits)]}
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(data))
    return path


@contextlib.contextmanager
def atomic_write(path: Path):
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


def load_examples(path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) in [0, 1], digits (N,)) from a file `save_examples` wrote."""
    path = Path(path)
    hint = "save the examples again from the drawing pad's teach mode (or reader.save_examples)"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such examples file; check the name, or {hint}.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as JSON ({error}); {hint}.") from error
    if not isinstance(data, dict) or data.get("format") != EXAMPLES_FORMAT:
        raise ValueError(f"{path}: not a file of handwriting examples (no \"format\": \"{EXAMPLES_FORMAT}\"); {hint}.")
    try:
        if not all(isinstance(entry["digit"], int) and not isinstance(entry["digit"], bool) for entry in data["examples"]):
            raise ValueError("a digit that is not a whole number")
        digits = np.array([entry["digit"] for entry in data["examples"]], dtype=np.int64)
        pixels = np.array([entry["pixels"] for entry in data["examples"]], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: an example lacks or garbles its digit or pixels ({error}); {hint}.") from error
    if len(digits) and (pixels.ndim != 2 or pixels.shape[1] != IMAGE_SIZE * IMAGE_SIZE
                        or ((digits < 0) | (digits > 9)).any() or not np.isfinite(pixels).all()
                        or (pixels < 0).any() or (pixels > 255).any()):
        raise ValueError(f"{path}: each example needs a digit 0-9 and {IMAGE_SIZE * IMAGE_SIZE} pixels in 0-255; {hint}.")
    return pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE) / 255.0, digits


# ==================== The models in ONNX: reading without TensorFlow ==================


# Where export_onnx keeps, in each .onnx file's metadata, what the reader needs besides the graph.
ONNX_METADATA_KEY = "digit_reader"


class StaleExportWarning(UserWarning):
    """An .onnx file exported from another version of its .keras file: the Keras model is read instead."""


def source_fingerprint(keras_path) -> dict:
    """What identifies a saved model's file, recorded in its ONNX export: name, size in bytes and SHA-256."""
    data = Path(keras_path).read_bytes()
    return {"file": Path(keras_path).name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class OnnxModel:
    """A saved model exported by `export_onnx`, read with ONNX Runtime: no TensorFlow, no Keras.

    Its graph gives the penultimate features (N, D) of prepared images; its file's metadata
    holds the last layer's `kernel` (D, 10) and `bias` (10,), and the `source_fingerprint` of
    the .keras file it was exported from (`source`). `model_outputs` and `last_layer` read it
    as they read a Keras model, so calibration, refusal and adaptation are the same code.
    """

    def __init__(self, path):
        import onnxruntime

        self.path = Path(path)
        self.name = self.path.stem
        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # errors only: its warnings mean nothing to a person reading a digit
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            exported = json.loads(self.session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
            self.kernel = np.asarray(exported["kernel"], dtype=np.float32)
            self.bias = np.asarray(exported["bias"], dtype=np.float32)
            self.source = dict(exported["source"])
            feature_size = self.session.get_outputs()[0].shape[-1]
            if self.kernel.shape != (feature_size, NUM_CLASSES) or self.bias.shape != (NUM_CLASSES,):
                raise ValueError(f"a last layer of shape {self.kernel.shape} for {feature_size} features")
        except Exception as error:  # ONNX Runtime raises its own types for a damaged file; all mean the same here.
            raise ValueError(f"{self.path}: cannot be read as a model reader.export_onnx wrote ({type(error).__name__}); "
                             f"run `make onnx` to export it again, or delete it to read {self.name}.keras with Keras."
                             ) from error
        self.input_name = self.session.get_inputs()[0].name

    def features(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Penultimate features (N, D) of prepared images (N, 28, 28, 1), float32 (see `check_images`)."""
        return np.concatenate([self.session.run(None, {self.input_name: images[start:start + batch_size]})[0]
                               for start in range(0, len(images), batch_size)])


def export_onnx(models_dir=MODELS_DIR, names=None) -> list[Path]:
    """Export saved Keras models to ONNX, as <name>.onnx beside each <name>.keras; returns the files written.

    `names`: the models to export; None exports the members of the reader saved in `models_dir`
    (reader.json). Each file holds the graph from the model's input to its penultimate features,
    the last layer's weights and the fingerprint of the .keras file it came from, so that
    `load_reading_model` can tell when that model was saved again since. Each file is written
    whole or not at all. Needs Keras, tf2onnx and onnx; `make onnx` runs it.
    """
    import keras
    import onnx

    models_dir = Path(models_dir)
    if names is None:
        settings = read_json(models_dir / READER_FILE, "reader settings file")
        if not isinstance(settings.get("members"), list):
            raise ValueError(f"{models_dir / READER_FILE}: lacks or garbles 'members'; run `make run` to write it again.")
        names = settings["members"]
    written = []
    for name in names:
        keras_path = models_dir / f"{name}.keras"
        model = load_model(keras_path)
        extractor, (kernel, bias) = feature_model(model), last_layer(model)
        metadata = {"source": source_fingerprint(keras_path),
                    "kernel": kernel.astype(np.float32).tolist(), "bias": bias.astype(np.float32).tolist()}
        onnx_path = models_dir / f"{name}.onnx"
        with atomic_write(onnx_path) as temporary:
            # Keras writes the graph (with tf2onnx); the reader's metadata joins it before the file is renamed into place.
            with warnings.catch_warnings():
                # Keras' own patch of tf2onnx for NumPy 2 asks NumPy for np.object, which NumPy warns about.
                warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
                extractor.export(temporary, format="onnx", verbose=False, input_signature=[
                    keras.InputSpec(shape=(None, IMAGE_SIZE, IMAGE_SIZE, 1), dtype="float32", name="images")])
            exported = onnx.load(temporary)
            onnx.helper.set_model_props(exported, {ONNX_METADATA_KEY: json.dumps(metadata)})
            onnx.save(exported, temporary)
        written.append(onnx_path)
    return written


def load_reading_model(path):
    """The saved model <name>.keras at `path` to read with: its ONNX export beside it, else the Keras model.

    The export (<name>.onnx, see `export_onnx`) is read when it was made from this very .keras
    file, or when there is no .keras file. One made from another version of it is stale: a
    StaleExportWarning says so in one line and the Keras model is read instead. A damaged
    .onnx file raises ValueError, naming it and the fix.
    """
    path = Path(path)
    onnx_path = path.with_suffix(".onnx")
    if not onnx_path.is_file():
        return load_model(path)
    exported = OnnxModel(onnx_path)
    if not path.is_file() or exported.source.get("sha256") == source_fingerprint(path)["sha256"]:
        return exported
    warnings.warn(f"{onnx_path}: exported from another version of {path.name}, so that file is read with Keras "
                  "instead; run `make onnx` to export it again.", StaleExportWarning, stacklevel=2)
    return load_model(path)


# ==================== The reader and its verdicts =====================================


READER_FILE = "reader.json"  # in saved_models/: the ensemble's members, temperatures, score and threshold
# "Not sure" names the two most likely digits when the runner-up keeps at least this calibrated
# probability, or when the members pick different digits: fixed by design, not fitted.
NOT_SURE_SECOND_PROBABILITY = 0.2


class Reading:
    """The reader's answer for one input.

    `verdict` is "digit", "not sure" or "not a digit"; `digit` is the digit read (None unless
    the verdict is "digit"); `candidates` the two digits named when not sure; `probabilities`
    the ten calibrated probabilities; `score` the refusal score (higher: more like a digit).
    """

    def __init__(self, verdict: str, probabilities, score: float, candidates=()):
        self.verdict = verdict
        self.probabilities = np.asarray(probabilities, dtype=np.float32)
        self.score = float(score)
        self.candidates = [int(candidate) for candidate in candidates]
        self.digit = self.candidates[0] if verdict == "digit" else None

    @property
    def text(self) -> str:
        """What a person is told: "7 (98.1%)", "not sure: 7 or 1 (55.0%, 40.1%)" or "not a digit"."""
        if self.verdict == "digit":
            return f"{self.digit} ({self.probabilities[self.digit] * 100:.1f}%)"
        if self.verdict == "not sure":
            first, second = self.candidates
            return (f"not sure: {first} or {second} ({self.probabilities[first] * 100:.1f}%, "
                    f"{self.probabilities[second] * 100:.1f}%)")
        return "not a digit"

    def as_dict(self) -> dict:
        return {"digit": self.digit, "verdict": self.verdict, "candidates": self.candidates,
                "probabilities": [round(float(value), 6) for value in self.probabilities],
                "score": round(self.score, 6)}


class Reader:
    """Reads prepared digits with one model or an ensemble, calibrated, and gives each a verdict.

    `models` maps names to Keras models (the ensemble's members, or one model);
    `temperatures` maps each name to its fitted temperature; `ensemble_temperature`
    calibrates the members' mean probabilities (unused with one model). Inputs whose `score`
    is below `threshold` are "not a digit"; None refuses nothing. `densities` (one
    FeatureDensity per member) are needed for the feature_distance score only.
    """

    def __init__(self, models: dict, temperatures: dict, ensemble_temperature: float = 1.0,
                 score: str = "probability", threshold: float | None = None, densities=None,
                 not_sure_second_probability: float = NOT_SURE_SECOND_PROBABILITY, adaptation=None):
        if not models:
            raise ValueError("a reader needs at least one model; pass {name: keras model}.")
        missing = [name for name in models if name not in temperatures]
        if missing:
            raise ValueError(f"no temperature for {missing}; fit one per model with reader.fit_temperature.")
        if score not in SCORES:
            raise ValueError(f"score {score!r} is unknown; use one of {', '.join(SCORES)}.")
        self.models = dict(models)
        self.temperatures = {name: float(temperatures[name]) for name in self.models}
        self.ensemble_temperature = float(ensemble_temperature)
        self.score = score
        self.threshold = None if threshold is None else float(threshold)
        self.densities = densities
        self.not_sure_second_probability = float(not_sure_second_probability)
        self.adaptation = {**DEFAULT_ADAPTATION, **(adaptation or {})}
        # A reader adapted to one person's examples reads with re-fitted last layers (see `adapted`).
        self.heads = {}
        self.examples = (np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32), np.zeros(0, dtype=np.int64))

    @property
    def temperature(self) -> float:
        """The temperature of the reader's probabilities: the model's own, or the ensemble's."""
        return next(iter(self.temperatures.values())) if len(self.models) == 1 else self.ensemble_temperature

    @property
    def label(self) -> str:
        names = list(self.models)
        return names[0] if len(names) == 1 else f"ensemble of {', '.join(names)}"

    def outputs(self, images) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each member's (features, logits) for prepared images."""
        return [model_outputs(model, images) for model in self.models.values()]

    def read_outputs(self, member_outputs) -> list[Reading]:
        """Verdicts from the members' outputs (see `outputs`), so a caller can reuse them."""
        member_outputs = self.with_heads(member_outputs)
        member_logits = [logits for _, logits in member_outputs]
        probabilities = calibrated_probabilities(member_logits, self.temperature)
        input_scores = scores(self.score, member_outputs, self.ensemble_temperature if len(self.models) > 1
                              else self.temperature, self.densities)
        member_digits = np.stack([logits.argmax(axis=1) for logits in member_logits], axis=1)
        readings = []
        for row, score, digits in zip(probabilities, input_scores, member_digits):
            first, second = np.argsort(row)[::-1][:2]
            if self.threshold is not None and score < self.threshold:
                readings.append(Reading("not a digit", row, score))
            elif row[second] >= self.not_sure_second_probability or len(set(digits.tolist())) > 1:
                runner_up = second if len(set(digits.tolist())) == 1 else next(
                    digit for digit in np.argsort(-np.bincount(digits, minlength=NUM_CLASSES)) if digit != first)
                readings.append(Reading("not sure", row, score, (first, runner_up)))
            else:
                readings.append(Reading("digit", row, score, (first,)))
        return readings

    def read(self, images) -> list[Reading]:
        """Verdicts for prepared images (28x28 in [0, 1]; see `prepare_digit_image`)."""
        return self.read_outputs(self.outputs(images))

    def read_image(self, image, ink: str = "auto") -> Reading:
        """Prepare one image (a path, PIL image or array) the MNIST way and read it."""
        return self.read(prepare_digit_image(image, ink=ink))[0]

    def read_strokes(self, strokes, size: int = PAD_SIZE, pen_width: float = PEN_WIDTH) -> Reading:
        """Draw pen strokes as the pad does, prepare them (light ink on black) and read them."""
        return self.read(prepare_strokes(strokes, size, pen_width))[0]

    def with_heads(self, member_outputs) -> list[tuple[np.ndarray, np.ndarray]]:
        """The members' outputs with the logits of the adapted last layers, if the reader was adapted."""
        if not self.heads:
            return list(member_outputs)
        return [(features, features @ self.heads[name][0] + self.heads[name][1]) if name in self.heads
                else (features, logits) for name, (features, logits) in zip(self.models, member_outputs)]

    def adapted(self, images, digits) -> "Reader":
        """A reader that has learned one person's hand from a few of their digits, labelled.

        `images` are prepared digits (as for `read`), `digits` what each one is. Each member's
        last layer is re-fitted on them, pulled toward its trained weights (`fit_head`), so a
        few examples move the reading of that person's style without unlearning the rest; the
        temperatures and the "not a digit" threshold stay those fitted on validation data.
        The examples are kept in `examples`. No examples: the reader unchanged.
        """
        digits = np.asarray(digits, dtype=np.int64).reshape(-1)
        if len(digits) == 0:
            if len(images):
                raise ValueError(f"{len(images)} example images and no digits; give one digit 0-9 per image.")
            return self.adapted_from_features([None] * len(self.models), digits)
        images = check_images(images)
        if len(digits) != len(images) or ((digits < 0) | (digits >= NUM_CLASSES)).any():
            raise ValueError(f"{len(images)} example images with digits {digits.tolist()[:20]}; give one digit "
                             "0-9 per image.")
        examples = images[..., 0]
        if self.adaptation["shifted_copies"]:
            images = shifted_copies(images)
        member_features = [model_outputs(model, images)[0] for model in self.models.values()]
        return self.adapted_from_features(member_features, np.tile(digits, len(images) // len(digits)),
                                          (examples, digits))

    def adapted_from_features(self, member_features, digits, examples=None) -> "Reader":
        """`adapted` from the members' penultimate features of the examples, computed already."""
        adapted = Reader(self.models, self.temperatures, self.ensemble_temperature, self.score, self.threshold,
                         self.densities, self.not_sure_second_probability, self.adaptation)
        if len(digits):
            adapted.heads = {name: fit_head(features, digits, *last_layer(model), self.adaptation["pull"])
                             for (name, model), features in zip(self.models.items(), member_features)}
        if examples is not None:
            adapted.examples = examples
        return adapted

    def settings(self) -> dict:
        """What `from_settings` needs besides the models: saved as saved_models/reader.json."""
        return {"members": list(self.models), "temperatures": self.temperatures,
                "ensemble_temperature": self.ensemble_temperature, "score": self.score,
                "threshold": self.threshold, "not_sure_second_probability": self.not_sure_second_probability,
                "adaptation": self.adaptation}

    @classmethod
    def from_settings(cls, settings: dict, models: dict, densities=None) -> "Reader":
        return cls({name: models[name] for name in settings["members"]}, settings["temperatures"],
                   settings["ensemble_temperature"], settings["score"], settings["threshold"], densities,
                   settings.get("not_sure_second_probability", NOT_SURE_SECOND_PROBABILITY),
                   settings.get("adaptation"))


def prepare_strokes(strokes, size: int = PAD_SIZE, pen_width: float = PEN_WIDTH) -> np.ndarray:
    """Pen strokes drawn as the pad draws them and prepared the MNIST way: a 28x28 field in [0, 1]."""
    drawing = strokes_to_image(strokes, size=size, pen_width=pen_width)
    if not drawing.any():
        raise ValueError("the drawing is empty (no stroke on the pad); draw a digit on it.")
    return prepare_digit_image(drawing, ink="light")


def load_model(path):
    """Load a Keras model in safe mode; a missing or unreadable file names the file and says to run `make run`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such saved model; run `make run` to train and save the models.")
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged file; all mean the same here.
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"{path}: cannot be loaded as a Keras model ({type(error).__name__}: {first_line}); "
                         "run `make run` to save it again.") from error


def read_json(path, what: str = "file") -> dict:
    """Read a JSON file the notebook wrote; a missing or damaged one says which file and to run `make run`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}; run `make run` to write it.")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as JSON ({error}); run `make run` to write it again.") from error


def load_densities(path: Path, members) -> list[FeatureDensity]:
    """The members' feature densities from an .npz file (loaded without pickle)."""
    with np.load(path, allow_pickle=False) as arrays:
        return [FeatureDensity(arrays[f"{name}.means"], arrays[f"{name}.precision"]) for name in members]


def load_reader(models_dir=MODELS_DIR) -> Reader:
    """The reader the notebook saved in `models_dir`: its members, temperatures, score and threshold.

    Each member is read from its ONNX export when there is a fresh one (see `load_reading_model`).
    """
    models_dir = Path(models_dir)
    settings = read_json(models_dir / READER_FILE, "reader settings file")
    try:
        members = list(settings["members"])
        models = {name: load_reading_model(models_dir / f"{name}.keras") for name in members}
        densities = (load_densities(models_dir / "reader_densities.npz", members)
                     if settings["score"] == "feature_distance" else None)
        return Reader.from_settings(settings, models, densities)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{models_dir / READER_FILE}: lacks or garbles {error}; run `make run` to write it again.") \
            from error


def load_single_model_reader(model_path) -> Reader:
    """A reader of one saved model, with the temperature and threshold in <name>.calibration.json beside it.

    Without that file the model is read uncalibrated (temperature 1) and refuses nothing. The
    model is read from its ONNX export when there is a fresh one (see `load_reading_model`).
    """
    model_path = Path(model_path)
    model = load_reading_model(model_path)
    calibration_path = model_path.with_name(f"{model_path.stem}.calibration.json")
    if not calibration_path.is_file():
        return Reader({model_path.stem: model}, {model_path.stem: 1.0})
    calibration = read_json(calibration_path, "calibration file")
    try:
        return Reader({model_path.stem: model}, {model_path.stem: calibration["temperature"]},
                      score="probability", threshold=calibration["threshold"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{calibration_path}: lacks or garbles {error}; run `make run` to write it again.") from error
