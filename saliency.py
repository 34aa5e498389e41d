"""Where a network looks: integrated gradients and occlusion maps of prepared digits, for one model or an ensemble.

The notebook's section "What the networks look at" and the drawing pad both call this module, so
that they show the same maps, and adversarial.py attacks the networks through the same
differentiable log-probabilities. Inputs are prepared digits as the models take them: float32
(N, 28, 28, 1) in [0, 1], light ink on black (see `reader.check_images`). `models` is one Keras
model or a list of them (an ensemble: the mean of its members' probabilities, as the reader
averages them); every model ends in Dense(10, activation="softmax"), as in model.ipynb.

Sections: the networks' log-probabilities and their gradients; integrated gradients; occlusion;
a map for display.
"""

from __future__ import annotations

import logging
import math
import weakref

import keras
import numpy as np
import tensorflow as tf
from scipy import special

import reader

# ==================== Log-probabilities and their gradients ===========================


# Each model's forward pass and its gradient as traced TensorFlow functions, built once per model:
# tracing a residual network takes most of a second, the integrated gradients of one pad digit a few
# hundredths. They hold the model's layers, not the model, so that a model no longer used can go.
_traced = weakref.WeakKeyDictionary()


class _TracedOncePerModel(logging.Filter):
    # TensorFlow counts the traces of these functions for all models together (by their code) and, after
    # five models in a row, would warn of "retracing": each is traced once per model, by design.
    def filter(self, record):
        return "_traced_functions.<locals>" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_TracedOncePerModel())


def members(models) -> list:
    """The Keras models of `models`: one model, a list or tuple of them, or a dict {name: model}."""
    if isinstance(models, keras.Model):
        return [models]
    listed = []
    if isinstance(models, dict):
        listed = list(models.values())
    elif isinstance(models, (list, tuple)):
        listed = list(models)
    if not listed or not all(isinstance(model, keras.Model) for model in listed):
        raise ValueError(f"models is a {type(models).__name__}; pass a Keras model, or a list of them for an "
                         "ensemble (e.g. [resnet, resnet_seed2, resnet_seed3]).")
    return listed


def _traced_functions(model):
    """(log-probabilities, gradient of one digit's log-probability) of `model`, each a traced function."""
    head = model.layers[-1]
    if not (isinstance(head, keras.layers.Dense) and head.units == reader.NUM_CLASSES
            and getattr(head.activation, "__name__", "") == "softmax"):
        raise ValueError(f"model {model.name!r} ends in {type(head).__name__}; saliency and attacks need a model "
                         "whose last layer is Dense(10, activation='softmax'), as every model of model.ipynb has.")
    if model not in _traced:
        body = keras.Model(model.inputs[0], head.input)
        images_spec = tf.TensorSpec((None, reader.IMAGE_SIZE, reader.IMAGE_SIZE, 1), tf.float32)
        head_specs = [tf.TensorSpec((None, reader.NUM_CLASSES), tf.float32),
                      tf.TensorSpec((reader.NUM_CLASSES,), tf.float32)]

        def forward(images, kernel, bias):
            # From the logits (log-softmax), never the log of a rounded probability: a confident network's
            # probability of 1.0 in float32 would have no gradient.
            return tf.nn.log_softmax(tf.matmul(body(images, training=False), kernel) + bias)

        def gradient(images, digits, kernel, bias):
            with tf.GradientTape() as tape:
                tape.watch(images)
                chosen = tf.gather(forward(images, kernel, bias), digits[:, None], batch_dims=1)[:, 0]
            # The images are independent (inference mode), so the gradient of the sum is each one's own.
            return chosen, tape.gradient(chosen, images)

        _traced[model] = (
            tf.function(forward, input_signature=[images_spec, *head_specs]),
            tf.function(gradient, input_signature=[images_spec, tf.TensorSpec((None,), tf.int32), *head_specs]))
    return _traced[model]


def _heads(model_list, heads) -> list:
    """Each member's last layer (kernel, bias): its own, or the one given in `heads` (an adapted reader's)."""
    if heads is None:
        heads = [None] * len(model_list)
    if len(heads) != len(model_list):
        raise ValueError(f"{len(heads)} heads for {len(model_list)} models; give one (kernel, bias) or None "
                         "per model.")
    return [tuple(tf.constant(weight, dtype=tf.float32)
                  for weight in (model.layers[-1].get_weights() if head is None else head))
            for model, head in zip(model_list, heads)]


