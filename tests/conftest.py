"""Shared test fixtures: the real MNIST folder (from MNIST_DIR), the project root and Keras models whose
probabilities a test chooses."""

import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder of the real MNIST IDX files; tests that need it are skipped without MNIST_DIR."""
    folder = os.environ.get("MNIST_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("set MNIST_DIR to the folder of the MNIST IDX files to run this test")
    return Path(folder)


@pytest.fixture(scope="session")
def fixed_model():
    """Build a Keras model that gives the same probabilities for every image: `fixed_model(probabilities)`.

    `probabilities` is ten numbers, or {digit: probability} with the rest shared equally by the
    other digits. The model is Input 28x28x1, Flatten, Dense(10, softmax), as every model of
    model.ipynb ends, with a zero kernel and the log-probabilities as its bias: its logits are
    exactly log(probabilities).
    """
    import keras

    def build(probabilities, name="fixed"):
        if isinstance(probabilities, dict):
            rest = (1.0 - sum(probabilities.values())) / (10 - len(probabilities))
            probabilities = [probabilities.get(digit, rest) for digit in range(10)]
        probabilities = np.asarray(probabilities, dtype=np.float64)
        inputs = keras.Input(shape=(28, 28, 1))
        head = keras.layers.Dense(10, activation="softmax")
        model = keras.Model(inputs, head(keras.layers.Flatten()(inputs)), name=name)
        head.set_weights([np.zeros((28 * 28, 10), dtype=np.float32),
                          np.log(probabilities / probabilities.sum()).astype(np.float32)])
        return model

    return build