def log_probabilities(models, images, heads=None) -> np.ndarray:
    """The log of the (ensemble's mean) probabilities, (N, 10), of one batch of images (N, 28, 28, 1).

    `heads`: None, or one (kernel, bias) or None per model, to read with re-fitted last layers
    (`reader.Reader.heads`, in the order of `reader.Reader.models`).
    """
    model_list = members(models)
    images = tf.constant(images, dtype=tf.float32)
    member_values = np.stack([_traced_functions(model)[0](images, kernel, bias).numpy()
                              for model, (kernel, bias) in zip(model_list, _heads(model_list, heads))])
    return special.logsumexp(member_values, axis=0) - np.log(len(model_list))


def log_probability_gradients(models, images, digits, heads=None) -> tuple[np.ndarray, np.ndarray]:
    """log p(digit | image) for each image of one batch, (N,), and its gradient with respect to the image.

    For an ensemble, p is the members' mean probability, and the gradient of its log is the
    members' gradients of their own log-probabilities weighted by each member's share of p.
    """
    model_list = members(models)
    images = tf.constant(images, dtype=tf.float32)
    digits = tf.constant(digits, dtype=tf.int32)
    values, gradients = zip(*[(chosen.numpy(), gradient.numpy()) for chosen, gradient in (
        _traced_functions(model)[1](images, digits, kernel, bias)
        for model, (kernel, bias) in zip(model_list, _heads(model_list, heads)))])
    values = np.stack(values)
    ensemble_value = special.logsumexp(values, axis=0) - np.log(len(model_list))
    shares = np.exp(values - ensemble_value) / len(model_list)  # (members, N), adding up to 1 for each image
    return ensemble_value.astype(np.float32), np.einsum("mn,mn...->n...", shares, np.stack(gradients)).astype(
        np.float32)


def predicted_digits(models, images, heads=None, batch_size: int = 500) -> np.ndarray:
    """The digit each image is read as (N,): the argmax of the (ensemble's mean) probabilities."""
    images = reader.check_images(images)
    return np.concatenate([log_probabilities(models, images[start:start + batch_size], heads).argmax(axis=1)
                           for start in range(0, len(images), batch_size)])


def check_digits(digits, count: int, name: str = "digits") -> np.ndarray:
    """`digits` as an int array (count,) of 0-9: one per image, or one for all; a ValueError otherwise."""
    array = np.asarray(digits)
    if array.ndim == 0:
        array = np.full(count, array)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer) \
            or ((array < 0) | (array >= reader.NUM_CLASSES)).any():
        raise ValueError(f"{name} of shape {np.shape(digits)} with values {array.ravel()[:10].tolist()}; give one "
                         f"whole number 0-9 per image ({count} images).")
    return array.astype(np.int64)


def check_count(value, name: str) -> int:
    """`value` as an int of at least 1 (a number of steps, a batch size), or a ValueError that names it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}; use a whole number of at least 1.")
    return int(value)


# ==================== Integrated gradients ============================================


def integrated_gradients(models, images, target_digits=None, steps: int = 32, baseline=0.0,
                         batch_size: int = 256, heads=None) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017) of each image for its target digit: (N, 28, 28).

    The attribution of a pixel is (image - baseline) times the gradient averaged along the straight
    path from `baseline` (default 0.0: a black field, no ink) to the image, at the midpoints of
    `steps` equal segments. They add up to f(image) - f(baseline), up to the path's discretization,
    where f is the log of the target digit's probability (the ensemble's mean probability): the
    evidence for that digit against the other nine. Log-probability rather than the logit, so that
    one model and an ensemble (which has no logits) explain the same quantity, the one the reader
    reads and the attacks push on; rather than the probability, which a confident network saturates.
    `target_digits`: one digit 0-9 per image, one for all, or None for the digit each is read as.
    Ink-free pixels get no attribution with the black baseline. `batch_size` path points per pass.
    """
    images = reader.check_images(images)
    steps, batch_size = check_count(steps, "steps"), check_count(batch_size, "batch_size")
    try:
        baselines = np.broadcast_to(np.asarray(baseline, dtype=np.float32), images.shape)
    except ValueError as error:
        raise ValueError(f"baseline of shape {np.shape(baseline)}; give one number (0.0: black) or an array that "
                         f"broadcasts to the images' {images.shape}.") from error
    targets = (predicted_digits(models, images, heads) if target_digits is None
               else check_digits(target_digits, len(images), "target_digits"))
    alphas = ((np.arange(steps, dtype=np.float32) + 0.5) / steps)[:, None, None, None]
    gradient_sums = np.zeros(images.shape, dtype=np.float64)
    total = len(images) * steps
    for start in range(0, total, batch_size):
        rows = np.arange(start, min(start + batch_size, total))
        which, step = rows // steps, rows % steps
        points = baselines[which] + alphas[step] * (images[which] - baselines[which])
        _, gradients = log_probability_gradients(models, points, targets[which], heads)
        np.add.at(gradient_sums, which, gradients)
    attributions = (images - baselines) * gradient_sums / steps
    return attributions[..., 0].astype(np.float32)


# ==================== Occlusion ======================================================


def occlusion(models, images, target_digits=None, patch: int = 4, stride: int = 2, value: float = 0.0,
              batch_size: int = 256, heads=None) -> np.ndarray:
    """Occlusion maps (Zeiler and Fergus 2014): how much hiding each part lowers the target's log-probability.

    A `patch` x `patch` square of `value` (0.0: black) slides over each image by `stride` pixels; a
    pixel's value, (N, 28, 28), is the mean drop in log p(target) over the squares that cover it.
    Forward passes only: (28 - patch) / stride + 1 squared of them per image (169 by default).
    `target_digits` as for `integrated_gradients`.
    """
    images = reader.check_images(images)
    patch, stride = check_count(patch, "patch"), check_count(stride, "stride")
    batch_size = check_count(batch_size, "batch_size")
    size = reader.IMAGE_SIZE
    if patch > size:
        raise ValueError(f"patch={patch}; use a square no larger than the {size}x{size} image.")
    targets = (predicted_digits(models, images, heads) if target_digits is None
               else check_digits(target_digits, len(images), "target_digits"))
    # The last square sits at the far edge, so that every pixel is covered whatever the stride.
    corners = sorted(set(range(0, size - patch + 1, stride)) | {size - patch})
    squares = [(top, left) for top in corners for left in corners]
    maps = np.zeros((len(images), size, size), dtype=np.float64)
    coverage = np.zeros((size, size), dtype=np.float64)
    for top, left in squares:
        coverage[top:top + patch, left:left + patch] += 1
    for index, (image, target) in enumerate(zip(images, targets)):
        original = log_probabilities(models, image[np.newaxis], heads)[0, target]
        for start in range(0, len(squares), batch_size):
            chunk = squares[start:start + batch_size]
            hidden = np.repeat(image[np.newaxis], len(chunk), axis=0)
            for copy, (top, left) in zip(hidden, chunk):
                copy[top:top + patch, left:left + patch] = value
            drops = original - log_probabilities(models, hidden, heads)[:, target]
            for drop, (top, left) in zip(drops, chunk):
                maps[index, top:top + patch, left:left + patch] += drop
    return (maps / coverage).astype(np.float32)


# ==================== A map for display ==============================================


def heatmap(attributions, percentile: float = 99.0) -> np.ndarray:
    """Attributions (28, 28) or (N, 28, 28) as a display map in [0, 1]: where the evidence is, either sign.

    Absolute values divided by each map's `percentile` of them (its maximum where that is 0) and
    clipped to 1, so that a few extreme pixels do not leave the rest invisible. The notebook and
    the pad draw this same map.
    """
    array = np.abs(np.asarray(attributions, dtype=np.float64))
    if array.shape[-2:] != (reader.IMAGE_SIZE, reader.IMAGE_SIZE) or array.ndim not in (2, 3):
        raise ValueError(f"attributions of shape {array.shape}; expected (28, 28) or (N, 28, 28).")
    if not np.all(np.isfinite(array)):
        raise ValueError("attributions hold NaN or infinity; compute them again from finite images.")
    if not 0.0 < percentile <= 100.0 or math.isnan(percentile):
        raise ValueError(f"percentile={percentile!r}; use a number above 0 and at most 100, such as 99.")
    flat = array.reshape(-1, reader.IMAGE_SIZE * reader.IMAGE_SIZE)
    scales = np.percentile(flat, percentile, axis=1)
    scales = np.where(scales > 0, scales, flat.max(axis=1))
    scaled = np.divide(flat, scales[:, None], out=np.zeros_like(flat), where=scales[:, None] > 0)
    return np.clip(scaled, 0.0, 1.0).reshape(array.shape).astype(np.float32)
